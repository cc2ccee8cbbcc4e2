//! Applying many small received ranges by reflink instead of by overwrite.
//!
//! The received image starts as a clone of the base, so every block a
//! DATA record overwrites is shared: on XFS each small pwrite becomes a
//! copy-on-write with its own staging allocation, writeback and remap, and
//! ten thousand scattered 4 KiB records cost seconds. Written one after the
//! other into an unnamed scratch file instead, they reach the disk as one
//! sequential run; each is then cloned into place with FICLONERANGE, which
//! only remaps blocks. The scratch file has no name (O_TMPFILE), so a crash
//! leaves nothing behind, and its blocks live on in the image it fed.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Records shorter than this are staged; longer ones are written in place
/// (a long write is sequential already, and cloning it gains nothing).
pub(crate) const STAGE_BELOW: u64 = 256 * 1024;
/// Scratch bytes written out and cloned in one batch.
const BATCH_BYTES: u64 = 8 << 20;
/// Host block size: FICLONERANGE needs offsets and lengths in whole blocks.
const BLOCK: u64 = 4096;

/// One staged range: where it sits in the scratch file and in the target.
#[derive(Debug, Clone, Copy)]
struct Staged {
    scratch_offset: u64,
    target_offset: u64,
    length: u64,
}

/// Scratch space for small ranges bound for `target`.
pub(crate) struct StagedWrites<'a> {
    target: &'a File,
    scratch: File,
    /// Next free byte of the scratch file.
    cursor: u64,
    /// Where the current batch starts in the scratch file.
    batch_start: u64,
    pending: Vec<Staged>,
}

impl<'a> StagedWrites<'a> {
    /// Scratch space in `dir` (on the target's filesystem), or None where
    /// the filesystem cannot make unnamed files.
    pub(crate) fn new(target: &'a File, dir: &Path) -> Option<Self> {
        let scratch = subvol_os::tmpfile::anonymous_file(dir).ok()?;
        Some(StagedWrites { target, scratch, cursor: 0, batch_start: 0, pending: Vec::new() })
    }

    /// Whether a record at `offset` of `len` bytes can be staged.
    pub(crate) fn accepts(offset: u64, len: u64) -> bool {
        len > 0 && len < STAGE_BELOW && offset.is_multiple_of(BLOCK) && len.is_multiple_of(BLOCK)
    }

    /// Stages `data` for `target_offset` (which `accepts`).
    pub(crate) fn stage(&mut self, target_offset: u64, data: &[u8]) -> Result<()> {
        let length = data.len() as u64;
        self.scratch.write_all_at(data, self.cursor).map_err(|e| Error::io("cannot write the scratch file", e))?;
        self.pending.push(Staged { scratch_offset: self.cursor, target_offset, length });
        self.cursor += length;
        if self.cursor - self.batch_start >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// The lowest target offset not yet in the target (None: all applied).
    pub(crate) fn first_pending(&self) -> Option<u64> {
        self.pending.iter().map(|s| s.target_offset).min()
    }

    /// Puts every staged range into the target. Ranges never overlap (a
    /// stream's records are ascending and disjoint), so order is free.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // Cloning a range first writes back its dirty source pages; done
        // range by range that is one small write each. One call writes the
        // whole batch sequentially.
        subvol_os::pagecache::write_and_wait(&self.scratch, self.batch_start, self.cursor - self.batch_start)
            .map_err(|e| Error::os("cannot write the scratch file", e))?;
        for s in &self.pending {
            subvol_os::reflink::ficlonerange(self.target, &self.scratch, s.scratch_offset, s.length, s.target_offset)
                .map_err(|e| Error::os("cannot clone a received range into place", e))?;
        }
        self.pending.clear();
        self.batch_start = self.cursor;
        Ok(())
    }
}
