//! Long received records written with O_DIRECT, several at a time.
//!
//! Through the page cache, a 4 GiB receive copies every byte into the cache,
//! then writeback copies it out again: the receiving thread spends most of
//! its time in the kernel and the device sees one flusher's queue. Written
//! with O_DIRECT from a few threads, the same records go straight from
//! their buffers to the device with several writes in flight. The caller
//! hands over a record and goes on verifying the next one; buffers
//! circulate, so memory stays at DEPTH records.

use crate::error::{Error, Result};
use crate::io_sizes::{aligned_start, is_direct_aligned, record_buffer, DIRECT_WRITE_MIN};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use subvol_core::stream::MAX_DATA_RECORD;

/// Writer threads, i.e. writes the device has in flight.
const WRITERS: usize = 4;
/// Buffers in circulation (in flight or waiting for a writer).
const DEPTH: usize = 8;

/// One write for a writer thread: `len` bytes at `buf[start..]`.
struct Job {
    offset: u64,
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

/// The first failure of any writer, and the lowest offset that failed.
#[derive(Default)]
struct Failure {
    error: Option<std::io::Error>,
    lowest_offset: Option<u64>,
}

pub(super) struct DirectWrites {
    jobs: Option<SyncSender<Job>>,
    /// Buffers coming back from the writers. Only writers hold senders, so
    /// if they are all gone, waiting for a buffer fails instead of hanging.
    free: Receiver<Vec<u8>>,
    /// Buffers on this side.
    spare: Vec<Vec<u8>>,
    writers: Vec<JoinHandle<()>>,
    failure: Arc<Mutex<Failure>>,
}

impl DirectWrites {
    /// Writers for `target`, or None where the filesystem refuses O_DIRECT
    /// or no thread can be started (the caller then writes as before).
    pub(super) fn start(target: &File) -> Option<Self> {
        let direct = Arc::new(subvol_os::pagecache::reopen_direct(target, true).ok()?);
        // Buffered descriptor for a write O_DIRECT refuses after all.
        let buffered = Arc::new(target.try_clone().ok()?);
        let (jobs_tx, jobs_rx) = sync_channel::<Job>(DEPTH);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (free_tx, free_rx) = channel::<Vec<u8>>();
        let spare = (0..DEPTH).map(|_| record_buffer()).collect();
        let failure = Arc::new(Mutex::new(Failure::default()));
        // Set once O_DIRECT refused a write: the rest go buffered.
        let refused = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for i in 0..WRITERS {
            let (direct, buffered, jobs_rx, free_tx, failure, refused) =
                (direct.clone(), buffered.clone(), jobs_rx.clone(), free_tx.clone(), failure.clone(), refused.clone());
            let spawned = std::thread::Builder::new().name(format!("writer-{i}")).spawn(move || loop {
                let job = match jobs_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let data = &job.buf[job.start..job.start + job.len];
                let write = || {
                    if refused.load(Ordering::Relaxed) {
                        return buffered.write_all_at(data, job.offset);
                    }
                    direct.write_all_at(data, job.offset).or_else(|e| {
                        // EINVAL: this filesystem wants another alignment.
                        if e.raw_os_error() == Some(libc::EINVAL) {
                            refused.store(true, Ordering::Relaxed);
                            buffered.write_all_at(data, job.offset)
                        } else {
                            Err(e)
                        }
                    })
                };
                // The buffer goes back whatever happens, or `wait` would
                // wait for it forever.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(write))
                    .unwrap_or_else(|_| Err(std::io::Error::other("a writer thread panicked")));
                if let Err(e) = result {
                    if let Ok(mut f) = failure.lock() {
                        f.lowest_offset = Some(f.lowest_offset.map_or(job.offset, |o| o.min(job.offset)));
                        f.error.get_or_insert(e);
                    }
                }
                let _ = free_tx.send(job.buf);
            });
            match spawned {
                Ok(h) => writers.push(h),
                Err(_) => break,
            }
        }
        if writers.is_empty() {
            return None;
        }
        drop(free_tx);
        Some(DirectWrites { jobs: Some(jobs_tx), free: free_rx, spare, writers, failure })
    }

    /// Whether a record at `offset` of `len` bytes can go this way.
    pub(super) fn accepts(offset: u64, len: u64) -> bool {
        (DIRECT_WRITE_MIN..=MAX_DATA_RECORD).contains(&len) && is_direct_aligned(offset, len)
    }

    /// Queues `data` for `offset` (which `accepts`); waits only for a free
    /// buffer. Fails if an earlier write failed.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check()?;
        let mut buf = match self.spare.pop() {
            Some(b) => b,
            None => self.free.recv().map_err(|_| Self::gone())?,
        };
        let start = aligned_start(&buf);
        buf[start..start + data.len()].copy_from_slice(data);
        let job = Job { offset, buf, start, len: data.len() };
        self.jobs.as_ref().ok_or_else(Self::gone)?.send(job).map_err(|_| Self::gone())
    }

    /// Waits until every queued write has finished; fails if one failed.
    pub(super) fn wait(&mut self) -> Result<()> {
        while self.spare.len() < DEPTH {
            let b = self.free.recv().map_err(|_| Self::gone())?;
            self.spare.push(b);
        }
        self.check()
    }

    /// The lowest offset whose write failed, if any did.
    pub(super) fn lowest_failed(&self) -> Option<u64> {
        self.failure.lock().ok().and_then(|f| f.lowest_offset)
    }

    fn check(&self) -> Result<()> {
        let mut f = self.failure.lock().map_err(|_| Self::gone())?;
        match f.error.take() {
            Some(e) => {
                // Keep failing: the image has a hole where the write was.
                f.error = Some(match e.raw_os_error() {
                    Some(errno) => std::io::Error::from_raw_os_error(errno),
                    None => std::io::Error::new(e.kind(), e.to_string()),
                });
                Err(Error::io("cannot write the received image", e))
            }
            None => Ok(()),
        }
    }

    fn gone() -> Error {
        Error::io("the writer threads stopped", std::io::Error::from_raw_os_error(libc::EPIPE))
    }
}

impl Drop for DirectWrites {
    /// Lets the writers finish what is queued, then joins them.
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.writers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DirectWrites;
    use crate::io_sizes::{BLOCK_SIZE, DIRECT_WRITE_MIN};
    use std::os::unix::fs::FileExt;
    use subvol_core::stream::MAX_DATA_RECORD;

    /// Records written through the writer threads all land, whatever order
    /// the threads finish in; unaligned ones are not accepted.
    #[test]
    fn queued_records_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let target =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(dir.path().join("image")).unwrap();
        let size = 48u64 << 20;
        target.set_len(size).unwrap();
        let Some(mut w) = DirectWrites::start(&target) else {
            crate::test_support::cannot_run(
                "queued_records_all_land",
                &format!("no O_DIRECT in {}", dir.path().display()),
            );
            return;
        };
        let mut want = vec![0u8; size as usize];
        let mut offset = 0u64;
        let mut n = 0u64;
        while offset + MAX_DATA_RECORD <= size {
            n += 1;
            let len = BLOCK_SIZE * (64 + (n * 37) % 193);
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + n) as u8).collect();
            assert!(DirectWrites::accepts(offset, len));
            w.write(offset, &data).unwrap();
            want[offset as usize..(offset + len) as usize].copy_from_slice(&data);
            offset += len + BLOCK_SIZE * (n % 3);
        }
        w.wait().unwrap();
        assert_eq!(w.lowest_failed(), None);
        // Still usable after a wait.
        w.write(0, &[9u8; DIRECT_WRITE_MIN as usize]).unwrap();
        want[..DIRECT_WRITE_MIN as usize].fill(9);
        drop(w);
        assert!(!DirectWrites::accepts(512, MAX_DATA_RECORD) && !DirectWrites::accepts(0, BLOCK_SIZE));
        let mut got = vec![0u8; size as usize];
        target.read_exact_at(&mut got, 0).unwrap();
        assert!(got == want, "the image differs from the records written");
    }
}
