//! The list of crash points that harnesses enumerate must match the points
//! actually compiled in, or a new point would silently go untested.

use std::collections::BTreeSet;
use std::path::Path;

/// The points named in every source file below `dir`.
fn points_in(dir: &Path, found: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            points_in(&e.path(), found);
            continue;
        }
        let text = std::fs::read_to_string(e.path()).unwrap();
        for part in text.split("crash::point(\"").skip(1) {
            found.insert(part.split('"').next().unwrap().to_string());
        }
    }
}

#[test]
fn every_crash_point_is_listed() {
    let mut found = BTreeSet::new();
    points_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
    let listed: BTreeSet<String> = subvol_os::crash::POINTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, listed);
}
