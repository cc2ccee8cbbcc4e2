//! Applying an increment to the subvolume's own image instead of to a
//! clone of the base ("adoption"), so a receive makes one whole-image clone
//! (the subvolume following the published snapshot) instead of two.
//!
//! A whole-file reflink clone costs time per extent of the image, and a
//! replica written by random increments gains extents every round; the
//! clone of the base was half of what a receive spent beyond the change.
//! When the subvolume NAME provably equals the stream's base and nothing
//! has it attached (`Target::Follows`), its image already is that clone.
//!
//! The steps, each durable before the next, and what recovery (which every
//! locked command runs first) does after a crash at any point:
//! 1. an intent record `intent/adopt.NAME` (NAME's metadata and extent
//!    hint, the base, the stream's snapshot);
//! 2. a hold `.receive` on the base (a tag users cannot set or release), so nothing deletes what NAME can be
//!    rebuilt from;
//! 3. NAME's image renamed to the receive's private image (NAME is absent
//!    while the stream is applied: commands naming it are told a receive
//!    holds it);
//! 4. the stream applied, the snapshot published (a rename), NAME made a
//!    clone of it with its own metadata (`follow`);
//! 5. the hold released, the record removed.
//!
//! Recovery, for a record whose receive is gone (its private image is not
//! flocked): NAME absent and the snapshot published: NAME follows it (step
//! 4 finished); NAME absent otherwise: NAME is made a clone of the base
//! again (it was equal to it) and the half-applied image removed; then the
//! hold is released and the record removed. Both leave NAME as a completed
//! or a never-started receive would.

use super::follow::FollowingImage;
use super::Receive;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::Layout;
use crate::subvolume::{open_existing, open_image, read_meta};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::Path;
use subvol_core::SubvolumeMeta;

/// The hold tag a receive puts on the base it may rebuild NAME from. It
/// starts with a dot, which `hold` and `release` refuse in a tag: no user
/// can take it away during a receive, nor have it removed by one.
pub(crate) const HOLD: &str = ".receive";

/// Record type and version of `intent/adopt.NAME` (docs/FORMAT.md).
const RECORD: &str = "receive-adopt";
const VERSION: u32 = 1;

/// What recovery needs to put NAME back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AdoptIntent {
    /// The subvolume.
    name: String,
    /// NAME's metadata and extent size hint before the receive.
    pub(super) meta: SubvolumeMeta,
    pub(super) hint: u32,
    /// The base snapshot (`NAME@base_snap`) and its guid.
    base_snap: String,
    base_guid: uuid::Uuid,
    /// The snapshot the stream makes (`NAME@snap`) and its guid.
    snap: String,
    snapshot_guid: uuid::Uuid,
}

/// Whether a receive holds subvolume `name`'s image (applying a stream to
/// it), so a command that cannot find NAME can say why.
pub(crate) fn adopting(layout: &Layout, name: &str) -> bool {
    layout.adopt_intent(name).exists()
}

fn read_intent(path: &Path) -> Option<AdoptIntent> {
    subvol_core::meta::decode::<AdoptIntent>(RECORD, VERSION, &std::fs::read(path).ok()?).ok()
}

impl Receive<'_> {
    /// Steps 1-3: NAME's image becomes the private image, returned flocked
    /// and sized for the stream. The caller holds the pool lock and has
    /// found NAME equal to `base` (snapshot `base_snap`) and unattached.
    pub(super) fn adopt(&mut self, base: &Path, base_snap: &str) -> Result<(File, AdoptIntent)> {
        let layout = &self.pool.layout;
        let n = &self.name;
        let image = layout.subvolume_image(n);
        let current = open_image(&image, false).map_err(|e| Error::io(format!("cannot open {n}"), e))?;
        let meta = read_meta(&current).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{n}: {e}")))?;
        let hint = subvol_os::hints::extent_hints(&current).map(|(ext, _)| ext).unwrap_or(0);
        drop(current);
        let base_meta = read_meta(&open_existing(base, false)?)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{n}@{base_snap}: {e}")))?;
        let intent = AdoptIntent {
            name: n.clone(),
            meta,
            hint,
            base_snap: base_snap.to_string(),
            base_guid: base_meta.guid,
            snap: self.snap.clone(),
            snapshot_guid: self.header.snapshot.guid,
        };
        let record = layout.adopt_intent(n);
        std::fs::create_dir_all(layout.intent_dir()).map_err(|e| Error::io("cannot create the intent dir", e))?;
        subvol_os::fsync::write_atomic(&record, &subvol_core::meta::encode(RECORD, VERSION, &intent))
            .map_err(|e| Error::os("cannot record the receive", e))?;
        crate::snapops::rewrite_snapshot_meta(layout, base, &format!("{n}@{base_snap}"), |m| {
            m.holds.insert(HOLD.to_string())
        })?;
        subvol_os::crash::point("receive-adopt-held");
        crate::subvolume::rename_noreplace(&image, &self.partial.image)
            .map_err(|e| Error::os(format!("cannot take {n}'s image for the receive"), e))?;
        for dir in [layout.subvolumes_dir(), layout.receive_dir()] {
            subvol_os::fsync::fsync_dir(&dir).map_err(|e| Error::os("cannot make the change durable", e))?;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.partial.image)
            .map_err(|e| Error::io("cannot open the received image", e))?;
        f.try_lock().map_err(|_| Error::new(ErrorKind::Busy, format!("another receive into {n} is running")))?;
        f.set_len(self.header.virtual_size).map_err(|e| Error::io("cannot size the received image", e))?;
        crate::trace::note("receive", "applying to the subvolume's own image");
        Ok((f, intent))
    }
}

/// What recovery did with adoptions whose receive is gone.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// Subvolumes put back (and from what).
    pub(crate) done: Vec<String>,
    /// Adoptions that could not be settled, and why: their record and
    /// image stay for `pool check` to report.
    pub(crate) failed: Vec<String>,
}

/// Step 5 and recovery: finishes every adoption whose receive is gone
/// (see the module doc). The caller holds the pool lock.
pub(crate) fn finish_adoptions(layout: &Layout) -> Settled {
    let mut out = Settled::default();
    let Ok(entries) = std::fs::read_dir(layout.intent_dir()) else { return out };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        // A record's temporary from a writer that died (`write_atomic`,
        // which runs under the pool lock, as this does).
        if file_name.starts_with(".adopt.") && file_name.contains(".tmp.") {
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        let Some(name) = file_name.strip_prefix("adopt.") else { continue };
        let private = layout.partial_receive(name).0;
        // A live receive holds its image's flock.
        if File::open(&private).is_ok_and(|f| f.try_lock().is_err()) {
            continue;
        }
        let Some(intent) = read_intent(&e.path()) else {
            // Torn: written before step 2, so nothing else happened.
            let _ = std::fs::remove_file(e.path());
            continue;
        };
        match settle(layout, &intent) {
            Ok(what) => out.done.extend(what),
            Err(err) => out.failed.push(format!("{name}: {}", err.message)),
        }
    }
    out
}

/// Puts NAME back if it is absent, then releases the base and drops the
/// record. Returns what it rebuilt NAME from, if it did.
pub(super) fn settle(layout: &Layout, intent: &AdoptIntent) -> Result<Option<String>> {
    let n = &intent.name;
    let image = layout.subvolume_image(n);
    let private = layout.partial_receive(n).0;
    let base = layout.snapshot_image(n, &intent.base_snap);
    let mut rebuilt = None;
    if std::fs::symlink_metadata(&image).is_err() {
        let published = layout.snapshot_image(n, &intent.snap);
        let (from, guid) = if has_guid(&published, intent.snapshot_guid) {
            (published, intent.snapshot_guid)
        } else if has_guid(&base, intent.base_guid) {
            (base.clone(), intent.base_guid)
        } else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{n}: neither {n}@{} nor {n}@{} is there to rebuild it from", intent.snap, intent.base_snap),
            ));
        };
        clone_as_subvolume(layout, &from, &image, intent, guid)?;
        rebuilt = Some(format!("{n} (from {})", from.display()));
    }
    let _ = std::fs::remove_file(&private);
    if has_guid(&base, intent.base_guid) {
        crate::snapops::rewrite_snapshot_meta(layout, &base, &format!("{n}@{}", intent.base_snap), |m| {
            m.holds.remove(HOLD)
        })?;
    }
    subvol_os::crash::point("receive-adopt-released");
    std::fs::remove_file(layout.adopt_intent(n)).map_err(|e| Error::io("cannot clear the receive record", e))?;
    let _ = subvol_os::fsync::fsync_dir(&layout.intent_dir());
    Ok(rebuilt)
}

fn has_guid(path: &Path, guid: uuid::Uuid) -> bool {
    open_existing(path, false).ok().and_then(|f| read_meta(&f).ok()).is_some_and(|m| m.guid == guid)
}

/// Makes `image` (subvolume NAME, absent) a reflink clone of the snapshot
/// `from` (guid `guid`), with NAME's recorded metadata and extent hint and
/// a follow record; never replaces a NAME created meanwhile.
pub(super) fn clone_as_subvolume(
    layout: &Layout,
    from: &Path,
    image: &Path,
    intent: &AdoptIntent,
    guid: uuid::Uuid,
) -> Result<()> {
    FollowingImage {
        from,
        image,
        name: &intent.name,
        meta: intent.meta.clone(),
        hint: intent.hint,
        snapshot_guid: guid,
    }
    .write(layout, true, |tmp, image| {
        crate::subvolume::rename_noreplace(tmp, image)
            .map_err(|e| Error::os(format!("cannot put {} back", intent.name), e))
    })
}
