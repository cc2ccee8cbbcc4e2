//! The extent diff: which byte ranges of `target` differ from `base`,
//! judged only by where their blocks live on the host.
//!
//! Two files that share host blocks (reflink copies) hold the same bytes in
//! those blocks, so a range mapped to the same physical address in both is
//! unchanged; everything else is a change. This drives both the short frozen
//! window of a snapshot (re-clone only what changed since a pre-clone) and
//! incremental replication (send only what changed since the base snapshot).

use crate::extent::{Extent, ExtentFlags, ExtentMap};
use serde::{Deserialize, Serialize};

/// One changed range of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The target has data here that the base lacks: copy it.
    Data { offset: u64, length: u64 },
    /// The target reads as zeroes here (hole or unwritten extent) and the
    /// base may not: punch it.
    Hole { offset: u64, length: u64 },
}

impl Change {
    pub fn offset(&self) -> u64 {
        match *self {
            Change::Data { offset, .. } | Change::Hole { offset, .. } => offset,
        }
    }

    pub fn length(&self) -> u64 {
        match *self {
            Change::Data { length, .. } | Change::Hole { length, .. } => length,
        }
    }
}

/// The changes that turn `base` (of `base_size` bytes) into `target` (of
/// `target_size` bytes), sorted and merged. The caller sets the size to
/// `target_size` first; ranges past it are never reported.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtentDiff {
    pub target_size: u64,
    pub changes: Vec<Change>,
}

impl ExtentDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Bytes of data to copy.
    pub fn data_bytes(&self) -> u64 {
        self.changes.iter().filter(|c| matches!(c, Change::Data { .. })).map(Change::length).sum()
    }

    pub fn hole_bytes(&self) -> u64 {
        self.changes.iter().filter(|c| matches!(c, Change::Hole { .. })).map(Change::length).sum()
    }
}

/// Extents whose physical address cannot be compared piecewise: DELALLOC
/// and UNKNOWN have none yet; ENCODED (compressed) and INLINE data only match
/// when the whole extent matches exactly.
fn needs_exact_match(f: ExtentFlags) -> bool {
    f.has(ExtentFlags::ENCODED) || f.has(ExtentFlags::DATA_INLINE) || f.has(ExtentFlags::NOT_ALIGNED)
}

fn never_matches(f: ExtentFlags) -> bool {
    f.has(ExtentFlags::DELALLOC) || f.has(ExtentFlags::UNKNOWN)
}

/// Reads as zeroes: an unwritten (preallocated) extent.
fn reads_zero(e: &Extent) -> bool {
    e.flags.has(ExtentFlags::UNWRITTEN)
}

/// What one byte range looks like in one file.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Zero,
    Data(&'a Extent),
}

fn piece(e: Option<&Extent>) -> Piece<'_> {
    match e {
        Some(e) if !reads_zero(e) => Piece::Data(e),
        _ => Piece::Zero,
    }
}

/// Whether range [a, _) is the same in base and target.
fn same(base: Piece<'_>, target: Piece<'_>, a: u64) -> bool {
    match (base, target) {
        (_, Piece::Zero) => matches!(base, Piece::Zero),
        (Piece::Zero, Piece::Data(_)) => false,
        (Piece::Data(b), Piece::Data(t)) => {
            if never_matches(b.flags) || never_matches(t.flags) {
                return false;
            }
            if needs_exact_match(b.flags) || needs_exact_match(t.flags) {
                return b.logical == t.logical
                    && b.length == t.length
                    && b.physical == t.physical
                    && (b.flags.0 & !ExtentFlags::LAST & !ExtentFlags::SHARED)
                        == (t.flags.0 & !ExtentFlags::LAST & !ExtentFlags::SHARED);
            }
            // Same physical byte for logical offset `a` in both.
            let pb = b.physical.checked_add(a - b.logical);
            let pt = t.physical.checked_add(a - t.logical);
            pb.is_some() && pb == pt
        }
    }
}

/// Computes the diff. Both maps must be sorted and non-overlapping (as
/// `ExtentMap::new` guarantees). Runs in O(n + m).
pub fn diff(base: &ExtentMap, base_size: u64, target: &ExtentMap, target_size: u64) -> ExtentDiff {
    let mut changes: Vec<Change> = Vec::new();
    let mut push = |c: Change| {
        if c.length() == 0 {
            return;
        }
        if let Some(last) = changes.last_mut() {
            match (last, c) {
                (Change::Data { offset, length }, Change::Data { offset: o2, length: l2 })
                | (Change::Hole { offset, length }, Change::Hole { offset: o2, length: l2 })
                    if *offset + *length == o2 =>
                {
                    *length += l2;
                    return;
                }
                _ => {}
            }
        }
        changes.push(c);
    };
    let b = &base.extents;
    let t = &target.extents;
    let (mut i, mut j) = (0usize, 0usize);
    let mut pos = 0u64;
    while pos < target_size {
        while i < b.len() && b[i].end() <= pos {
            i += 1;
        }
        while j < t.len() && t[j].end() <= pos {
            j += 1;
        }
        let be = b.get(i).filter(|e| e.logical <= pos && pos < base_size);
        let te = t.get(j).filter(|e| e.logical <= pos);
        // The segment ends at the next boundary of either map.
        let mut end = target_size;
        for e in [b.get(i), t.get(j)].into_iter().flatten() {
            if e.logical > pos {
                end = end.min(e.logical);
            } else {
                end = end.min(e.end());
            }
        }
        if pos < base_size {
            end = end.min(base_size);
        }
        let end = end.max(pos + 1).min(target_size);
        let (bp, tp) = (piece(be), piece(te));
        if !same(bp, tp, pos) {
            match tp {
                Piece::Data(_) => push(Change::Data { offset: pos, length: end - pos }),
                Piece::Zero => push(Change::Hole { offset: pos, length: end - pos }),
            }
        }
        pos = end;
    }
    ExtentDiff { target_size, changes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::test_blocks::{Blocks, BS};

    fn map_of(blocks: &Blocks) -> ExtentMap {
        crate::extent::test_blocks::map_of(blocks, false)
    }
    use proptest::prelude::*;

    /// What each block reads as: Some(phys) = that block's data, None = zeroes.
    fn content(blocks: &Blocks, size_blocks: usize) -> Vec<Option<u64>> {
        (0..size_blocks).map(|i| blocks.get(i).copied().flatten().filter(|(_, u)| !u).map(|(p, _)| p)).collect()
    }

    fn apply(base: &Blocks, base_blocks: usize, target: &Blocks, d: &ExtentDiff) -> Vec<Option<u64>> {
        let mut out = content(base, base_blocks);
        out.resize((d.target_size / BS) as usize, None);
        let want = content(target, (d.target_size / BS) as usize);
        for c in &d.changes {
            let (s, e) = ((c.offset() / BS) as usize, ((c.offset() + c.length()) / BS) as usize);
            for k in s..e {
                out[k] = match c {
                    Change::Data { .. } => want[k],
                    Change::Hole { .. } => None,
                };
            }
        }
        out
    }

    fn blocks_strategy() -> impl Strategy<Value = Blocks> {
        proptest::collection::vec(proptest::option::weighted(0.7, (0u64..40, proptest::bool::weighted(0.15))), 0..48)
    }

    proptest! {
        #[test]
        fn applying_the_diff_gives_the_target(base in blocks_strategy(), target in blocks_strategy(), extra in 0usize..4) {
            let bsz = base.len();
            let tsz = target.len() + extra;
            let d = diff(&map_of(&base), bsz as u64 * BS, &map_of(&target), tsz as u64 * BS);
            prop_assert_eq!(apply(&base, bsz, &target, &d), content(&target, tsz));
            for w in d.changes.windows(2) {
                prop_assert!(w[0].offset() + w[0].length() <= w[1].offset());
            }
            for c in &d.changes {
                prop_assert!(c.offset() + c.length() <= tsz as u64 * BS);
            }
        }

        #[test]
        fn diff_of_a_file_with_itself_is_empty(base in blocks_strategy()) {
            let m = map_of(&base);
            let size = base.len() as u64 * BS;
            prop_assert!(diff(&m, size, &m, size).is_empty());
        }

        #[test]
        fn shared_blocks_are_never_sent(base in blocks_strategy(), changed in proptest::collection::vec(any::<bool>(), 48)) {
            // Target = base with some blocks rewritten to fresh physical blocks.
            let target: Blocks = base.iter().enumerate().map(|(i, b)| match b {
                Some(_) if changed[i] => Some((1000 + i as u64, false)),
                other => *other,
            }).collect();
            let size = base.len() as u64 * BS;
            let d = diff(&map_of(&base), size, &map_of(&target), size);
            let n_changed = target.iter().zip(&base).filter(|(t, b)| t != b).count() as u64;
            prop_assert!(d.data_bytes() <= n_changed * BS);
        }
    }

    #[test]
    fn delalloc_and_encoded_extents() {
        let e = |l, p, n, f| Extent { logical: l, physical: p, length: n, flags: ExtentFlags(f) };
        let a = ExtentMap::new(vec![e(0, 0, 8192, ExtentFlags::DELALLOC)]).unwrap();
        assert_eq!(diff(&a, 8192, &a, 8192).data_bytes(), 8192, "delalloc must count as changed");
        let c = ExtentMap::new(vec![e(0, 4096, 8192, ExtentFlags::ENCODED)]).unwrap();
        assert!(diff(&c, 8192, &c, 8192).is_empty());
        let c2 =
            ExtentMap::new(vec![e(0, 4096, 4096, ExtentFlags::ENCODED), e(4096, 4096, 4096, ExtentFlags::ENCODED)])
                .unwrap();
        assert_eq!(diff(&c, 8192, &c2, 8192).data_bytes(), 8192, "ambiguous compressed extents are sent");
        // Base bigger than target: nothing past the target size is reported.
        let big = ExtentMap::new(vec![e(0, 0, 65536, 0)]).unwrap();
        let small = ExtentMap::new(vec![e(0, 0, 4096, 0)]).unwrap();
        assert!(diff(&big, 65536, &small, 4096).is_empty());
    }
}
