//! XFS allocation hints (FS_IOC_FSGETXATTR/FSSETXATTR): an extent size hint
//! makes the host allocate an image's blocks in larger units, and a CoW
//! extent size hint does the same for copy-on-write after a snapshot. Both
//! limit fragmentation of images, which keeps snapshots and diffs cheap.

use crate::error::{OsError, OsResult};
use std::os::fd::{AsFd, AsRawFd};

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_EXTSIZE: u32 = 0x0000_0800;
const FS_XFLAG_COWEXTSIZE: u32 = 0x0001_0000;

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    fsx_xflags: u32,
    fsx_extsize: u32,
    fsx_nextents: u32,
    fsx_projid: u32,
    fsx_cowextsize: u32,
    fsx_pad: [u8; 8],
}

/// Current `(extsize, cowextsize)` hints in bytes (0 = none).
pub fn extent_hints(fd: impl AsFd) -> OsResult<(u32, u32)> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a `struct fsxattr`, which the repr(C)
    // `FsXattr` mirrors (28 bytes); the pointer is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) };
    if rc < 0 {
        return Err(OsError::sys("FS_IOC_FSGETXATTR", None, std::io::Error::last_os_error()));
    }
    let ext = if x.fsx_xflags & FS_XFLAG_EXTSIZE != 0 { x.fsx_extsize } else { 0 };
    let cow = if x.fsx_xflags & FS_XFLAG_COWEXTSIZE != 0 { x.fsx_cowextsize } else { 0 };
    Ok((ext, cow))
}

/// The number of extents the host keeps for the file's data, as XFS counts
/// them (its extent records; 0 on hosts that do not fill the count in, such
/// as ext4 and btrfs). One inode read instead of FIEMAP's walk.
pub fn extent_count(fd: impl AsFd) -> OsResult<u32> {
    let mut x = FsXattr::default();
    // SAFETY: as in `extent_hints`.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) };
    if rc < 0 {
        return Err(OsError::sys("FS_IOC_FSGETXATTR", None, std::io::Error::last_os_error()));
    }
    Ok(x.fsx_nextents)
}

/// Sets the extent size hint (only allowed while the file has no extents)
/// and/or the CoW extent size hint, in bytes; `None` leaves one unchanged,
/// a CoW hint of 0 removes it.
/// EINVAL/ENOTTY/EOPNOTSUPP on filesystems without these hints.
pub fn set_extent_hints(fd: impl AsFd, extsize: Option<u32>, cowextsize: Option<u32>) -> OsResult<()> {
    let fd = fd.as_fd();
    let mut x = FsXattr::default();
    // SAFETY: as in `extent_hints`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) };
    if rc < 0 {
        return Err(OsError::sys("FS_IOC_FSGETXATTR", None, std::io::Error::last_os_error()));
    }
    if let Some(e) = extsize {
        x.fsx_extsize = e;
        x.fsx_xflags |= FS_XFLAG_EXTSIZE;
    }
    match cowextsize {
        // 0 drops the hint (a whole-file clone would copy it otherwise).
        Some(0) => {
            x.fsx_cowextsize = 0;
            x.fsx_xflags &= !FS_XFLAG_COWEXTSIZE;
        }
        Some(c) => {
            x.fsx_cowextsize = c;
            x.fsx_xflags |= FS_XFLAG_COWEXTSIZE;
        }
        None => {}
    }
    // SAFETY: FS_IOC_FSSETXATTR reads a `struct fsxattr` (mirrored by
    // `FsXattr`); the pointer is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR, &x as *const FsXattr) };
    if rc < 0 {
        return Err(OsError::sys("FS_IOC_FSSETXATTR", None, std::io::Error::last_os_error()));
    }
    Ok(())
}
