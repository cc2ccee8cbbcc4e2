//! Phase 2 of a receive: the records go into the private image.
//!
//! A DATA record takes one of three paths (docs/BENCHMARKS.md has the
//! measurements): short block-aligned records are staged in a scratch file
//! and reflinked into place (`staging`), long aligned ones go to the device
//! with O_DIRECT from writer threads (`direct_writes`), anything else is
//! written in place through the page cache, with writeback started early
//! on a helper thread (`writeback`). So at any moment some records are
//! only in a scratch file or in flight. The applier is the one place that
//! knows which, so it alone says what is durably applied: at a checkpoint
//! of a resumable receive, and when the stream breaks off. It also stops
//! the receive at the host's space floor.

use super::direct_writes::DirectWrites;
use super::partial::ResumeRecord;
use super::space_floor::SpaceFloor;
use super::staging::StagedWrites;
use super::writeback::BackgroundWriteback;
use crate::error::{Error, Result};
use crate::io_sizes::{align_down, CHECKPOINT_BYTES, WRITEBACK_BYTES};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use subvol_core::stream::{Record, MAX_DATA_RECORD};

pub(super) struct Applier<'f> {
    image: &'f File,
    // The writer threads go first when the applier is dropped: no write
    // may land in the image after the caller removed it.
    direct: Option<DirectWrites>,
    staged: Option<StagedWrites<'f>>,
    writeback: BackgroundWriteback,
    floor: SpaceFloor,
    /// Where checkpoints are recorded; None: the receive is not resumable.
    resume: Option<ResumeRecord>,
    /// The end of the last record taken (not necessarily in the image yet).
    applied: u64,
    /// What the last checkpoint made durable and recorded.
    durable: u64,
    since_checkpoint: u64,
    since_writeback: u64,
}

impl<'f> Applier<'f> {
    /// Applies a stream to `image` from `start` (its resume offset). Short
    /// records are staged in `scratch_dir` where given (a directory on the
    /// image's filesystem; None where the host has no reflinks).
    pub(super) fn new(
        image: &'f File,
        scratch_dir: Option<&Path>,
        floor: SpaceFloor,
        resume: Option<ResumeRecord>,
        start: u64,
    ) -> Self {
        let writeback = BackgroundWriteback::start(image);
        let staged = scratch_dir.and_then(|dir| StagedWrites::new(image, dir));
        let direct = DirectWrites::start(image);
        Applier {
            image,
            direct,
            staged,
            writeback,
            floor,
            resume,
            applied: start,
            durable: start,
            since_checkpoint: 0,
            since_writeback: 0,
        }
    }

    /// Takes one record, then makes a checkpoint if a resumable receive is
    /// due one. END writes nothing: its totals are the reader's to check.
    pub(super) fn apply(&mut self, rec: &Record) -> Result<()> {
        match rec {
            Record::Data { offset, data } => self.data(*offset, data)?,
            Record::Hole { offset, length } => {
                punch_or_zero(self.image, *offset, *length)?;
                self.applied = offset + length;
            }
            Record::End(_) => {}
        }
        if self.resume.is_some() && self.since_checkpoint >= CHECKPOINT_BYTES {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Records never overlap (the reader checks), so no path can undo what
    /// another wrote, and each may finish in its own time.
    fn data(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        if let Some(st) = self.staged.as_mut().filter(|st| st.accepts(offset, len)) {
            st.stage(offset, data)?;
        } else if let Some(d) = self.direct.as_mut().filter(|_| DirectWrites::accepts(offset, len)) {
            d.write(offset, data)?;
        } else {
            self.image.write_all_at(data, offset).map_err(|e| Error::io("cannot write the received image", e))?;
            self.since_writeback += len;
        }
        self.applied = offset + len;
        self.floor.wrote(len)?;
        subvol_os::crash::point("receive-mid-stream");
        self.since_checkpoint += len;
        if self.since_writeback >= WRITEBACK_BYTES {
            self.writeback.kick();
            self.since_writeback = 0;
        }
        Ok(())
    }

    /// Makes everything taken so far durable and, for a resumable receive,
    /// records it. Returns the checkpoint: the whole blocks below the end
    /// of the last record, since a resumed stream starts on a block.
    pub(super) fn checkpoint(&mut self) -> Result<u64> {
        self.settle()?;
        self.image.sync_data().map_err(|e| Error::io("cannot sync the image", e))?;
        self.durable = align_down(self.applied);
        if let Some(r) = &self.resume {
            r.save(self.durable)?;
        }
        self.since_checkpoint = 0;
        Ok(self.durable)
    }

    /// Puts everything taken into the image (staged ranges in place, direct
    /// writes finished); the caller then syncs the image as a whole. After
    /// an error, `abort` says what is there.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.settle()
    }

    fn settle(&mut self) -> Result<()> {
        if let Some(st) = self.staged.as_mut() {
            st.flush()?;
        }
        if let Some(d) = self.direct.as_mut() {
            d.wait()?;
        }
        Ok(())
    }

    /// After a failure: keeps what arrived intact and returns the offset
    /// below which the image is durably applied, recorded for a resume if
    /// it moved since the last checkpoint. Staged ranges that cannot be put
    /// in place, and anything from the lowest failed write on, are sent
    /// again. (A receive that keeps nothing drops the applier instead:
    /// that stops the writers without waiting for what is queued to settle.)
    pub(super) fn abort(mut self) -> Result<u64> {
        let mut applied = self.applied;
        if let Some(st) = self.staged.as_mut() {
            if st.flush().is_err() {
                applied = applied.min(st.first_pending().unwrap_or(applied));
            }
        }
        if let Some(d) = self.direct.as_mut() {
            // Not knowing what was written, trust only the checkpoint.
            let known = if d.wait().is_ok() { applied } else { self.durable };
            applied = applied.min(d.lowest_failed().unwrap_or(known));
        }
        // A failed sync (a lost write) keeps the last checkpoint: a second
        // sync would report success for the lost pages.
        let offset = match self.image.sync_data() {
            Ok(()) => align_down(applied).max(self.durable),
            Err(_) => self.durable,
        };
        if offset != self.durable {
            if let Some(r) = &self.resume {
                r.save(offset)?;
            }
        }
        Ok(offset)
    }
}

/// Punches a hole; where the host cannot (EOPNOTSUPP), writes zeroes.
fn punch_or_zero(file: &File, offset: u64, length: u64) -> Result<()> {
    match subvol_os::alloc::punch_hole(file, offset, length) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            let zeros = vec![0u8; MAX_DATA_RECORD as usize];
            let mut off = offset;
            while off < offset + length {
                let n = (offset + length - off).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], off).map_err(|e| Error::io("cannot write zeroes", e))?;
                off += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(Error::os("cannot punch a hole", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::partial::read_state;
    use super::*;
    use crate::io_sizes::{is_block_aligned, BLOCK_SIZE, DIRECT_WRITE_MIN, STAGE_BATCH_BYTES};
    use std::path::PathBuf;
    use subvol_core::stream::{SnapshotRef, StreamHeader};

    /// An offset every filesystem refuses (past i64::MAX: EINVAL), so that
    /// any path fails there without root or a full disk.
    const FAIL_AT: u64 = 1 << 63;

    /// Which path a record takes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Route {
        Staged,
        Direct,
        InPlace,
    }

    /// An image standing in for the clone of a base (it holds a pattern,
    /// not zeroes), a scratch dir beside it, and what the image must hold.
    struct Bed {
        dir: tempfile::TempDir,
        image: File,
        want: Vec<u8>,
        rng: u64,
    }

    impl Bed {
        fn new(parent: &Path, size: usize) -> Bed {
            let dir = tempfile::tempdir_in(parent).unwrap();
            let image = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join("image"))
                .unwrap();
            let want = pattern(size, 0x5a);
            image.write_all_at(&want, 0).unwrap();
            Bed { dir, image, want, rng: 0x2545_f491_4f6c_dd1d }
        }

        fn applier(&self, staging: bool, resume: bool) -> Applier<'_> {
            let scratch = staging.then_some(self.dir.path());
            let record = resume.then(|| ResumeRecord::new(self.state_path(), header(self.want.len() as u64)));
            Applier::new(&self.image, scratch, SpaceFloor::none(self.dir.path()), record, 0)
        }

        fn state_path(&self) -> PathBuf {
            self.dir.path().join("state")
        }

        fn next(&mut self) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng
        }

        /// A DATA record of random bytes; `want` follows it where it fits.
        fn data(&mut self, offset: u64, len: u64) -> Record {
            let data = pattern(len as usize, self.next());
            if offset < FAIL_AT {
                self.want[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            }
            Record::Data { offset, data }
        }

        fn hole(&mut self, offset: u64, length: u64) -> Record {
            self.want[offset as usize..(offset + length) as usize].fill(0);
            Record::Hole { offset, length }
        }

        /// Records of every kind at ascending offsets below `limit`.
        fn mixed(&mut self, limit: u64) -> Vec<Record> {
            let mut out = Vec::new();
            let mut offset = 0u64;
            loop {
                let r = self.next();
                let len = match r % 4 {
                    0 => BLOCK_SIZE * (1 + r % 16),
                    1 => DIRECT_WRITE_MIN + BLOCK_SIZE * (r % 193),
                    _ => 1 + (r >> 8) % 70_000,
                };
                let offset_here = if r % 4 == 2 { offset + 1 + (r >> 20) % 4000 } else { offset };
                if offset_here + len > limit {
                    return out;
                }
                out.push(if r % 4 == 3 { self.hole(offset_here, len) } else { self.data(offset_here, len) });
                offset = (offset_here + len).next_multiple_of(BLOCK_SIZE) + BLOCK_SIZE * (r % 3);
            }
        }

        /// The image's bytes below `end`, read through a new descriptor,
        /// are what the records made them.
        fn check_below(&self, end: u64, what: &str) {
            let mut got = vec![0u8; end as usize];
            File::open(self.dir.path().join("image")).unwrap().read_exact_at(&mut got, 0).unwrap();
            if got[..] != self.want[..end as usize] {
                let bad = (0..end as usize).find(|&i| got[i] != self.want[i]);
                panic!("{what}: the image differs from the records at byte {bad:?}");
            }
        }
    }

    /// `len` bytes that differ with `seed` and from 8 bytes to the next.
    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let v = (i as u64 ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        out
    }

    fn header(virtual_size: u64) -> StreamHeader {
        let snap = |name: &str| SnapshotRef { name: name.into(), guid: uuid::Uuid::new_v4() };
        StreamHeader {
            stream_guid: uuid::Uuid::new_v4(),
            source_name: "v".into(),
            source_guid: uuid::Uuid::new_v4(),
            snapshot: snap("v@new"),
            created: "2026-01-01T00:00:00Z".into(),
            fs: "raw".into(),
            tags: Vec::new(),
            base: Some(snap("v@old")),
            virtual_size,
            block_size: subvol_core::stream::BLOCK_SIZE,
            resume_offset: 0,
            manifest: None,
        }
    }

    /// The path `a` would send a DATA record down.
    fn path_of(a: &Applier<'_>, rec: &Record) -> Option<Route> {
        let Record::Data { offset, data } = rec else { return None };
        let len = data.len() as u64;
        Some(if a.staged.as_ref().is_some_and(|s| s.accepts(*offset, len)) {
            Route::Staged
        } else if a.direct.is_some() && DirectWrites::accepts(*offset, len) {
            Route::Direct
        } else {
            Route::InPlace
        })
    }

    /// Disk directories (/tmp may be tmpfs) where both fast paths exist:
    /// O_TMPFILE for staging, O_DIRECT for the writers.
    fn dirs_with_every_path(test: &str) -> Vec<PathBuf> {
        let dirs: Vec<PathBuf> = [std::env::temp_dir(), PathBuf::from("/var/tmp")]
            .into_iter()
            .filter(|d| d.is_dir())
            .filter(|d| {
                let bed = Bed::new(d, 1 << 20);
                let a = bed.applier(true, false);
                a.staged.is_some() && a.direct.is_some()
            })
            .collect();
        if dirs.is_empty() {
            crate::test_support::cannot_run(test, "no O_TMPFILE and O_DIRECT in /tmp or /var/tmp");
        }
        dirs
    }

    /// Staged, direct and in-place records and holes all land where they
    /// belong, with staging (a host with reflinks, or one that refuses
    /// them for the range) and without (a host without reflinks).
    #[test]
    fn records_land_where_they_belong_whichever_path_takes_them() {
        for dir in dirs_with_every_path("records_land_where_they_belong_whichever_path_takes_them") {
            for staging in [true, false] {
                let size = 40u64 << 20;
                let mut bed = Bed::new(&dir, size as usize);
                let records = bed.mixed(size);
                let mut a = bed.applier(staging, false);
                let mut taken = Vec::new();
                for rec in &records {
                    taken.extend(path_of(&a, rec));
                    a.apply(rec).unwrap();
                }
                a.apply(&Record::End(Default::default())).unwrap();
                a.finish().unwrap();
                drop(a);
                for p in [Route::Staged, Route::Direct, Route::InPlace] {
                    assert_eq!(taken.contains(&p), staging || p != Route::Staged, "{p:?} (staging {staging})");
                }
                bed.check_below(size, &format!("{} with staging {staging}", dir.display()));
            }
        }
    }

    /// Every checkpoint, asked for or due after CHECKPOINT_BYTES, is the
    /// whole blocks below the last record taken, is what the state file
    /// says, and every byte below it is in the image as the records made
    /// it (read through another descriptor: nothing still staged or in a
    /// writer thread).
    #[test]
    fn checkpoints_are_block_aligned_and_never_ahead_of_durable_data() {
        for dir in dirs_with_every_path("checkpoints_are_block_aligned_and_never_ahead_of_durable_data") {
            let size = CHECKPOINT_BYTES + (32 << 20);
            let mut bed = Bed::new(&dir, size as usize);
            let records = bed.mixed(size);
            let mut a = bed.applier(true, true);
            let mut end = 0;
            // Data bytes since the last checkpoint, as the applier counts.
            let mut since = 0;
            let mut due = 0;
            for (i, rec) in records.iter().enumerate() {
                a.apply(rec).unwrap();
                match rec {
                    Record::Data { offset, data } => {
                        end = offset + data.len() as u64;
                        since += data.len() as u64;
                    }
                    Record::Hole { offset, length } => end = offset + length,
                    Record::End(_) => {}
                }
                if since >= CHECKPOINT_BYTES {
                    // `apply` made the checkpoint that was due.
                    due += 1;
                    since = 0;
                    let st = read_state(&bed.state_path()).unwrap().expect("a checkpoint was due");
                    assert_eq!(st.offset, align_down(end), "due checkpoint after record {i}");
                    bed.check_below(st.offset, "due checkpoint");
                }
                // Asked for, in the first part only: the rest runs up to a due one.
                if i < 64 && i % 7 == 3 {
                    since = 0;
                    let c = a.checkpoint().unwrap();
                    assert!(is_block_aligned(c) && c <= end && end - c < BLOCK_SIZE, "checkpoint {c} after {end}");
                    assert_eq!(read_state(&bed.state_path()).unwrap().unwrap().offset, c);
                    bed.check_below(c, &format!("checkpoint after record {i}"));
                }
            }
            assert_eq!(due, 1, "the records held too little data for a due checkpoint");
        }
    }

    /// When a path fails, abort reports (and records) how far the image is
    /// durably applied: for staging, up to the lowest range not yet in
    /// place; for the writer threads, up to the lowest failed write of
    /// several in flight; in place, up to the last record written. Never
    /// beyond the failure, always whole blocks, and the bytes below it are
    /// in the image.
    #[test]
    fn an_error_in_one_path_reports_the_lowest_failed_offset() {
        for dir in dirs_with_every_path("an_error_in_one_path_reports_the_lowest_failed_offset") {
            for path in [Route::Staged, Route::Direct, Route::InPlace] {
                let size = 24u64 << 20;
                let mut bed = Bed::new(&dir, size as usize);
                // Good records of the path under test from 1 MiB on, then
                // three that fail.
                let (len, gap) = match path {
                    Route::Staged => (4 * BLOCK_SIZE, BLOCK_SIZE),
                    Route::Direct => (DIRECT_WRITE_MIN * 2, BLOCK_SIZE),
                    Route::InPlace => (5_000, 3_000),
                };
                // Less than a staging batch, so no flush comes before the
                // failure.
                let first = 1u64 << 20;
                let mut records = Vec::new();
                let mut offset = first;
                while offset + len < first + STAGE_BATCH_BYTES / 2 {
                    records.push(bed.data(offset, len));
                    offset += len + gap;
                }
                let last_good_end = offset - gap;
                for k in 0..3 {
                    records.push(bed.data(FAIL_AT + k * (len + gap).next_multiple_of(BLOCK_SIZE), len));
                }
                let mut a = bed.applier(true, true);
                for rec in &records {
                    assert_eq!(path_of(&a, rec), Some(path), "the record at {:?}", rec_offset(rec));
                    if a.apply(rec).is_err() {
                        break;
                    }
                }
                let reported = a.abort().unwrap();
                let expected = match path {
                    Route::Staged => align_down(first),
                    Route::Direct => FAIL_AT,
                    Route::InPlace => align_down(last_good_end),
                };
                assert_eq!(reported, expected, "{path:?}");
                assert!(is_block_aligned(reported) && reported <= FAIL_AT);
                assert_eq!(read_state(&bed.state_path()).unwrap().unwrap().offset, reported, "{path:?}");
                bed.check_below(reported.min(last_good_end), &format!("{path:?} after the failure"));
            }
        }
    }

    fn rec_offset(rec: &Record) -> Option<u64> {
        match rec {
            Record::Data { offset, .. } | Record::Hole { offset, .. } => Some(*offset),
            Record::End(_) => None,
        }
    }
}
