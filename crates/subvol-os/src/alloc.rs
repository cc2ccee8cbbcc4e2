//! Space allocation inside a file: fallocate modes and SEEK_DATA/SEEK_HOLE.

use crate::error::{OsError, OsResult};
use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;
use std::os::fd::AsFd;

/// `fallocate(fd, FALLOC_FL_KEEP_SIZE, off, len)`: reserves blocks without
/// changing the file size.
pub fn allocate_keep_size(fd: impl AsFd, offset: u64, len: u64) -> OsResult<()> {
    rustix::fs::fallocate(fd, FallocateFlags::KEEP_SIZE, offset, len)
        .map_err(|e| OsError::sys("fallocate(KEEP_SIZE)", None, e))
}

/// `fallocate(fd, FALLOC_FL_PUNCH_HOLE|KEEP_SIZE, off, len)`: frees the blocks
/// of a range; it reads back as zeroes.
pub fn punch_hole(fd: impl AsFd, offset: u64, len: u64) -> OsResult<()> {
    rustix::fs::fallocate(fd, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, offset, len)
        .map_err(|e| OsError::sys("fallocate(PUNCH_HOLE)", None, e))
}

/// `fallocate(fd, FALLOC_FL_ZERO_RANGE|KEEP_SIZE, off, len)`: zeroes a range,
/// keeping it allocated (as unwritten extents).
pub fn zero_range(fd: impl AsFd, offset: u64, len: u64) -> OsResult<()> {
    rustix::fs::fallocate(fd, FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE, offset, len)
        .map_err(|e| OsError::sys("fallocate(ZERO_RANGE)", None, e))
}

/// `lseek(fd, off, SEEK_DATA)`: the next offset ≥ `offset` holding data, or
/// `None` past the last data (ENXIO).
pub fn seek_data(fd: impl AsFd, offset: u64) -> OsResult<Option<u64>> {
    match rustix::fs::seek(fd, SeekFrom::Data(offset)) {
        Ok(o) => Ok(Some(o)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(OsError::sys("lseek(SEEK_DATA)", None, e)),
    }
}

/// `lseek(fd, off, SEEK_HOLE)`: the next hole at or after `offset` (the end
/// of the file counts as a hole), or `None` if `offset` is past the end.
pub fn seek_hole(fd: impl AsFd, offset: u64) -> OsResult<Option<u64>> {
    match rustix::fs::seek(fd, SeekFrom::Hole(offset)) {
        Ok(o) => Ok(Some(o)),
        Err(Errno::NXIO) => Ok(None),
        Err(e) => Err(OsError::sys("lseek(SEEK_HOLE)", None, e)),
    }
}

/// The data ranges of a file as `(offset, len)`, from SEEK_DATA/SEEK_HOLE.
pub fn data_ranges(fd: impl AsFd, size: u64) -> OsResult<Vec<(u64, u64)>> {
    let fd = fd.as_fd();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let Some(start) = seek_data(fd, pos)? else {
            break;
        };
        if start >= size {
            break;
        }
        let end = seek_hole(fd, start)?.unwrap_or(size).min(size);
        out.push((start, end - start));
        pos = end;
    }
    Ok(out)
}
