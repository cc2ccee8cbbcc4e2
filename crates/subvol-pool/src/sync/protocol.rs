//! The sync protocol between two sides, whatever they are: find the newest
//! snapshot both hold (by guid), hold it on both while a fresh snapshot's
//! increment is built on it, send, then hold the new snapshot as the pair's
//! base and release the old one.
//!
//! Every step can fail, and a retry must end where one clean run would:
//! - the common base keeps its hold until a newer one replaces it, so a
//!   failed run leaves the pair as the previous success left it; a success
//!   releases every older snapshot of the pair still held as its base;
//! - the fresh snapshot is held on the source while it is sent, and a
//!   failed transfer releases it and deletes it when the destination
//!   confirms it never arrived (a retry takes a new one);
//! - when that cannot be confirmed (the connection dropped after the
//!   receiver finished), it stays, unheld: if it did arrive, the next run
//!   finds it as the newest common snapshot and holds it on both sides.

use super::side::{SnapshotEntry, SyncSide};
use super::transfer::{transfer, Stream};
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::Outcome;
use crate::snapshot::Progress;
use serde::Serialize;
use std::time::Instant;
use uuid::Uuid;

/// Hold tag (and snapshot tag) of the common base of a sync pair.
pub const SYNC_TAG: &str = "sync";

/// How many `.N` suffixes to try when syncs start within one second.
const NAME_ATTEMPTS: u32 = 50;

/// How a sync runs (the parts any caller chooses).
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Compress the stream at this zstd level.
    pub zstd_level: Option<i32>,
    /// Bytes per second, at most.
    pub bwlimit: Option<u64>,
    /// Guids of source snapshots that other destinations still have as
    /// their base: their hold stays when this pair moves on. `Pool::sync_to`
    /// fills it from the pool's target records.
    pub keep_on_source: Vec<Uuid>,
}

/// What one sync did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The destination, as written.
    pub name: String,
    /// The snapshot as it arrived there (`NAME@SNAP`).
    pub snapshot: String,
    /// The source snapshot the increment was built on; `None`: a full send.
    pub base: Option<String>,
    pub stream_bytes: u64,
    pub seconds: f64,
    /// The new snapshot on the source, now the pair's common base.
    #[serde(skip)]
    pub sent: SnapshotEntry,
    /// What went wrong after the data arrived and did not fail the sync
    /// (an old base that could not be released).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The newest snapshot both sides hold: one guid, a name on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Base {
    pub source: SnapshotEntry,
    pub destination: SnapshotEntry,
}

/// Oldest first, as the base search walks them.
fn by_age(mut v: Vec<SnapshotEntry>) -> Vec<SnapshotEntry> {
    v.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    v
}

/// The one snapshot of a side with `guid`. Two (made before receives
/// refused a guid their pool has) may differ, and an increment sent from
/// or applied to the wrong one would go unnoticed: refused.
fn only_one<'a>(side: &dyn SyncSide, snaps: &'a [SnapshotEntry], guid: Uuid) -> Result<&'a SnapshotEntry> {
    let found: Vec<&SnapshotEntry> = snaps.iter().filter(|s| s.guid == guid).collect();
    match found[..] {
        [one] => Ok(one),
        _ => {
            let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
            Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: {} share the guid {guid}; keep one (see `subvol pool check`)",
                    side.describe(),
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The newest source snapshot whose guid the destination has. A
/// destination with snapshots but none in common is another lineage: a
/// full stream would be refused there anyway, so say why up front.
pub(crate) fn choose_base(
    src: &dyn SyncSide,
    src_snaps: &[SnapshotEntry],
    dst: &dyn SyncSide,
    dst_snaps: &[SnapshotEntry],
) -> Result<Option<Base>> {
    let newest = src_snaps.iter().rev().find(|s| dst_snaps.iter().any(|d| d.guid == s.guid));
    match newest {
        Some(s) => {
            let source = only_one(src, src_snaps, s.guid)?.clone();
            let destination = only_one(dst, dst_snaps, s.guid)?.clone();
            Ok(Some(Base { source, destination }))
        }
        None if !dst_snaps.is_empty() => Err(Error::new(
            ErrorKind::Busy,
            format!(
                "{} has snapshots but none in common with {}; receive into a new name",
                dst.describe(),
                src.describe()
            ),
        )),
        None => Ok(None),
    }
}

fn hold_unless_held(side: &dyn SyncSide, s: &SnapshotEntry) -> Result<()> {
    if s.holds.iter().any(|h| h == SYNC_TAG) {
        return Ok(());
    }
    side.hold(&s.name, SYNC_TAG)
}

/// A snapshot of the source that did not exist before: syncs started
/// within one second take `.1`, `.2`, ...
fn take_fresh_snapshot(src: &dyn SyncSide) -> Result<SnapshotEntry> {
    let stamp = format!("{}@sync-{}", src.name(), chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ"));
    for attempt in 0..=NAME_ATTEMPTS {
        let name = if attempt == 0 { stamp.clone() } else { format!("{stamp}.{attempt}") };
        match src.take_snapshot(&name, SYNC_TAG) {
            Ok((made, Outcome::Done)) => return Ok(made),
            Ok((_, Outcome::AlreadyDone)) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "{}: {} and {NAME_ATTEMPTS} more sync snapshot names are taken; try again in a second",
            src.describe(),
            stamp
        ),
    ))
}

/// This side's snapshots that the other side also has (so they belong to
/// this pair) and that are held as its base: the one this run built on,
/// and any an earlier run could not release (its acknowledgement lost).
/// Once a newer snapshot is the common base, none of them needs its hold.
fn older_bases<'a>(
    mine: &'a [SnapshotEntry],
    theirs: &'a [SnapshotEntry],
    base: Option<Uuid>,
) -> impl Iterator<Item = &'a SnapshotEntry> {
    mine.iter().filter(move |s| {
        theirs.iter().any(|t| t.guid == s.guid) && (Some(s.guid) == base || s.holds.iter().any(|h| h == SYNC_TAG))
    })
}

/// After a failed transfer (see the module comment).
fn abandon(src: &dyn SyncSide, dst: &dyn SyncSide, fresh: &SnapshotEntry) {
    let _ = src.release(&fresh.name, SYNC_TAG);
    if let Ok(there) = dst.snapshots() {
        if !there.iter().any(|s| s.guid == fresh.guid) {
            let _ = src.delete_snapshot(&fresh.name);
        }
    }
}

/// Replicates `src` to `dst` (see the module comment).
pub fn replicate(
    src: &dyn SyncSide,
    dst: &dyn SyncSide,
    opts: &SyncOptions,
    progress: Progress<'_>,
) -> Result<SyncReport> {
    opts.check()?;
    let start = Instant::now();
    let src_snaps = by_age(src.snapshots()?);
    let dst_snaps = by_age(dst.snapshots()?);
    let base = choose_base(src, &src_snaps, dst, &dst_snaps)?;
    if let Some(b) = &base {
        // The increment is built on it: nothing may prune it meanwhile.
        hold_unless_held(src, &b.source)?;
        hold_unless_held(dst, &b.destination)?;
    }
    let fresh = take_fresh_snapshot(src)?;
    let base_name = base.as_ref().map(|b| b.source.name.as_str());
    let sent = src.hold(&fresh.name, SYNC_TAG).and_then(|()| {
        let total = src.estimate(&fresh.name, base_name).unwrap_or(0);
        let stream =
            Stream { snapshot: &fresh.name, base: base_name, zstd_level: opts.zstd_level, rate: opts.bwlimit, total };
        transfer(src, dst, &stream, progress)
    });
    let stream_bytes = match sent {
        Ok(b) => b,
        Err(e) => {
            abandon(src, dst, &fresh);
            return Err(e);
        }
    };
    // The fresh snapshot is the common base now; the old one goes free.
    let arrived = format!("{}@{}", dst.name(), fresh.snap_part());
    dst.hold(&arrived, SYNC_TAG)?;
    let base_guid = base.as_ref().map(|b| b.source.guid);
    let mut warnings = Vec::new();
    let mut release = |side: &dyn SyncSide, mine: &[SnapshotEntry], theirs: &[SnapshotEntry], keep: &[Uuid]| {
        for s in older_bases(mine, theirs, base_guid).filter(|s| !keep.contains(&s.guid)) {
            if let Err(e) = side.release(&s.name, SYNC_TAG) {
                warnings.push(format!("the old base stays held: {}", e.message));
            }
        }
    };
    release(src, &src_snaps, &dst_snaps, &opts.keep_on_source);
    release(dst, &dst_snaps, &src_snaps, &[]);
    Ok(SyncReport {
        name: dst.describe(),
        snapshot: arrived,
        base: base.map(|b| b.source.name),
        stream_bytes,
        seconds: start.elapsed().as_secs_f64(),
        sent: fresh,
        warnings,
    })
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
