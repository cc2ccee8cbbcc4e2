//! Reflink copies: FICLONE (whole file) and FICLONERANGE (a byte range).
//! The destination shares the source's blocks until either side writes.

use crate::error::{OsError, OsResult};
use std::os::fd::{AsFd, AsRawFd};

const FICLONERANGE: libc::c_ulong = 0x4020_940d;

#[repr(C)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `ioctl(dst, FICLONE, src)`: makes `dst` share all of `src`'s blocks.
/// Errors: EOPNOTSUPP / EXDEV / EINVAL where reflinks are not supported.
pub fn ficlone(dst: impl AsFd, src: impl AsFd) -> OsResult<()> {
    rustix::fs::ioctl_ficlone(dst, src).map_err(|e| OsError::sys("FICLONE", None, e))
}

/// `ioctl(dst, FICLONERANGE, {src, src_offset, len, dst_offset})`. Offsets
/// and length must be multiples of the host block size (len 0 = to EOF).
pub fn ficlonerange(dst: impl AsFd, src: impl AsFd, src_offset: u64, len: u64, dst_offset: u64) -> OsResult<()> {
    let arg = FileCloneRange {
        src_fd: i64::from(src.as_fd().as_raw_fd()),
        src_offset,
        src_length: len,
        dest_offset: dst_offset,
    };
    // SAFETY: FICLONERANGE reads a `struct file_clone_range` which
    // `FileCloneRange` mirrors exactly (repr(C), four 64-bit fields); the
    // pointer is valid for the duration of the call and the kernel does not
    // keep it.
    let rc = unsafe { libc::ioctl(dst.as_fd().as_raw_fd(), FICLONERANGE, &arg as *const FileCloneRange) };
    if rc < 0 {
        return Err(OsError::sys("FICLONERANGE", None, std::io::Error::last_os_error()));
    }
    Ok(())
}
