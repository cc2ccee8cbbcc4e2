//! Whether a stream may be received into a subvolume, and what becomes of
//! the subvolume: part of setup, and checked again before a retry lets a
//! subvolume follow.

use super::Receive;
use crate::error::{Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::pool::Pool;
use crate::subvolume::{open_existing, read_meta};
use std::path::{Path, PathBuf};
use subvol_core::stream::{SnapshotRef, MAX_VIRTUAL_SIZE};
use subvol_core::{FsKind, SubvolumeMeta};

/// What the receiving subvolume looks like.
pub(super) enum Target {
    /// Does not exist: it will be created from the received snapshot.
    Absent,
    /// Exists, unchanged since the base, not mounted: it will follow.
    Follows,
    /// Exists and will be replaced (--force), having moved on.
    Replace,
    /// Exists but is mounted: the snapshot is received, NAME stays.
    Stays(String),
}

/// A snapshot of the receiving subvolume: its name, image and metadata.
pub(super) type SnapshotMeta = (String, PathBuf, SubvolumeMeta);

/// One subvolume's snapshots whose metadata can be read, with it.
pub(super) fn snapshot_metas(snaps: &[(String, PathBuf)]) -> Result<Vec<SnapshotMeta>> {
    let mut out = Vec::new();
    for (s, p) in snaps {
        let f = open_existing(p, false)?;
        if let Ok(m) = read_meta(&f) {
            out.push((s.clone(), p.clone(), m));
        }
    }
    Ok(out)
}

/// Which of subvolume `n`'s snapshots is the stream's base. Two with its
/// guid (made before receives refused a guid the pool has) could differ,
/// and applying the stream to the wrong one would go unnoticed: refused.
pub(super) fn base_index(n: &str, metas: &[SnapshotMeta], base: &SnapshotRef) -> Result<Option<usize>> {
    let found: Vec<usize> = (0..metas.len()).filter(|&i| metas[i].2.guid == base.guid).collect();
    match found[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => {
            let names: Vec<String> = found.iter().map(|&i| format!("{n}@{}", metas[i].0)).collect();
            Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{} all have the guid {} of the stream's base; keep one (`subvol pool check` lists them)",
                    names.join(", "),
                    base.guid
                ),
            ))
        }
    }
}

impl Receive<'_> {
    /// Checks the stream against the subvolume and finds the base image.
    pub(super) fn check_target(&self) -> Result<(Option<PathBuf>, Target)> {
        let (n, snap, h) = (&self.name, &self.snap, &self.header);
        self.check_geometry()?;
        let snaps = self.pool.snapshot_images(n)?;
        let metas = snapshot_metas(&snaps)?;
        if snaps.iter().any(|(s, _)| s == snap) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot {n}@{snap} already exists with other content"),
            ));
        }
        let image = self.pool.layout.subvolume_image(n);
        let exists = image.exists();
        let Some(base) = &h.base else {
            if exists || !snaps.is_empty() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{n} already exists; a full stream needs a new name (or send incrementally with --from)"),
                ));
            }
            return Ok((None, Target::Absent));
        };
        let pos = self.find_base(&metas, base)?;
        let (base_snap, base_path, _) = &metas[pos];
        if !exists {
            return Ok((Some(base_path.clone()), Target::Absent));
        }
        Ok((Some(base_path.clone()), self.classify(&image, base_path, base_snap)?))
    }

    /// The stream's image must be one the host can hold, of a known kind.
    fn check_geometry(&self) -> Result<()> {
        let h = &self.header;
        if h.virtual_size > MAX_VIRTUAL_SIZE {
            return Err(Error::new(ErrorKind::Corrupt, "stream declares an impossible size"));
        }
        // The same limits as `create`: what the host can hold as one file.
        self.pool.check_host_file_size(h.virtual_size, "the stream's image")?;
        h.fs.parse::<FsKind>().map_err(|e| Error::new(ErrorKind::Corrupt, format!("stream: {e}")))?;
        Ok(())
    }

    /// The base among `metas`; snapshots newer than it are refused, unless
    /// --force drops them and none is held.
    fn find_base(&self, metas: &[SnapshotMeta], base: &SnapshotRef) -> Result<usize> {
        let n = &self.name;
        let Some(pos) = base_index(n, metas, base)? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{n} has no snapshot with guid {} (the stream's base {}); send a full stream or from a common snapshot", base.guid, base.name),
            ));
        };
        let base_created = metas[pos].2.created;
        let newer: Vec<&SnapshotMeta> = metas.iter().filter(|(_, _, m)| m.created > base_created).collect();
        if !newer.is_empty() {
            if !self.opts.force {
                let names: Vec<String> = newer.iter().map(|(s, _, _)| format!("{n}@{s}")).collect();
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{n} has snapshots newer than the base {}: {}; use --force to drop them",
                        base.name,
                        names.join(", ")
                    ),
                ));
            }
            if let Some((s, _, m)) = newer.iter().find(|(_, _, m)| !m.holds.is_empty()) {
                return Err(crate::subvolume::held_error(&format!("{n}@{s}"), m));
            }
        }
        Ok(pos)
    }

    /// What becomes of the existing subvolume `image` when the snapshot
    /// (on top of `base_path`, snapshot `base_snap`) is published.
    fn classify(&self, image: &Path, base_path: &Path, base_snap: &str) -> Result<Target> {
        let (n, snap) = (&self.name, &self.snap);
        let kernel = KernelView::read()?;
        let mounted = kernel.attachments(image).first().map(crate::subvolume::where_);
        let changed = self.pool.changed_since(image, base_path)?;
        match (changed, mounted, self.opts.force) {
            (false, None, _) => Ok(Target::Follows),
            (false, Some(at), _) => Ok(Target::Stays(format!(
                "{n} is {at}; it keeps its content (umount it and `subvol rollback {n}@{snap}` to follow)"
            ))),
            // Not necessarily a local write: NAME may still be a later
            // received snapshot that was deleted here since.
            (true, _, false) => Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{n} differs from the stream's base {n}@{base_snap}: it was written to since, or it followed a later snapshot that is gone; use --force to roll it back to the received snapshot"
                ),
            )),
            (true, Some(at), true) => {
                Err(Error::new(ErrorKind::Busy, format!("{n} is {at} and modified; umount it first")))
            }
            (true, None, true) => Ok(Target::Replace),
        }
    }
}

impl Pool {
    /// Whether `image` differs from the snapshot `base`: not if the image
    /// still carries the follow record of that very snapshot (O(1));
    /// otherwise by host blocks (the base's map from the extent cache), or
    /// by contents without reflinks.
    pub(super) fn changed_since(&self, image: &Path, base: &Path) -> Result<bool> {
        let a = open_existing(base, false)?;
        let b = open_existing(image, false)?;
        let (sa, sb) = (
            a.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len(),
            b.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len(),
        );
        if sa != sb {
            return Ok(true);
        }
        let base_meta =
            read_meta(&a).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{}: {e}", base.display())))?;
        let followed = read_meta(&b).ok().and_then(|m| m.followed);
        let now = crate::snapshot::content_stamp(&b)?;
        if followed.is_some_and(|f| f.still_equals(base_meta.guid, &now)) {
            crate::trace::note("receive", "target unchanged by its follow record");
            return Ok(false);
        }
        if self.meta.reflink {
            let ma = self.snapshot_map(&a, &base_meta)?;
            let mb = subvol_os::fiemap::fiemap(&b, true).map_err(|e| Error::os("cannot map the image", e))?;
            return Ok(!subvol_core::diff::diff(&ma, sa, &mb, sb).is_empty());
        }
        Ok(!crate::replication::send::content_diff(&a, sa, &b, sb)?.changes.is_empty())
    }
}
