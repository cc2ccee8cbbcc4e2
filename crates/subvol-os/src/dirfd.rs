//! Directories held by a file descriptor, so that a path checked once cannot
//! be swapped for a symlink before it is used: `openat(O_PATH | O_DIRECTORY
//! | O_NOFOLLOW)`, `mkdirat`, `unlinkat` relative to such a handle, and
//! `mount(2)` onto `/proc/self/fd/N`, which the kernel resolves to exactly
//! the directory the handle holds.

use crate::error::{Context, OsError, OsResult};
use crate::mount::mount_flags_and_data;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use subvol_core::mountopts::MountOpts;

/// What a directory entry is, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Missing,
    Directory,
    Symlink,
    Other,
}

/// Owner and permission bits of a directory handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

/// An open directory (`O_PATH`), remembered with the path it was opened by.
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

impl DirHandle {
    /// Opens `path` as a directory, following symlinks in every component
    /// (for a path the administrator chose, such as the pool root).
    pub fn open(path: &Path) -> OsResult<DirHandle> {
        let fd = rustix::fs::openat(CWD, path, DIR_FLAGS, Mode::empty()).ctx("open", path)?;
        Ok(DirHandle { fd, path: path.to_path_buf() })
    }

    /// Opens `path` as a directory, following symlinks in its parent
    /// components but never in its last one.
    pub fn open_nofollow(path: &Path) -> OsResult<DirHandle> {
        let fd = rustix::fs::openat(CWD, path, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()).ctx("open", path)?;
        Ok(DirHandle { fd, path: path.to_path_buf() })
    }

    /// The path this handle was opened by (for messages; it may have moved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the entry `name` of this directory is, not following a symlink.
    pub fn entry_kind(&self, name: &str) -> OsResult<EntryKind> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode as _) {
                FileType::Directory => EntryKind::Directory,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Other,
            }),
            Err(rustix::io::Errno::NOENT) => Ok(EntryKind::Missing),
            Err(e) => Err(OsError::sys("stat", Some(&self.path.join(name)), e)),
        }
    }

    /// `mkdirat(self, name, mode)`: whether it created the directory. An
    /// existing entry is not an error (the caller opens it without following
    /// and checks what it is).
    pub fn mkdir(&self, name: &str, mode: u32) -> OsResult<bool> {
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode as _)) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::EXIST) => Ok(false),
            Err(e) => Err(OsError::sys("mkdir", Some(&self.path.join(name)), e)),
        }
    }

    /// Opens the subdirectory `name` without following a symlink: a symlink
    /// there fails (ELOOP or ENOTDIR) instead of leading elsewhere.
    pub fn child(&self, name: &str) -> OsResult<DirHandle> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty()).ctx("open", &path)?;
        Ok(DirHandle { fd, path })
    }

    /// `unlinkat(self, name, AT_REMOVEDIR)`: removes an empty directory.
    pub fn rmdir(&self, name: &str) -> OsResult<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).ctx("rmdir", &self.path.join(name))
    }

    /// Removes the entry `name` if (and only if) it is a symlink; unlinking a
    /// symlink never touches what it points to.
    pub fn remove_symlink(&self, name: &str) -> OsResult<bool> {
        if self.entry_kind(name)? != EntryKind::Symlink {
            return Ok(false);
        }
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).ctx("unlink", &self.path.join(name))?;
        Ok(true)
    }

    /// Owner and mode of the directory itself.
    pub fn owner(&self) -> OsResult<Owner> {
        let st = rustix::fs::fstat(&self.fd).ctx("stat", &self.path)?;
        Ok(Owner { uid: st.st_uid, gid: st.st_gid, mode: (st.st_mode as u32) & 0o7777 })
    }

    /// The id of the mount this directory is on (for a mount point: the
    /// mount on top of it), as in the first column of mountinfo. Read from
    /// `/proc/self/fdinfo/N`, the kernel's record of the open file, not with
    /// statx, which asks the filesystem and fails with EIO on a shut-down
    /// XFS: exactly the filesystem that most needs unmounting.
    pub fn mount_id(&self) -> OsResult<u64> {
        let p = PathBuf::from(format!("/proc/self/fdinfo/{}", self.fd.as_fd().as_raw_fd()));
        let text = std::fs::read_to_string(&p).ctx("read", &p)?;
        text.lines()
            .find_map(|l| l.strip_prefix("mnt_id:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| OsError::Unexpected(format!("{} has no mnt_id", p.display())))
    }

    /// The handle itself, for the mount API (`move_mount` onto it).
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The magic link naming exactly this directory.
    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_fd().as_raw_fd()))
    }
}

/// `mount(source, /proc/self/fd/N, ...)`: mounts onto the directory the
/// handle holds, whatever has happened to its path since it was opened.
pub fn mount_on(source: &Path, target: &DirHandle, fstype: &str, opts: &MountOpts) -> OsResult<()> {
    let (flags, data) = mount_flags_and_data(opts)?;
    rustix::mount::mount(source, target.proc_path(), fstype, flags, Some(data.as_c_str())).ctx("mount", &target.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_refuses_a_symlink_and_remove_symlink_spares_the_target() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::create_dir(t.path().join("base")).unwrap();
        std::os::unix::fs::symlink(&outside, t.path().join("base/link")).unwrap();
        let base = DirHandle::open_nofollow(&t.path().join("base")).unwrap();
        assert_eq!(base.entry_kind("link").unwrap(), EntryKind::Symlink);
        assert!(base.child("link").is_err(), "a symlink was followed");
        assert!(!base.mkdir("link", 0o755).unwrap());
        assert!(base.child("link").is_err(), "mkdir over a symlink then followed it");
        assert!(base.remove_symlink("link").unwrap());
        assert!(outside.is_dir());
        assert_eq!(base.entry_kind("link").unwrap(), EntryKind::Missing);
        assert!(base.mkdir("real", 0o755).unwrap());
        let real = base.child("real").unwrap();
        assert_eq!(real.owner().unwrap().mode & 0o700, 0o700);
        assert!(!base.remove_symlink("real").unwrap());
        base.rmdir("real").unwrap();
        // The last component of open_nofollow is not followed either.
        std::os::unix::fs::symlink(&outside, t.path().join("link2")).unwrap();
        assert!(DirHandle::open_nofollow(&t.path().join("link2")).is_err());
        assert!(DirHandle::open(&t.path().join("link2")).is_ok());
    }

    #[test]
    fn mount_id_is_the_one_statx_reports() {
        let t = tempfile::tempdir().unwrap();
        let dir = DirHandle::open_nofollow(t.path()).unwrap();
        let st =
            rustix::fs::statx(rustix::fs::CWD, t.path(), AtFlags::empty(), rustix::fs::StatxFlags::MNT_ID).unwrap();
        assert_eq!(dir.mount_id().unwrap(), st.stx_mnt_id);
    }
}
