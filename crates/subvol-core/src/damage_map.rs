//! Which bytes of a file lie in damaged byte ranges of the device (image)
//! holding its filesystem: FIEMAP gives each file's extents with their
//! device addresses, and a scrub gives the image's damaged ranges; inside
//! a subvolume, image offsets are device addresses.

use crate::extent::{ExtentFlags, ExtentMap};

/// A damaged piece of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilePiece {
    /// Offset in the file.
    pub file_offset: u64,
    /// Offset in the image (the device).
    pub image_offset: u64,
    pub length: u64,
}

/// Extents whose address is not where their bytes are (inline, encoded,
/// unknown or not yet allocated): they name no damaged block.
fn addressless(f: ExtentFlags) -> bool {
    [
        ExtentFlags::UNKNOWN,
        ExtentFlags::DELALLOC,
        ExtentFlags::ENCODED,
        ExtentFlags::DATA_INLINE,
        ExtentFlags::NOT_ALIGNED,
    ]
    .iter()
    .any(|&x| f.has(x))
}

/// The pieces of a file (mapped by `map`) that lie in `damaged` image
/// ranges `(offset, length)`, in file order.
pub fn damaged_pieces(map: &ExtentMap, damaged: &[(u64, u64)]) -> Vec<FilePiece> {
    let mut out = Vec::new();
    for e in map.extents.iter().filter(|e| !addressless(e.flags)) {
        let (start, end) = (e.physical, e.physical.saturating_add(e.length));
        for &(off, len) in damaged {
            let (a, b) = (start.max(off), end.min(off.saturating_add(len)));
            if a < b {
                out.push(FilePiece { file_offset: e.logical + (a - start), image_offset: a, length: b - a });
            }
        }
    }
    out.sort_by_key(|p| (p.file_offset, p.image_offset));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::Extent;
    use proptest::prelude::*;

    fn map(v: &[(u64, u64, u64)]) -> ExtentMap {
        ExtentMap::new(
            v.iter().map(|&(l, p, n)| Extent { logical: l, physical: p, length: n, flags: ExtentFlags(0) }).collect(),
        )
        .unwrap()
    }

    #[test]
    fn pieces_are_the_overlaps_in_file_offsets() {
        // File bytes 0..8K at device 1M, 8K..12K at device 64K.
        let m = map(&[(0, 1 << 20, 8192), (8192, 65536, 4096)]);
        let got = damaged_pieces(&m, &[((1 << 20) + 4096, 262_144), (0, 65536 + 100)]);
        assert_eq!(
            got,
            vec![
                FilePiece { file_offset: 4096, image_offset: (1 << 20) + 4096, length: 4096 },
                FilePiece { file_offset: 8192, image_offset: 65536, length: 100 },
            ]
        );
        assert!(damaged_pieces(&m, &[(0, 65536)]).is_empty());
    }

    proptest! {
        /// A byte of the file is in a piece exactly when its device address
        /// is in a damaged range.
        #[test]
        fn a_byte_is_reported_when_its_address_is_damaged(
            phys in proptest::collection::vec(0u64..64, 1..6),
            damaged in proptest::collection::vec((0u64..80, 1u64..8), 0..4),
        ) {
            let unit = 4096u64;
            let m = map(&phys.iter().enumerate().map(|(i, &p)| (i as u64 * unit, p * unit, unit)).collect::<Vec<_>>());
            let d: Vec<(u64, u64)> = damaged.iter().map(|&(o, n)| (o * unit / 2, n * unit / 2)).collect();
            let pieces = damaged_pieces(&m, &d);
            for (i, &p) in phys.iter().enumerate() {
                for k in [0, unit / 2, unit - 1] {
                    let addr = p * unit + k;
                    let file = i as u64 * unit + k;
                    let bad = d.iter().any(|&(o, n)| o <= addr && addr < o + n);
                    let found = pieces.iter().any(|x| x.file_offset <= file && file < x.file_offset + x.length);
                    prop_assert_eq!(bad, found);
                }
            }
        }
    }
}
