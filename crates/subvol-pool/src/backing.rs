//! Backing-image pools: a pool that lives on its own XFS (reflink=1) made in
//! a sparse file, so any host (even one on ext4 or tmpfs-free overlay) gets
//! reflink snapshots.

use crate::error::{require_root, Error, ErrorKind, Result};
use crate::kernel::KernelView;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use subvol_os::loopdev::{self, LoopOptions};

/// `DIR.img` beside the pool directory.
pub fn default_backing_file(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_os_string();
    s.push(".img");
    PathBuf::from(s)
}

/// Creates the sparse file, makes XFS on it and mounts it at `dir`.
/// Returns the backing file's absolute path.
pub fn create_and_mount(dir: &Path, backing_file: Option<&Path>, size: u64) -> Result<PathBuf> {
    require_root("pool init --backing-image")?;
    if size < (300 << 20) {
        return Err(Error::invalid(
            "a backing image needs at least 300M (the smallest XFS); give a larger --backing-image",
        ));
    }
    let file = match backing_file {
        Some(f) => crate::pool::absolute(f)?,
        None => default_backing_file(dir),
    };
    if file.exists() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "backing image {} already exists; mount it with `subvol pool mount {}` or remove it",
                file.display(),
                dir.display()
            ),
        ));
    }
    if dir.exists() && subvol_os::mount::is_mount_point(dir).unwrap_or(false) {
        return Err(Error::new(
            ErrorKind::Busy,
            format!("{} is already a mount point; pick another directory", dir.display()),
        ));
    }
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
    }
    let made = (|| -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| Error::io(format!("cannot create {}", file.display()), e))?;
        f.set_len(size).map_err(|e| Error::io(format!("cannot size {}", file.display()), e))?;
        drop(f);
        subvol_os::cmd::run(
            "mkfs.xfs",
            "xfsprogs",
            [
                std::ffi::OsStr::new("-q"),
                "-m".as_ref(),
                "reflink=1".as_ref(),
                "-s".as_ref(),
                "size=4096".as_ref(),
                file.as_os_str(),
            ],
        )
        .map_err(|e| Error::os("cannot make the pool's XFS", e))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        attach_and_mount(&file, dir)
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&file);
        return Err(e);
    }
    Ok(file)
}

fn attach_and_mount(file: &Path, dir: &Path) -> Result<()> {
    let dev = loopdev::loop_configure(file, LoopOptions::default())
        .map_err(|e| Error::os("cannot attach the backing image", e))?;
    subvol_os::mount::mount(&dev.path, dir, "xfs", &Default::default())
        .map_err(|e| Error::os(format!("cannot mount the backing image at {}", dir.display()), e))?;
    Ok(())
}

/// Undoes `create_and_mount` after a later step of `pool init` failed.
pub fn undo_create(dir: &Path, file: &Path) {
    let _ = subvol_os::mount::umount(dir);
    let _ = std::fs::remove_file(file);
}

/// Mounts an existing backing image at `dir`; `false` if it already was.
pub fn mount_existing(dir: &Path, backing_file: Option<&Path>) -> Result<bool> {
    let file = match backing_file {
        Some(f) => crate::pool::absolute(f)?,
        None => default_backing_file(dir),
    };
    let file = std::fs::canonicalize(&file).map_err(|_| {
        Error::new(
            ErrorKind::NotFound,
            format!("backing image {} not found; give its path with --backing-file", file.display()),
        )
    })?;
    let kernel = KernelView::read()?;
    for a in kernel.attachments(&file) {
        if a.mount_points.iter().any(|m| m == dir) {
            return Ok(false);
        }
        if let Some(m) = a.mount_points.first() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("backing image {} is already mounted at {}", file.display(), m.display()),
            ));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    attach_and_mount(&file, dir)?;
    Ok(true)
}
