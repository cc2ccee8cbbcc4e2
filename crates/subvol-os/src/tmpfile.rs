//! Anonymous files: O_TMPFILE creates an inode with no name in a directory's
//! filesystem. It vanishes when the last descriptor closes, also when the
//! process is killed, so scratch space needs no cleanup on recovery.

use crate::error::{OsError, OsResult};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A new unnamed read-write file (mode 0600) on the filesystem of `dir`.
/// Errors: EOPNOTSUPP / EISDIR where the filesystem has no O_TMPFILE.
pub fn anonymous_file(dir: &Path) -> OsResult<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .map_err(|e| OsError::sys("open(O_TMPFILE)", Some(dir), e))
}
