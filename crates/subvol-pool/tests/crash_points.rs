//! The list of crash points that harnesses enumerate must match the points
//! actually compiled in, or a new point would silently go untested.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[test]
fn every_crash_point_is_listed() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = BTreeSet::new();
    for file in rust_files(&src) {
        let text = std::fs::read_to_string(file).unwrap();
        for part in text.split("crash::point(\"").skip(1) {
            found.insert(part.split('"').next().unwrap().to_string());
        }
    }
    let listed: BTreeSet<String> = subvol_os::crash::POINTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(found, listed);
}

/// Every `.rs` file below `dir` (modules live in subdirectories too).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}
