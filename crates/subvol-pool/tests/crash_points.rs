//! The list of crash points that harnesses enumerate must match the points
//! actually compiled in, or a new point would silently go untested.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn every_crash_point_is_listed() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeSet::new();
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for part in text.split("crash::point(\"").skip(1) {
            found.insert(part.split('"').next().unwrap().to_string());
        }
    }
    let listed: BTreeSet<String> = subvol_os::crash::POINTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, listed);
}
