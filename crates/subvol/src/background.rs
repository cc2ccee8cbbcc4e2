//! Manifests of new snapshots are built off the snapshot command's path: by
//! a copy of this program started detached (its own process group, no
//! terminal, nothing inherited but the environment), so `snapshot` returns
//! once the snapshot is published. If the copy is killed (the machine
//! stops, a service manager ends the unit), the next snapshot's builder or
//! the next scrub finishes its work; manifests are written whole or not at
//! all.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts `subvol --pool POOL build-manifests NAME@SNAP...`; says whether it
/// started (if not, the library builds them itself).
pub fn start(pool: &Path, names: &[String]) -> bool {
    let Ok(exe) = std::env::current_exe() else { return false };
    Command::new(exe)
        .arg("--pool")
        .arg(pool)
        .arg("build-manifests")
        .args(names)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .is_ok()
}
