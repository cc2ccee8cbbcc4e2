//! A snapshot guid is received once per pool (docs/FORMAT.md, "Guids"):
//! the same stream into the same `NAME@SNAP` again is a retry that changes
//! nothing, anywhere else it is refused. Two images with one guid would
//! make a later increment's base ambiguous.

use super::target::{base_index, snapshot_metas};
use super::{stream_error, Input, Receive, ReceiveReport};
use crate::error::{Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::pool::Pool;
use crate::SubvolumeInfo;
use std::path::Path;
use subvol_core::stream::{Record, StreamHeader};

impl Pool {
    /// Every snapshot in the pool with guid `guid`: one, unless an older
    /// subvol received a stream under two names (`pool check` reports it).
    pub(super) fn snapshots_with_guid(&self, guid: uuid::Uuid) -> Result<Vec<SubvolumeInfo>> {
        let guid = guid.to_string();
        Ok(self.list_snapshots(None)?.into_iter().filter(|s| s.guid == guid).collect())
    }
}

impl Receive<'_> {
    /// Refuses a stream whose snapshot guid the pool has elsewhere than at
    /// `n@snap`; the snapshot there, if it has it.
    fn refuse_taken_guid(&self) -> Result<Option<SubvolumeInfo>> {
        let holders = self.pool.snapshots_with_guid(self.header.snapshot.guid)?;
        let here = format!("{}@{}", self.name, self.snap);
        if let Some(mine) = holders.iter().find(|s| s.name == here) {
            return Ok(Some(mine.clone()));
        }
        match holders.first() {
            None => Ok(None),
            Some(other) => Err(guid_taken(&self.name, &self.header, &other.name)),
        }
    }

    /// The stream's snapshot is already `n@snap`: a retry (e.g. after a
    /// crash between publishing the snapshot and updating the subvolume).
    /// Nothing is written, except that a subvolume still at the base
    /// follows now; the stream is read to the end (and verified) so the
    /// sender finishes normally. Refused, before anything is written, when
    /// another snapshot of the pool has the guid.
    pub(super) fn already_received(&self, reader: &mut Input<'_>) -> Result<Option<ReceiveReport>> {
        let Some(have) = self.refuse_taken_guid()? else { return Ok(None) };
        let (n, h) = (&self.name, &self.header);
        let image = self.pool.layout.subvolume_image(n);
        let mounted = !KernelView::read()?.attachments(&image).is_empty();
        let at_received = image.exists() && !self.pool.changed_since(&image, &have.image)?;
        let follow = !at_received && !mounted && self.at_base(&image)?;
        while let Some(rec) = reader.next_record().map_err(stream_error)? {
            if matches!(rec, Record::End(_)) {
                break;
            }
        }
        if follow {
            self.pool.follow(n, &have.image, h.source_guid, h.snapshot.guid)?;
        }
        let note = if follow { "the subvolume now follows it" } else { "nothing changed" };
        Ok(Some(ReceiveReport {
            name: have.name,
            full: h.base.is_none(),
            data_bytes: 0,
            hole_bytes: 0,
            records: 0,
            stream_bytes: reader.bytes_read,
            followed: at_received || follow,
            note: Some(format!("already received; {note}")),
        }))
    }

    /// Whether the subvolume (`image`) is where the stream would make it
    /// follow: absent (a receive creates it), or unchanged since the base.
    fn at_base(&self, image: &Path) -> Result<bool> {
        if !image.exists() {
            return Ok(true);
        }
        let Some(base) = &self.header.base else { return Ok(false) };
        let metas = snapshot_metas(&self.pool.snapshot_images(&self.name)?)?;
        match base_index(&self.name, &metas, base)? {
            Some(i) => Ok(!self.pool.changed_since(image, &metas[i].1)?),
            None => Ok(false),
        }
    }
}

/// The refusal of a stream whose snapshot the pool has as `holder`.
pub(super) fn guid_taken(n: &str, h: &StreamHeader, holder: &str) -> Error {
    let (sub, _) = holder.split_once('@').unwrap_or((holder, ""));
    let fix = if sub == n {
        "nothing to receive".to_string()
    } else {
        format!("receive into {sub}, or delete {holder} first")
    };
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "the stream's snapshot {} (guid {}) is already here as {holder}; {fix}",
            h.snapshot.name, h.snapshot.guid
        ),
    )
}
