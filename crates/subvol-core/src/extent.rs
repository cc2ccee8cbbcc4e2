//! Extent maps: where each logical range of an image lives on the host.
//!
//! The OS layer fills these from FIEMAP; everything computed from them
//! (allocated and shared bytes now, diffs for replication later) is pure.

use serde::{Deserialize, Serialize};

/// FIEMAP extent flags (linux/fiemap.h), kept as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct ExtentFlags(pub u32);

impl ExtentFlags {
    pub const LAST: u32 = 0x0000_0001;
    pub const UNKNOWN: u32 = 0x0000_0002;
    pub const DELALLOC: u32 = 0x0000_0004;
    pub const ENCODED: u32 = 0x0000_0008;
    pub const DATA_ENCRYPTED: u32 = 0x0000_0080;
    pub const NOT_ALIGNED: u32 = 0x0000_0100;
    pub const DATA_INLINE: u32 = 0x0000_0200;
    pub const DATA_TAIL: u32 = 0x0000_0400;
    pub const UNWRITTEN: u32 = 0x0000_0800;
    pub const MERGED: u32 = 0x0000_1000;
    pub const SHARED: u32 = 0x0000_2000;

    pub fn has(self, flag: u32) -> bool {
        self.0 & flag != 0
    }
}

/// One mapped range: `length` bytes at file offset `logical` live at
/// host byte address `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: ExtentFlags,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.logical.saturating_add(self.length)
    }
}

/// All extents of one file, sorted by logical offset, non-overlapping.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ExtentMap {
    pub extents: Vec<Extent>,
}

impl ExtentMap {
    /// Builds a map, sorting and dropping zero-length extents. Returns
    /// `None` if extents overlap (a kernel answer we cannot trust).
    pub fn new(mut extents: Vec<Extent>) -> Option<Self> {
        extents.retain(|e| e.length > 0);
        // An extent may not run past the end of the 64-bit offset space.
        if extents
            .iter()
            .any(|e| e.logical.checked_add(e.length).is_none() || e.physical.checked_add(e.length).is_none())
        {
            return None;
        }
        extents.sort_by_key(|e| e.logical);
        for w in extents.windows(2) {
            if w[0].end() > w[1].logical {
                return None;
            }
        }
        Some(ExtentMap { extents })
    }

    pub fn len(&self) -> usize {
        self.extents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Bytes mapped to host blocks (written or preallocated).
    pub fn mapped_bytes(&self) -> u64 {
        self.extents.iter().map(|e| e.length).sum()
    }

    /// Bytes whose host blocks are shared with another file (reflinks).
    pub fn shared_bytes(&self) -> u64 {
        self.extents.iter().filter(|e| e.flags.has(ExtentFlags::SHARED)).map(|e| e.length).sum()
    }
}

/// Magic of the binary extent-map encoding (the pool's map cache).
const MAP_MAGIC: &[u8; 8] = b"SVEXTMP1";

impl ExtentMap {
    /// Binary encoding: magic, u64 count, count × (logical, physical,
    /// length: u64, flags: u32), then BLAKE3 of everything before it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.extents.len() * 28 + 32);
        out.extend_from_slice(MAP_MAGIC);
        out.extend_from_slice(&(self.extents.len() as u64).to_le_bytes());
        for e in &self.extents {
            out.extend_from_slice(&e.logical.to_le_bytes());
            out.extend_from_slice(&e.physical.to_le_bytes());
            out.extend_from_slice(&e.length.to_le_bytes());
            out.extend_from_slice(&e.flags.0.to_le_bytes());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes `to_bytes`; `None` if damaged in any way.
    pub fn from_bytes(b: &[u8]) -> Option<ExtentMap> {
        if b.len() < 16 + 32 || &b[..8] != MAP_MAGIC {
            return None;
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return None;
        }
        let n = u64::from_le_bytes(body[8..16].try_into().ok()?) as usize;
        if body.len() != n.checked_mul(28)?.checked_add(16)? {
            return None;
        }
        let mut v = Vec::with_capacity(n);
        for c in body[16..].chunks_exact(28) {
            v.push(Extent {
                logical: u64::from_le_bytes(c[0..8].try_into().ok()?),
                physical: u64::from_le_bytes(c[8..16].try_into().ok()?),
                length: u64::from_le_bytes(c[16..24].try_into().ok()?),
                flags: ExtentFlags(u32::from_le_bytes(c[24..28].try_into().ok()?)),
            });
        }
        ExtentMap::new(v)
    }

    /// Physical ranges `(start, end)` holding data (for sharing accounting).
    pub fn physical_ranges(&self) -> Vec<(u64, u64)> {
        self.extents
            .iter()
            .filter(|e| !e.flags.has(ExtentFlags::DELALLOC) && !e.flags.has(ExtentFlags::UNKNOWN))
            .map(|e| (e.physical, e.physical.saturating_add(e.length)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(l: u64, p: u64, n: u64, f: u32) -> Extent {
        Extent { logical: l, physical: p, length: n, flags: ExtentFlags(f) }
    }

    #[test]
    fn sums_and_validation() {
        let m =
            ExtentMap::new(vec![e(8192, 0, 4096, ExtentFlags::SHARED), e(0, 100, 4096, 0), e(4096, 5, 0, 0)]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.extents[0].logical, 0);
        assert_eq!(m.mapped_bytes(), 8192);
        assert_eq!(m.shared_bytes(), 4096);
        assert!(ExtentMap::new(vec![e(0, 0, 8192, 0), e(4096, 0, 10, 0)]).is_none());
        let b = m.to_bytes();
        assert_eq!(ExtentMap::from_bytes(&b), Some(m.clone()));
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 0x10;
            assert_eq!(ExtentMap::from_bytes(&bad), None, "flip at {i} accepted");
        }
        assert_eq!(ExtentMap::from_bytes(&b[..b.len() - 1]), None);
    }
}

/// The block model the property tests of the diff, the manifests and the
/// chunk layouts share: a file as 4 KiB blocks, each a hole (`None`) or
/// written at a physical block (`Some((phys, unwritten))`); a written
/// block's bytes are a function of its physical block, which is what the
/// extent diff relies on (equal address, equal bytes).
#[cfg(test)]
pub(crate) mod test_blocks {
    use super::{Extent, ExtentFlags, ExtentMap};

    pub(crate) const BS: u64 = 4096;

    pub(crate) type Blocks = Vec<Option<(u64, bool)>>;

    /// The extent map of `blocks`: adjacent blocks merge into one extent
    /// unless `split` (one extent per block, as a fragmented file maps).
    pub(crate) fn map_of(blocks: &Blocks, split: bool) -> ExtentMap {
        let mut ex: Vec<Extent> = Vec::new();
        for (i, b) in blocks.iter().enumerate() {
            let Some((phys, unwritten)) = *b else { continue };
            let logical = i as u64 * BS;
            let flags = if unwritten { ExtentFlags(ExtentFlags::UNWRITTEN) } else { ExtentFlags(0) };
            if let Some(last) = ex.last_mut() {
                if !split && last.end() == logical && last.physical + last.length == phys * BS && last.flags == flags {
                    last.length += BS;
                    continue;
                }
            }
            ex.push(Extent { logical, physical: phys * BS, length: BS, flags });
        }
        ExtentMap::new(ex).unwrap()
    }
}
