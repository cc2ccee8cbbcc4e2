//! The last step of a receive, still under the pool lock: the subvolume
//! NAME becomes a clone of the snapshot just published, when it safely can
//! (absent, or unchanged since the base, or replaced with --force), with
//! its own metadata and extent size hint. A crash before this step leaves
//! the snapshot published; receiving the stream again lets NAME follow.

use super::adopt::{self, AdoptIntent};
use super::target::Target;
use super::Receive;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::Layout;
use crate::pool::Pool;
use crate::snapshot::write_meta;
use crate::subvolume::{open_existing, open_image, read_meta};
use chrono::Utc;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use subvol_core::meta::Followed;
use subvol_core::SubvolumeMeta;

impl Receive<'_> {
    /// Lets the subvolume follow the published snapshot at `snapshot`
    /// unless `target` says it stays; returns whether it followed and, if
    /// not, why.
    /// An adopted NAME (`adopted`) is absent: it is made a clone of the
    /// snapshot with its recorded metadata, and the adoption settled.
    pub(super) fn let_follow(
        &mut self,
        target: Target,
        snapshot: &Path,
        adopted: Option<&AdoptIntent>,
    ) -> Result<(bool, Option<String>)> {
        if let Some(intent) = adopted {
            // NAME is rebuilt from the snapshot unless something put a NAME
            // there meanwhile (commands refuse to while the record exists).
            let rebuilt = adopt::settle(&self.pool.layout, intent)?.is_some();
            self.clock.mark("follow");
            let n = &self.name;
            return Ok(if rebuilt {
                (true, None)
            } else {
                (false, Some(format!("{n} was made anew while the stream was applied; it keeps its content")))
            });
        }
        // Setup found NAME unattached, but phase 2 ran unlocked: a NAME
        // mounted since keeps its content (its image is not replaced).
        let image = self.pool.layout.subvolume_image(&self.name);
        let kernel = crate::kernel::KernelView::read()?;
        let (n, snap) = (&self.name, &self.snap);
        let attached = match kernel.attachments(&image).first() {
            Some(a) => Some(crate::subvolume::where_(a)),
            None if kernel.attached_by_inode(&image) => Some("attached to a loop device".to_string()),
            None => None,
        };
        if let Some(at) = attached {
            self.clock.mark("follow");
            return Ok((
                false,
                Some(format!(
                    "{n} is {at}; it keeps its content (umount it and `subvol rollback {n}@{snap}` to follow)"
                )),
            ));
        }
        let followed = match target {
            Target::Stays(why) => (false, Some(why)),
            Target::Absent | Target::Follows | Target::Replace => {
                self.pool.follow(&self.name, snapshot, self.header.source_guid, self.header.snapshot.guid)?;
                (true, None)
            }
        };
        self.clock.mark("follow");
        Ok(followed)
    }
}

impl Pool {
    /// Points subvolume `n` at a clone of the received snapshot `snap_path`
    /// (guid `snapshot_guid`; `source_guid` names a new subvolume), and
    /// records that it did (`SubvolumeMeta::followed`).
    pub(super) fn follow(
        &self,
        n: &str,
        snap_path: &Path,
        source_guid: uuid::Uuid,
        snapshot_guid: uuid::Uuid,
    ) -> Result<()> {
        let image = self.layout.subvolume_image(n);
        // The new image keeps the subvolume's metadata and extent size hint
        // (a new subvolume gets the default hint).
        let (meta, hint) = match open_image(&image, false) {
            Ok(f) => {
                let meta = read_meta(&f).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{n}: {e}")))?;
                (meta, subvol_os::hints::extent_hints(&f).map(|(ext, _)| ext).unwrap_or(0))
            }
            Err(_) => {
                let src = open_existing(snap_path, false)?;
                let sm = read_meta(&src).map_err(|e| Error::new(ErrorKind::Corrupt, e))?;
                let mut m = SubvolumeMeta::new_subvolume(sm.fs, Utc::now());
                m.guid = source_guid;
                (m, crate::subvolume::DEFAULT_EXTENT_HINT_BYTES)
            }
        };
        FollowingImage { from: snap_path, image: &image, name: n, meta, hint, snapshot_guid }.write(
            &self.layout,
            self.meta.reflink,
            |tmp, image| std::fs::rename(tmp, image).map_err(|e| Error::io(format!("cannot update {n}"), e)),
        )
    }
}

/// The image a subvolume gets when it follows a snapshot: a copy of the
/// snapshot (a reflink clone on hosts that have them) with the subvolume's
/// metadata, extent size hint and a follow record, written to a private
/// temporary file, synced, and renamed into place.
pub(super) struct FollowingImage<'a> {
    /// The snapshot image.
    pub(super) from: &'a Path,
    /// Where the subvolume's image goes.
    pub(super) image: &'a Path,
    /// The subvolume, for messages.
    pub(super) name: &'a str,
    pub(super) meta: SubvolumeMeta,
    /// XFS only takes the hint on a file without extents: set before the
    /// clone; 0 sets none.
    pub(super) hint: u32,
    pub(super) snapshot_guid: uuid::Uuid,
}

impl FollowingImage<'_> {
    /// `rename` puts the temporary file in place: replacing what is there,
    /// or refusing to (never replace a NAME created meanwhile).
    pub(super) fn write(
        mut self,
        layout: &Layout,
        reflink: bool,
        rename: impl FnOnce(&Path, &Path) -> Result<()>,
    ) -> Result<()> {
        let tmp_path = layout.tmp_image("follow", self.name);
        let result = (|| {
            let src = open_existing(self.from, false)?;
            let tmp = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp_path)
                .map_err(|e| Error::io("cannot create the new image", e))?;
            if self.hint > 0 {
                let _ = subvol_os::hints::set_extent_hints(&tmp, Some(self.hint), None);
            }
            if reflink {
                subvol_os::reflink::ficlone(&tmp, &src).map_err(|e| Error::os("cannot clone the snapshot", e))?;
            } else {
                let size = src.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len();
                tmp.set_len(size).map_err(|e| Error::io("cannot size the image", e))?;
                for (off, len) in subvol_os::alloc::data_ranges(&src, size)
                    .map_err(|e| Error::os("cannot find the data in the image", e))?
                {
                    subvol_os::copy::copy_range(&src, &tmp, off, len, |_| {})
                        .map_err(|e| Error::os("cannot copy the image", e))?;
                }
            }
            // The stamp after the last data write; the xattr below changes
            // only the change time.
            let stamp = crate::snapshot::content_stamp(&tmp)?;
            self.meta.followed = Some(Followed { snapshot_guid: self.snapshot_guid, stamp });
            write_meta(&tmp, &self.meta)?;
            tmp.sync_all().map_err(|e| Error::io("cannot sync the image", e))?;
            rename(&tmp_path, self.image)?;
            subvol_os::fsync::fsync_dir(&layout.subvolumes_dir())
                .map_err(|e| Error::os("cannot make the change durable", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        result
    }
}
