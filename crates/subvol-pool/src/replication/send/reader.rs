//! Reads the data of a list of changes on a second thread, in order, so
//! that the device works on the next ranges while the caller checksums,
//! compresses and writes the previous ones. Memory stays bounded: a few
//! record-sized buffers circulate between the two threads.

use crate::error::{Error, Result};
use crate::io_sizes::{aligned_start, is_direct_aligned, record_buffer, DIRECT_READ_MIN, READAHEAD_BYTES};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use subvol_core::diff::Change;
use subvol_core::stream::MAX_DATA_RECORD;

/// Read pieces that may wait for the consumer.
const DEPTH: usize = 4;

/// One piece of the changes, in stream order: data at most one record long.
pub(super) enum Piece<'a> {
    Hole { offset: u64, length: u64 },
    Data { offset: u64, data: &'a [u8] },
}

enum Item {
    Hole { offset: u64, length: u64 },
    Data { offset: u64, buf: Vec<u8>, start: usize, len: usize },
    Failed { offset: u64, error: std::io::Error },
}

/// Calls `consume` for every piece of `changes` (holes as they are, data
/// read from `file` in pieces of at most MAX_DATA_RECORD bytes), in order.
/// `what` names the file in errors. Stops at the first error of either side.
pub(super) fn for_each_piece(
    file: &File,
    changes: &[Change],
    what: &str,
    mut consume: impl FnMut(Piece<'_>) -> Result<()>,
) -> Result<()> {
    let (full_tx, full_rx) = sync_channel::<Item>(DEPTH);
    let (free_tx, free_rx) = channel::<Vec<u8>>();
    for _ in 0..=DEPTH {
        let _ = free_tx.send(record_buffer());
    }
    // Without O_DIRECT (some filesystems refuse it) everything goes
    // through the page cache.
    let direct = subvol_os::pagecache::reopen_direct(file, false).ok();
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("reader".into())
            .spawn_scoped(s, move || read_changes(file, direct.as_ref(), changes, &full_tx, &free_rx));
        // Without the reader the channel would simply look empty.
        if let Err(e) = spawned {
            return Err(Error::io("cannot start the reader thread", e));
        }
        // Owns the receiving ends: when it returns, early or not, they are
        // dropped and the reader thread stops.
        let run = move || -> Result<()> {
            let free_tx = free_tx;
            for item in full_rx.iter() {
                match item {
                    Item::Hole { offset, length } => consume(Piece::Hole { offset, length })?,
                    Item::Data { offset, buf, start, len } => {
                        consume(Piece::Data { offset, data: &buf[start..start + len] })?;
                        let _ = free_tx.send(buf);
                    }
                    Item::Failed { offset, error } => {
                        return Err(Error::io(format!("cannot read {what} at {offset}"), error))
                    }
                }
            }
            Ok(())
        };
        run()
    })
}

/// The reader thread: sends every change to `full`, data read into
/// buffers taken from `free`, until the changes end, a read fails or the
/// consumer hangs up.
fn read_changes(
    file: &File,
    direct: Option<&File>,
    changes: &[Change],
    full: &SyncSender<Item>,
    free: &Receiver<Vec<u8>>,
) {
    let direct_min = if direct.is_some() { DIRECT_READ_MIN } else { u64::MAX };
    let mut ahead = Readahead::new(changes, direct_min);
    for (i, c) in changes.iter().copied().enumerate() {
        ahead.advise(file, i);
        match c {
            Change::Hole { offset, length } => {
                if full.send(Item::Hole { offset, length }).is_err() {
                    return;
                }
            }
            Change::Data { offset, length } => {
                let end = offset + length;
                let mut off = offset;
                while off < end {
                    let len = (end - off).min(MAX_DATA_RECORD) as usize;
                    // The consumer stopped: it dropped its end.
                    let Ok(buf) = free.recv() else { return };
                    let item = read_piece(file, direct.filter(|_| length >= direct_min), off, len, buf);
                    let failed = matches!(item, Item::Failed { .. });
                    if full.send(item).is_err() || failed {
                        return;
                    }
                    off += len as u64;
                }
            }
        }
    }
}

/// Reads `len` bytes at `off` into `buf`, with O_DIRECT through `direct`
/// where given and the piece is aligned.
fn read_piece(file: &File, direct: Option<&File>, off: u64, len: usize, mut buf: Vec<u8>) -> Item {
    let start = aligned_start(&buf);
    let dst = &mut buf[start..start + len];
    let read = match direct {
        Some(d) if is_direct_aligned(off, len as u64) => {
            // EINVAL: this filesystem wants another alignment; the page
            // cache has none.
            d.read_exact_at(dst, off).or_else(|_| file.read_exact_at(dst, off))
        }
        _ => file.read_exact_at(dst, off),
    };
    match read {
        Ok(()) => Item::Data { offset: off, buf, start, len },
        Err(error) => Item::Failed { offset: off, error },
    }
}

/// Keeps posix_fadvise(WILLNEED) a window ahead of the reads, over the list
/// of changes to send.
struct Readahead<'a> {
    changes: &'a [Change],
    skip_from: u64,
    /// Next change (index) and offset inside it not advised yet.
    next: usize,
    next_off: u64,
    /// Data bytes advised, and data bytes of the changes before the current one.
    advised: u64,
    consumed: u64,
    current: usize,
}

impl<'a> Readahead<'a> {
    /// Changes of `skip_from` bytes or more are read without the page
    /// cache and get no advice.
    fn new(changes: &'a [Change], skip_from: u64) -> Self {
        let next_off = changes.first().map(|c| c.offset()).unwrap_or(0);
        Readahead { changes, skip_from, next: 0, next_off, advised: 0, consumed: 0, current: 0 }
    }

    /// Called before change `i` is read: advises until the window is full.
    /// Advice is only a hint; failures are ignored.
    fn advise(&mut self, file: &File, i: usize) {
        while self.current < i {
            if let Change::Data { length, .. } = self.changes[self.current] {
                if length < self.skip_from {
                    self.consumed += length;
                }
            }
            self.current += 1;
        }
        // A change longer than the window was read past its advice: start
        // advising at the change being read, never behind it.
        if self.next < i {
            self.next = i;
            self.next_off = self.changes[i].offset();
            self.advised = self.advised.max(self.consumed);
        }
        while self.next < self.changes.len() && self.advised < self.consumed + READAHEAD_BYTES {
            let c = self.changes[self.next];
            let end = c.offset() + c.length();
            if let Change::Data { length, .. } = c {
                if length >= self.skip_from {
                    self.next += 1;
                    if let Some(c) = self.changes.get(self.next) {
                        self.next_off = c.offset();
                    }
                    continue;
                }
                let n = (end - self.next_off).min(READAHEAD_BYTES);
                // Length 0 would mean "to the end of the file".
                if n > 0 {
                    let _ = subvol_os::pagecache::will_need(file, self.next_off, n);
                }
                self.advised += n;
                self.next_off += n;
            } else {
                self.next_off = end;
            }
            if self.next_off >= end {
                self.next += 1;
                if let Some(c) = self.changes.get(self.next) {
                    self.next_off = c.offset();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Pieces come in order, data pieces are at most one record and hold
    /// the file's bytes, whatever path (O_DIRECT or page cache) read them.
    #[test]
    fn pieces_rebuild_the_changes_in_order() {
        // /tmp may be tmpfs; /var/tmp is usually a disk filesystem, where
        // the long changes take the O_DIRECT path.
        let mut direct_ran = false;
        for dir in [std::env::temp_dir(), std::path::PathBuf::from("/var/tmp")] {
            if dir.is_dir() {
                direct_ran |= rebuild_in(&dir);
            }
        }
        if !direct_ran {
            crate::test_support::cannot_run(
                "pieces_rebuild_the_changes_in_order (O_DIRECT path)",
                "no O_DIRECT in /tmp or /var/tmp",
            );
        }
    }

    /// Returns whether the long changes took the O_DIRECT path.
    fn rebuild_in(dir: &std::path::Path) -> bool {
        let mut f = tempfile::NamedTempFile::new_in(dir).unwrap();
        let direct = subvol_os::pagecache::reopen_direct(f.as_file(), false).is_ok();
        let size = 6u64 << 20;
        let bytes: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        f.write_all(&bytes).unwrap();
        f.flush().unwrap();
        let changes = vec![
            Change::Data { offset: 0, length: 4096 },
            Change::Hole { offset: 4096, length: 8192 },
            Change::Data { offset: 12288, length: 3 << 20 },
            Change::Data { offset: (3 << 20) + 16384, length: 4096 },
            Change::Data { offset: 4 << 20, length: 2 << 20 },
        ];
        let mut seen: Vec<(bool, u64, u64)> = Vec::new();
        for_each_piece(f.as_file(), &changes, "test", |p| {
            match p {
                Piece::Hole { offset, length } => seen.push((false, offset, length)),
                Piece::Data { offset, data } => {
                    assert!(data.len() as u64 <= MAX_DATA_RECORD);
                    assert_eq!(data, &bytes[offset as usize..offset as usize + data.len()]);
                    seen.push((true, offset, data.len() as u64));
                }
            }
            Ok(())
        })
        .unwrap();
        // Re-joined, the pieces are the changes.
        let mut joined: Vec<(bool, u64, u64)> = Vec::new();
        for (d, o, l) in seen {
            match joined.last_mut() {
                Some((jd, jo, jl)) if *jd == d && *jo + *jl == o && d => *jl += l,
                _ => joined.push((d, o, l)),
            }
        }
        let want: Vec<(bool, u64, u64)> =
            changes.iter().map(|c| (matches!(c, Change::Data { .. }), c.offset(), c.length())).collect();
        assert_eq!(joined, want);
        direct
    }

    /// The consumer's error stops the reader and comes back unchanged.
    #[test]
    fn consumer_error_stops_the_reader() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![1u8; 8 << 20]).unwrap();
        let changes = vec![Change::Data { offset: 0, length: 8 << 20 }];
        let mut calls = 0;
        let r = for_each_piece(f.as_file(), &changes, "test", |_| {
            calls += 1;
            Err(Error::invalid("stop"))
        });
        assert_eq!(r.unwrap_err().message, "stop");
        assert_eq!(calls, 1);
    }
}
