//! Receiving a stream into a pool: a full stream becomes a new subvolume's
//! first snapshot; an incremental one is applied to a reflink clone of its
//! base. The result is published atomically (rename) with the sender's
//! snapshot guid, and the subvolume follows it when it safely can.
//!
//! A receive runs in three phases, in this order; the crash points
//! (`subvol_os::crash`) sit between them:
//! 1. setup, under the pool lock: a retry of a snapshot the pool already
//!    has ends here (`guid`); otherwise the stream is checked against the
//!    subvolume (`target`), the host against the space floor, and the
//!    private image is made from the base or, for a resumed stream,
//!    reopened (`setup`, `partial`). Then `receive-after-setup`.
//! 2. apply, unlocked: every record goes into the private image through
//!    the `applier` (`receive-mid-stream` after each DATA record), then the
//!    image is synced and, when the stream carried its snapshot's content
//!    root, the image's manifest is built and must have that root
//!    (`verify`).
//! 3. publish, under the pool lock: `receive-before-publish`, the snapshot
//!    gets its metadata and is renamed into place (`publish`),
//!    `receive-before-follow`, and the subvolume follows it (`follow`).

mod adopt;
mod applier;
mod direct_writes;
mod follow;
mod guid;
mod partial;
mod publish;
mod setup;
mod space_floor;
mod staging;
mod target;
mod verify;
mod writeback;

use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use crate::snapshot::Progress;
use crate::trace::PhaseClock;
pub(crate) use adopt::{adopting, finish_adoptions};
use applier::Applier;
use partial::{PartialPaths, ResumeRecord};
use serde::Serialize;
use setup::Prepared;
use space_floor::SpaceFloor;
use std::fs::File;
use std::io::Read;
use subvol_core::stream::{Record, StreamError, StreamHeader, StreamReader, Totals};
use subvol_core::ObjectName;
use verify::Touched;

#[derive(Debug, Clone, Default)]
pub struct ReceiveOptions {
    /// Keep a resumable partial state if the stream breaks off.
    pub resume: bool,
    /// Roll the subvolume back to the base (dropping newer snapshots and
    /// changes) when it moved on since, like `zfs receive -F`.
    pub force: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReceiveReport {
    /// `NAME@SNAP` as received here.
    pub name: String,
    pub full: bool,
    pub data_bytes: u64,
    pub hole_bytes: u64,
    pub records: u64,
    pub stream_bytes: u64,
    /// Whether the subvolume NAME now has the received content.
    pub followed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The stream every phase reads from.
type Input<'r> = StreamReader<&'r mut dyn Read>;

/// One receive: the stream's header, where it goes and how; every phase
/// works on it.
struct Receive<'a> {
    pool: &'a Pool,
    /// The subvolume received into.
    name: String,
    /// The snapshot part of the stream's snapshot name: the result is
    /// `name@snap`.
    snap: String,
    header: StreamHeader,
    partial: PartialPaths,
    opts: &'a ReceiveOptions,
    clock: PhaseClock,
}

fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Io(io) => Error::io("cannot read the stream", io),
        other => Error::new(ErrorKind::Corrupt, other.to_string()),
    }
}

impl Pool {
    /// Receives a stream into subvolume `name`.
    pub fn receive(
        &self,
        name: &str,
        input: &mut dyn Read,
        opts: &ReceiveOptions,
        progress: Progress<'_>,
    ) -> Result<ReceiveReport> {
        let clock = PhaseClock::start("receive");
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        let mut reader: Input<'_> = StreamReader::new(input).map_err(stream_error)?;
        let mut rx = Receive::new(self, n, &reader.header, opts, clock)?;

        // Phase 1, locked: a retry ends here; otherwise check and set up
        // the private image.
        let lock = self.lock()?;
        // Another receive holds NAME's image: even a retry that would only
        // let NAME follow must wait for it.
        self.refuse_while_received(&rx.name)?;
        if let Some(done) = rx.already_received(&mut reader)? {
            return Ok(done);
        }
        let Prepared { image, target, floor, adopted, base } = rx.set_up()?;
        drop(lock);
        rx.clock.mark("setup");
        subvol_os::crash::point("receive-after-setup");

        // Phase 2, unlocked: apply the records, sync.
        let mut touched = Touched::new(&rx.header);
        let end = match rx.apply(&image, floor, &mut reader, &mut touched, progress) {
            Ok(end) => end,
            Err(e) => {
                if !opts.resume {
                    // Nothing is kept: the image goes (after the applier's
                    // writers stopped, so nothing lands in it afterwards).
                    self.discard(&rx, image, adopted.is_some());
                }
                return Err(e);
            }
        };
        let totals = rx.seal(&image, end)?;
        let verified = match rx.verify_content(&image, base.as_ref(), touched) {
            Ok(v) => v,
            Err(e) => {
                // Not the sender's snapshot: nothing of it is kept, not
                // even for a resume (every record arrived). A check that
                // could not look (an I/O error) keeps a resumable receive.
                if verify::is_mismatch(&e) || !opts.resume {
                    self.discard(&rx, image, adopted.is_some());
                    let _ = std::fs::remove_file(&rx.partial.state);
                }
                return Err(e);
            }
        };

        // Phase 3, locked: publish the snapshot, then let NAME follow.
        subvol_os::crash::point("receive-before-publish");
        let _lock = self.lock()?;
        let snapshot = rx.publish(image, &target, verified)?;
        subvol_os::crash::point("receive-before-follow");
        let (followed, note) = rx.let_follow(target, &snapshot, adopted.as_ref())?;
        Ok(ReceiveReport {
            name: format!("{}@{}", rx.name, rx.snap),
            full: rx.header.base.is_none(),
            data_bytes: totals.data_bytes,
            hole_bytes: totals.hole_bytes,
            records: totals.records,
            stream_bytes: reader.bytes_read,
            followed,
            note,
        })
    }
}

impl Pool {
    /// Removes a receive's private image once its writers stopped; an
    /// image that was NAME's own is put back first by recovery, which the
    /// pool lock runs.
    /// Best effort: if the lock cannot be had, the next command's recovery
    /// does it, and the caller's error is the one to report.
    fn discard(&self, rx: &Receive<'_>, image: File, adopted: bool) {
        drop(image);
        if adopted {
            let _lock = self.lock();
        }
        let _ = std::fs::remove_file(&rx.partial.image);
    }
}

impl<'a> Receive<'a> {
    /// Checks the sender's strings and geometry before anything is stored
    /// or printed (names, tags, fixed block size, size bounds).
    fn new(
        pool: &'a Pool,
        name: String,
        header: &StreamHeader,
        opts: &'a ReceiveOptions,
        clock: PhaseClock,
    ) -> Result<Self> {
        let header = header.clone();
        header.validate().map_err(stream_error)?;
        let obj = ObjectName::parse_snapshot(&header.snapshot.name)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("stream names a bad snapshot: {e}")))?;
        let snap = obj.snapshot.unwrap_or_default();
        let partial = pool.partial_paths(&name);
        Ok(Receive { pool, name, snap, header, partial, opts, clock })
    }

    /// Phase 2, unlocked: applies the records to the private image and
    /// returns the END record's totals (None if the stream had none). If
    /// the stream breaks off, a resumable receive records what is durably
    /// applied and says how to resume; otherwise the writes are stopped
    /// and the caller removes the image.
    fn apply(
        &mut self,
        image: &File,
        floor: SpaceFloor,
        reader: &mut Input<'_>,
        touched: &mut Touched,
        progress: Progress<'_>,
    ) -> Result<Option<Totals>> {
        // Staging needs reflinks, and a scratch file beside the image.
        let scratch = self.pool.meta.reflink.then(|| self.pool.layout.receive_dir());
        let resume = self.opts.resume.then(|| ResumeRecord::new(self.partial.state.clone(), self.header.clone()));
        let mut applier = Applier::new(image, scratch.as_deref(), floor, resume, self.header.resume_offset);
        let mut end = None;
        let result = (|| -> Result<()> {
            while let Some(rec) = reader.next_record().map_err(stream_error)? {
                applier.apply(&rec)?;
                touched.record(&rec);
                match rec {
                    Record::Data { .. } => progress(reader.bytes_read, 0),
                    Record::Hole { .. } => {}
                    Record::End(t) => end = Some(t),
                }
            }
            applier.finish()
        })();
        self.clock.mark("apply");
        if let Err(e) = result {
            if self.opts.resume {
                // What arrived intact is kept.
                let offset = applier.abort()?;
                return Err(self.resumable(e, offset));
            }
            return Err(e);
        }
        drop(applier);
        self.clock.mark("writeback-stop");
        Ok(end)
    }

    /// The end of phase 2: the image as it will be published, on disk.
    fn seal(&mut self, image: &File, end: Option<Totals>) -> Result<Totals> {
        // The one-block CoW hint was for applying the stream only: XFS
        // copies it into whole-file clones (NAME following this snapshot),
        // where it would fragment the subvolume after every snapshot.
        let _ = subvol_os::hints::set_extent_hints(image, None, Some(0));
        let totals = end.ok_or_else(|| Error::new(ErrorKind::Corrupt, "stream ended without END"))?;
        image.sync_all().map_err(|e| Error::io("cannot sync the received image", e))?;
        self.clock.mark("sync");
        Ok(totals)
    }
}
