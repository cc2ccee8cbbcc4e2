//! FIEMAP: the physical extent map of a file, with all the flags the kernel
//! reports (SHARED, UNWRITTEN, DELALLOC, ENCODED, ...).

use crate::error::{OsError, OsResult};
use std::os::fd::{AsFd, AsRawFd};
use subvol_core::extent::{Extent, ExtentFlags, ExtentMap};

const FS_IOC_FIEMAP: libc::c_ulong = 0xc020_660b;
/// Flush dirty data before mapping, so delayed allocations get real blocks.
pub const FIEMAP_FLAG_SYNC: u32 = 0x1;
/// Extents fetched per ioctl call.
const BATCH: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

#[repr(C)]
struct FiemapRequest {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; BATCH],
}

/// Maps the whole file. With `sync`, dirty data is flushed first
/// (FIEMAP_FLAG_SYNC) so no extent is left DELALLOC.
pub fn fiemap(file: impl AsFd, sync: bool) -> OsResult<ExtentMap> {
    let fd = file.as_fd();
    let mut req = Box::new(FiemapRequest {
        fm_start: 0,
        fm_length: u64::MAX,
        fm_flags: 0,
        fm_mapped_extents: 0,
        fm_extent_count: BATCH as u32,
        fm_reserved: 0,
        fm_extents: [FiemapExtent::default(); BATCH],
    });
    let mut out = Vec::new();
    let mut start = 0u64;
    let mut first = true;
    loop {
        req.fm_start = start;
        req.fm_length = u64::MAX - start;
        req.fm_flags = if sync && first { FIEMAP_FLAG_SYNC } else { 0 };
        req.fm_mapped_extents = 0;
        req.fm_extent_count = BATCH as u32;
        first = false;
        // SAFETY: `req` is a heap allocation laid out as `struct fiemap`
        // followed by room for `fm_extent_count` (= BATCH) `struct
        // fiemap_extent`s, which is exactly what FS_IOC_FIEMAP may write.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FIEMAP, &mut *req as *mut FiemapRequest) };
        if rc < 0 {
            return Err(OsError::sys("FIEMAP", None, std::io::Error::last_os_error()));
        }
        let n = (req.fm_mapped_extents as usize).min(BATCH);
        if n == 0 {
            break;
        }
        let mut last = false;
        for fe in &req.fm_extents[..n] {
            out.push(Extent {
                logical: fe.fe_logical,
                physical: fe.fe_physical,
                length: fe.fe_length,
                flags: ExtentFlags(fe.fe_flags),
            });
            last |= fe.fe_flags & ExtentFlags::LAST != 0;
        }
        let tail = &req.fm_extents[n - 1];
        let next = tail.fe_logical.saturating_add(tail.fe_length);
        if last || next <= start {
            break;
        }
        start = next;
    }
    ExtentMap::new(out).ok_or_else(|| OsError::Unexpected("FIEMAP returned overlapping extents".into()))
}
