//! The changes between two images on a host without reflinks, where their
//! extent maps share nothing to compare: both are read and compared block
//! by block. Send plans with it; receive uses it to tell whether a
//! subvolume is still at the stream's base.

use crate::error::{Error, Result};
use crate::io_sizes::COMPARE_BYTES;
use std::fs::File;
use std::os::unix::fs::FileExt;
use subvol_core::diff::{Change, ExtentDiff};

/// The changes from `base` to `target`, by reading both: each piece of
/// COMPARE_BYTES that differs is data, or a hole where the target's is all
/// zeroes; neighbours are merged.
pub(in crate::replication) fn content_diff(
    base: &File,
    base_size: u64,
    target: &File,
    size: u64,
) -> Result<ExtentDiff> {
    let mut changes: Vec<Change> = Vec::new();
    let mut push = |c: Change| {
        if let (Some(Change::Data { offset, length }), Change::Data { offset: o, length: l }) = (changes.last_mut(), c)
        {
            if *offset + *length == o {
                *length += l;
                return;
            }
        }
        if let (Some(Change::Hole { offset, length }), Change::Hole { offset: o, length: l }) = (changes.last_mut(), c)
        {
            if *offset + *length == o {
                *length += l;
                return;
            }
        }
        changes.push(c);
    };
    let mut a = vec![0u8; COMPARE_BYTES as usize];
    let mut b = vec![0u8; COMPARE_BYTES as usize];
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(COMPARE_BYTES) as usize;
        target.read_exact_at(&mut b[..n], off).map_err(|e| Error::io("cannot read the snapshot", e))?;
        let base_n = base_size.saturating_sub(off).min(n as u64) as usize;
        a[..n].fill(0);
        if base_n > 0 {
            base.read_exact_at(&mut a[..base_n], off).map_err(|e| Error::io("cannot read the base", e))?;
        }
        if a[..n] != b[..n] {
            if b[..n].iter().all(|&x| x == 0) {
                push(Change::Hole { offset: off, length: n as u64 });
            } else {
                push(Change::Data { offset: off, length: n as u64 });
            }
        }
        off += n as u64;
    }
    Ok(ExtentDiff { target_size: size, changes })
}
