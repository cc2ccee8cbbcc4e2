//! Phase 3 of a receive, under the pool lock: the private image becomes
//! the snapshot `NAME@SNAP`, whole or not at all (metadata and content
//! stamp written and synced first, then one rename), and is made
//! immutable like every snapshot. With --force, the subvolume's snapshots
//! newer than the base are deleted first.

use super::guid::guid_taken;
use super::target::{base_index, snapshot_metas, Target};
use super::verify::Verified;
use super::Receive;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest_store::ManifestStore;
use crate::pool::Pool;
use crate::snapshot::write_meta;
use crate::subvolume::rename_noreplace;
use chrono::{DateTime, Utc};
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use subvol_core::meta::Origin;
use subvol_core::stream::StreamHeader;
use subvol_core::{FsKind, ObjectKind, ObjectName, SubvolumeMeta};

impl Receive<'_> {
    /// Publishes the synced private `image` as the snapshot and returns its
    /// path. The caller holds the pool lock.
    pub(super) fn publish(&mut self, image: File, target: &Target, verified: Option<Verified>) -> Result<PathBuf> {
        let (n, h) = (&self.name, &self.header);
        // A receive of the same stream may have published it meanwhile.
        if let Some(holder) = self.pool.snapshots_with_guid(h.snapshot.guid)?.first() {
            drop(image);
            let _ = std::fs::remove_file(&self.partial.image);
            let _ = std::fs::remove_file(&self.partial.state);
            return Err(guid_taken(n, h, &holder.name));
        }
        let mut meta = self.snapshot_meta()?;
        meta.content = Some(crate::snapshot::content_stamp(&image)?);
        write_meta(&image, &meta)?;
        image.sync_all().map_err(|e| Error::io("cannot sync the image", e))?;
        // The manifest goes first: a crash before the rename leaves one no
        // image has the key of, which `pool check --repair` removes; after
        // it, the snapshot has its verified manifest.
        let store = ManifestStore::new(self.pool.layout.manifests_dir());
        let stored = match verified {
            Some(Verified { key: Some(key), manifest }) => {
                store.write(&key, &manifest)?;
                Some(key)
            }
            _ => None,
        };
        let forget = |e: Error| {
            if let Some(k) = &stored {
                store.remove(k);
            }
            e
        };
        // Snapshots newer than the base go first (--force, checked in setup).
        if matches!(target, Target::Replace) || self.opts.force {
            self.pool.drop_newer_than_base(n, h).map_err(forget)?;
        }
        // Published even if a step after the rename failed: then it keeps it.
        let dst =
            self.rename_into_place(&image).map_err(|e| if self.partial.image.exists() { forget(e) } else { e })?;
        drop(image);
        let _ = std::fs::remove_file(&self.partial.state);
        self.clock.mark("publish");
        Ok(dst)
    }

    /// The received snapshot's record: the sender's guid, origin, creation
    /// time and tags.
    fn snapshot_meta(&self) -> Result<SubvolumeMeta> {
        let h = &self.header;
        let created: DateTime<Utc> = DateTime::parse_from_rfc3339(&h.created)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| Error::new(ErrorKind::Corrupt, "stream: bad creation time"))?;
        let fs: FsKind = h.fs.parse().map_err(|e: String| Error::new(ErrorKind::Corrupt, e))?;
        let mut meta = SubvolumeMeta::new_subvolume(fs, created);
        meta.kind = ObjectKind::Snapshot;
        meta.guid = h.snapshot.guid;
        meta.origin = Some(Origin { name: h.source_name.clone(), guid: h.source_guid });
        meta.tags = h.tags.clone();
        Ok(meta)
    }

    /// Renames the private image to `snapshots/NAME/SNAP.img` and protects
    /// it; recovery re-protects it if a crash comes between the two.
    fn rename_into_place(&self, image: &File) -> Result<PathBuf> {
        let (n, snap) = (&self.name, &self.snap);
        let layout = &self.pool.layout;
        let dir = layout.snapshot_dir(n);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let dst = layout.snapshot_image(n, snap);
        crate::recovery::mark_unprotected(layout)?;
        rename_noreplace(&self.partial.image, &dst).map_err(|e| Error::os(format!("cannot publish {n}@{snap}"), e))?;
        subvol_os::fsync::fsync_dir(&dir).map_err(|e| Error::os("cannot make the change durable", e))?;
        subvol_os::flags::set_immutable(image, true).map_err(|e| Error::os("cannot protect the snapshot", e))?;
        crate::recovery::clear_unprotected(layout);
        Ok(dst)
    }
}

impl Pool {
    /// Deletes subvolume `n`'s snapshots newer than the stream's base
    /// (--force, checked in setup).
    fn drop_newer_than_base(&self, n: &str, h: &StreamHeader) -> Result<()> {
        let Some(base) = &h.base else { return Ok(()) };
        let metas = snapshot_metas(&self.snapshot_images(n)?)?;
        let Some(i) = base_index(n, &metas, base)? else { return Ok(()) };
        let base_created = metas[i].2.created;
        for (s, _, m) in &metas {
            if m.created > base_created {
                self.delete_snapshot_locked(
                    &ObjectName { subvolume: n.to_string(), snapshot: Some(s.clone()) },
                    false,
                )?;
            }
        }
        Ok(())
    }
}
