//! Cheap recovery that every mutating command runs under the pool lock:
//! anything left in the tmp dir belongs to a command that died (the lock
//! proves no live command owns it), so it is removed.

use crate::error::{Error, Result};
use crate::layout::Layout;

/// Removes debris of interrupted commands; returns what was removed.
pub fn clean_tmp(layout: &Layout) -> Result<Vec<String>> {
    let dir = layout.tmp_dir();
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        // A snapshot in progress may already carry the immutable flag.
        if let Ok(f) = std::fs::File::open(&path) {
            if subvol_os::flags::is_immutable(&f).unwrap_or(false) {
                let _ = subvol_os::flags::set_immutable(&f, false);
            }
        }
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let res = if is_dir {
            // Temporary mount points: only ever empty directories.
            let _ = subvol_os::mount::umount_lazy(&path);
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if res.is_ok() {
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    if !removed.is_empty() {
        let _ = subvol_os::fsync::fsync_dir(&dir);
    }
    Ok(removed)
}
