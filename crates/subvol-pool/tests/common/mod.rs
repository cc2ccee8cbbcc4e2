//! What the pool crate's integration tests share: running a tool, and the
//! rule that a privileged test skips with a reason outside CI and fails
//! under CI=true.

use std::path::Path;
use std::process::Command;

/// Runs a command, panicking with its stderr if it fails.
pub fn sh(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(out.status.success(), "{prog} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when privileged tests may run; otherwise prints why (or panics
/// under CI=true, where a skip would hide a failure).
pub fn privileged(name: &str) -> bool {
    if subvol_os::is_root() && Path::new("/dev/loop-control").exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{name} would be SKIPPED (needs root), but CI=true forbids it");
    }
    eprintln!("SKIPPED {name}: needs root");
    false
}
