//! What `subvol scrub` is asked and what it answers: its options, its
//! report, and the words for damage (shared with `pool status`, `info` and
//! `pool check`).

use crate::manifest_build::BuildReport;
use serde::Serialize;
use subvol_core::format_size;
use subvol_core::scrub::{DamagedRange, SnapshotScrub, Verdict};

/// What to scrub, and how.
#[derive(Debug, Clone, Default)]
pub struct ScrubOptions {
    /// `NAME` (its snapshots), `NAME@SNAP`, or `None` for every snapshot.
    pub target: Option<String>,
    /// Leave live subvolumes out of the report.
    pub snapshots_only: bool,
    /// Read at most this many bytes per second.
    pub rate: Option<u64>,
    /// Read in the idle I/O class, at a low CPU priority.
    pub idle: bool,
    /// Start over even if an interrupted scrub of the same scope could resume.
    pub restart: bool,
    /// Repair the damage found from this replica (`--repair-from`).
    pub repair_from: Option<crate::sync::RepairFrom>,
}

impl ScrubOptions {
    /// Every read of the scrub, manifests it creates included, goes at this pace.
    pub(crate) fn pace(&self) -> crate::chunk_io::Pace {
        crate::chunk_io::Pace { rate: self.rate, idle: self.idle }
    }
}

/// A live subvolume reading blocks a scrub found damaged in its snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct LiveDamage {
    pub name: String,
    pub damaged: Vec<DamagedRange>,
    pub damaged_bytes: u64,
}

/// A snapshot in scope that this scrub did not verify, and why.
#[derive(Debug, Clone, Serialize)]
pub struct NotCovered {
    pub name: String,
    pub why: String,
}

/// What one scrub did and found.
#[derive(Debug, Clone, Serialize)]
pub struct ScrubReport {
    pub pool: std::path::PathBuf,
    /// `--all`, `NAME` or `NAME@SNAP`.
    pub scope: String,
    pub started: String,
    pub finished: String,
    /// It continued an interrupted scrub from this byte offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_at_bytes: Option<u64>,
    /// Every snapshot verified (or that could not be), by name.
    pub snapshots: Vec<SnapshotScrub>,
    /// Manifests this scrub created, from the images as it found them.
    pub manifests_created: Vec<BuildReport>,
    /// Live subvolumes in scope: a subvolume changes, so it has no manifest.
    pub live: Vec<String>,
    /// Live subvolumes whose image still uses blocks found damaged: their
    /// current data there is damaged too.
    pub live_damaged: Vec<LiveDamage>,
    pub not_covered: Vec<NotCovered>,
    /// Bytes read to verify (each distinct chunk once), by this run.
    pub bytes_read: u64,
    pub chunks_read: u64,
    /// Bytes of snapshot content verified: every snapshot counted whole.
    pub bytes_verified: u64,
    pub duration_us: u64,
    /// No damage, and every snapshot could be verified.
    pub clean: bool,
    /// What `--repair-from` did with the damage found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<crate::scrub_repair::RepairReport>,
    /// Which files inside the damaged snapshots hold the damaged bytes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::scrub_files::SnapshotFiles>,
}

impl ScrubReport {
    pub fn damaged(&self) -> impl Iterator<Item = &SnapshotScrub> {
        self.snapshots.iter().filter(|s| s.verdict == Verdict::Damaged)
    }

    pub fn unverified(&self) -> impl Iterator<Item = &SnapshotScrub> {
        self.snapshots.iter().filter(|s| s.verdict == Verdict::Unverified)
    }
}

/// Words for the fix of damaged snapshots: what there is to do today.
pub fn damage_advice() -> &'static str {
    "their data is not what was snapshotted. Repair them in place from a replica holding the same \
     snapshots with `subvol scrub --repair-from [HOST:]POOL`, or restore what you need from one. \
     `subvol info NAME@SNAP` lists the damaged byte ranges"
}

/// One line on a damaged snapshot: its name, how much, and the first ranges.
pub fn describe_damage(s: &SnapshotScrub) -> String {
    let mut ranges: Vec<String> =
        s.damaged.iter().take(4).map(|r| format!("{}+{} {}", r.offset, r.length, r.fault.as_str())).collect();
    if s.damaged.len() > 4 {
        ranges.push(format!("{} more", s.damaged.len() - 4));
    }
    match (&s.problem, ranges.is_empty()) {
        (Some(p), true) => format!("{}: {p}", s.name),
        (Some(p), false) => {
            format!("{}: {p}; {} damaged at {}", s.name, format_size(s.damaged_bytes), ranges.join(", "))
        }
        (None, _) => format!("{}: {} damaged at {}", s.name, format_size(s.damaged_bytes), ranges.join(", ")),
    }
}
