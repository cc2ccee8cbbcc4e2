//! `pool destroy`: the end of a pool, so nobody has to `rm -rf` one by hand
//! (immutable snapshots, mounted subvolumes and a backing XFS make that
//! fail halfway). Every step can be repeated: a destroy killed at any point
//! is finished by running it again.
//!
//! Order, for a pool in a plain directory: refuse (mounted, held, a guard
//! or a receive running) -> unmount (--force) -> write `.subvol/destroying`
//! -> remove `.subvol/pool.meta` (from here on the directory is no pool to
//! any other command) -> images and their directories -> `.subvol` -> the
//! directory itself, if nothing else is in it. For a backing-image pool:
//! refuse -> unmount subvolumes -> unmount the backing XFS -> remove its
//! image -> remove the directory.

use crate::error::{require_root, Error, ErrorKind, Result};
use crate::layout::{Layout, META_DIR, MOUNT_DIR, SNAPSHOTS_DIR, SUBVOLUMES_DIR};
use crate::outcome::Outcome;
use crate::pool::{absolute, Pool};
use serde::Serialize;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What `pool destroy` did.
#[derive(Debug, Clone, Serialize)]
pub struct DestroyReport {
    pub path: PathBuf,
    pub subvolumes: usize,
    pub snapshots: usize,
    /// Subvolumes and snapshots unmounted first (--force).
    pub unmounted: Vec<String>,
    /// The backing image removed, for a backing-image pool.
    pub backing_image_removed: Option<PathBuf>,
    /// Set when the directory stays because it holds files subvol did not make.
    pub directory_kept: Option<String>,
    pub outcome: Outcome,
}

impl Pool {
    /// Destroys the pool at `dir`. Refuses (exit 5) while a subvolume is
    /// mounted or a snapshot is held, unless `force`; always while a guard
    /// watches the pool or a receive runs into it.
    pub fn destroy(dir: &Path, force: bool) -> Result<DestroyReport> {
        require_root("pool destroy")?;
        let dir = absolute(dir)?;
        let mut report = DestroyReport {
            path: dir.clone(),
            subvolumes: 0,
            snapshots: 0,
            unmounted: Vec::new(),
            backing_image_removed: None,
            directory_kept: None,
            outcome: Outcome::Done,
        };
        if std::fs::symlink_metadata(&dir).is_err() {
            report.outcome = Outcome::AlreadyDone;
            return Ok(report);
        }
        let layout = Layout::new(dir.clone());
        let pool = match Pool::open(&dir) {
            Ok(p) => p,
            // A half-destroyed plain pool: finish it.
            Err(e) if e.kind == ErrorKind::NotInitialised && layout.destroying_marker().exists() => {
                report.directory_kept = remove_pool_files(&layout)?;
                return Ok(report);
            }
            // An unmounted backing-image pool is mounted, then checked like any other.
            Err(e) if e.kind == ErrorKind::NotInitialised && crate::backing::default_backing_file(&dir).exists() => {
                Pool::mount_backing(&dir, None)?.0
            }
            Err(e) => return Err(e),
        };
        pool.destroy_open(force, report)
    }

    fn destroy_open(self, force: bool, mut report: DestroyReport) -> Result<DestroyReport> {
        let lock = self.lock()?;
        if let Some(pid) = self.guard_watching() {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "a guard (pid {pid}) watches this pool; stop it first (systemctl stop subvol-guard, or kill {pid})"
                ),
            ));
        }
        if let Some(name) = crate::recovery::running_receive(&self.layout) {
            return Err(Error::new(ErrorKind::Busy, format!("a receive into {name} is running; stop it first")));
        }
        self.stop_readers(force)?;
        let subvolumes = self.list()?;
        let snapshots = self.list_snapshots(None)?;
        report.subvolumes = subvolumes.len();
        report.snapshots = snapshots.len();
        let all: Vec<&crate::SubvolumeInfo> = subvolumes.iter().chain(&snapshots).collect();
        if !force {
            let mounted: Vec<&str> =
                all.iter().filter(|s| !s.attachments.is_empty()).map(|s| s.name.as_str()).collect();
            if !mounted.is_empty() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("still mounted: {}; umount them, or destroy with --force", mounted.join(", ")),
                ));
            }
            let held: Vec<String> = snapshots
                .iter()
                .filter(|s| !s.holds.is_empty())
                .map(|s| format!("{} ({})", s.name, s.holds.join(", ")))
                .collect();
            if !held.is_empty() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("held: {}; release them, or destroy with --force", held.join(", ")),
                ));
            }
        }
        for s in all.iter().filter(|s| !s.attachments.is_empty()) {
            self.umount_image_locked(&s.name, &s.image)?;
            report.unmounted.push(s.name.clone());
        }
        for s in &subvolumes {
            self.remove_default_mount_point(&s.name);
        }
        if let Some(image) = self.meta.backing_image.clone() {
            drop(lock);
            subvol_os::mount::umount(self.root())
                .map_err(|e| Error::os(format!("cannot unmount pool {}", self.root().display()), e))?;
            // The pool's loop device goes by autoclear once the unmount
            // lets go of it, which a busy host may finish after umount
            // returns: the destroy is done when the device is gone too.
            crate::mounting::wait_detached(&image, std::time::Duration::from_secs(10));
            match std::fs::remove_file(&image) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("cannot remove {}", image.display()), e)),
            }
            report.backing_image_removed = Some(image);
            report.directory_kept = remove_dir_if_empty(self.root());
            return Ok(report);
        }
        let marker = self.layout.destroying_marker();
        std::fs::write(&marker, b"").map_err(|e| Error::io(format!("cannot write {}", marker.display()), e))?;
        subvol_os::fsync::fsync_dir(&self.layout.meta_dir())
            .map_err(|e| Error::os("cannot make the change durable", e))?;
        std::fs::remove_file(self.layout.pool_meta())
            .map_err(|e| Error::io(format!("cannot remove {}", self.layout.pool_meta().display()), e))?;
        subvol_os::fsync::fsync_dir(&self.layout.meta_dir())
            .map_err(|e| Error::os("cannot make the change durable", e))?;
        subvol_os::crash::point("destroy-record-gone");
        drop(lock);
        report.directory_kept = remove_pool_files(&self.layout)?;
        Ok(report)
    }
}

/// Removes what a pool made in its directory (images, snapshots, its
/// metadata directory, the default mount base if empty), then the directory
/// if nothing else is left. Returns why the directory stayed, if it did.
fn remove_pool_files(layout: &Layout) -> Result<Option<String>> {
    let root = &layout.root;
    for dir in [root.join(SUBVOLUMES_DIR), root.join(SNAPSHOTS_DIR)] {
        remove_tree_of_images(&dir)?;
    }
    // Mount points are directories subvol made; a mounted one stays (and
    // then so does the base), which the error says.
    let base = root.join(MOUNT_DIR);
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir(e.path());
        }
    }
    let _ = std::fs::remove_dir(&base);
    let meta = root.join(META_DIR);
    // A manifest builder a snapshot started just before may still be
    // writing in .subvol (it opened the pool before its record went): stop
    // it and try again, a few times.
    for attempt in 0.. {
        match std::fs::remove_dir_all(&meta) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && attempt < 20 => {
                let _ = crate::worker::stop(&layout.build_lock(), std::time::Duration::from_secs(5));
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(Error::io(format!("cannot remove {}", meta.display()), e)),
        }
    }
    Ok(remove_dir_if_empty(root))
}

/// Deletes `dir` and everything in it, lifting the immutable flag of
/// snapshot images first. Symlinks are removed, never followed.
fn remove_tree_of_images(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
    };
    for e in entries.flatten() {
        let path = e.path();
        let kind = e.file_type().map_err(|err| Error::io(format!("cannot stat {}", path.display()), err))?;
        if kind.is_dir() {
            remove_tree_of_images(&path)?;
            continue;
        }
        if kind.is_file() {
            if let Ok(f) = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
                let _ = subvol_os::flags::set_immutable(&f, false);
            }
        }
        std::fs::remove_file(&path).map_err(|err| Error::io(format!("cannot remove {}", path.display()), err))?;
    }
    std::fs::remove_dir(dir).map_err(|e| Error::io(format!("cannot remove {}", dir.display()), e))
}

fn remove_dir_if_empty(dir: &Path) -> Option<String> {
    match std::fs::remove_dir(dir) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(_) => Some(format!("{} holds files subvol did not make; they were left", dir.display())),
    }
}
