//! XFS_IOC_FREE_EOFBLOCKS: make XFS give back its speculative preallocations
//! now instead of minutes later. The one that matters for images is the
//! copy-on-write staging area: after a snapshot, each small write to a shared
//! block of an image reserves a whole CoW extent (the larger of the image's
//! extent size hint and its CoW extent size hint, 128 KiB by default), and
//! the unused rest stays allocated until XFS's background scan (every 300 s
//! by default). Random 4 KiB writes can so hold 20-25x their size of host
//! space for minutes. The space guard calls this before it freezes anyone.
//! It acts on every file of the host filesystem, not only the pool's, and
//! frees CoW staging only on kernels whose XFS merged the post-EOF and CoW
//! scans into one "blockgc" scan (Linux 5.13 and later, as far as we know);
//! older ones free post-EOF preallocations only.

use crate::error::{Context, OsError, OsResult};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// _IOR('X', 58, struct xfs_fs_eofblocks), 128 bytes.
const XFS_IOC_FREE_EOFBLOCKS: libc::c_ulong = 0x8080_583a;
const XFS_EOFBLOCKS_VERSION: u32 = 1;
const XFS_EOF_FLAGS_SYNC: u32 = 1;

/// struct xfs_fs_eofblocks from <xfs/xfs_fs.h>.
#[repr(C)]
struct XfsFsEofblocks {
    eof_version: u32,
    eof_flags: u32,
    eof_uid: u32,
    eof_gid: u32,
    eof_prid: u32,
    pad32: u32,
    eof_min_file_size: u64,
    pad64: [u64; 12],
}

/// Frees the post-EOF and CoW staging preallocations of every file on the
/// XFS filesystem holding `path`, waiting for the scan (needs CAP_SYS_ADMIN).
/// ENOTTY/EOPNOTSUPP on other filesystems.
pub fn free_preallocations(path: &Path) -> OsResult<()> {
    let dir = File::open(path).ctx("open", path)?;
    let mut arg = XfsFsEofblocks {
        eof_version: XFS_EOFBLOCKS_VERSION,
        eof_flags: XFS_EOF_FLAGS_SYNC,
        eof_uid: 0,
        eof_gid: 0,
        eof_prid: 0,
        pad32: 0,
        eof_min_file_size: 0,
        pad64: [0; 12],
    };
    // SAFETY: XFS_IOC_FREE_EOFBLOCKS reads a `struct xfs_fs_eofblocks`, which
    // the repr(C) `XfsFsEofblocks` mirrors (128 bytes, checked below); the
    // pointer is valid for the call.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), XFS_IOC_FREE_EOFBLOCKS, &mut arg as *mut XfsFsEofblocks) };
    if rc < 0 {
        return Err(OsError::sys("XFS_IOC_FREE_EOFBLOCKS", Some(path), std::io::Error::last_os_error()));
    }
    Ok(())
}

const _: () = assert!(std::mem::size_of::<XfsFsEofblocks>() == 128);
