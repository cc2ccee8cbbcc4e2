//! Snapshots: consistent, read-only, immutable reflink copies of subvolume
//! images, taken with a short frozen window.
//!
//! A snapshot of a mounted subvolume must be exactly the state of its
//! filesystem at one instant, so the filesystem is frozen (FIFREEZE) while the
//! copy is made. Cloning a fragmented image takes time proportional to its
//! extent count, so the clone is made *before* freezing; under the freeze
//! only the ranges whose host blocks changed since then are cloned again
//! (found with the extent diff), then the filesystem thaws. The order of the
//! frozen window is `snapshot_window`'s; this file gives it the real calls.

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::layout::META_XATTR;
use crate::pool::Pool;
use crate::snapshot_window::{self, Target, WindowOps};
use crate::subvolume::{open_image, read_meta, rename_noreplace};
use chrono::Utc;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;
use subvol_core::meta::Origin;
use subvol_core::{ObjectKind, ObjectName, SubvolumeMeta};
use subvol_os::freeze::FreezeGuard;
use subvol_os::signals::SignalBlock;
use subvol_os::{OsError, OsResult};

/// Progress of a long copy: `(bytes done, bytes total)`.
pub type Progress<'a> = &'a dyn Fn(u64, u64);

/// What one snapshot took.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    /// `NAME@SNAP`.
    pub name: String,
    pub guid: String,
    /// `reflink` or `copy` (hosts without reflinks).
    pub method: &'static str,
    /// Whether the subvolume was mounted and frozen for the copy.
    pub frozen: bool,
    /// How long writers were blocked, in microseconds, from the start of
    /// FIFREEZE (which first flushes the filesystem) to the end of FITHAW
    /// (0 when not frozen).
    pub frozen_us: u64,
    /// Of that, the time spent bringing the clone up to date.
    pub frozen_copy_us: u64,
    /// Wall time of the whole snapshot, in microseconds.
    pub total_us: u64,
    /// Extents of the image when the snapshot was taken.
    pub extents: usize,
    /// Bytes re-cloned (or copied) while frozen.
    pub frozen_copy_bytes: u64,
    /// `already_done` when NAME@SNAP was there, taken from NAME: a retry.
    pub outcome: crate::outcome::Outcome,
}

/// One subvolume being snapshotted.
struct Job {
    name: String,
    snap: String,
    src: File,
    meta: SubvolumeMeta,
    mount_point: Option<PathBuf>,
    /// Whether a loop device has the image (mounted or not): only then can
    /// anything write it while the snapshot is taken.
    attached: bool,
    tmp_path: PathBuf,
    tmp: File,
    tmp_map: Option<subvol_core::ExtentMap>,
    extents: usize,
    frozen_copy_bytes: u64,
}

/// The default snapshot name: the UTC time, e.g. `2026-11-25T132727Z`.
pub fn default_snapshot_name() -> String {
    Utc::now().format("%Y-%m-%dT%H%M%SZ").to_string()
}

/// Removes a temp image on drop unless it was published.
struct TmpImage(Option<PathBuf>);

impl Drop for TmpImage {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The size and modification time of an image, for a snapshot's record
/// (taken after its last write) and for `pool check` to compare against.
pub(crate) fn content_stamp(file: &File) -> Result<subvol_core::meta::ContentStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().map_err(|e| Error::io("cannot stat the image", e))?;
    Ok(subvol_core::meta::ContentStamp {
        size_bytes: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

pub(crate) fn write_meta(file: &File, meta: &SubvolumeMeta) -> Result<()> {
    subvol_os::xattr::fset(file, META_XATTR, &meta.encode()).map_err(|e| Error::os("cannot write metadata", e))
}

impl Pool {
    /// `base`, or `base.N` with the smallest N that is free for every
    /// subvolume in `names` (two snapshots within one second).
    pub(crate) fn unique_snapshot_name(&self, names: &[&str], base: &str) -> String {
        let free = |snap: &str| names.iter().all(|n| !self.layout.snapshot_image(n, snap).exists());
        if free(base) {
            return base.to_string();
        }
        (1..).map(|i| format!("{base}.{i}")).find(|s| free(s)).unwrap_or_else(|| base.to_string())
    }

    /// Snapshots one or more subvolumes at one point in time: all mounted
    /// ones are frozen together, copied, and thawed together.
    pub fn snapshot(&self, targets: &[String], tags: &[String], progress: Progress<'_>) -> Result<Vec<SnapshotReport>> {
        for t in tags {
            subvol_core::name::validate_part(t).map_err(|e| Error::invalid(format!("bad tag: {e}")))?;
        }
        let mut parsed: Vec<ObjectName> = Vec::new();
        for t in targets {
            let n = ObjectName::parse(t)?;
            if parsed.iter().any(|p| p.subvolume == n.subvolume) {
                return Err(Error::invalid(format!("{} is named twice; snapshot each subvolume once", n.subvolume)));
            }
            parsed.push(n);
        }
        if parsed.is_empty() {
            return Err(Error::invalid("no subvolume given; usage: subvol snapshot NAME[@SNAP]..."));
        }
        let _lock = self.lock()?;
        let unnamed: Vec<&str> = parsed.iter().filter(|p| p.snapshot.is_none()).map(|p| p.subvolume.as_str()).collect();
        let default = self.unique_snapshot_name(&unnamed, &default_snapshot_name());
        let wanted: Vec<(String, String)> =
            parsed.into_iter().map(|p| (p.subvolume, p.snapshot.unwrap_or_else(|| default.clone()))).collect();
        let before: Vec<Option<SnapshotReport>> =
            wanted.iter().map(|(n, s)| self.taken_before(n, s)).collect::<Result<_>>()?;
        if before.iter().all(Option::is_some) {
            return Ok(before.into_iter().flatten().collect());
        }
        if let Some((n, s)) = wanted.iter().zip(&before).find_map(|(w, b)| b.as_ref().map(|_| w)) {
            // Taking the others now would not be the same point in time.
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot {n}@{s} already exists but not all the others do; delete it to take them together, or choose another name"),
            ));
        }
        self.snapshot_locked(&wanted, tags, progress)
    }

    /// NAME@SNAP as a finished snapshot of NAME (a retried call), or
    /// `None` when it is not there; refused if it was taken from another
    /// subvolume that had this name.
    pub(crate) fn taken_before(&self, name: &str, snap: &str) -> Result<Option<SnapshotReport>> {
        let dst = self.layout.snapshot_image(name, snap);
        if std::fs::symlink_metadata(&dst).is_err() {
            return Ok(None);
        }
        let of = |p: &Path| -> Result<SubvolumeMeta> {
            let f = open_image(p, false).map_err(|e| Error::io(format!("cannot open {}", p.display()), e))?;
            read_meta(&f).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{}: {e}", p.display())))
        };
        let (snapshot, subvolume) = (of(&dst)?, of(&self.existing_image(name)?)?);
        if snapshot.origin.as_ref().map(|o| o.guid) != Some(subvolume.guid) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot {name}@{snap} already exists, taken from an earlier subvolume of that name; choose another name"),
            ));
        }
        Ok(Some(SnapshotReport {
            name: format!("{name}@{snap}"),
            guid: snapshot.guid.to_string(),
            method: if self.meta.reflink { "reflink" } else { "copy" },
            frozen: false,
            frozen_us: 0,
            frozen_copy_us: 0,
            total_us: 0,
            extents: 0,
            frozen_copy_bytes: 0,
            outcome: crate::outcome::Outcome::AlreadyDone,
        }))
    }

    /// `snapshot` for callers that hold the pool lock.
    pub(crate) fn snapshot_locked(
        &self,
        wanted: &[(String, String)],
        tags: &[String],
        progress: Progress<'_>,
    ) -> Result<Vec<SnapshotReport>> {
        let start = Instant::now();
        let kernel = KernelView::read()?;
        let reflink = self.meta.reflink;
        let mut tmps = Vec::new();
        let mut jobs = Vec::new();
        for (name, snap) in wanted {
            let src_path = self.existing_image(name)?;
            let dst = self.layout.snapshot_image(name, snap);
            if std::fs::symlink_metadata(&dst).is_ok() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("snapshot {name}@{snap} already exists; choose another name"),
                ));
            }
            let src = open_image(&src_path, false)
                .map_err(|e| Error::io(format!("cannot open {}", src_path.display()), e))?;
            let meta =
                read_meta(&src).map_err(|e| Error::new(ErrorKind::Corrupt, format!("subvolume {name:?}: {e}")))?;
            let attachments = kernel.attachments(&src_path);
            crate::frozen_state::refuse_failed_fs(name, &attachments, "snapshot")?;
            let mount_point = attachments.iter().filter(|a| !a.read_only).find_map(|a| a.mount_points.first().cloned());
            let tmp_path = self.layout.tmp_image("snapshot", name);
            let tmp = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp_path)
                .map_err(|e| Error::io(format!("cannot create {}", tmp_path.display()), e))?;
            tmps.push(TmpImage(Some(tmp_path.clone())));
            jobs.push(Job {
                name: name.clone(),
                snap: snap.clone(),
                src,
                meta,
                mount_point,
                attached: !attachments.is_empty(),
                tmp_path,
                tmp,
                tmp_map: None,
                extents: 0,
                frozen_copy_bytes: 0,
            });
        }
        // A snapshot of a guaranteed subvolume turns its exclusive blocks
        // into shared ones, which a later write must copy: that is owed.
        if jobs.iter().any(|j| crate::space::is_guaranteed(&j.meta.properties)) {
            let space = self.space()?;
            for j in jobs.iter().filter(|j| crate::space::is_guaranteed(&j.meta.properties)) {
                let path = self.layout.subvolume_image(&j.name);
                let extra = space.images.get(&path).map(|s| s.exclusive_bytes).unwrap_or(0);
                self.admit(&format!("snapshot of guaranteed {}", j.name), extra)?;
            }
        }
        for j in jobs.iter().filter(|j| j.mount_point.is_some()) {
            self.refuse_guard_frozen(&j.name, "snapshot")?;
        }
        let mounted = jobs.iter().filter(|j| j.mount_point.is_some()).count() as u64;
        self.refuse_without_flush_room("snapshot now", mounted)?;
        // Phase 1, writers running: clone the whole image and map the clone
        // (an image no loop device has has no writers: its clone is final).
        if reflink {
            for j in &mut jobs {
                subvol_os::reflink::ficlone(&j.tmp, &j.src)
                    .map_err(|e| Error::os(format!("cannot clone {}", j.name), e))?;
                if j.attached {
                    j.tmp_map = Some(
                        subvol_os::fiemap::fiemap(&j.tmp, false).map_err(|e| Error::os("cannot map the clone", e))?,
                    );
                }
            }
        }
        subvol_os::crash::point("snapshot-after-preclone");
        // Phase 2, frozen: bring the clones up to the frozen state.
        let targets: Vec<Target> =
            jobs.iter().map(|j| Target { name: j.name.clone(), mount_point: j.mount_point.clone() }).collect();
        let times = snapshot_window::run(
            &mut RealWindow { pool: self, jobs: &mut jobs, reflink, progress, signals: None, frozen: Vec::new() },
            &targets,
        )?;
        // Phase 3, thawed: metadata, publish, protect. A snapshot is
        // published before it can be made immutable (an immutable file cannot
        // be renamed): the record lets recovery protect it if we die between.
        crate::recovery::mark_unprotected(&self.layout)?;
        let mut reports = Vec::new();
        for (j, tmp_guard) in jobs.iter().zip(tmps.iter_mut()) {
            let mut meta = SubvolumeMeta::new_subvolume(j.meta.fs, Utc::now());
            meta.kind = ObjectKind::Snapshot;
            meta.origin = Some(Origin { name: j.name.clone(), guid: j.meta.guid });
            meta.tags = tags.to_vec();
            meta.content = Some(content_stamp(&j.tmp)?);
            write_meta(&j.tmp, &meta)?;
            j.tmp.sync_all().map_err(|e| Error::io("cannot sync the snapshot", e))?;
            let dir = self.layout.snapshot_dir(&j.name);
            match std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir) {
                Ok(()) => {}
                Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
            }
            let dst = self.layout.snapshot_image(&j.name, &j.snap);
            subvol_os::crash::point("snapshot-before-publish");
            rename_noreplace(&j.tmp_path, &dst)
                .map_err(|e| Error::os(format!("cannot publish {}@{}", j.name, j.snap), e))?;
            tmp_guard.0 = None;
            subvol_os::crash::point("snapshot-before-protect");
            subvol_os::fsync::fsync_dir(&dir).map_err(|e| Error::os("cannot make the change durable", e))?;
            subvol_os::flags::set_immutable(&j.tmp, true)
                .map_err(|e| Error::os("cannot make the snapshot immutable", e))?;
            reports.push(SnapshotReport {
                name: format!("{}@{}", j.name, j.snap),
                guid: meta.guid.to_string(),
                method: if reflink { "reflink" } else { "copy" },
                frozen: j.mount_point.is_some(),
                frozen_us: times.frozen_us,
                frozen_copy_us: times.copy_us,
                total_us: start.elapsed().as_micros() as u64,
                extents: j.extents,
                frozen_copy_bytes: j.frozen_copy_bytes,
                outcome: crate::outcome::Outcome::Done,
            });
        }
        crate::recovery::clear_unprotected(&self.layout);
        self.manifests_after_snapshot(&reports);
        Ok(reports)
    }
}

/// Re-clones into the pre-made clone what changed since it was made.
/// An image no loop device has cannot have changed (the pool lock keeps
/// any attach out): its two O(extents) maps are skipped, and its extent
/// count comes from the inode where the host keeps one.
fn sync_clone(j: &mut Job) -> Result<()> {
    if !j.attached {
        j.extents = match subvol_os::hints::extent_count(&j.src) {
            Ok(n) if n > 0 => n as usize,
            _ => subvol_os::fiemap::fiemap(&j.src, false).map(|m| m.len()).unwrap_or(0),
        };
        return Ok(());
    }
    let empty = subvol_core::ExtentMap::default();
    let stats = crate::delta::update_clone(&j.tmp, j.tmp_map.as_ref().unwrap_or(&empty), &j.src)
        .map_err(|e| Error::new(e.kind, format!("{}: {}", j.name, e.message)))?;
    j.extents = stats.source_extents;
    j.frozen_copy_bytes = stats.recloned_bytes;
    Ok(())
}

/// Copies the image's data ranges (hosts without reflinks).
fn sparse_copy(j: &mut Job, progress: Progress<'_>) -> Result<()> {
    let size = j.src.metadata().map_err(|e| Error::io(format!("cannot stat {}", j.name), e))?.len();
    j.tmp.set_len(size).map_err(|e| Error::io("cannot size the snapshot", e))?;
    let ranges = subvol_os::alloc::data_ranges(&j.src, size).map_err(|e| Error::os("cannot scan the image", e))?;
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mut done = 0;
    j.extents = ranges.len();
    for (off, len) in ranges {
        subvol_os::copy::copy_range(&j.src, &j.tmp, off, len, |n| {
            done += n;
            progress(done, total);
        })
        .map_err(|e| Error::os(format!("cannot copy {}", j.name), e))?;
    }
    j.frozen_copy_bytes = total;
    Ok(())
}

/// The window's steps on the real system (`snapshot_window` orders them).
struct RealWindow<'a, 'p> {
    pool: &'a Pool,
    jobs: &'a mut [Job],
    reflink: bool,
    progress: Progress<'p>,
    signals: Option<SignalBlock>,
    /// Each frozen filesystem with the handle it was frozen through: the
    /// thaw reaches the same filesystem whatever happens to the path, and
    /// one left here (never, while the window's order holds) thaws on drop.
    frozen: Vec<(PathBuf, FreezeGuard)>,
}

impl RealWindow<'_, '_> {
    fn marker_path(&self, name: &str) -> PathBuf {
        self.pool.layout.snapshot_frozen_marker(name)
    }
}

impl WindowOps for RealWindow<'_, '_> {
    fn block_signals(&mut self) -> OsResult<()> {
        self.signals = Some(SignalBlock::new()?);
        Ok(())
    }

    fn unblock_signals(&mut self) {
        self.signals = None;
    }

    fn write_marker(&mut self, name: &str, mount_point: &Path) -> Result<()> {
        let path = self.marker_path(name);
        std::fs::create_dir_all(self.pool.layout.frozen_dir())
            .map_err(|e| Error::io("cannot create the frozen-marker dir", e))?;
        std::fs::write(&path, mount_point.as_os_str().as_encoded_bytes())
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))
    }

    fn remove_marker(&mut self, name: &str) {
        let _ = std::fs::remove_file(self.marker_path(name));
    }

    fn freeze(&mut self, mount_point: &Path) -> OsResult<()> {
        self.frozen.push((mount_point.to_path_buf(), FreezeGuard::freeze(mount_point)?));
        Ok(())
    }

    fn thaw(&mut self, mount_point: &Path) -> OsResult<()> {
        let Some(i) = self.frozen.iter().position(|(p, _)| p == mount_point) else {
            return Err(OsError::Unexpected(format!("{} was not frozen by this snapshot", mount_point.display())));
        };
        self.frozen.remove(i).1.thaw()
    }

    fn update_clone(&mut self, index: usize) -> Result<()> {
        let j = &mut self.jobs[index];
        if self.reflink {
            sync_clone(j)
        } else {
            sparse_copy(j, self.progress)
        }
    }
}
