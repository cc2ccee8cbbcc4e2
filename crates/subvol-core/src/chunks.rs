//! Chunk layouts: which host blocks hold each chunk of an image.
//!
//! Two chunks, of one image or of two, whose data lives in the same host
//! blocks at the same places within the chunk hold the same bytes (the rule
//! the extent diff already relies on). A scrub groups the chunks of many
//! snapshots by layout and reads each layout once, so snapshots that share
//! most of their blocks cost about their unique data, not their total size.

use crate::extent::{ExtentFlags, ExtentMap};
use std::ops::Range;

/// One run of a chunk's data on the host.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Piece {
    /// Offset within the chunk.
    pub at: u64,
    pub length: u64,
    /// Host address of the piece's first byte.
    pub physical: u64,
    /// For an extent whose bytes cannot be addressed piecewise (compressed,
    /// inline or unaligned data): the whole extent as (logical, physical,
    /// length, flags), which another chunk must match exactly to share it.
    pub whole: Option<(u64, u64, u64, u32)>,
}

/// Where a chunk's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Layout {
    /// No data: it reads as zeroes without touching a block.
    Zero,
    /// A chunk of `length` bytes whose data is `pieces`; the rest reads as
    /// zeroes.
    Blocks { length: u64, pieces: Vec<Piece> },
    /// Data whose host address says nothing (delayed allocation, unknown
    /// location): it shares with nothing and is read for its own image.
    Private,
}

/// Extents whose physical address cannot be offset byte by byte.
fn whole_only(f: ExtentFlags) -> bool {
    f.has(ExtentFlags::ENCODED) || f.has(ExtentFlags::DATA_INLINE) || f.has(ExtentFlags::NOT_ALIGNED)
}

/// The layouts of chunks `chunks` (of `chunk_size` bytes) of an image of
/// `size` bytes mapped by `map`; chunks past the end are left out. Runs in
/// O(extents in the range + chunks).
pub fn layouts(map: &ExtentMap, size: u64, chunk_size: u64, chunks: Range<u64>) -> Vec<Layout> {
    let last = size.div_ceil(chunk_size).min(chunks.end);
    let ex = &map.extents;
    let first_start = chunks.start.saturating_mul(chunk_size);
    let mut k = ex.partition_point(|e| e.end() <= first_start);
    let mut out = Vec::with_capacity(last.saturating_sub(chunks.start) as usize);
    for i in chunks.start..last {
        let start = i * chunk_size;
        let end = (start + chunk_size).min(size);
        while k < ex.len() && ex[k].end() <= start {
            k += 1;
        }
        let mut pieces: Vec<Piece> = Vec::new();
        let mut private = false;
        for e in ex[k..].iter().take_while(|e| e.logical < end) {
            let (a, b) = (e.logical.max(start), e.end().min(end));
            if a >= b || e.flags.has(ExtentFlags::UNWRITTEN) {
                continue;
            }
            if e.flags.has(ExtentFlags::DELALLOC) || e.flags.has(ExtentFlags::UNKNOWN) {
                private = true;
                break;
            }
            let whole = whole_only(e.flags).then_some((
                e.logical,
                e.physical,
                e.length,
                e.flags.0 & !(ExtentFlags::LAST | ExtentFlags::SHARED | ExtentFlags::MERGED),
            ));
            let piece = Piece { at: a - start, length: b - a, physical: e.physical + (a - e.logical), whole };
            // Contiguous on both sides: one piece, however the host split
            // the extents (another image may have them as one).
            match pieces.last_mut() {
                Some(p)
                    if p.whole.is_none()
                        && piece.whole.is_none()
                        && p.at + p.length == piece.at
                        && p.physical + p.length == piece.physical =>
                {
                    p.length += piece.length
                }
                _ => pieces.push(piece),
            }
        }
        out.push(match (private, pieces.is_empty()) {
            (true, _) => Layout::Private,
            (false, true) => Layout::Zero,
            (false, false) => Layout::Blocks { length: end - start, pieces },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::test_blocks::{map_of, Blocks, BS};
    use crate::extent::Extent;
    use proptest::prelude::*;

    const CS: u64 = 4 * BS;

    /// The bytes of chunk `i` as (block content ids), None = zeroes.
    fn content(blocks: &Blocks, size_blocks: usize, i: u64) -> Vec<Option<u64>> {
        let per = (CS / BS) as usize;
        let s = i as usize * per;
        (s..(s + per).min(size_blocks))
            .map(|b| blocks.get(b).copied().flatten().filter(|(_, u)| !u).map(|(p, _)| p))
            .collect()
    }

    fn blocks_strategy() -> impl Strategy<Value = Blocks> {
        proptest::collection::vec(proptest::option::weighted(0.7, (0u64..30, proptest::bool::weighted(0.15))), 0..40)
    }

    proptest! {
        #[test]
        fn equal_layouts_hold_equal_bytes(a in blocks_strategy(), b in blocks_strategy(), ea in 0usize..5, eb in 0usize..5, split in any::<bool>()) {
            let (sa, sb) = (a.len() + ea, b.len() + eb);
            let la = layouts(&map_of(&a, false), sa as u64 * BS, CS, 0..u64::MAX);
            let lb = layouts(&map_of(&b, split), sb as u64 * BS, CS, 0..u64::MAX);
            prop_assert_eq!(la.len() as u64, (sa as u64 * BS).div_ceil(CS));
            for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
                let (ca, cb) = (content(&a, sa, i as u64), content(&b, sb, i as u64));
                // Zero layouts read as zeroes whatever their length (a zero
                // chunk's entry does not depend on it).
                if x == y && *x != Layout::Zero {
                    prop_assert_eq!(&ca, &cb, "chunk {} shares a layout but not its bytes", i);
                }
                if *x == Layout::Zero {
                    prop_assert!(ca.iter().all(Option::is_none));
                }
                prop_assert!(*x != Layout::Private);
            }
        }

        #[test]
        fn unchanged_chunks_share_a_layout(a in blocks_strategy(), changed in proptest::collection::vec(any::<bool>(), 40), from in 0u64..12) {
            let b: Blocks = a.iter().enumerate().map(|(i, x)| match x {
                Some(_) if changed[i] => Some((1000 + i as u64, false)),
                other => *other,
            }).collect();
            let size = a.len() as u64 * BS;
            let la = layouts(&map_of(&a, false), size, CS, from..u64::MAX);
            let lb = layouts(&map_of(&b, true), size, CS, from..u64::MAX);
            for (k, (x, y)) in la.iter().zip(&lb).enumerate() {
                let i = from as usize + k;
                let per = (CS / BS) as usize;
                let untouched = (i * per..((i + 1) * per).min(a.len())).all(|j| a[j] == b[j]);
                if untouched {
                    prop_assert_eq!(x, y, "chunk {} kept its blocks but not its layout", i);
                }
            }
        }
    }

    #[test]
    fn delayed_and_compressed_extents() {
        let e = |l, p, n, f| Extent { logical: l, physical: p, length: n, flags: ExtentFlags(f) };
        let m = ExtentMap::new(vec![e(0, 0, 4096, ExtentFlags::DELALLOC), e(CS, 8192, 8192, ExtentFlags::ENCODED)])
            .unwrap();
        let l = layouts(&m, 3 * CS, CS, 0..3);
        assert_eq!(l[0], Layout::Private);
        let Layout::Blocks { pieces, .. } = &l[1] else { panic!("{:?}", l[1]) };
        assert_eq!(pieces[0].whole, Some((CS, 8192, 8192, ExtentFlags::ENCODED)));
        assert_eq!(l[2], Layout::Zero);
        assert!(layouts(&m, 3 * CS, CS, 3..9).is_empty());
    }
}
