//! Operations on snapshots: listing, deleting, holds, clones, rollback,
//! retention (prune, autosnap) and properties.

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::outcome::Outcome;
use crate::pool::Pool;
use crate::snapshot::{default_snapshot_name, write_meta, Progress, SnapshotReport};
use crate::subvolume::{held_error, open_existing, read_meta, rename_noreplace, where_, SubvolumeInfo};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use subvol_core::meta::Origin;
use subvol_core::retention::{self, Candidate, KeepPolicy, Verdict};
use subvol_core::{FsKind, ObjectKind, ObjectName, SubvolumeMeta};

/// The property holding a subvolume's retention policy.
pub const POLICY_PROPERTY: &str = "snapshot.policy";
/// Tag of snapshots taken by `autosnap`.
pub const AUTOSNAP_TAG: &str = "auto";

/// Result of `prune`.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    pub name: String,
    pub policy: String,
    pub dry_run: bool,
    pub verdicts: Vec<Verdict>,
    pub deleted: Vec<String>,
}

/// Result of `rollback`.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub name: String,
    pub to: String,
    /// The snapshot taken of the state rolled away from (undo with it).
    pub pre_rollback: Option<String>,
    pub remounted_at: Option<std::path::PathBuf>,
}

impl Pool {
    /// Snapshots of `of` (or of every subvolume), sorted by subvolume and
    /// creation time.
    pub fn list_snapshots(&self, of: Option<&str>) -> Result<Vec<SubvolumeInfo>> {
        let kernel = KernelView::read()?;
        let names: Vec<String> = match of {
            Some(n) => {
                let n = ObjectName::parse_subvolume(n)?.subvolume;
                if !self.layout.subvolume_image(&n).exists() && !self.layout.snapshot_dir(&n).exists() {
                    return Err(Error::new(ErrorKind::NotFound, format!("no subvolume {n:?} and no snapshots of it")));
                }
                vec![n]
            }
            None => {
                let entries = match std::fs::read_dir(self.layout.snapshots_dir()) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(Error::io("cannot read the snapshots dir", e)),
                };
                let mut v: Vec<String> = entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .filter(|n| subvol_core::name::validate_part(n).is_ok())
                    .collect();
                v.sort();
                v
            }
        };
        let mut images = Vec::new();
        for (i, n) in names.iter().enumerate() {
            images.extend(self.snapshot_images(n)?.into_iter().map(|(snap, path)| (i, format!("{n}@{snap}"), path)));
        }
        let mut out: Vec<(usize, SubvolumeInfo)> =
            crate::par::map_io(&images, |(i, name, path)| (*i, self.describe(name, path, &kernel)));
        out.sort_by(|(i, a), (j, b)| i.cmp(j).then(a.created.cmp(&b.created)).then(a.name.cmp(&b.name)));
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Deletes one snapshot (lock held). Held snapshots are refused.
    pub(crate) fn delete_snapshot_locked(&self, obj: &ObjectName, force: bool) -> Result<()> {
        let path = self.object_image(obj)?;
        let file = open_existing(&path, false)?;
        let mut manifest_key = None;
        if let Ok(meta) = read_meta(&file) {
            if !meta.holds.is_empty() {
                return Err(held_error(&obj.to_string(), &meta));
            }
            manifest_key = crate::extent_cache::CacheKey::of(&file, meta.guid);
        }
        let kernel = KernelView::read()?;
        if let Some(a) = kernel.attachments(&path).first() {
            if !force {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("{obj} is {}; umount it first or use --force", where_(a)),
                ));
            }
            self.umount_image_locked(&obj.to_string(), &path)?;
        }
        crate::recovery::mark_unprotected(&self.layout)?;
        subvol_os::flags::set_immutable(&file, false).map_err(|e| Error::os("cannot unprotect the snapshot", e))?;
        subvol_os::crash::point("delete-snapshot-unprotected");
        drop(file);
        std::fs::remove_file(&path).map_err(|e| Error::io(format!("cannot delete {}", path.display()), e))?;
        crate::recovery::clear_unprotected(&self.layout);
        if let Some(key) = manifest_key {
            crate::manifest_store::ManifestStore::new(self.layout.manifests_dir()).remove(&key);
        }
        let dir = self.layout.snapshot_dir(&obj.subvolume);
        let _ = subvol_os::fsync::fsync_dir(&dir);
        // The directory goes with the last snapshot.
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// Rewrites a snapshot's metadata (see `rewrite_snapshot_meta`).
    fn update_snapshot_meta(
        &self,
        obj: &ObjectName,
        change: impl FnOnce(&mut SubvolumeMeta) -> bool,
    ) -> Result<Outcome> {
        let path = self.object_image(obj)?;
        rewrite_snapshot_meta(&self.layout, &path, &obj.to_string(), change)
    }

    /// Adds a hold: the snapshot cannot be deleted until it is released.
    /// Holding again with the same tag changes nothing.
    pub fn hold(&self, name: &str, tag: &str) -> Result<Outcome> {
        let obj = ObjectName::parse_snapshot(name)?;
        subvol_core::name::validate_part(tag).map_err(|e| Error::invalid(format!("bad hold tag: {e}")))?;
        let _lock = self.lock()?;
        self.update_snapshot_meta(&obj, |m| m.holds.insert(tag.to_string()))
    }

    /// Removes a hold. Releasing a tag the snapshot does not carry changes
    /// nothing.
    pub fn release(&self, name: &str, tag: &str) -> Result<Outcome> {
        let obj = ObjectName::parse_snapshot(name)?;
        subvol_core::name::validate_part(tag).map_err(|e| Error::invalid(format!("bad hold tag: {e}")))?;
        let _lock = self.lock()?;
        self.update_snapshot_meta(&obj, |m| m.holds.remove(tag))
    }

    /// Makes a reflink (or sparse) copy of `src` at `tmp_path`.
    fn copy_image(&self, src: &File, tmp_path: &Path, progress: Progress<'_>) -> Result<File> {
        let tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp_path)
            .map_err(|e| Error::io(format!("cannot create {}", tmp_path.display()), e))?;
        let size = src.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len();
        if self.meta.reflink {
            subvol_os::reflink::ficlone(&tmp, src).map_err(|e| Error::os("cannot clone the image", e))?;
        } else {
            tmp.set_len(size).map_err(|e| Error::io("cannot size the copy", e))?;
            let ranges = subvol_os::alloc::data_ranges(src, size).map_err(|e| Error::os("cannot scan the image", e))?;
            let total: u64 = ranges.iter().map(|r| r.1).sum();
            let mut done = 0;
            for (off, len) in ranges {
                subvol_os::copy::copy_range(src, &tmp, off, len, |n| {
                    done += n;
                    progress(done, total);
                })
                .map_err(|e| Error::os("cannot copy the image", e))?;
            }
        }
        Ok(tmp)
    }

    /// A writable subvolume from a snapshot, with a fresh filesystem UUID so
    /// it can be mounted beside its origin and other clones. A retry that
    /// finds NEW already cloned from this snapshot succeeds without change.
    pub fn clone_snapshot(
        &self,
        snapshot: &str,
        new_name: &str,
        progress: Progress<'_>,
    ) -> Result<(SubvolumeInfo, Outcome)> {
        let obj = ObjectName::parse_snapshot(snapshot)?;
        let new_name = ObjectName::parse_subvolume(new_name)?.subvolume;
        let _lock = self.lock()?;
        self.clone_snapshot_locked(&obj, &new_name, progress)
    }

    /// `clone_snapshot` for callers that hold the pool lock.
    pub(crate) fn clone_snapshot_locked(
        &self,
        obj: &ObjectName,
        new_name: &str,
        progress: Progress<'_>,
    ) -> Result<(SubvolumeInfo, Outcome)> {
        let new_name = new_name.to_string();
        self.refuse_while_received(&new_name)?;
        let src_path = self.object_image(obj)?;
        let src = open_existing(&src_path, false)?;
        let smeta = read_meta(&src).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{obj}: {e}")))?;
        let dst = self.layout.subvolume_image(&new_name);
        if std::fs::symlink_metadata(&dst).is_ok() {
            let have = self.info(&new_name)?;
            if have.origin.as_ref().map(|o| o.guid) == Some(smeta.guid) {
                return Ok((have, Outcome::AlreadyDone));
            }
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("subvolume {new_name:?} already exists (not a clone of {obj}); pick another name"),
            ));
        }
        let tmp_path = self.layout.tmp_image("clone", &new_name);
        let result = (|| {
            let tmp = self.copy_image(&src, &tmp_path, progress)?;
            self.new_fs_uuid(&new_name, smeta.fs, &tmp_path)?;
            let mut meta = SubvolumeMeta::new_subvolume(smeta.fs, Utc::now());
            meta.origin = Some(Origin { name: obj.to_string(), guid: smeta.guid });
            write_meta(&tmp, &meta)?;
            tmp.sync_all().map_err(|e| Error::io("cannot sync the clone", e))?;
            subvol_os::crash::point("clone-before-publish");
            rename_noreplace(&tmp_path, &dst).map_err(|e| Error::os(format!("cannot create {new_name}"), e))?;
            subvol_os::fsync::fsync_dir(&self.layout.subvolumes_dir())
                .map_err(|e| Error::os("cannot make the change durable", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        result?;
        Ok((self.info(&new_name)?, Outcome::Done))
    }

    /// Replaces a subvolume's image with a clone of one of its snapshots,
    /// after taking a `pre-rollback` snapshot so the rollback can be undone.
    /// If the subvolume was deleted (with --keep-snapshots), it comes back.
    pub fn rollback(&self, snapshot: &str, force: bool, progress: Progress<'_>) -> Result<RollbackReport> {
        let obj = ObjectName::parse_snapshot(snapshot)?;
        let name = obj.subvolume.clone();
        let _lock = self.lock()?;
        self.refuse_while_received(&name)?;
        let snap_path = self.object_image(&obj)?;
        let dst = self.layout.subvolume_image(&name);
        let exists = std::fs::symlink_metadata(&dst).is_ok();
        let mut remount = None;
        let mut pre = None;
        let mut keep_meta: Option<SubvolumeMeta> = None;
        if exists {
            let kernel = KernelView::read()?;
            let attachments = kernel.attachments(&dst);
            if let Some(a) = attachments.first() {
                if !force {
                    return Err(Error::new(
                        ErrorKind::Busy,
                        format!("{name} is {}; umount it first or use --force (it is remounted after)", where_(a)),
                    ));
                }
                crate::error::require_root("rollback --force")?;
                remount = a.mount_points.first().cloned();
                self.umount_locked(&name)?;
            }
            let f = open_existing(&dst, false)?;
            keep_meta = read_meta(&f).ok();
            let pre_name = self.unique_snapshot_name(&[&name], &format!("pre-rollback-{}", default_snapshot_name()));
            let reports: Vec<SnapshotReport> =
                self.snapshot_locked(&[(name.clone(), pre_name.clone())], &["pre-rollback".to_string()], progress)?;
            pre = reports.into_iter().next().map(|r| r.name);
            subvol_os::crash::point("rollback-after-pre-snapshot");
        }
        let src = open_existing(&snap_path, false)?;
        let smeta = read_meta(&src).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{obj}: {e}")))?;
        let tmp_path = self.layout.tmp_image("rollback", &name);
        let result = (|| {
            let tmp = self.copy_image(&src, &tmp_path, progress)?;
            // The subvolume keeps its identity and properties; it only goes
            // back in time. A recreated one gets a fresh identity.
            let meta = match keep_meta {
                Some(m) => m,
                None => {
                    let mut m = SubvolumeMeta::new_subvolume(smeta.fs, Utc::now());
                    m.origin = Some(Origin { name: obj.to_string(), guid: smeta.guid });
                    m
                }
            };
            write_meta(&tmp, &meta)?;
            tmp.sync_all().map_err(|e| Error::io("cannot sync", e))?;
            subvol_os::crash::point("rollback-before-replace");
            std::fs::rename(&tmp_path, &dst).map_err(|e| Error::io(format!("cannot replace {}", dst.display()), e))?;
            subvol_os::fsync::fsync_dir(&self.layout.subvolumes_dir())
                .map_err(|e| Error::os("cannot make the change durable", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        result?;
        drop(_lock);
        let mut remounted_at = None;
        if let Some(mp) = remount {
            let out = self.mount(&name, &crate::MountOptions { path: Some(mp), ..Default::default() })?;
            remounted_at = Some(out.mount_point);
        }
        Ok(RollbackReport { name, to: obj.to_string(), pre_rollback: pre, remounted_at })
    }

    /// Applies keep-rules to a subvolume's snapshots (optionally only those
    /// with `tag`) and deletes the rest, unless `dry_run`. Without rules the
    /// subvolume's `snapshot.policy` property is used; rules that keep
    /// nothing at all are refused.
    pub fn prune(
        &self,
        name: &str,
        policy: Option<KeepPolicy>,
        tag: Option<&str>,
        dry_run: bool,
    ) -> Result<PruneReport> {
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        let policy = policy.map(KeepPolicy::given).transpose().map_err(|e| Error::invalid(e.to_string()))?;
        let _lock = self.lock()?;
        self.prune_locked(&n, policy, tag, dry_run, Utc::now())
    }

    pub(crate) fn prune_locked(
        &self,
        n: &str,
        policy: Option<KeepPolicy>,
        tag: Option<&str>,
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<PruneReport> {
        let policy = match policy {
            Some(p) => p,
            None => self.stored_policy(n)?.ok_or_else(|| {
                Error::invalid(format!(
                    "no keep rule given and {n} has no {POLICY_PROPERTY}; pass --keep-last/--keep-daily/... or `subvol set {n} {POLICY_PROPERTY}=daily=7`"
                ))
            })?,
        };
        let mut candidates = Vec::new();
        for (snap, path) in self.snapshot_images(n)? {
            let f = open_existing(&path, false)?;
            let Ok(meta) = read_meta(&f) else { continue };
            if let Some(t) = tag {
                if !meta.tags.iter().any(|x| x == t) {
                    continue;
                }
            }
            candidates.push(Candidate {
                name: format!("{n}@{snap}"),
                created: meta.created,
                holds: meta.holds.into_iter().collect(),
            });
        }
        let verdicts = retention::plan(&candidates, &policy, now);
        let mut deleted = Vec::new();
        if !dry_run {
            for v in verdicts.iter().filter(|v| !v.keep) {
                let obj = ObjectName::parse_snapshot(&v.name)?;
                self.delete_snapshot_locked(&obj, false)?;
                deleted.push(v.name.clone());
                subvol_os::crash::point("prune-between-deletes");
            }
        }
        Ok(PruneReport { name: n.to_string(), policy: policy.to_string(), dry_run, verdicts, deleted })
    }

    fn stored_policy(&self, n: &str) -> Result<Option<KeepPolicy>> {
        let path = self.existing_image(n)?;
        let f = open_existing(&path, false)?;
        let meta = read_meta(&f).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{n}: {e}")))?;
        match meta.properties.get(POLICY_PROPERTY) {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|e: retention::PolicyError| Error::new(ErrorKind::Corrupt, e.to_string())),
        }
    }

    /// Snapshots each subvolume (the given ones, or all with a policy)
    /// with tag `auto`, then prunes its `auto` snapshots by its policy.
    pub fn autosnap(&self, names: &[String], progress: Progress<'_>) -> Result<Vec<(SnapshotReport, PruneReport)>> {
        let _lock = self.lock()?;
        let mut targets = Vec::new();
        if names.is_empty() {
            for s in self.list()? {
                if s.properties.contains_key(POLICY_PROPERTY) {
                    targets.push(s.name);
                }
            }
        } else {
            for n in names {
                let n = ObjectName::parse_subvolume(n)?.subvolume;
                if self.stored_policy(&n)?.is_none() {
                    return Err(Error::invalid(format!(
                        "{n} has no {POLICY_PROPERTY}; set one first, e.g. `subvol set {n} {POLICY_PROPERTY}=hourly=24,daily=7`"
                    )));
                }
                targets.push(n);
            }
        }
        let mut out = Vec::new();
        for n in targets {
            let snap = self.unique_snapshot_name(&[&n], &format!("auto-{}", default_snapshot_name()));
            let r = self.snapshot_locked(&[(n.clone(), snap)], &[AUTOSNAP_TAG.to_string()], progress)?;
            let p = self.prune_locked(&n, None, Some(AUTOSNAP_TAG), false, Utc::now())?;
            out.extend(r.into_iter().map(|r| (r, p.clone())));
        }
        Ok(out)
    }

    /// Sets (or, with an empty value, removes) a property of a subvolume.
    pub fn set_property(&self, name: &str, key: &str, value: &str) -> Result<()> {
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        validate_property(key, value)?;
        let _lock = self.lock()?;
        let path = self.existing_image(&n)?;
        let f = open_existing(&path, false)?;
        let mut meta = read_meta(&f).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{n}: {e}")))?;
        if key == crate::space::GUARANTEE_PROPERTY && value == "on" && !crate::space::is_guaranteed(&meta.properties) {
            let space = self.space()?;
            let virtual_bytes = f.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len();
            let excl = space.images.get(&path).map(|s| s.exclusive_bytes).unwrap_or(0);
            self.admit(&format!("guarantee=on for {n}"), subvol_core::space::still_needed(virtual_bytes, excl))?;
        }
        if value.is_empty() || (key == crate::space::GUARANTEE_PROPERTY && value == "off") {
            meta.properties.remove(key);
        } else {
            let v = if key == POLICY_PROPERTY {
                value.parse::<KeepPolicy>().map(|p| p.to_string()).unwrap_or_default()
            } else {
                value.to_string()
            };
            meta.properties.insert(key.to_string(), v);
        }
        if key == crate::space::GUARANTEE_PROPERTY {
            // A mounted subvolume changes sides: thin ones get the dirty cap
            // the guard's margin counts on, guaranteed ones lose it. Before
            // the metadata changes, so a kernel that refuses the cap leaves
            // the subvolume as it was.
            let thin = !crate::space::is_guaranteed(&meta.properties);
            for a in crate::kernel::KernelView::read()?.attachments(&path).iter().filter(|a| !a.read_only) {
                crate::dirty_cap::apply(a.major, a.minor, thin)?;
            }
        }
        write_meta(&f, &meta)?;
        f.sync_all().map_err(|e| Error::io("cannot sync the image", e))
    }
}

/// Known properties are checked; user properties need a `:` in their name
/// (e.g. `org.example:owner`), so they never collide with future ones.
fn validate_property(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.len() > 128 || !key.chars().all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c)) {
        return Err(Error::invalid(format!("bad property name {key:?}; use letters, digits and . : _ -")));
    }
    subvol_core::text::validate("the property value", value, subvol_core::text::MAX_VALUE_LEN)
        .map_err(|e| Error::invalid(format!("bad value for {key}: {e}")))?;
    match key {
        crate::space::GUARANTEE_PROPERTY => match value {
            "on" | "off" | "" => Ok(()),
            _ => Err(Error::invalid("guarantee is on or off")),
        },
        POLICY_PROPERTY => {
            if !value.is_empty() {
                value.parse::<KeepPolicy>().map_err(|e| Error::invalid(e.to_string()))?;
            }
            Ok(())
        }
        k if k.contains(':') => Ok(()),
        _ => Err(Error::invalid(format!(
            "unknown property {key:?}; known: {POLICY_PROPERTY}, guarantee; user properties need a ':' (e.g. org.example:owner)"
        ))),
    }
}

/// The filesystem UUID in an image, as blkid reads it.
fn fs_uuid(image: &Path) -> Result<String> {
    let out = subvol_os::cmd::run(
        "blkid",
        "util-linux",
        [
            std::ffi::OsStr::new("-p"),
            "-s".as_ref(),
            "UUID".as_ref(),
            "-o".as_ref(),
            "value".as_ref(),
            image.as_os_str(),
        ],
    )
    .map_err(|e| Error::os("cannot read the filesystem UUID", e))?;
    Ok(out.trim().to_string())
}

impl Pool {
    /// Gives the filesystem in an image a fresh UUID (clones must not share
    /// their origin's, or they could not be mounted side by side). A
    /// snapshot of a frozen XFS still has a log to replay, and xfs_admin
    /// refuses (yet exits 0) until it is: the image is mounted once to
    /// replay it. The change is verified, not assumed.
    fn new_fs_uuid(&self, name: &str, fs: FsKind, image: &Path) -> Result<()> {
        let img = image.as_os_str();
        let before = match fs {
            FsKind::Raw => return Ok(()),
            _ => fs_uuid(image)?,
        };
        match fs {
            FsKind::Raw => {}
            FsKind::Xfs => {
                self.with_temp_mount(name, image, FsKind::Xfs, |_| Ok(()))?;
                subvol_os::cmd::run("xfs_admin", "xfsprogs", [std::ffi::OsStr::new("-U"), "generate".as_ref(), img])
                    .map_err(|e| Error::os("cannot give the clone a new XFS UUID", e))?;
            }
            FsKind::Ext4 => {
                // e2fsck replays the journal; exit 1 means "fixed", fine.
                let _ = subvol_os::cmd::run("e2fsck", "e2fsprogs", [std::ffi::OsStr::new("-f"), "-p".as_ref(), img]);
                subvol_os::cmd::run("tune2fs", "e2fsprogs", [std::ffi::OsStr::new("-U"), "random".as_ref(), img])
                    .map_err(|e| Error::os("cannot give the clone a new ext4 UUID", e))?;
            }
        }
        let after = fs_uuid(image)?;
        if after == before || after.is_empty() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("the clone's filesystem UUID did not change (still {before})"),
            ));
        }
        Ok(())
    }
}

/// Helps callers show the kind without importing core types.
pub fn is_snapshot(info: &SubvolumeInfo) -> bool {
    info.kind == ObjectKind::Snapshot
}

/// Rewrites the metadata of the snapshot image at `path` (named `what` in
/// errors): the immutable flag is lifted for the one xattr update (recovery
/// re-protects it if we die in between). `change` says whether it changed
/// anything; when not, nothing is written. The caller holds the pool lock.
pub(crate) fn rewrite_snapshot_meta(
    layout: &crate::layout::Layout,
    path: &std::path::Path,
    what: &str,
    change: impl FnOnce(&mut SubvolumeMeta) -> bool,
) -> Result<Outcome> {
    let file = open_existing(path, false)?;
    let mut meta = read_meta(&file).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{what}: {e}")))?;
    if !change(&mut meta) {
        return Ok(Outcome::AlreadyDone);
    }
    crate::recovery::mark_unprotected(layout)?;
    subvol_os::flags::set_immutable(&file, false).map_err(|e| Error::os("cannot unprotect the snapshot", e))?;
    subvol_os::crash::point("hold-unprotected");
    let r = write_meta(&file, &meta);
    subvol_os::flags::set_immutable(&file, true).map_err(|e| Error::os("cannot protect the snapshot", e))?;
    crate::recovery::clear_unprotected(layout);
    r?;
    // Durable before whatever the caller does next (a receive removing its
    // record after releasing its hold: on btrfs a directory fsync does not
    // carry this inode's xattr with it).
    file.sync_all().map_err(|e| Error::io(format!("cannot sync {what}"), e))?;
    Ok(Outcome::Done)
}
