//! Page-cache hints for streaming work over scattered ranges: ask the kernel
//! to read ahead ranges we will read soon (so cold random reads overlap
//! instead of waiting one by one), and to start writing back ranges we just
//! wrote (so the final fsync does not find all of it still dirty).

use crate::error::{OsError, OsResult};
use std::num::NonZeroU64;
use std::os::fd::{AsFd, AsRawFd};

/// posix_fadvise(POSIX_FADV_WILLNEED): starts asynchronous readahead of
/// `[offset, offset+len)` and returns at once.
pub fn will_need(fd: impl AsFd, offset: u64, len: u64) -> OsResult<()> {
    rustix::fs::fadvise(fd, offset, NonZeroU64::new(len), rustix::fs::Advice::WillNeed)
        .map_err(|e| OsError::sys("posix_fadvise", None, e))
}

/// sync_file_range(SYNC_FILE_RANGE_WRITE): queues writeback of the dirty
/// pages of `[offset, offset+len)` without waiting for it. Durability still
/// needs fsync; this only moves the I/O earlier.
pub fn start_writeback(fd: impl AsFd, offset: u64, len: u64) -> OsResult<()> {
    sync_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE)
}

/// A second descriptor of the same open file with O_DIRECT (I/O bypasses
/// the page cache), read-only or read-write, through /proc/self/fd so it is
/// the same inode whatever happened to the path. Long sequential transfers
/// go at the device's rate this way, without filling and copying through
/// the page cache; they need 4096-aligned offsets, lengths and buffers.
pub fn reopen_direct(file: &std::fs::File, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER): writes the dirty pages
/// of `[offset, offset+len)` and waits until they are on the device, without
/// the log force and cache flush of fdatasync (so no durability promise: the
/// data is only out of the page cache).
pub fn write_and_wait(fd: impl AsFd, offset: u64, len: u64) -> OsResult<()> {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    sync_range(fd, offset, len, flags)
}

fn sync_range(fd: impl AsFd, offset: u64, len: u64, flags: libc::c_uint) -> OsResult<()> {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(OsError::sys("sync_file_range", None, std::io::Error::from_raw_os_error(libc::EINVAL)));
    };
    // SAFETY: sync_file_range takes a descriptor, two integers and flags; no
    // memory is passed.
    let rc = unsafe { libc::sync_file_range(fd.as_fd().as_raw_fd(), off, n, flags) };
    if rc < 0 {
        return Err(OsError::sys("sync_file_range", None, std::io::Error::last_os_error()));
    }
    Ok(())
}
