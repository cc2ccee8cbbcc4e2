//! Extended attributes: subvol keeps each image's metadata in an xattr so the
//! image and its metadata are created, renamed and deleted as one.

use crate::error::{OsError, OsResult};
use rustix::fs::XattrFlags;
use rustix::io::Errno;
use std::os::fd::AsFd;

/// Largest value read (the kernel's own limit for one xattr).
const MAX_VALUE: usize = 64 * 1024;

/// `fgetxattr(fd, name)`; `None` if the attribute does not exist.
pub fn fget(fd: impl AsFd, name: &str) -> OsResult<Option<Vec<u8>>> {
    let mut buf = vec![0u8; MAX_VALUE];
    match rustix::fs::fgetxattr(fd, name, &mut buf) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(Errno::NODATA) => Ok(None),
        Err(e) => Err(OsError::sys("fgetxattr", None, e)),
    }
}

/// `fsetxattr(fd, name, value, 0)`: creates or replaces atomically.
pub fn fset(fd: impl AsFd, name: &str, value: &[u8]) -> OsResult<()> {
    rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()).map_err(|e| OsError::sys("fsetxattr", None, e))
}
