//! What a stream's records say about the chunks of the image they build:
//! which chunks they change, and the manifest entries of those they
//! determine whole, hashed from the records' own bytes as they pass. A
//! receiver then reads back only the chunks the records change in part
//! (the rest of their bytes is the base's), never what it has just written
//! whole; for a full stream (an empty base) every chunk is determined.
//!
//! Records come in ascending order and never overlap (the stream reader
//! enforces it), so one chunk buffer is enough: once a record starts past
//! a chunk, no later record touches it.

use crate::manifest::{hole_chunks, ChunkSet, Entry, Geometry};
use std::ops::Range;

/// Follows a stream's records chunk by chunk.
#[derive(Debug)]
pub struct RecordChunks {
    geometry: Geometry,
    /// Bytes no record covers read as zeroes: a full stream from offset 0
    /// (its image starts sparse), where every touched chunk is determined.
    zero_elsewhere: bool,
    pending: Option<Pending>,
    determined: Vec<(u64, Entry)>,
    undetermined: ChunkSet,
    zeroed: ChunkSet,
}

/// The chunk the records are in: what DATA records wrote into it and how
/// many of its bytes records covered.
#[derive(Debug)]
struct Pending {
    index: u64,
    written: Written,
    covered: u64,
}

/// A full stream's chunk is always hashed: its bytes go straight into a
/// chunk buffer. An increment's chunk is hashed only if records cover it
/// whole, so it keeps the pieces (offset in the chunk, bytes) until then:
/// scattered 4 KiB records must not cost a chunk buffer each.
#[derive(Debug)]
enum Written {
    Buffer(Vec<u8>),
    Pieces(Vec<(usize, Vec<u8>)>),
}

/// What the records said, once they ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Entries of the chunks the records determine whole, ascending.
    pub determined: Vec<(u64, Entry)>,
    /// Chunks the records change in part: their bytes must be read.
    pub undetermined: Vec<Range<u64>>,
    /// Chunks a HOLE record covers whole: zero.
    pub zeroed: Vec<Range<u64>>,
}

impl RecordChunks {
    pub fn new(geometry: Geometry, zero_elsewhere: bool) -> RecordChunks {
        let c = geometry.chunk_size();
        RecordChunks {
            geometry,
            zero_elsewhere,
            pending: None,
            determined: Vec::new(),
            undetermined: ChunkSet::new(c),
            zeroed: ChunkSet::new(c),
        }
    }

    /// A DATA record: `bytes` at `offset`.
    pub fn data(&mut self, offset: u64, mut bytes: &[u8]) {
        let mut at = offset;
        while !bytes.is_empty() && at < self.geometry.image_size() {
            let i = at / u64::from(self.geometry.chunk_size());
            let (start, len) = self.geometry.chunk(i);
            let n = bytes.len().min((start + len - at) as usize);
            let p = self.pending_for(i);
            let from = (at - start) as usize;
            match &mut p.written {
                Written::Buffer(b) => b[from..from + n].copy_from_slice(&bytes[..n]),
                Written::Pieces(v) => v.push((from, bytes[..n].to_vec())),
            }
            p.covered += n as u64;
            at += n as u64;
            bytes = &bytes[n..];
        }
    }

    /// A HOLE record: `offset .. offset + length` reads as zeroes.
    pub fn hole(&mut self, offset: u64, length: u64) {
        let size = self.geometry.image_size();
        let end = offset.saturating_add(length).min(size);
        let (whole, part) = hole_chunks(self.geometry.chunk_size(), size, offset, length);
        for r in part {
            for i in r {
                let (start, len) = self.geometry.chunk(i);
                let overlap = end.min(start + len).saturating_sub(offset.max(start));
                // Zero there: only the coverage counts.
                self.pending_for(i).covered += overlap;
            }
        }
        self.zeroed.add_chunks(whole);
    }

    /// What the records said.
    pub fn finish(mut self) -> ChunkOutcome {
        self.close();
        ChunkOutcome {
            determined: self.determined,
            undetermined: self.undetermined.into_ranges(),
            zeroed: self.zeroed.into_ranges(),
        }
    }

    fn pending_for(&mut self, i: u64) -> &mut Pending {
        if self.pending.as_ref().is_some_and(|p| p.index != i) {
            self.close();
        }
        let (zero_elsewhere, len) = (self.zero_elsewhere, self.geometry.chunk(i).1 as usize);
        self.pending.get_or_insert_with(|| Pending {
            index: i,
            written: if zero_elsewhere { Written::Buffer(vec![0; len]) } else { Written::Pieces(Vec::new()) },
            covered: 0,
        })
    }

    fn close(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let len = self.geometry.chunk(p.index).1;
        if !self.zero_elsewhere && p.covered < len {
            self.undetermined.add_chunks(p.index..p.index + 1);
            return;
        }
        let bytes = match p.written {
            Written::Buffer(b) => b,
            Written::Pieces(pieces) => {
                // Records do not overlap: what no piece wrote is zero.
                let mut b = vec![0u8; len as usize];
                for (at, piece) in &pieces {
                    b[*at..*at + piece.len()].copy_from_slice(piece);
                }
                b
            }
        };
        self.determined.push((p.index, Entry::of(&bytes)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const C: u32 = 4096;

    /// Ascending, non-overlapping records over an image of `size` bytes:
    /// (gap before, length, is a hole, fill byte).
    fn records() -> impl Strategy<Value = Vec<(u64, u64, bool, u8)>> {
        proptest::collection::vec((0u64..9000, 1u64..12000, any::<bool>(), any::<u8>()), 0..12)
    }

    fn run(
        base: &[u8],
        recs: &[(u64, u64, bool, u8)],
        zero_elsewhere: bool,
    ) -> Result<(Vec<u8>, ChunkOutcome, Geometry), TestCaseError> {
        let size = base.len() as u64;
        let g = Geometry::new(C, size).unwrap();
        let mut rc = RecordChunks::new(g, zero_elsewhere);
        let mut img = base.to_vec();
        let mut at = 0u64;
        for &(gap, len, hole, fill) in recs {
            let start = at + gap;
            if start >= size {
                break;
            }
            let end = (start + len).min(size);
            if hole {
                img[start as usize..end as usize].fill(0);
                rc.hole(start, end - start);
            } else {
                // Bytes that differ along the record (a fill of 0 is zero data).
                let bytes: Vec<u8> = (start..end).map(|b| fill.wrapping_add((b % 7) as u8 * (fill & 1))).collect();
                img[start as usize..end as usize].copy_from_slice(&bytes);
                rc.data(start, &bytes);
            }
            at = end;
        }
        Ok((img, rc.finish(), g))
    }

    fn chunk<'a>(img: &'a [u8], g: &Geometry, i: u64) -> &'a [u8] {
        let (o, l) = g.chunk(i);
        &img[o as usize..(o + l) as usize]
    }

    proptest! {
        #[test]
        fn determined_entries_are_the_images_and_every_change_is_named(
            base in proptest::collection::vec(any::<u8>(), 1..60_000),
            recs in records(),
        ) {
            let (img, out, g) = run(&base, &recs, false)?;
            let within = |rs: &[Range<u64>], i: u64| rs.iter().any(|r| r.contains(&i));
            for (i, e) in &out.determined {
                prop_assert_eq!(*e, Entry::of(chunk(&img, &g, *i)), "chunk {}", i);
            }
            for r in &out.zeroed {
                for i in r.clone() {
                    prop_assert!(chunk(&img, &g, i).iter().all(|&b| b == 0), "zeroed chunk {} holds data", i);
                    prop_assert!(!within(&out.undetermined, i) && !out.determined.iter().any(|d| d.0 == i));
                }
            }
            for i in 0..g.chunks() {
                if chunk(&img, &g, i) != chunk(&base, &g, i) {
                    let named = out.determined.iter().any(|d| d.0 == i) || within(&out.undetermined, i) || within(&out.zeroed, i);
                    prop_assert!(named, "chunk {} changed but no record named it", i);
                }
            }
            prop_assert!(out.determined.windows(2).all(|w| w[0].0 < w[1].0));
        }

        #[test]
        fn a_full_stream_determines_every_chunk_it_touches(
            size in 1usize..60_000,
            recs in records(),
        ) {
            let base = vec![0u8; size];
            let (img, out, g) = run(&base, &recs, true)?;
            prop_assert!(out.undetermined.is_empty());
            for i in 0..g.chunks() {
                let e = Entry::of(chunk(&img, &g, i));
                let got = out.determined.iter().find(|d| d.0 == i).map(|d| d.1).unwrap_or(Entry::Zero);
                prop_assert_eq!(got, e, "chunk {}", i);
            }
        }
    }

    #[test]
    fn a_huge_hole_costs_nothing_per_chunk() {
        let g = Geometry::new(C, 1 << 60).unwrap();
        let mut rc = RecordChunks::new(g, false);
        rc.data(100, &[1; 10]);
        rc.hole(4096, (1 << 60) - 4096);
        let out = rc.finish();
        assert_eq!(out.zeroed, vec![1..(1u64 << 60) / 4096]);
        assert_eq!(out.undetermined, vec![0..1]);
        assert!(out.determined.is_empty());
    }
}
