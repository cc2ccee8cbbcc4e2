//! What scrubs remember in the pool: where an interrupted scrub stopped, so
//! that the next one resumes there, and what scrubs found in each snapshot,
//! for `pool status` and `info`. Both are checksummed records in the
//! metadata encoding (docs/FORMAT.md, "Scrub records").

use crate::manifest::Geometry;
use crate::meta::{decode_at_most, encode, MetaError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// Format version of both records.
pub const SCRUB_FORMAT: u32 = 1;
/// Largest scrub record read: they list snapshots and damaged ranges, more
/// than an xattr-sized record holds in a large pool.
pub const MAX_SCRUB_RECORD: usize = 16 << 20;
/// Damaged ranges kept per snapshot; past that, the count says how many.
pub const MAX_RANGES: usize = 1000;

/// Why a chunk failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// Its bytes do not hash to what the manifest recorded.
    Mismatch,
    /// The host returned an I/O error reading it.
    Unreadable,
    /// The image has no data there any more (a hole), where it had.
    Missing,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Mismatch => "mismatch",
            Fault::Unreadable => "unreadable",
            Fault::Missing => "missing",
        }
    }
}

/// A damaged byte range of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedRange {
    pub offset: u64,
    pub length: u64,
    pub fault: Fault,
}

/// Damaged chunks (ascending, each once) as merged byte ranges: neighbours
/// with the same fault become one range.
pub fn damaged_ranges(geometry: Geometry, chunks: &[(u64, Fault)]) -> Vec<DamagedRange> {
    let mut out: Vec<DamagedRange> = Vec::new();
    for &(i, fault) in chunks {
        let (offset, length) = geometry.chunk(i);
        match out.last_mut() {
            Some(r) if r.fault == fault && r.offset + r.length == offset => r.length += length,
            _ => out.push(DamagedRange { offset, length, fault }),
        }
    }
    out
}

/// The outcome for one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every chunk matched its manifest.
    Clean,
    /// Some did not, or the image no longer has the manifest's size.
    Damaged,
    /// Nothing to compare with: its manifest is damaged or unreadable.
    Unverified,
}

/// What a scrub found in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotScrub {
    /// `NAME@SNAP` when it was scrubbed.
    pub name: String,
    pub guid: Uuid,
    pub verdict: Verdict,
    /// Its manifest was created by this scrub, from the image as it was
    /// found: chunks it hashed then could not be verified.
    #[serde(default)]
    pub manifest_created: bool,
    /// A problem with the whole snapshot (its size changed, its manifest is
    /// damaged), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Damaged ranges, at most [`MAX_RANGES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged: Vec<DamagedRange>,
    /// Bytes in damaged ranges, all of them (also past [`MAX_RANGES`]).
    #[serde(default)]
    pub damaged_bytes: u64,
    pub scrubbed_at: DateTime<Utc>,
}

impl SnapshotScrub {
    /// Adds damaged ranges (ascending), keeping at most [`MAX_RANGES`].
    pub fn add_damage(&mut self, ranges: &[DamagedRange]) {
        for r in ranges {
            self.damaged_bytes += r.length;
            let full = self.damaged.len() >= MAX_RANGES;
            match self.damaged.last_mut() {
                Some(l) if l.fault == r.fault && l.offset + l.length == r.offset => l.length += r.length,
                _ if !full => self.damaged.push(*r),
                _ => {}
            }
        }
        if !ranges.is_empty() {
            self.verdict = Verdict::Damaged;
        }
    }
}

/// Where an interrupted scrub stopped (`.subvol/scrub/progress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubProgress {
    /// What was asked: `--all`, `NAME` or `NAME@SNAP`.
    pub scope: String,
    pub started: DateTime<Utc>,
    pub chunk_size: u32,
    /// Every chunk before this one is verified, in every member.
    pub next_chunk: u64,
    /// Chunks in all (the largest member's count).
    pub total_chunks: u64,
    /// The snapshots this scrub covers (snapshots taken since are left to
    /// the next one).
    pub members: Vec<Uuid>,
    /// Members with damage so far, or whose manifest it created.
    pub found: Vec<SnapshotScrub>,
}

impl ScrubProgress {
    pub fn encode(&self) -> Vec<u8> {
        encode("scrub-progress", SCRUB_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        decode_at_most("scrub-progress", SCRUB_FORMAT, bytes, MAX_SCRUB_RECORD)
    }
}

/// One finished scrub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubRun {
    pub scope: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// It continued an interrupted scrub.
    pub resumed: bool,
    pub snapshots: u64,
    pub damaged: u64,
    pub unverified: u64,
    pub manifests_created: u64,
    /// Bytes read from the images (by the last part, when resumed).
    pub bytes_read: u64,
    /// Bytes of snapshot content verified (every snapshot counted whole,
    /// shared blocks once per snapshot).
    pub bytes_verified: u64,
}

/// What scrubs found (`.subvol/scrub/results`): the last scrub, and the
/// latest outcome for each snapshot any scrub covered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ScrubResults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<ScrubRun>,
    /// By guid.
    #[serde(default)]
    pub snapshots: BTreeMap<Uuid, SnapshotScrub>,
}

impl ScrubResults {
    /// Records a finished scrub: its outcome replaces each covered
    /// snapshot's earlier one, and snapshots that no longer exist
    /// (`exists` says) are forgotten.
    pub fn record(&mut self, run: ScrubRun, outcomes: Vec<SnapshotScrub>, exists: impl Fn(&Uuid) -> bool) {
        self.last = Some(run);
        for o in outcomes {
            self.snapshots.insert(o.guid, o);
        }
        self.snapshots.retain(|g, _| exists(g));
    }

    /// Snapshots whose latest scrub found damage, by name.
    pub fn damaged(&self) -> Vec<&SnapshotScrub> {
        let mut v: Vec<&SnapshotScrub> = self.snapshots.values().filter(|s| s.verdict == Verdict::Damaged).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn encode(&self) -> Vec<u8> {
        encode("scrub-results", SCRUB_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        decode_at_most("scrub-results", SCRUB_FORMAT, bytes, MAX_SCRUB_RECORD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn outcome(name: &str, guid: u128, verdict: Verdict) -> SnapshotScrub {
        SnapshotScrub {
            name: name.into(),
            guid: Uuid::from_u128(guid),
            verdict,
            manifest_created: false,
            problem: None,
            damaged: Vec::new(),
            damaged_bytes: 0,
            scrubbed_at: at(5),
        }
    }

    fn run() -> ScrubRun {
        ScrubRun {
            scope: "--all".into(),
            started: at(1),
            finished: at(2),
            resumed: false,
            snapshots: 2,
            damaged: 1,
            unverified: 0,
            manifests_created: 0,
            bytes_read: 10,
            bytes_verified: 20,
        }
    }

    proptest! {
        #[test]
        fn ranges_cover_exactly_the_damaged_chunks(mut chunks in proptest::collection::btree_map(0u64..200, 0u8..2, 0..60), size in 1u64..300) {
            let g = Geometry::new(65536, size * 65536 - 4096).unwrap();
            chunks.retain(|i, _| *i < g.chunks());
            let list: Vec<(u64, Fault)> = chunks.iter().map(|(i, f)| (*i, if *f == 0 { Fault::Mismatch } else { Fault::Unreadable })).collect();
            let ranges = damaged_ranges(g, &list);
            let total: u64 = list.iter().map(|(i, _)| g.chunk(*i).1).sum();
            prop_assert_eq!(ranges.iter().map(|r| r.length).sum::<u64>(), total);
            for w in ranges.windows(2) {
                prop_assert!(w[0].offset + w[0].length <= w[1].offset);
                prop_assert!(w[0].offset + w[0].length < w[1].offset || w[0].fault != w[1].fault, "neighbours not merged");
            }
            for (i, f) in &list {
                let (o, _) = g.chunk(*i);
                prop_assert!(ranges.iter().any(|r| r.offset <= o && o < r.offset + r.length && r.fault == *f));
            }
        }
    }

    #[test]
    fn damage_past_the_limit_is_counted_not_listed() {
        let mut o = outcome("a@s", 1, Verdict::Clean);
        let ranges: Vec<DamagedRange> = (0..MAX_RANGES as u64 + 5)
            .map(|i| DamagedRange { offset: i * 10, length: 4, fault: Fault::Mismatch })
            .collect();
        o.add_damage(&ranges);
        assert_eq!(o.verdict, Verdict::Damaged);
        assert_eq!(o.damaged.len(), MAX_RANGES);
        assert_eq!(o.damaged_bytes, 4 * (MAX_RANGES as u64 + 5));
        o.add_damage(&[]);
        assert_eq!(o.verdict, Verdict::Damaged);
    }

    #[test]
    fn results_keep_the_latest_outcome_of_existing_snapshots() {
        let mut r = ScrubResults::default();
        r.record(run(), vec![outcome("a@1", 1, Verdict::Damaged), outcome("a@2", 2, Verdict::Clean)], |_| true);
        assert_eq!(r.damaged().len(), 1);
        // A later scrub of a@1 alone finds it clean (repaired); a@2 was deleted.
        r.record(run(), vec![outcome("a@1", 1, Verdict::Clean)], |g| *g == Uuid::from_u128(1));
        assert!(r.damaged().is_empty());
        assert_eq!(r.snapshots.len(), 1);
        let bytes = r.encode();
        assert!(bytes.starts_with(b"subvol-scrub-results/1 blake3="));
        assert_eq!(ScrubResults::decode(&bytes).unwrap(), r);
        let mut bad = bytes.clone();
        let n = bad.len() - 5;
        bad[n] ^= 1;
        assert!(ScrubResults::decode(&bad).is_err());
        assert!(ScrubProgress::decode(&bytes).is_err(), "a results record read as progress");
    }
}
