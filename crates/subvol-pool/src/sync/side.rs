//! One side of a sync, as the protocol sees it: a handful of pool
//! operations on one subvolume. A pool in this process is one side
//! (`LocalSide`); a pool on another host, driven through its `subvol`
//! command, is another (`RemoteSide`); tests use an in-memory one.

use crate::error::Result;
use crate::outcome::Outcome;
use chrono::{DateTime, Utc};
use std::io::{Read, Write};
use uuid::Uuid;

/// A snapshot as the protocol compares them: by guid, ordered by age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    /// `NAME@SNAP` on its side.
    pub name: String,
    pub guid: Uuid,
    pub created: DateTime<Utc>,
    pub holds: Vec<String>,
}

impl SnapshotEntry {
    /// The part after `@`: the same on both sides of a pair.
    pub fn snap_part(&self) -> &str {
        self.name.split_once('@').map_or("", |(_, s)| s)
    }
}

/// What the sync protocol needs from each side. Every call acts on the
/// side's one subvolume; errors name the side (its [`describe`]).
///
/// [`describe`]: SyncSide::describe
pub trait SyncSide: Sync {
    /// The side as the user wrote it (`NAME`, `host:/pool:NAME`).
    fn describe(&self) -> String;
    /// The subvolume on this side.
    fn name(&self) -> &str;
    /// Its snapshots; none when the subvolume does not exist (yet).
    fn snapshots(&self) -> Result<Vec<SnapshotEntry>>;
    /// Takes `NAME@SNAP` tagged `tag`; `AlreadyDone` when a snapshot of
    /// that name was already there (it is then not a fresh one).
    fn take_snapshot(&self, snapshot: &str, tag: &str) -> Result<(SnapshotEntry, Outcome)>;
    fn hold(&self, snapshot: &str, tag: &str) -> Result<()>;
    fn release(&self, snapshot: &str, tag: &str) -> Result<()>;
    fn delete_snapshot(&self, snapshot: &str) -> Result<()>;
    /// Data bytes the stream of `snapshot` (from `base`) will carry.
    fn estimate(&self, snapshot: &str, base: Option<&str>) -> Result<u64>;
    /// Writes the stream of `snapshot` (incremental from `base`) to `out`.
    fn send(&self, snapshot: &str, base: Option<&str>, zstd_level: Option<i32>, out: &mut dyn Write) -> Result<()>;
    /// Reads a stream from `input` into the subvolume.
    fn receive(&self, input: &mut dyn Read) -> Result<()>;
}
