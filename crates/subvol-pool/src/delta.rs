//! Bringing a reflink clone up to date with its source: re-clone the ranges
//! whose host blocks changed since the clone was made, punch what became
//! holes. Cost is one FIEMAP of the source plus work proportional to the
//! change, not to the image size or its extent count.

use crate::error::{Error, Result};
use std::fs::File;
use subvol_core::diff::{diff, Change};
use subvol_core::ExtentMap;

/// What an update did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Extents of the source now.
    pub source_extents: usize,
    pub recloned_bytes: u64,
    pub punched_bytes: u64,
}

/// Makes `clone` (whose extent map was `clone_map` right after it was made)
/// byte-identical to `source` as it is now.
pub fn update_clone(clone: &File, clone_map: &ExtentMap, source: &File) -> Result<DeltaStats> {
    let size = source.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len();
    let clone_size = clone.metadata().map_err(|e| Error::io("cannot stat the clone", e))?.len();
    let src_map = subvol_os::fiemap::fiemap(source, true).map_err(|e| Error::os("cannot map the image", e))?;
    if clone_size != size {
        clone.set_len(size).map_err(|e| Error::io("cannot size the clone", e))?;
    }
    let d = diff(clone_map, clone_size.min(size), &src_map, size);
    let mut stats = DeltaStats { source_extents: src_map.len(), ..DeltaStats::default() };
    for c in &d.changes {
        match *c {
            Change::Data { offset, length } => {
                // FICLONERANGE wants block-aligned lengths, except a range
                // that ends at EOF, given as 0 ("to the end").
                let len = if offset + length >= size { 0 } else { length };
                subvol_os::reflink::ficlonerange(clone, source, offset, len, offset)
                    .map_err(|e| Error::os(format!("cannot re-clone at {offset}"), e))?;
                stats.recloned_bytes += length;
            }
            Change::Hole { offset, length } => {
                subvol_os::alloc::punch_hole(clone, offset, length).map_err(|e| Error::os("cannot punch", e))?;
                stats.punched_bytes += length;
            }
        }
    }
    Ok(stats)
}
