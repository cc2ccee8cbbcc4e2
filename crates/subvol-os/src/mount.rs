//! mount(2) and umount2(2), and reading the kernel's mount table.

use crate::error::{Context, OsError, OsResult};
use rustix::mount::{MountFlags, UnmountFlags};
use std::path::Path;
use subvol_core::mountinfo::{self, MountEntry};
use subvol_core::mountopts::MountOpts;

/// `mount(source, target, fstype, flags, data)`, with the generic flags
/// and the filesystem options as split by `subvol_core::mountopts`.
pub fn mount(source: &Path, target: &Path, fstype: &str, opts: &MountOpts) -> OsResult<()> {
    let (flags, data) = mount_flags_and_data(opts)?;
    rustix::mount::mount(source, target, fstype, flags, Some(data.as_c_str())).ctx("mount", target)
}

/// The generic flags and the data string of mount(2).
pub(crate) fn mount_flags_and_data(opts: &MountOpts) -> OsResult<(MountFlags, std::ffi::CString)> {
    let flags = MountFlags::from_bits_retain(opts.flags as _);
    let data = std::ffi::CString::new(opts.data.as_str())
        .map_err(|_| OsError::Unexpected("mount options contain NUL".into()))?;
    Ok((flags, data))
}

/// `umount2(target, 0)`: EBUSY while files are open under it.
pub fn umount(target: &Path) -> OsResult<()> {
    rustix::mount::unmount(target, UnmountFlags::empty()).ctx("umount", target)
}

/// `umount2(target, UMOUNT_NOFOLLOW)`: never unmounts what a symlink at
/// `target` points to.
pub fn umount_nofollow(target: &Path) -> OsResult<()> {
    rustix::mount::unmount(target, UnmountFlags::NOFOLLOW).ctx("umount", target)
}

/// `umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW)`: lazy unmount, for
/// cleanup paths and for a filesystem whose files are still open. The mount
/// leaves the tree now; the filesystem (and the device under it) lives on
/// until the last open file is closed. Like `umount_nofollow`, never acts on
/// what a symlink at `target` points to.
pub fn umount_lazy(target: &Path) -> OsResult<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).ctx("umount", target)
}

/// The current mount table of this process's mount namespace.
pub fn mountinfo() -> OsResult<Vec<MountEntry>> {
    let p = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(p).ctx("read", p)?;
    Ok(mountinfo::parse(&text))
}

/// Mounts of the block device `major:minor`.
pub fn mounts_of_device(major: u32, minor: u32) -> OsResult<Vec<MountEntry>> {
    Ok(mountinfo()?.into_iter().filter(|m| m.major == major && m.minor == minor).collect())
}

/// Whether `path` is itself a mount point.
pub fn is_mount_point(path: &Path) -> OsResult<bool> {
    let canon = std::fs::canonicalize(path).map_err(|e| OsError::sys("canonicalize", Some(path), e))?;
    Ok(mountinfo()?.iter().any(|m| m.mount_point == canon))
}
