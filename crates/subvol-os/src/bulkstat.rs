//! XFS_IOC_BULKSTAT: what XFS knows about an inode given only its number.
//! A file unlinked while a loop device still holds it open has no path left
//! to `stat`, yet its blocks stay allocated until the loop device lets go;
//! XFS reports them by inode number (root only). Other filesystems have no
//! such call, and the caller says "unknown" there.

use crate::error::{OsError, OsResult};
use std::os::fd::{AsFd, AsRawFd};

/// `_IOR('X', 127, struct xfs_bulkstat_req)`; the request's size is its
/// 64-byte header (the records follow as a flexible array).
const XFS_IOC_BULKSTAT: libc::c_ulong = 0x8040_587f;

/// `struct xfs_bulk_ireq`.
#[repr(C)]
struct BulkIreq {
    ino: u64,
    flags: u32,
    icount: u32,
    ocount: u32,
    agno: u32,
    reserved: [u64; 5],
}

/// `struct xfs_bulkstat` (version 5).
#[repr(C)]
struct Bulkstat {
    ino: u64,
    size: u64,
    /// Allocated blocks (data and mapping), in filesystem blocks.
    blocks: u64,
    xflags: u64,
    times: [i64; 4],
    gen: u32,
    uid: u32,
    gid: u32,
    projectid: u32,
    times_nsec: [u32; 4],
    /// The filesystem block size (the unit of `blocks`).
    blksize: u32,
    rdev: u32,
    cowextsize_blks: u32,
    extsize_blks: u32,
    nlink: u32,
    extents: u32,
    aextents: u32,
    version: u16,
    forkoff: u16,
    sick: u16,
    checked: u16,
    mode: u16,
    pad2: u16,
    extents64: u64,
    pad: [u64; 6],
}

/// `struct xfs_bulkstat_req` with room for exactly one record.
#[repr(C)]
struct BulkstatReq {
    hdr: BulkIreq,
    one: Bulkstat,
}

const _: () = assert!(std::mem::size_of::<BulkIreq>() == 64);
const _: () = assert!(std::mem::size_of::<Bulkstat>() == 192);

/// What XFS reports about one inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InodeUsage {
    /// Directory entries naming it: 0 for an unlinked file kept alive by an
    /// open handle.
    pub nlink: u32,
    /// Host bytes its blocks take (what `st_blocks * 512` would say).
    pub allocated_bytes: u64,
}

/// XFS_IOC_BULKSTAT of inode `ino` on the XFS that `fs` (any open file or
/// directory on it, not `O_PATH`) belongs to. `Ok(None)`: no allocated inode
/// has that number. ENOTTY: not XFS; EPERM: needs CAP_SYS_ADMIN. See
/// ioctl_xfs_bulkstat(2).
pub fn xfs_bulkstat_one(fs: impl AsFd, ino: u64) -> OsResult<Option<InodeUsage>> {
    // SAFETY: all fields of both structs are plain integers, for which the
    // all-zero bit pattern is valid (and what the kernel requires of the
    // reserved fields).
    let mut req: BulkstatReq = unsafe { std::mem::zeroed() };
    req.hdr.ino = ino;
    req.hdr.icount = 1;
    // SAFETY: XFS_IOC_BULKSTAT reads the header and writes at most `icount`
    // (1) records after it; `BulkstatReq` mirrors the kernel's layout
    // (sizes asserted above) and the pointer is valid and exclusive for the
    // call.
    let rc = unsafe { libc::ioctl(fs.as_fd().as_raw_fd(), XFS_IOC_BULKSTAT, &mut req as *mut BulkstatReq) };
    if rc < 0 {
        return Err(OsError::sys("XFS_IOC_BULKSTAT", None, std::io::Error::last_os_error()));
    }
    // Bulkstat returns the first allocated inode at or after `ino`.
    if req.hdr.ocount != 1 || req.one.ino != ino {
        return Ok(None);
    }
    let allocated_bytes = req.one.blocks.checked_mul(u64::from(req.one.blksize)).ok_or_else(|| {
        OsError::Unexpected(format!("XFS_IOC_BULKSTAT: {} blocks of {} bytes", req.one.blocks, req.one.blksize))
    })?;
    Ok(Some(InodeUsage { nlink: req.one.nlink, allocated_bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Where the temp dir is on XFS and we are root, an open file's blocks
    /// are what `stat` says; elsewhere the call fails cleanly.
    #[test]
    fn bulkstat_matches_stat_or_fails_cleanly() {
        let t = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let p = t.path().join("f");
        std::fs::write(&p, vec![7u8; 1 << 20]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        f.sync_all().unwrap();
        let m = f.metadata().unwrap();
        match xfs_bulkstat_one(&f, m.ino()) {
            Ok(u) => {
                let u = u.expect("an open file's inode is allocated");
                assert_eq!(u.nlink, 1);
                assert_eq!(u.allocated_bytes, m.blocks() * 512);
            }
            Err(e) => assert!(matches!(e.errno(), Some(libc::ENOTTY | libc::EPERM | libc::EINVAL)), "{e}"),
        }
    }
}
