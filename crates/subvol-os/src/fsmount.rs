//! Mounting one directory of a filesystem and nothing else, with the mount
//! API (fsopen, fsmount, open_tree, move_mount): the filesystem is mounted
//! detached, invisible to everyone; the directory is cloned from that into a
//! second detached mount, which is moved onto the target in one step; the
//! first goes when its descriptor closes. A crash at any point leaves
//! nothing mounted, and the rest of the filesystem is never reachable.

use crate::dirfd::DirHandle;
use crate::error::{Context, OsError, OsResult};
use rustix::fs::{AtFlags, FileType};
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};
use std::path::Path;
use subvol_core::mountopts::{ms, MountOpts};

/// Mounts the directory `subdir` (one name, in the filesystem's root) of the
/// filesystem on `source` onto the directory `target` holds. `opts` are the
/// same as for mount(2): generic flags become mount attributes or
/// superblock flags, the filesystem options are passed one by one.
pub fn mount_subdir_on(
    source: &Path,
    target: &DirHandle,
    fstype: &str,
    opts: &MountOpts,
    subdir: &str,
) -> OsResult<()> {
    let here = target.path();
    if subdir.is_empty() || subdir.contains('/') {
        return Err(OsError::Unexpected(format!("{subdir:?} is not one directory name")));
    }
    let fs = rustix::mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC).ctx("fsopen", here)?;
    rustix::mount::fsconfig_set_string(&fs, "source", source).ctx("fsconfig source", source)?;
    for flag in superblock_flags(opts.flags) {
        rustix::mount::fsconfig_set_flag(&fs, flag).ctx("fsconfig", here)?;
    }
    for o in opts.data.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some((k, v)) => rustix::mount::fsconfig_set_string(&fs, k, v),
            None => rustix::mount::fsconfig_set_flag(&fs, o),
        }
        .map_err(|e| OsError::Unexpected(format!("mount option {o:?}: {e}")))?;
    }
    rustix::mount::fsconfig_create(&fs).ctx("mount", source)?;
    let whole =
        rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, mount_attrs(opts.flags)).ctx("fsmount", here)?;
    // One name, not followed if it is a symlink: the image's content cannot
    // send the mount anywhere else.
    let st = rustix::fs::statat(&whole, subdir, AtFlags::SYMLINK_NOFOLLOW).ctx("stat", Path::new(subdir))?;
    if FileType::from_raw_mode(st.st_mode as _) != FileType::Directory {
        return Err(OsError::Unexpected(format!("{subdir} in the filesystem's root is not a directory")));
    }
    let part = rustix::mount::open_tree(
        &whole,
        subdir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx("open_tree", Path::new(subdir))?;
    rustix::mount::move_mount(
        &part,
        "",
        target.fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .ctx("move_mount", here)
}

/// Generic flags that belong to the superblock (mount(8) passes them as
/// filesystem flags under the mount API).
fn superblock_flags(flags: u64) -> Vec<&'static str> {
    [(ms::RDONLY, "ro"), (ms::SYNCHRONOUS, "sync"), (ms::DIRSYNC, "dirsync"), (ms::LAZYTIME, "lazytime")]
        .into_iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| name)
        .collect()
}

/// Generic flags that belong to the mount.
fn mount_attrs(flags: u64) -> MountAttrFlags {
    let mut a = MountAttrFlags::empty();
    for (bit, attr) in [
        (ms::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (ms::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (ms::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (ms::NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (ms::NODIRATIME, MountAttrFlags::MOUNT_ATTR_NODIRATIME),
    ] {
        if flags & bit != 0 {
            a |= attr;
        }
    }
    // The access time rule is one value of a field, not a bit each.
    if flags & ms::NOATIME != 0 {
        a |= MountAttrFlags::MOUNT_ATTR_NOATIME;
    } else if flags & ms::STRICTATIME != 0 {
        a |= MountAttrFlags::MOUNT_ATTR_STRICTATIME;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use subvol_core::mountopts::parse_mount_options;

    #[test]
    fn generic_flags_go_to_the_superblock_or_the_mount() {
        let o = parse_mount_options("ro,noatime,nosuid,lazytime,noload", false);
        assert_eq!(superblock_flags(o.flags), ["ro", "lazytime"]);
        let a = mount_attrs(o.flags);
        assert!(a.contains(MountAttrFlags::MOUNT_ATTR_RDONLY | MountAttrFlags::MOUNT_ATTR_NOSUID));
        assert!(a.contains(MountAttrFlags::MOUNT_ATTR_NOATIME));
        assert_eq!(o.data, "noload");
        assert_eq!(mount_attrs(0), MountAttrFlags::empty());
    }
}
