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
use crate::io_sizes::{BLOCK_SIZE, STAGE_BATCH_BYTES, STAGE_BELOW};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// One staged range: where it sits in the scratch file and in the target.
#[derive(Debug, Clone, Copy)]
struct Staged {
    scratch_offset: u64,
    target_offset: u64,
    length: u64,
}

/// Scratch space for small ranges bound for `target`.
pub(super) struct StagedWrites<'a> {
    target: &'a File,
    scratch: File,
    /// The host's block size: FICLONERANGE takes whole blocks only.
    block: u64,
    /// Next free byte of the scratch file.
    cursor: u64,
    /// Where the current batch starts in the scratch file.
    batch_start: u64,
    pending: Vec<Staged>,
    /// The host refused FICLONERANGE: everything goes in place from now on.
    refused: bool,
    /// Writing the scratch file or cloning from it failed. The scratch
    /// data may be lost (a failed writeback is reported once, then the
    /// pages look clean), so nothing pending may be put in place any more.
    failed: bool,
}

impl<'a> StagedWrites<'a> {
    /// Scratch space in `dir` (on the target's filesystem), or None where
    /// the filesystem cannot make unnamed files.
    pub(super) fn new(target: &'a File, dir: &Path) -> Option<Self> {
        let block = subvol_os::statfs::statfs(dir).ok()?.block_size.max(BLOCK_SIZE);
        let scratch = subvol_os::tmpfile::anonymous_file(dir).ok()?;
        Some(StagedWrites {
            target,
            scratch,
            block,
            cursor: 0,
            batch_start: 0,
            pending: Vec::new(),
            refused: false,
            failed: false,
        })
    }

    /// Whether a record at `offset` of `len` bytes is staged (else it is
    /// the caller's to write in place).
    pub(super) fn accepts(&self, offset: u64, len: u64) -> bool {
        !self.refused
            && len > 0
            && len < STAGE_BELOW
            && offset.is_multiple_of(self.block)
            && len.is_multiple_of(self.block)
    }

    /// Stages `data` for `target_offset` (which `accepts`).
    pub(super) fn stage(&mut self, target_offset: u64, data: &[u8]) -> Result<()> {
        let length = data.len() as u64;
        self.scratch.write_all_at(data, self.cursor).map_err(|e| Error::io("cannot write the scratch file", e))?;
        self.pending.push(Staged { scratch_offset: self.cursor, target_offset, length });
        self.cursor += length;
        if self.cursor - self.batch_start >= STAGE_BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// The lowest target offset not surely in the target (None: all are).
    pub(super) fn first_pending(&self) -> Option<u64> {
        self.pending.iter().map(|s| s.target_offset).min()
    }

    /// Puts every staged range into the target. Ranges never overlap (a
    /// stream's records are ascending and disjoint), so order is free.
    /// After an error, every later call fails too: what is pending must be
    /// sent again (see `first_pending`).
    pub(super) fn flush(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::io("staged ranges were lost", std::io::Error::from_raw_os_error(libc::EIO)));
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        // Cloning a range first writes back its dirty source pages; done
        // range by range that is one small write each. One call writes the
        // whole batch sequentially.
        if let Err(e) =
            subvol_os::pagecache::write_and_wait(&self.scratch, self.batch_start, self.cursor - self.batch_start)
        {
            self.failed = true;
            return Err(Error::os("cannot write the scratch file", e));
        }
        for i in 0..self.pending.len() {
            let s = self.pending[i];
            match subvol_os::reflink::ficlonerange(
                self.target,
                &self.scratch,
                s.scratch_offset,
                s.length,
                s.target_offset,
            ) {
                Ok(()) => {}
                // Reflinks in general but not of this range (block size,
                // inline data): copy what is left and stop staging.
                Err(e) if matches!(e.errno(), Some(libc::EINVAL | libc::EOPNOTSUPP | libc::EXDEV)) => {
                    self.refused = true;
                    if let Err(e) = self.copy_in_place(i) {
                        self.failed = true;
                        return Err(e);
                    }
                    break;
                }
                Err(e) => {
                    self.failed = true;
                    return Err(Error::os("cannot clone a received range into place", e));
                }
            }
        }
        self.pending.clear();
        self.batch_start = self.cursor;
        Ok(())
    }

    /// Writes pending ranges `from..` into the target with pwrite. Their
    /// scratch data was written out without error, so it reads back intact.
    fn copy_in_place(&self, from: usize) -> Result<()> {
        let mut buf = vec![0u8; STAGE_BELOW as usize];
        for s in &self.pending[from..] {
            let b = &mut buf[..s.length as usize];
            self.scratch
                .read_exact_at(b, s.scratch_offset)
                .map_err(|e| Error::io("cannot read the scratch file", e))?;
            self.target
                .write_all_at(b, s.target_offset)
                .map_err(|e| Error::io("cannot write the received image", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::StagedWrites;
    use crate::io_sizes::{BLOCK_SIZE, STAGE_BELOW};
    use std::os::unix::fs::FileExt;

    /// Staged ranges land where they belong, by reflink where the host has
    /// them and by the pwrite fallback where it refuses (ext4 /tmp here).
    #[test]
    fn staged_ranges_land_in_place_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let target =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("image")).unwrap();
        target.set_len(64 << 20).unwrap();
        let mut want = vec![0u8; 64 << 20];
        let Some(mut st) = StagedWrites::new(&target, dir.path()) else {
            crate::test_support::cannot_run(
                "staged_ranges_land_in_place_either_way",
                &format!("no O_TMPFILE in {}", dir.path().display()),
            );
            return;
        };
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut offset = 0u64;
        // Enough to cross a batch boundary, in 4 KiB to 252 KiB pieces.
        while offset < (60 << 20) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let len = BLOCK_SIZE * (1 + rng % 63);
            let data: Vec<u8> = (0..len).map(|i| (i ^ rng) as u8).collect();
            assert!(st.refused || st.accepts(offset, len));
            if st.accepts(offset, len) {
                st.stage(offset, &data).unwrap();
            } else {
                target.write_all_at(&data, offset).unwrap();
            }
            want[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            offset += len + BLOCK_SIZE * (rng % 5);
        }
        assert!(!st.accepts(BLOCK_SIZE, STAGE_BELOW), "long records are written in place");
        assert!(!st.accepts(100, BLOCK_SIZE), "unaligned records are written in place");
        st.flush().unwrap();
        assert_eq!(st.first_pending(), None);
        let host = subvol_os::statfs::statfs(dir.path()).unwrap().fs;
        if matches!(host, subvol_core::HostFs::Ext4 | subvol_core::HostFs::Tmpfs) {
            assert!(st.refused, "{host:?} has no FICLONERANGE: the fallback must have run");
        }
        drop(st);
        let mut got = vec![0u8; 64 << 20];
        target.read_exact_at(&mut got, 0).unwrap();
        assert!(got == want, "the image differs from the staged records");
    }
}
