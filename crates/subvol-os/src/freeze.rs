//! FIFREEZE/FITHAW: stop all writes to a mounted filesystem and resume them.
//! A frozen filesystem has flushed its dirty data and log; writers block in
//! the kernel (nothing fails) until it is thawed.

use crate::error::{Context, OsError, OsResult};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

const FIFREEZE: libc::c_ulong = 0xc004_5877;
const FITHAW: libc::c_ulong = 0xc004_5878;

fn fs_ioctl(fd: impl AsFd, op: libc::c_ulong, name: &'static str, path: &Path) -> OsResult<()> {
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE and FITHAW take an `int` argument that the kernel
    // ignores; passing a pointer to a live c_int is always valid.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), op, &mut arg as *mut libc::c_int) };
    if rc < 0 {
        return Err(OsError::sys(name, Some(path), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `ioctl(mountpoint, FIFREEZE)`. EBUSY: already frozen.
pub fn fifreeze(mount_point: &Path) -> OsResult<()> {
    let dir = File::open(mount_point).ctx("open", mount_point)?;
    fs_ioctl(&dir, FIFREEZE, "FIFREEZE", mount_point)
}

/// `ioctl(mountpoint, FITHAW)`. EINVAL: was not frozen.
pub fn fithaw(mount_point: &Path) -> OsResult<()> {
    let dir = File::open(mount_point).ctx("open", mount_point)?;
    fs_ioctl(&dir, FITHAW, "FITHAW", mount_point)
}

/// A frozen filesystem that thaws when dropped, on every path out of the
/// scope that froze it (errors and panics included).
#[derive(Debug)]
pub struct FreezeGuard {
    dir: File,
    path: PathBuf,
    thawed: bool,
}

impl FreezeGuard {
    pub fn freeze(mount_point: &Path) -> OsResult<Self> {
        let dir = File::open(mount_point).ctx("open", mount_point)?;
        fs_ioctl(&dir, FIFREEZE, "FIFREEZE", mount_point)?;
        Ok(FreezeGuard { dir, path: mount_point.to_path_buf(), thawed: false })
    }

    /// Thaws now, reporting errors (drop would only ignore them).
    pub fn thaw(mut self) -> OsResult<()> {
        self.thawed = true;
        fs_ioctl(&self.dir, FITHAW, "FITHAW", &self.path)
    }
}

impl Drop for FreezeGuard {
    fn drop(&mut self) {
        if !self.thawed {
            let _ = fs_ioctl(&self.dir, FITHAW, "FITHAW", &self.path);
        }
    }
}
