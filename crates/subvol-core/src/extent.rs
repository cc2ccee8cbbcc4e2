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
    }
}
