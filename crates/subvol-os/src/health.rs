//! Whether a mounted filesystem still works, told without writing to it and
//! without waiting on it: a subvolume whose filesystem the kernel shut down
//! (an I/O error, or a log write into a full host) must be named as such,
//! not met later as a bare EIO from a freeze or a grow.

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::path::Path;
use subvol_core::mountinfo::{FsFailure, MountEntry};

/// The failure the kernel shows for the mount `m`, if any: first what the
/// mount table says (ext4, btrfs), then whether its root can be opened.
pub fn probe(m: &MountEntry) -> Option<FsFailure> {
    m.failure().or_else(|| root_says_eio(&m.mount_point).then_some(FsFailure::Shutdown))
}

/// A shut-down XFS shows nothing in the mount table but answers even
/// `open` of its root directory with EIO. Opening a directory read-only
/// writes nothing (no atime) and does not wait on a frozen filesystem.
fn root_says_eio(mount_point: &Path) -> bool {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    matches!(rustix::fs::open(mount_point, flags, Mode::empty()), Err(Errno::IO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_working_root_is_no_failure() {
        let t = tempfile::tempdir().unwrap();
        let line = format!("47 27 7:4 / {} rw,relatime - xfs /dev/loop4 rw,inode64", t.path().display());
        let m = subvol_core::mountinfo::parse_line(&line).unwrap();
        assert_eq!(probe(&m), None);
        let shut = subvol_core::mountinfo::parse_line(&format!("{line},shutdown")).unwrap();
        assert_eq!(probe(&shut), Some(FsFailure::Shutdown));
    }
}
