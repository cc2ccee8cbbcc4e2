//! A side in a pool of this process: calls the pool directly.

use super::side::{SnapshotEntry, SyncSide};
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::Outcome;
use crate::pool::Pool;
use crate::replication::ReceiveOptions;
use crate::subvolume::SubvolumeInfo;
use std::io::{Read, Write};
use subvol_core::ObjectKind;

pub struct LocalSide<'a> {
    pool: &'a Pool,
    name: String,
    label: String,
}

impl<'a> LocalSide<'a> {
    /// Subvolume `name` of `pool`, called `label` in messages.
    pub fn new(pool: &'a Pool, name: &str, label: &str) -> Self {
        LocalSide { pool, name: name.to_string(), label: label.to_string() }
    }

    /// Errors name the side, as a remote side's do.
    fn named<T>(&self, r: Result<T>) -> Result<T> {
        r.map_err(|e| Error::new(e.kind, format!("{}: {}", self.label, e.message)))
    }
}

/// A listed snapshot; `None` for one whose metadata cannot be read (no
/// guid to compare: `pool check` reports it).
fn entry(info: &SubvolumeInfo) -> Option<SnapshotEntry> {
    if info.kind != ObjectKind::Snapshot || info.problem.is_some() {
        return None;
    }
    Some(SnapshotEntry {
        name: info.name.clone(),
        guid: info.guid.parse().ok()?,
        created: chrono::DateTime::parse_from_rfc3339(&info.created).ok()?.to_utc(),
        holds: info.holds.clone(),
    })
}

impl SyncSide for LocalSide<'_> {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        match self.pool.list_snapshots(Some(&self.name)) {
            Ok(list) => Ok(list.iter().filter_map(entry).collect()),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => self.named(Err(e)),
        }
    }

    fn take_snapshot(&self, snapshot: &str, tag: &str) -> Result<(SnapshotEntry, Outcome)> {
        let taken = self.named(self.pool.snapshot(&[snapshot.to_string()], &[tag.to_string()], &|_, _| {}))?;
        let outcome = taken.first().map_or(Outcome::Done, |r| r.outcome);
        let info = self.named(self.pool.info(snapshot))?;
        let made = entry(&info).ok_or_else(|| {
            Error::new(ErrorKind::Corrupt, format!("{}: {snapshot} has unreadable metadata", self.label))
        })?;
        Ok((made, outcome))
    }

    fn hold(&self, snapshot: &str, tag: &str) -> Result<()> {
        self.named(self.pool.hold(snapshot, tag)).map(drop)
    }

    fn release(&self, snapshot: &str, tag: &str) -> Result<()> {
        self.named(self.pool.release(snapshot, tag)).map(drop)
    }

    fn delete_snapshot(&self, snapshot: &str) -> Result<()> {
        self.named(self.pool.delete(snapshot, false, false, false)).map(drop)
    }

    fn estimate(&self, snapshot: &str, base: Option<&str>) -> Result<u64> {
        self.named(self.pool.send_estimate(snapshot, base)).map(|e| e.data_bytes)
    }

    fn send(&self, snapshot: &str, base: Option<&str>, zstd_level: Option<i32>, out: &mut dyn Write) -> Result<()> {
        self.named(self.pool.send(snapshot, base, zstd_level, None, out, &|_, _| {})).map(drop)
    }

    fn receive(&self, input: &mut dyn Read) -> Result<()> {
        self.named(self.pool.receive(&self.name, input, &ReceiveOptions::default(), &|_, _| {})).map(drop)
    }
}
