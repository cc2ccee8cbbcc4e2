//! Reads chunks of images and hashes them, on several threads, for manifest
//! builds and scrubs alike. A plan hands out read jobs (one image, one run
//! of whole chunks) and takes each chunk's entry back; the device works on
//! several reads at once while the CPUs hash, and memory stays bounded (a
//! few jobs in flight, one buffer per thread).
//!
//! Reads bypass the page cache (O_DIRECT): a scrub must see what is on the
//! device, not a cached copy, and must not evict the cache of the
//! subvolumes it runs beside. An I/O error on a run is narrowed to the
//! chunks that fail, each reported as unreadable.

use crate::error::{Error, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subvol_core::manifest::Entry;

/// Longest read: long enough for the device's sequential rate, short
/// enough that few buffers bound the memory.
pub(crate) const MAX_READ: u64 = 4 << 20;
/// Reader threads: reads in flight at once, and hashing on every core.
const THREADS: usize = 4;
/// Jobs queued ahead of the readers.
const QUEUE: usize = 8;
const ALIGN: usize = 4096;
/// CPU priority of idle readers: below the subvolumes' users.
const IDLE_NICE: i32 = 10;

/// An image to read: O_DIRECT where the host allows it (a second
/// descriptor of the caller's open file, which serves the fallback).
pub(crate) struct Source<'a> {
    direct: Option<File>,
    file: &'a File,
}

impl<'a> Source<'a> {
    pub(crate) fn new(file: &'a File) -> Source<'a> {
        Source { direct: subvol_os::pagecache::reopen_direct(file, false).ok(), file }
    }

    pub(crate) fn read(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let aligned = offset.is_multiple_of(ALIGN as u64) && buf.len().is_multiple_of(ALIGN);
        match &self.direct {
            // EINVAL: this host wants another alignment; the page cache has none.
            Some(d) if aligned => match d.read_exact_at(buf, offset) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.file.read_exact_at(buf, offset),
                other => other,
            },
            _ => self.file.read_exact_at(buf, offset),
        }
    }
}

/// A buffer whose slices start at an O_DIRECT alignment.
pub(crate) struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let bytes = vec![0u8; len + ALIGN];
        let start = bytes.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf { bytes, start }
    }

    /// The first `len` bytes (at most the length it was made with).
    pub(crate) fn slice(&mut self, len: usize) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + len]
    }
}

/// One read: whole chunks, consecutive from `offset`, of source `source`.
pub(crate) struct Job<T> {
    pub(crate) source: usize,
    pub(crate) offset: u64,
    /// Each chunk's tag (returned with its entry) and length.
    pub(crate) chunks: Vec<(T, u64)>,
}

impl<T> Job<T> {
    pub(crate) fn len(&self) -> u64 {
        self.chunks.iter().map(|c| c.1).sum()
    }
}

/// What reading one chunk gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Read(Entry),
    /// The host's error, in words.
    Unreadable(String),
}

/// The work: jobs out, entries in. Both run on the calling thread.
pub(crate) trait Plan {
    type Tag: Send;
    fn next_job(&mut self) -> Result<Option<Job<Self::Tag>>>;
    fn done(&mut self, tag: Self::Tag, outcome: Outcome) -> Result<()>;
}

/// What running a plan read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReadStats {
    pub(crate) bytes_read: u64,
    pub(crate) chunks_read: u64,
}

/// How politely to read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Pace {
    /// At most this many bytes per second.
    pub(crate) rate: Option<u64>,
    /// Reads in the idle I/O class, hashing at a low CPU priority (the
    /// calling thread keeps its own).
    pub(crate) idle: bool,
}

/// Runs `plan` over `sources` at `pace`.
pub(crate) fn run<P: Plan>(plan: &mut P, sources: &[Source], pace: Pace) -> Result<ReadStats> {
    let Pace { rate, idle } = pace;
    let (job_tx, job_rx) = sync_channel::<Job<P::Tag>>(QUEUE);
    let job_rx = Mutex::new(job_rx);
    let (out_tx, out_rx) = channel::<(P::Tag, Outcome)>();
    let bytes = AtomicU64::new(0);
    let chunks = AtomicU64::new(0);
    std::thread::scope(|s| -> Result<()> {
        let mut started = 0;
        for _ in 0..THREADS {
            let (rx, tx, chunks) = (&job_rx, out_tx.clone(), &chunks);
            let spawned = std::thread::Builder::new().name("chunk-reader".into()).spawn_scoped(s, move || {
                if idle {
                    // Best effort: without them the scrub only runs at
                    // the priority of its caller.
                    let _ = subvol_os::priority::set_io_idle();
                    let _ = subvol_os::priority::set_nice(IDLE_NICE);
                }
                let mut buf = vec![0u8; MAX_READ as usize + ALIGN];
                loop {
                    // One reader waits on the queue at a time.
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let n = job.chunks.len() as u64;
                    // One chunk may be longer than MAX_READ (manifests allow
                    // up to 16 MiB): such a job gets a buffer of its size.
                    if buf.len() < job.len() as usize + ALIGN {
                        buf = vec![0u8; job.len() as usize + ALIGN];
                    }
                    for (tag, outcome) in read_job(&sources[job.source], job, &mut buf) {
                        if tx.send((tag, outcome)).is_err() {
                            return;
                        }
                    }
                    chunks.fetch_add(n, Ordering::Relaxed);
                }
            });
            if spawned.is_ok() {
                started += 1;
            }
        }
        drop(out_tx);
        if started == 0 {
            return Err(Error::new(crate::ErrorKind::Io, "cannot start any reader thread"));
        }
        let start = Instant::now();
        let mut sent = 0u64;
        let mut pending = 0u64;
        let drain = |plan: &mut P, pending: &mut u64, rx: &Receiver<(P::Tag, Outcome)>| -> Result<()> {
            while let Ok((tag, o)) = rx.try_recv() {
                *pending -= 1;
                plan.done(tag, o)?;
            }
            Ok(())
        };
        while let Some(job) = plan.next_job()? {
            let len = job.len();
            if let Some(r) = rate.filter(|&r| r > 0) {
                let due = Duration::from_secs_f64(sent as f64 / r as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            sent += len;
            pending += job.chunks.len() as u64;
            bytes.fetch_add(len, Ordering::Relaxed);
            if job_tx.send(job).is_err() {
                return Err(Error::new(crate::ErrorKind::Io, "the reader threads stopped"));
            }
            drain(plan, &mut pending, &out_rx)?;
        }
        drop(job_tx);
        while pending > 0 {
            let Ok((tag, o)) = out_rx.recv() else {
                return Err(Error::new(crate::ErrorKind::Io, "the reader threads stopped"));
            };
            pending -= 1;
            plan.done(tag, o)?;
        }
        Ok(())
    })?;
    Ok(ReadStats { bytes_read: bytes.into_inner(), chunks_read: chunks.into_inner() })
}

/// Reads one job and hashes its chunks; a failed read is retried chunk by
/// chunk, so only the chunks that fail are unreadable.
fn read_job<T>(src: &Source, job: Job<T>, buf: &mut [u8]) -> Vec<(T, Outcome)> {
    let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
    let len = job.len() as usize;
    let whole = src.read(&mut buf[start..start + len], job.offset);
    let mut out = Vec::with_capacity(job.chunks.len());
    let mut at = 0usize;
    for (tag, clen) in job.chunks {
        let clen = clen as usize;
        let piece = start + at..start + at + clen;
        let outcome = match &whole {
            Ok(()) => Outcome::Read(Entry::of(&buf[piece])),
            Err(_) => match src.read(&mut buf[piece.clone()], job.offset + at as u64) {
                Ok(()) => Outcome::Read(Entry::of(&buf[piece])),
                Err(e) => Outcome::Unreadable(e.to_string()),
            },
        };
        out.push((tag, outcome));
        at += clen;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Reads every chunk of a file once, in jobs of up to three chunks.
    struct Everything {
        jobs: Vec<Job<u64>>,
        got: Vec<(u64, Outcome)>,
    }

    impl Plan for Everything {
        type Tag = u64;
        fn next_job(&mut self) -> Result<Option<Job<u64>>> {
            Ok(self.jobs.pop())
        }
        fn done(&mut self, tag: u64, outcome: Outcome) -> Result<()> {
            self.got.push((tag, outcome));
            Ok(())
        }
    }

    #[test]
    fn every_chunk_comes_back_once_with_its_entry() {
        let base = std::path::Path::new("/var/tmp");
        let mut f =
            tempfile::NamedTempFile::new_in(if base.is_dir() { base } else { std::path::Path::new("/tmp") }).unwrap();
        let cs = 65536u64;
        let bytes: Vec<u8> = (0..cs * 10).map(|i| if (i / cs) % 3 == 1 { 0 } else { (i % 251) as u8 }).collect();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        let file = File::open(f.path()).unwrap();
        let sources = vec![Source::new(&file)];
        let jobs: Vec<Job<u64>> = (0..10u64)
            .step_by(3)
            .map(|first| Job {
                source: 0,
                offset: first * cs,
                chunks: (first..(first + 3).min(10)).map(|i| (i, cs)).collect(),
            })
            .collect();
        let mut plan = Everything { jobs, got: Vec::new() };
        let stats = run(&mut plan, &sources, Pace { rate: Some(1 << 30), idle: true }).unwrap();
        assert_eq!(stats.bytes_read, cs * 10);
        assert_eq!(stats.chunks_read, 10);
        plan.got.sort_by_key(|g| g.0);
        let want: Vec<(u64, Outcome)> = (0..10u64)
            .map(|i| (i, Outcome::Read(Entry::of(&bytes[(i * cs) as usize..((i + 1) * cs) as usize]))))
            .collect();
        assert_eq!(plan.got, want);
        assert_eq!(plan.got[1].1, Outcome::Read(Entry::Zero));
    }

    /// A chunk longer than the readers' usual buffer (manifests allow 16 MiB
    /// chunks; a stream's header chooses its chunk size) is read whole.
    #[test]
    fn a_chunk_longer_than_max_read_is_read_whole() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let cs = 2 * MAX_READ;
        let bytes: Vec<u8> = (0..cs * 2).map(|i| (i % 253) as u8).collect();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        let file = File::open(f.path()).unwrap();
        let jobs = vec![
            Job { source: 0, offset: cs, chunks: vec![(1, cs)] },
            Job { source: 0, offset: 0, chunks: vec![(0, cs)] },
        ];
        let mut plan = Everything { jobs, got: Vec::new() };
        run(&mut plan, &[Source::new(&file)], Pace { rate: None, idle: false }).unwrap();
        plan.got.sort_by_key(|g| g.0);
        let want: Vec<(u64, Outcome)> = (0..2u64)
            .map(|i| (i, Outcome::Read(Entry::of(&bytes[(i * cs) as usize..((i + 1) * cs) as usize]))))
            .collect();
        assert_eq!(plan.got, want);
    }
}
