//! Moving one stream from a sending side to a receiving side: the sender
//! writes into a pipe on a thread of its own while the receiver reads the
//! other end, metered (progress, rate limit) on the way.

use super::side::SyncSide;
use crate::error::{Error, ErrorKind, Result};
use crate::snapshot::Progress;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// What one transfer is asked to do.
pub(crate) struct Stream<'a> {
    pub snapshot: &'a str,
    pub base: Option<&'a str>,
    pub zstd_level: Option<i32>,
    /// Bytes per second, at most.
    pub rate: Option<u64>,
    /// Data bytes expected (for progress; 0 when unknown).
    pub total: u64,
}

/// Sends `s` from `src` into `dst`; the stream bytes that went through.
pub(crate) fn transfer(src: &dyn SyncSide, dst: &dyn SyncSide, s: &Stream<'_>, progress: Progress<'_>) -> Result<u64> {
    let (reader, writer) = std::io::pipe().map_err(|e| Error::io("cannot make a pipe for the stream", e))?;
    std::thread::scope(|scope| {
        let sender = scope.spawn(move || {
            let mut out = PipeOut { pipe: writer, receiver_gone: false };
            let sent = src.send(s.snapshot, s.base, s.zstd_level, &mut out);
            // Dropping `out` here ends the stream for the receiver.
            (sent, out.receiver_gone)
        });
        let mut input =
            Metered { inner: reader, done: 0, total: s.total, rate: s.rate, start: Instant::now(), progress };
        let received = dst.receive(&mut input);
        let bytes = input.done;
        // A receiver that gave up leaves a sender writing: closing our end
        // stops it (EPIPE) instead of leaving it blocked.
        drop(input);
        let (sent, receiver_gone) =
            sender.join().unwrap_or_else(|_| (Err(Error::new(ErrorKind::Io, "the sending thread failed")), false));
        cause(received, sent, receiver_gone).map(|()| bytes)
    })
}

/// When both ends failed, one failure caused the other: a sender that
/// stopped on its own cut the stream short for the receiver, while a
/// receiver that gave up made the sender's writes fail.
fn cause(received: Result<()>, sent: Result<()>, receiver_gone: bool) -> Result<()> {
    match (received, sent) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(_), Err(s)) if !receiver_gone => Err(s),
        (Err(r), _) => Err(r),
        (Ok(()), Err(s)) => Err(s),
    }
}

/// The pipe's write end, noting whether the reader went away.
struct PipeOut {
    pipe: std::io::PipeWriter,
    receiver_gone: bool,
}

impl Write for PipeOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.pipe.write(buf);
        if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
            self.receiver_gone = true;
        }
        r
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.pipe.flush()
    }
}

/// Counts what the receiver reads, reports it, and holds reads back to
/// `rate` bytes per second on average.
struct Metered<'a, R> {
    inner: R,
    done: u64,
    total: u64,
    rate: Option<u64>,
    start: Instant,
    progress: Progress<'a>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done, self.total.max(self.done));
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.done as f64 / rate as f64);
            let spent = self.start.elapsed();
            if due > spent {
                std::thread::sleep(due - spent);
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> Result<()> {
        Err(Error::new(kind, format!("{kind:?}")))
    }

    #[test]
    fn the_failure_that_came_first_is_the_one_reported() {
        assert_eq!(
            cause(err(ErrorKind::Corrupt), err(ErrorKind::NotFound), false).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(cause(err(ErrorKind::Busy), err(ErrorKind::Io), true).unwrap_err().kind, ErrorKind::Busy);
        assert_eq!(cause(err(ErrorKind::Busy), Ok(()), false).unwrap_err().kind, ErrorKind::Busy);
        assert_eq!(cause(Ok(()), err(ErrorKind::Io), false).unwrap_err().kind, ErrorKind::Io);
        assert!(cause(Ok(()), Ok(()), false).is_ok());
    }

    #[test]
    fn reads_are_counted_and_held_to_the_rate() {
        let data = vec![1u8; 256 * 1024];
        let seen = std::cell::Cell::new((0, 0));
        let progress = |d, t| seen.set((d, t));
        let mut m = Metered {
            inner: &data[..],
            done: 0,
            total: 100,
            rate: Some(1 << 20),
            start: Instant::now(),
            progress: &progress,
        };
        let t = Instant::now();
        std::io::copy(&mut m, &mut std::io::sink()).unwrap();
        assert_eq!(seen.get(), (256 * 1024, 256 * 1024), "progress never reports more done than total");
        assert!(t.elapsed() >= Duration::from_millis(240), "256 KiB at 1 MiB/s took {:?}", t.elapsed());
    }
}
