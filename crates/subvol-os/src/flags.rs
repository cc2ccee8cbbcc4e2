//! Inode flags (FS_IOC_GETFLAGS/SETFLAGS): the immutable bit that protects
//! snapshot images from writes, renames and unlinks, even by root.

use crate::error::{OsError, OsResult};
use rustix::fs::IFlags;
use std::os::fd::AsFd;

/// Whether the inode has FS_IMMUTABLE_FL.
pub fn is_immutable(fd: impl AsFd) -> OsResult<bool> {
    let flags = rustix::fs::ioctl_getflags(fd).map_err(|e| OsError::sys("FS_IOC_GETFLAGS", None, e))?;
    Ok(flags.contains(IFlags::IMMUTABLE))
}

/// Sets or clears FS_IMMUTABLE_FL (needs CAP_LINUX_IMMUTABLE).
pub fn set_immutable(fd: impl AsFd, on: bool) -> OsResult<()> {
    let fd = fd.as_fd();
    let mut flags = rustix::fs::ioctl_getflags(fd).map_err(|e| OsError::sys("FS_IOC_GETFLAGS", None, e))?;
    flags.set(IFlags::IMMUTABLE, on);
    rustix::fs::ioctl_setflags(fd, flags).map_err(|e| OsError::sys("FS_IOC_SETFLAGS", None, e))
}
