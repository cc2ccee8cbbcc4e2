//! Mounting: attach an image to a loop device (direct I/O, autoclear) and
//! mount its filesystem; unmount it again. Autoclear ties the loop device's
//! life to the mount, so an unmount (or a crash before the mount) never leaks
//! a loop device.

use crate::error::{require_root, Error, ErrorKind, Result};
use crate::frozen_state::{failure_advice, failure_cause, recovery_steps};
use crate::kernel::KernelView;
use crate::orphans::Release;
use crate::pool::Pool;
use crate::subvolume::{open_image, read_meta};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subvol_core::mountinfo::FsFailure;
use subvol_core::mountopts::parse_mount_options;
use subvol_core::{FsKind, ObjectName};
use subvol_os::dirfd::DirHandle;
use subvol_os::loopdev;

/// Options of `mount`.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Where to mount (default: `<mount base>/NAME`).
    pub path: Option<PathBuf>,
    pub read_only: bool,
    /// Filesystem options passed to mount(2) as data (`-o`).
    pub options: Option<String>,
}

/// What `mount` did.
#[derive(Debug, Clone, Serialize)]
pub struct MountOutcome {
    pub name: String,
    pub mount_point: PathBuf,
    pub loop_device: PathBuf,
    pub already_mounted: bool,
    pub direct_io: bool,
    /// The loop device's dirty page cache cap (thin subvolumes).
    pub writeback_cap_bytes: Option<u64>,
    /// Things the user should know (e.g. no guard watches an overcommitted
    /// pool).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What `umount` did.
#[derive(Debug, Clone, Serialize)]
pub struct UmountReport {
    pub name: String,
    /// Mount points of NAME unmounted.
    pub unmounted: Vec<PathBuf>,
    /// Earlier images of NAME, deleted while attached, that `--force`
    /// released.
    pub released: Vec<Release>,
    /// Set when the kernel had shut the filesystem down (or made it
    /// read-only after an error): unmounting was the first step back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_failure: Option<FsFailure>,
    /// The rest of the way back, when there was a failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Pool {
    /// Mounts a subvolume, or a snapshot (always read-only). Mounting a
    /// mounted object reports where it is.
    pub fn mount(&self, name: &str, opts: &MountOptions) -> Result<MountOutcome> {
        let obj = ObjectName::parse(name)?;
        let name = obj.to_string();
        require_root("mount")?;
        let _lock = self.lock()?;
        let kernel = KernelView::read()?;
        if let Some(o) = self.orphans_named(&kernel, &name).first() {
            return Err(o.busy_error());
        }
        let image = self.object_image(&obj)?;
        for a in kernel.attachments(&image) {
            if let Some(mp) = a.mount_points.first() {
                return Ok(MountOutcome {
                    warnings: a.fs_failure.map(|f| failure_advice(&name, f)).into_iter().collect(),
                    name,
                    mount_point: mp.clone(),
                    loop_device: a.loop_device,
                    already_mounted: true,
                    direct_io: a.direct_io,
                    writeback_cap_bytes: a.writeback_cap_bytes,
                });
            }
        }
        let file = open_image(&image, false).map_err(|e| Error::io(format!("cannot open {}", image.display()), e))?;
        let meta = read_meta(&file).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{name}: {e}")))?;
        let encrypted = crate::encryption::is_encrypted_image(&file, meta.fs);
        drop(file);
        if meta.fs == FsKind::Raw {
            return Err(Error::invalid(format!(
                "{name} is a raw image without a filesystem; give its image {} to a VM instead of mounting it",
                image.display()
            )));
        }
        // Never through a symlink the pool owns: the directory is checked
        // and held by handle, and mounted by that handle (mountpoint.rs).
        let mount_point = self.mount_point_for(&name, opts.path.as_deref())?;
        let target = mount_point.path.clone();
        if let Some(m) = kernel.mount_at(&target) {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{} is already a mount point (of {}); choose another path", target.display(), m.source),
            ));
        }
        let mut text = opts.options.clone().unwrap_or_default();
        let snapshot = obj.is_snapshot();
        if snapshot {
            // A snapshot is immutable and was taken of a frozen (clean)
            // filesystem: never replay a log into it, and let it coexist with
            // its origin, which has the same filesystem UUID.
            let extra = match meta.fs {
                FsKind::Xfs => "ro,norecovery,nouuid",
                _ => "ro,noload",
            };
            text = if text.is_empty() { extra.to_string() } else { format!("{text},{extra}") };
        }
        let mopts = parse_mount_options(&text, opts.read_only || snapshot);
        let (dev, (major, minor)) = match self.attach_image(&image, mopts.read_only(), crate::dirty_cap::is_thin(&meta))
        {
            Ok(d) => d,
            Err(e) => {
                mount_point.remove_if_created();
                return Err(e);
            }
        };
        // An encrypted subvolume shows its encrypted directory only (see
        // encryption.rs).
        let mounted = if encrypted {
            let dir = subvol_core::encryption::DATA_DIR;
            subvol_os::fsmount::mount_subdir_on(&dev.path, &mount_point.dir, meta.fs.as_str(), &mopts, dir)
        } else {
            subvol_os::dirfd::mount_on(&dev.path, &mount_point.dir, meta.fs.as_str(), &mopts)
        };
        if let Err(e) = mounted {
            mount_point.remove_if_created();
            return Err(Error::os(format!("cannot mount {name} at {}", target.display()), e));
        }
        drop(mount_point);
        let direct_io = loopdev::list().into_iter().find(|l| l.number == dev.number).is_some_and(|l| l.direct_io);
        let writeback_cap_bytes = loopdev::bdi_strict_max_bytes(major, minor);
        // Our handle goes; the mount now holds the device, and autoclear
        // detaches it when the mount goes.
        let loop_device = dev.path.clone();
        drop(dev);
        let mut warnings = Vec::new();
        if writeback_cap_bytes.is_some() {
            let free = subvol_os::statfs::statfs(self.root()).map(|s| s.free_bytes).unwrap_or(u64::MAX);
            if let Some(w) = self.unguarded_overcommit_warning(&self.list()?, free) {
                warnings.push(w);
            }
        }
        Ok(MountOutcome {
            name,
            mount_point: target,
            loop_device,
            already_mounted: false,
            direct_io,
            writeback_cap_bytes,
            warnings,
        })
    }

    /// Unmounts a subvolume or snapshot (every mount of it) and waits for
    /// its loop device to detach. A filesystem the kernel shut down is
    /// unmounted too (that is the first step back), and the report says
    /// what happened to it and what to do next. While an earlier image of
    /// the same name, deleted while attached, is still held (an orphan), it
    /// refuses with one error naming the orphan, unless `force`, which
    /// releases the orphan too (lazily where its files are open), whether or
    /// not NAME exists again. NAME's own mounts are never unmounted lazily:
    /// a busy live subvolume is refused as always.
    pub fn umount(&self, name: &str, force: bool) -> Result<UmountReport> {
        let obj = ObjectName::parse(name)?;
        let name = obj.to_string();
        require_root("umount")?;
        let _lock = self.lock()?;
        let kernel = KernelView::read()?;
        let orphans = self.orphans_named(&kernel, &name);
        if let (Some(o), false) = (orphans.first(), force) {
            return Err(o.busy_error());
        }
        let (unmounted, fs_failure) = match self.object_image(&obj) {
            Ok(image) => {
                let fs_failure = crate::kernel::fs_failure(&kernel.attachments(&image));
                (self.umount_image_locked(&name, &image)?, fs_failure)
            }
            Err(e) if e.kind == ErrorKind::NotFound && !orphans.is_empty() => (Vec::new(), None),
            Err(e) => return Err(e),
        };
        let released = orphans.iter().map(|o| self.release_orphan_locked(o, &kernel)).collect::<Result<Vec<_>>>()?;
        if unmounted.is_empty() && released.is_empty() {
            return Err(Error::invalid(format!("{name} is not mounted")));
        }
        let warnings = fs_failure
            .map(|f| format!("{}; {}", failure_cause(&name, f), recovery_steps(&name, false)))
            .into_iter()
            .collect();
        Ok(UmountReport { name, unmounted, released, fs_failure, warnings })
    }

    /// Unmounts a subvolume for callers that already hold the pool lock.
    pub(crate) fn umount_locked(&self, name: &str) -> Result<Vec<PathBuf>> {
        let image = self.existing_image(name)?;
        self.umount_image_locked(name, &image)
    }

    /// Unmounts every mount of `image` and detaches its loop devices.
    pub(crate) fn umount_image_locked(&self, name: &str, image: &Path) -> Result<Vec<PathBuf>> {
        let kernel = KernelView::read()?;
        let mut done = Vec::new();
        let attachments = kernel.attachments(image);
        if attachments.iter().any(|a| !a.mount_points.is_empty()) {
            self.refuse_planted_mount_point(name)?;
        }
        for a in &attachments {
            for m in kernel.mounts_of(a.major, a.minor).into_iter().rev() {
                let mp = &m.mount_point;
                // The kernel's table says where it is mounted; the path must
                // still lead there without a symlink the pool owns.
                self.verify_mount_point(name, m)?;
                // A frozen filesystem would be unmounted without its final log
                // write and linger in the kernel: thaw it first (the guard or a
                // crashed snapshot may have frozen it), refreeze if the
                // unmount fails.
                let was_frozen = subvol_os::freeze::fithaw(mp).is_ok();
                let unmounted = subvol_os::mount::umount_nofollow(mp);
                if unmounted.is_err() && was_frozen {
                    let _ = subvol_os::freeze::fifreeze(mp);
                }
                unmounted.map_err(|e| {
                    let base = Error::os(format!("cannot unmount {name} from {}", mp.display()), e);
                    if base.kind == ErrorKind::Busy {
                        Error::new(
                            ErrorKind::Busy,
                            format!(
                                "{name} is busy at {}: files are open there; close them (see `fuser -vm {}`) and retry",
                                mp.display(),
                                mp.display()
                            ),
                        )
                    } else {
                        base
                    }
                })?;
                done.push(mp.clone());
                let _ = std::fs::remove_file(self.layout.guard_frozen_marker(name));
                self.remove_mount_point_if_default(mp);
            }
            if a.mount_points.is_empty() {
                // Attached without a mount (e.g. left by a crash of an older
                // tool): detach it.
                if let Ok(dev) = loopdev::open(a.loop_number) {
                    let _ = dev.detach();
                }
            }
        }
        wait_detached(image, Duration::from_secs(5));
        for a in &attachments {
            crate::dirty_cap::release(a.major, a.minor);
        }
        Ok(done)
    }

    /// Runs `f` with the image mounted on a private temporary mount point,
    /// unmounting on every path.
    pub(crate) fn with_temp_mount(
        &self,
        name: &str,
        image: &Path,
        fs: FsKind,
        f: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        self.temp_mount(name, image, fs, false, f)
    }

    /// `with_temp_mount` of a snapshot: attached and mounted read-only,
    /// without replaying a log, beside its origin (same filesystem UUID).
    pub(crate) fn with_snapshot_mount(
        &self,
        name: &str,
        image: &Path,
        fs: FsKind,
        f: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        self.temp_mount(name, image, fs, true, f)
    }

    fn temp_mount(
        &self,
        name: &str,
        image: &Path,
        fs: FsKind,
        read_only: bool,
        f: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        require_root("a temporary mount")?;
        // A fresh directory made here, held by handle and mounted by it:
        // nothing planted in .subvol/tmp can redirect the mount.
        let tmp = DirHandle::open_nofollow(&self.layout.tmp_dir())
            .map_err(|e| Error::os("cannot open the pool's tmp dir (a planted symlink?)", e))?;
        let leaf = format!("mnt.{name}.{}", std::process::id());
        let dir = tmp.path().join(&leaf);
        if !tmp.mkdir(&leaf, 0o700).map_err(|e| Error::os(format!("cannot create {}", dir.display()), e))? {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{} already exists (debris or planted); run `subvol pool check --repair`", dir.display()),
            ));
        }
        let handle = tmp.child(&leaf).map_err(|e| Error::os(format!("cannot open {}", dir.display()), e))?;
        let mut guard = TempMount { dir: dir.clone(), parent: tmp, leaf, mounted: false };
        let thin = !read_only && crate::dirty_cap::is_thin_image(image);
        let (dev, (major, minor)) = self.attach_image(image, read_only, thin)?;
        let data = match (fs, read_only) {
            (FsKind::Xfs, true) => "ro,norecovery,nouuid",
            (_, true) => "ro,noload",
            (FsKind::Xfs, false) => "nouuid",
            _ => "",
        };
        subvol_os::dirfd::mount_on(&dev.path, &handle, fs.as_str(), &parse_mount_options(data, read_only))
            .map_err(|e| Error::os(format!("cannot mount {name}"), e))?;
        drop(handle);
        drop(dev);
        guard.mounted = true;
        let r = f(&dir);
        drop(guard);
        wait_detached(image, Duration::from_secs(5));
        crate::dirty_cap::release(major, minor);
        r
    }
}

/// A temporary mount that unmounts and removes its directory on drop.
struct TempMount {
    dir: PathBuf,
    parent: DirHandle,
    leaf: String,
    mounted: bool,
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if self.mounted && subvol_os::mount::umount_nofollow(&self.dir).is_err() {
            let _ = subvol_os::mount::umount_lazy(&self.dir);
        }
        let _ = self.parent.rmdir(&self.leaf);
    }
}

/// Autoclear detaches a loop device when its last user goes; wait until the
/// kernel shows it gone so the next command sees a settled state.
pub(crate) fn wait_detached(image: &Path, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if loopdev::find_by_backing_file(image).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
