//! Pools: opening, initialising and reporting on a pool directory.

use crate::error::{require_root, Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::layout::{self, Layout};
use crate::lock::PoolLock;
use crate::{backing, probe, recovery, SubvolumeInfo};
use chrono::Utc;
use serde::Serialize;
use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use subvol_core::format_size;
use subvol_core::text::escape;
use subvol_core::{HostFs, PoolMeta};

/// Options of `pool init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Make the pool self-contained on an XFS in a sparse file of this size.
    pub backing_image_bytes: Option<u64>,
    /// Where that sparse file goes (default: `DIR.img` beside DIR).
    pub backing_file: Option<PathBuf>,
    /// Default parent of mount points (default: `DIR/mnt`).
    pub mount_base: Option<PathBuf>,
    /// Accept a non-empty directory.
    pub force: bool,
}

/// What `pool status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub path: PathBuf,
    pub uuid: String,
    pub format: u32,
    pub created: String,
    pub host_fs: String,
    pub reflink: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_image: Option<PathBuf>,
    pub mount_base: PathBuf,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    /// Host blocks held by all images of the pool.
    pub allocated_bytes: u64,
    /// Sum of the images' virtual sizes.
    pub virtual_bytes: u64,
    /// virtual_bytes / capacity_bytes.
    pub overcommit_ratio: f64,
    pub subvolumes: usize,
    pub snapshots: usize,
    pub mounted: usize,
    /// What guaranteed subvolumes may still need, in total.
    pub outstanding_guarantees_bytes: u64,
    /// Kept back by admission control and the guard.
    pub margin_bytes: u64,
    /// What can still be guaranteed.
    pub available_bytes: u64,
    /// Subvolumes frozen by the guard, and why.
    pub frozen: Vec<crate::GuardFreeze>,
    /// The pid of the `subvol guard` watching this pool, if one runs.
    pub guard_pid: Option<u32>,
    /// The dirty page cache cap every mounted thin subvolume gets.
    pub thin_writeback_cap_bytes: u64,
    /// Mounted thin subvolumes running without that cap.
    pub uncapped_thin: Vec<String>,
    /// Images deleted while attached, still holding host space (see
    /// `pool check --repair`).
    pub orphans: Vec<crate::Orphan>,
    pub problems: Vec<String>,
    /// The last scrub, damaged snapshots, manifests.
    pub scrub: crate::ScrubStatus,
    /// What the user should act on: no guard on an overcommitted pool, free
    /// space under the margin, uncapped thin subvolumes, filesystems the
    /// kernel shut down, snapshots a scrub found damaged.
    pub warnings: Vec<String>,
}

/// An open pool.
pub struct Pool {
    pub(crate) layout: Layout,
    pub(crate) meta: PoolMeta,
    lock_timeout: Duration,
    on_lock_wait: Box<dyn Fn() + Send + Sync>,
    /// How manifests of new snapshots are built off the command's path
    /// (`None`: right away, in the snapshot command).
    pub(crate) background: Option<crate::Background>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("root", &self.layout.root).finish()
    }
}

/// Turns a possibly relative, possibly missing path into an absolute one
/// without requiring it to exist.
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    std::path::absolute(path).map_err(|e| Error::io(format!("bad path {}", path.display()), e))
}

impl Pool {
    /// Opens the pool at `dir`, refusing with a clear error if there is none.
    pub fn open(dir: &Path) -> Result<Pool> {
        let root = std::fs::canonicalize(dir).map_err(|_| {
            Error::new(
                ErrorKind::NotInitialised,
                format!(
                    "no pool at {}: the directory does not exist; run `subvol pool init {}`",
                    dir.display(),
                    dir.display()
                ),
            )
        })?;
        let layout = Layout::new(root.clone());
        let bytes = match std::fs::read(layout.pool_meta()) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let backing = backing::default_backing_file(&root);
                let hint = if backing.exists() {
                    format!(
                        "its backing image {} is not mounted; run `subvol pool mount {}`",
                        backing.display(),
                        root.display()
                    )
                } else {
                    format!("run `subvol pool init {}` first", root.display())
                };
                return Err(Error::new(
                    ErrorKind::NotInitialised,
                    format!("{} is not a subvol pool; {hint}", root.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(Error::new(
                    ErrorKind::PermissionDenied,
                    format!("cannot read pool {}: permission denied; run as root", root.display()),
                ))
            }
            Err(e) => return Err(Error::io(format!("cannot read pool metadata {}", layout.pool_meta().display()), e)),
        };
        let meta = PoolMeta::decode(&bytes).map_err(|e| {
            Error::new(ErrorKind::Corrupt, format!("pool metadata {} is unreadable: {e}", layout.pool_meta().display()))
        })?;
        // Image and record paths are built from validated names under these
        // directories; a symlink planted in their place would lead outside.
        for d in [
            layout.meta_dir(),
            layout.tmp_dir(),
            layout.subvolumes_dir(),
            layout.snapshots_dir(),
            layout.receive_dir(),
            layout.sync_dir(),
        ] {
            if let Ok(m) = std::fs::symlink_metadata(&d) {
                if !m.is_dir() {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "{} is not a directory (a planted symlink?); remove it and run `subvol pool check`",
                            d.display()
                        ),
                    ));
                }
            }
        }
        let pool = Pool {
            layout,
            meta,
            lock_timeout: Duration::from_secs(300),
            on_lock_wait: Box::new(|| {}),
            background: None,
        };
        pool.recover_if_idle();
        Ok(pool)
    }

    /// Read-only commands do not take the lock, but a filesystem left frozen
    /// by a dead snapshot (or any other debris of a crash) must not wait for
    /// the next mutating command: if there is something to recover and the
    /// lock is free, recover now.
    fn recover_if_idle(&self) {
        if recovery::needed(&self.layout) {
            if let Ok(Some(_lock)) = PoolLock::try_acquire(&self.layout.lock_file()) {
                let _ = recovery::recover(&self.layout);
            }
        }
    }

    /// Creates a pool at `dir` (and, with a backing image, the XFS it lives on).
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<Pool> {
        let dir = absolute(dir)?;
        let backing_image = match opts.backing_image_bytes {
            Some(size) => Some(backing::create_and_mount(&dir, opts.backing_file.as_deref(), size)?),
            None => None,
        };
        let result = Self::init_in(&dir, opts, backing_image.clone());
        if result.is_err() {
            if let Some(img) = &backing_image {
                backing::undo_create(&dir, img);
            }
        }
        result
    }

    fn init_in(dir: &Path, opts: &InitOptions, backing_image: Option<PathBuf>) -> Result<Pool> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        let root = std::fs::canonicalize(dir).map_err(|e| Error::io(format!("cannot open {}", dir.display()), e))?;
        if !root.is_dir() {
            return Err(Error::invalid(format!(
                "{} is not a directory; give a directory for the pool",
                root.display()
            )));
        }
        let layout = Layout::new(root.clone());
        if layout.pool_meta().exists() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{} is already a subvol pool; use it, or pick another directory", root.display()),
            ));
        }
        let stats = subvol_os::statfs::statfs(&root).map_err(|e| Error::os("cannot inspect the pool directory", e))?;
        if !stats.fs.is_supported() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{} is on {}, which cannot hold subvolume images; use a directory on xfs, btrfs or ext4, or add --backing-image SIZE",
                    root.display(),
                    stats.fs
                ),
            ));
        }
        if !opts.force {
            let others: Vec<String> = std::fs::read_dir(&root)
                .map_err(|e| Error::io(format!("cannot read {}", root.display()), e))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !matches!(
                        n.as_str(),
                        "lost+found"
                            | layout::META_DIR
                            | layout::SUBVOLUMES_DIR
                            | layout::SNAPSHOTS_DIR
                            | layout::MOUNT_DIR
                    )
                })
                .collect();
            if !others.is_empty() {
                return Err(Error::invalid(format!(
                    "{} is not empty (holds {}); use an empty directory or --force",
                    root.display(),
                    others.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("cannot set permissions of {}", root.display()), e))?;
        for d in [
            layout.meta_dir(),
            layout.tmp_dir(),
            layout.frozen_dir(),
            layout.intent_dir(),
            layout.subvolumes_dir(),
            layout.snapshots_dir(),
        ] {
            match std::fs::DirBuilder::new().mode(0o700).create(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(format!("cannot create {}", d.display()), e)),
            }
        }
        if let Some(base) = &opts.mount_base {
            // Others must not be able to plant symlinks where mounts go.
            if let Ok(dir) = subvol_os::dirfd::DirHandle::open(&absolute(base)?) {
                crate::mountpoint::check_mount_base_owner(&dir)?;
            }
        }
        let reflink = probe::reflink_works(&layout.tmp_dir())?;
        let meta = PoolMeta {
            format: subvol_core::meta::POOL_FORMAT,
            uuid: uuid::Uuid::new_v4(),
            created: Utc::now(),
            reflink,
            backing_image,
            mount_base: opts.mount_base.as_deref().map(absolute).transpose()?,
            options: BTreeMap::new(),
        };
        // The pool exists once this record does: it is written last.
        subvol_os::fsync::fsync_dir(&layout.meta_dir()).map_err(|e| Error::os("cannot sync the pool", e))?;
        subvol_os::fsync::write_atomic(&layout.pool_meta(), &meta.encode())
            .map_err(|e| Error::os("cannot write pool metadata", e))?;
        subvol_os::fsync::fsync_dir(&root).map_err(|e| Error::os("cannot sync the pool", e))?;
        Ok(Pool {
            layout,
            meta,
            lock_timeout: Duration::from_secs(300),
            on_lock_wait: Box::new(|| {}),
            background: None,
        })
    }

    /// How long mutating commands wait for the pool lock, and what to call
    /// when they start waiting.
    pub fn set_lock_wait(&mut self, timeout: Duration, on_wait: Box<dyn Fn() + Send + Sync>) {
        self.lock_timeout = timeout;
        self.on_lock_wait = on_wait;
    }

    /// Builds the manifests of new snapshots with `start` (the CLI starts a
    /// detached copy of itself), so that `snapshot` returns as soon as the
    /// snapshot is published. Where `start` declines, they are built inline.
    pub fn set_background(&mut self, start: crate::Background) {
        self.background = Some(start);
    }

    /// Takes the pool lock and runs the cheap recovery every mutating
    /// command starts with.
    pub fn lock(&self) -> Result<PoolLock> {
        let lock = PoolLock::acquire(&self.layout.lock_file(), self.lock_timeout, &*self.on_lock_wait)?;
        recovery::recover(&self.layout)?;
        Ok(lock)
    }

    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    pub fn meta(&self) -> &PoolMeta {
        &self.meta
    }

    pub fn host_fs(&self) -> Result<HostFs> {
        Ok(subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("cannot read the host's free space", e))?.fs)
    }

    pub fn mount_base(&self) -> PathBuf {
        self.meta.mount_base.clone().unwrap_or_else(|| self.layout.default_mount_base())
    }

    /// Pool-wide figures.
    pub fn status(&self) -> Result<PoolStatus> {
        self.status_of(&self.list()?, &self.list_snapshots(None)?, &self.space()?)
    }

    /// `status` from listings and a space sweep the caller already has
    /// (metrics needs all three too, and the sweep is the costly part).
    pub(crate) fn status_of(
        &self,
        subs: &[SubvolumeInfo],
        snaps: &[SubvolumeInfo],
        space: &crate::PoolSpace,
    ) -> Result<PoolStatus> {
        let stats = subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("cannot stat the pool", e))?;
        let budget = crate::space::budget_from(space, subs, &stats);
        let allocated_bytes = subs.iter().chain(snaps.iter()).map(|s| s.allocated_bytes).sum();
        let virtual_bytes: u64 = subs.iter().map(|s| s.virtual_size_bytes).sum();
        let problems = subs.iter().filter_map(|s| s.problem.as_ref().map(|p| format!("{}: {p}", s.name))).collect();
        let uncapped_thin: Vec<String> = self.uncapped_thin(subs).into_iter().map(|(n, _)| n).collect();
        let mut warnings = Vec::new();
        if let Some(w) = self.unguarded_overcommit_warning(subs, stats.free_bytes) {
            warnings.push(w);
        }
        if stats.free_bytes < budget.margin_bytes {
            warnings.push(format!(
                "host free space {} is below the safety margin {}: free space (delete snapshots, `subvol trim --all`) before writing or snapshotting",
                format_size(stats.free_bytes),
                format_size(budget.margin_bytes)
            ));
        }
        let orphans = self.orphans()?;
        warnings.extend(crate::orphan_warning(&orphans));
        for n in &uncapped_thin {
            warnings.push(format!(
                "{n} is mounted without its dirty page cache cap; `subvol pool check --repair` (or a running guard) restores it"
            ));
        }
        warnings.extend(subs.iter().chain(snaps).filter_map(SubvolumeInfo::failure_advice));
        let scrub = self.scrub_status(snaps);
        if !scrub.damaged.is_empty() {
            let names: Vec<&str> = scrub.damaged.iter().map(|s| s.name.as_str()).collect();
            warnings.push(format!(
                "scrub found damage in {}: {}",
                names.join(", "),
                crate::scrub_report::damage_advice()
            ));
        }
        Ok(PoolStatus {
            path: self.root().to_path_buf(),
            uuid: self.meta.uuid.to_string(),
            format: self.meta.format,
            created: self.meta.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            host_fs: stats.fs.name(),
            reflink: self.meta.reflink,
            backing_image: self.meta.backing_image.clone(),
            mount_base: self.mount_base(),
            capacity_bytes: stats.total_bytes,
            free_bytes: stats.avail_bytes,
            used_bytes: stats.total_bytes.saturating_sub(stats.free_bytes),
            allocated_bytes,
            virtual_bytes,
            overcommit_ratio: if stats.total_bytes == 0 {
                0.0
            } else {
                virtual_bytes as f64 / stats.total_bytes as f64
            },
            subvolumes: subs.len(),
            snapshots: snaps.len(),
            mounted: subs.iter().filter(|s| s.mount_point.is_some()).count(),
            outstanding_guarantees_bytes: space.outstanding_bytes,
            margin_bytes: budget.margin_bytes,
            available_bytes: budget.available(),
            frozen: self.guard_frozen(),
            guard_pid: self.guard_watching(),
            thin_writeback_cap_bytes: crate::space::DIRTY_LIMIT_BYTES,
            uncapped_thin,
            orphans,
            problems,
            scrub,
            warnings,
        })
    }

    /// `pool mount DIR`: mounts a backing-image pool (e.g. at boot).
    pub fn mount_backing(dir: &Path, backing_file: Option<&Path>) -> Result<(Pool, bool)> {
        require_root("pool mount")?;
        let dir = absolute(dir)?;
        let newly = backing::mount_existing(&dir, backing_file)?;
        match Pool::open(&dir) {
            Ok(p) => Ok((p, newly)),
            Err(e) => {
                if newly {
                    let _ = subvol_os::mount::umount(&dir);
                }
                Err(Error::new(
                    e.kind,
                    format!("the backing image mounted at {} holds no usable pool: {e}", dir.display()),
                ))
            }
        }
    }

    /// `pool umount DIR`: unmounts a backing-image pool; refuses while
    /// subvolumes are mounted (or images deleted while attached are still
    /// held) unless `force` unmounts (and releases) them first.
    pub fn umount_backing(self, force: bool) -> Result<()> {
        require_root("pool umount")?;
        let _lock = self.lock()?;
        self.stop_readers(force)?;
        let kernel = KernelView::read()?;
        let mut all = self.list()?;
        all.extend(self.list_snapshots(None)?);
        let busy: Vec<_> = all.into_iter().filter(|s| !s.attachments.is_empty()).collect();
        let orphans = self.orphans_in(&kernel);
        if !busy.is_empty() || !orphans.is_empty() {
            if !force {
                let mut names: Vec<String> = busy.iter().map(|s| s.name.clone()).collect();
                names.extend(orphans.iter().map(|o| format!("{} (deleted, still attached)", escape(&o.name))));
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("still mounted: {}; umount them or use --force", names.join(", ")),
                ));
            }
            for s in &busy {
                self.umount_image_locked(&s.name, &s.image)?;
            }
            for o in &orphans {
                self.release_orphan_locked(o, &kernel)?;
            }
        }
        if kernel.mount_at(self.root()).is_none() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("{} is not a mount point; nothing to unmount", self.root().display()),
            ));
        }
        drop(_lock);
        subvol_os::mount::umount(self.root())
            .map_err(|e| Error::os(format!("cannot unmount pool {}", self.root().display()), e))?;
        // As for a subvolume: done when the loop device is gone too.
        if let Some(image) = &self.meta.backing_image {
            crate::mounting::wait_detached(image, std::time::Duration::from_secs(10));
        }
        Ok(())
    }
}
