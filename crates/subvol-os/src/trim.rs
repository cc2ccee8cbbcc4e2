//! FITRIM: ask a mounted filesystem to discard its free blocks. For a
//! filesystem in a loop-mounted image this punches holes in the image, giving
//! the space back to the host.

use crate::error::{Context, OsError, OsResult};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

const FITRIM: libc::c_ulong = 0xc018_5879;

#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

/// `ioctl(mountpoint, FITRIM, {0, ∞, 0})`; returns the bytes the filesystem
/// reported as trimmed.
pub fn fitrim(mount_point: &Path) -> OsResult<u64> {
    let dir = File::open(mount_point).ctx("open", mount_point)?;
    let mut range = FstrimRange { start: 0, len: u64::MAX, minlen: 0 };
    // SAFETY: FITRIM reads and updates a `struct fstrim_range`, mirrored by
    // the repr(C) `FstrimRange`; the pointer is valid for the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FITRIM, &mut range as *mut FstrimRange) };
    if rc < 0 {
        return Err(OsError::sys("FITRIM", Some(mount_point), std::io::Error::last_os_error()));
    }
    Ok(range.len)
}
