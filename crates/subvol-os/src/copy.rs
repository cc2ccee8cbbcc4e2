//! Copying file ranges in the kernel (copy_file_range), for hosts without
//! reflinks: a snapshot there is a sparse copy of the image's data ranges.

use crate::error::{OsError, OsResult};
use std::os::fd::AsFd;

/// Copies `len` bytes at `offset` from `src` to the same offset in `dst`,
/// looping over short copies. Returns early with an error on ENOSPC etc.
pub fn copy_range(
    src: impl AsFd,
    dst: impl AsFd,
    offset: u64,
    len: u64,
    mut progress: impl FnMut(u64),
) -> OsResult<()> {
    let (src, dst) = (src.as_fd(), dst.as_fd());
    let (mut off_in, mut off_out) = (offset, offset);
    let end = offset.checked_add(len).ok_or_else(|| OsError::Unexpected("copy range overflows".into()))?;
    while off_in < end {
        let chunk = (end - off_in).min(64 << 20) as usize;
        let n = rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), chunk)
            .map_err(|e| OsError::sys("copy_file_range", None, e))?;
        if n == 0 {
            return Err(OsError::Unexpected("copy_file_range copied nothing before the end of the range".into()));
        }
        progress(n as u64);
    }
    Ok(())
}
