//! Receiving a stream into a pool: a full stream becomes a new subvolume's
//! first snapshot; an incremental one is applied to a reflink clone of its
//! base. The result is published atomically (rename) with the sender's
//! snapshot guid, and the subvolume follows it when it safely can.

use crate::direct_writes::DirectWrites;
use crate::error::{Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::pool::Pool;
use crate::snapshot::{write_meta, Progress};
use crate::staging::StagedWrites;
use crate::subvolume::{open_image, read_meta, rename_noreplace, SubvolumeInfo};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use subvol_core::meta::Origin;
use subvol_core::stream::{Record, SnapshotRef, StreamError, StreamHeader, StreamReader};
use subvol_core::token::ResumeToken;
use subvol_core::{FsKind, ObjectKind, ObjectName, SubvolumeMeta};

/// How often a resumable receive makes its progress durable.
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Received data bytes after which writeback of the partial image is started
/// (asynchronously).
const WRITEBACK_BYTES: u64 = 4 << 20;
/// Largest image a stream may declare.
const MAX_VIRTUAL_SIZE: u64 = 1 << 62;

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

/// A resumable partial receive (`.subvol/receive/NAME.state`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartialState {
    header: StreamHeader,
    offset: u64,
}

/// What the receiving subvolume looks like.
enum Target {
    /// Does not exist: it will be created from the received snapshot.
    Absent,
    /// Exists, unchanged since the base, not mounted: it will follow.
    Follows,
    /// Exists and will be replaced (--force), having moved on.
    Replace,
    /// Exists but is mounted: the snapshot is received, NAME stays.
    Stays(String),
}

fn stream_error(e: StreamError) -> Error {
    match e {
        StreamError::Io(io) => Error::io("cannot read the stream", io),
        other => Error::new(ErrorKind::Corrupt, other.to_string()),
    }
}

fn snap_part(h: &StreamHeader) -> Result<String> {
    let obj = ObjectName::parse_snapshot(&h.snapshot.name)
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("stream names a bad snapshot: {e}")))?;
    Ok(obj.snapshot.unwrap_or_default())
}

/// One subvolume's snapshots whose metadata can be read, with it.
fn snapshot_metas(snaps: &[(String, PathBuf)]) -> Result<Vec<(String, PathBuf, SubvolumeMeta)>> {
    let mut out = Vec::new();
    for (s, p) in snaps {
        let f = open_image(p, false).map_err(|e| Error::io("open", e))?;
        if let Ok(m) = read_meta(&f) {
            out.push((s.clone(), p.clone(), m));
        }
    }
    Ok(out)
}

/// Which of subvolume `n`'s snapshots is the stream's base. Two with its
/// guid (made before receives refused a guid the pool has) could differ,
/// and applying the stream to the wrong one would go unnoticed: refused.
fn base_index(n: &str, metas: &[(String, PathBuf, SubvolumeMeta)], base: &SnapshotRef) -> Result<Option<usize>> {
    let found: Vec<usize> = (0..metas.len()).filter(|&i| metas[i].2.guid == base.guid).collect();
    match found[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => {
            let names: Vec<String> = found.iter().map(|&i| format!("{n}@{}", metas[i].0)).collect();
            Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{} all have the guid {} of the stream's base; keep one (`subvol pool check` lists them)",
                    names.join(", "),
                    base.guid
                ),
            ))
        }
    }
}

impl Pool {
    fn partial_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        self.layout.partial_receive(name)
    }

    fn read_state(&self, state_path: &Path) -> Result<Option<PartialState>> {
        match std::fs::read(state_path) {
            Ok(b) => subvol_core::meta::decode::<PartialState>("receive", 1, &b)
                .map(Some)
                .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{}: {e}", state_path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read {}", state_path.display()), e)),
        }
    }

    fn write_state(&self, state_path: &Path, st: &PartialState) -> Result<()> {
        subvol_os::fsync::write_atomic(state_path, &subvol_core::meta::encode("receive", 1, st))
            .map_err(|e| Error::os("cannot record the receive's progress", e))
    }

    /// The resume token of a partial receive into `name`, if there is one.
    pub fn receive_token(&self, name: &str) -> Result<Option<ResumeToken>> {
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        let (_, state_path) = self.partial_paths(&n);
        Ok(self.read_state(&state_path)?.map(|st| token_of(&st)))
    }

    /// Drops a partial receive into `name`.
    pub fn receive_abort(&self, name: &str) -> Result<bool> {
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        let _lock = self.lock()?;
        let (img, state) = self.partial_paths(&n);
        if let Ok(f) = File::open(&img) {
            if f.try_lock().is_err() {
                return Err(Error::new(ErrorKind::Busy, format!("a receive into {n} is running; stop it first")));
            }
        }
        let a = std::fs::remove_file(&img).is_ok();
        let b = std::fs::remove_file(&state).is_ok();
        Ok(a || b)
    }

    /// Checks the stream against the subvolume and finds the base image.
    fn check_target(&self, n: &str, h: &StreamHeader, snap: &str, force: bool) -> Result<(Option<PathBuf>, Target)> {
        if h.virtual_size > MAX_VIRTUAL_SIZE {
            return Err(Error::new(ErrorKind::Corrupt, "stream declares an impossible size"));
        }
        // The same limits as `create`: what the host can hold as one file.
        self.check_host_file_size(h.virtual_size, "the stream's image")?;
        h.fs.parse::<FsKind>().map_err(|e| Error::new(ErrorKind::Corrupt, format!("stream: {e}")))?;
        let snaps = self.snapshot_images(n)?;
        let metas = snapshot_metas(&snaps)?;
        if snaps.iter().any(|(s, _)| s == snap) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot {n}@{snap} already exists with other content"),
            ));
        }
        let image = self.layout.subvolume_image(n);
        let exists = image.exists();
        let Some(base) = &h.base else {
            if exists || !snaps.is_empty() {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("{n} already exists; a full stream needs a new name (or send incrementally with --from)"),
                ));
            }
            return Ok((None, Target::Absent));
        };
        let Some(pos) = base_index(n, &metas, base)? else {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("{n} has no snapshot with guid {} (the stream's base {}); send a full stream or from a common snapshot", base.guid, base.name),
            ));
        };
        let base_created = metas[pos].2.created;
        let base_path = metas[pos].1.clone();
        let newer: Vec<&(String, PathBuf, SubvolumeMeta)> =
            metas.iter().filter(|(_, _, m)| m.created > base_created).collect();
        if !newer.is_empty() {
            if !force {
                let names: Vec<String> = newer.iter().map(|(s, _, _)| format!("{n}@{s}")).collect();
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{n} has snapshots newer than the base {}: {}; use --force to drop them",
                        base.name,
                        names.join(", ")
                    ),
                ));
            }
            if let Some((s, _, m)) = newer.iter().find(|(_, _, m)| !m.holds.is_empty()) {
                return Err(crate::subvolume::held_error(&format!("{n}@{s}"), m));
            }
        }
        if !exists {
            return Ok((Some(base_path), Target::Absent));
        }
        let kernel = KernelView::read()?;
        let mounted = kernel.attachments(&image).first().map(crate::subvolume::where_);
        let changed = self.changed_since(&image, &base_path)?;
        let target = match (changed, mounted, force) {
            (false, None, _) => Target::Follows,
            (false, Some(at), _) => Target::Stays(format!(
                "{n} is {at}; it keeps its content (umount it and `subvol rollback {n}@{snap}` to follow)"
            )),
            // Not necessarily a local write: NAME may still be a later
            // received snapshot that was deleted here since.
            (true, _, false) => {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{n} differs from the stream's base {n}@{}: it was written to since, or it followed a later snapshot that is gone; use --force to roll it back to the received snapshot",
                        metas[pos].0
                    ),
                ))
            }
            (true, Some(at), true) => {
                return Err(Error::new(ErrorKind::Busy, format!("{n} is {at} and modified; umount it first")));
            }
            (true, None, true) => Target::Replace,
        };
        Ok((Some(base_path), target))
    }

    /// Whether `image` differs from `base` (by host blocks, or contents
    /// without reflinks).
    fn changed_since(&self, image: &Path, base: &Path) -> Result<bool> {
        let a = open_image(base, false).map_err(|e| Error::io("open", e))?;
        let b = open_image(image, false).map_err(|e| Error::io("open", e))?;
        let (sa, sb) = (
            a.metadata().map_err(|e| Error::io("stat", e))?.len(),
            b.metadata().map_err(|e| Error::io("stat", e))?.len(),
        );
        if sa != sb {
            return Ok(true);
        }
        if self.meta.reflink {
            let ma = subvol_os::fiemap::fiemap(&a, true).map_err(|e| Error::os("fiemap", e))?;
            let mb = subvol_os::fiemap::fiemap(&b, true).map_err(|e| Error::os("fiemap", e))?;
            return Ok(!subvol_core::diff::diff(&ma, sa, &mb, sb).is_empty());
        }
        Ok(!crate::send::content_diff(&a, sa, &b, sb)?.changes.is_empty())
    }

    /// Receives a stream into subvolume `name`.
    pub fn receive(
        &self,
        name: &str,
        input: &mut dyn Read,
        opts: &ReceiveOptions,
        progress: Progress<'_>,
    ) -> Result<ReceiveReport> {
        let mut clock = crate::trace::PhaseClock::start("receive");
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        let mut reader: StreamReader<&mut dyn Read> = StreamReader::new(input).map_err(stream_error)?;
        let h = reader.header.clone();
        // Strings and geometry from the sender are checked before anything
        // is stored or printed (names, tags, fixed block size, size bounds).
        h.validate().map_err(stream_error)?;
        let snap = snap_part(&h)?;
        let (img_path, state_path) = self.partial_paths(&n);

        // Phase 1, locked: check, and set up the partial image.
        let lock = self.lock()?;
        if let Some(done) = self.already_received(&n, &snap, &h, &mut reader)? {
            return Ok(done);
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(self.layout.receive_dir())
            .map_err(|e| Error::io("cannot create the receive dir", e))?;
        let state = self.read_state(&state_path)?;
        let (file, target, mut floor) = if h.resume_offset > 0 {
            let Some(st) = state else {
                return Err(Error::invalid(format!(
                    "this is a resumed stream, but there is no partial receive into {n}"
                )));
            };
            if !opts.resume {
                return Err(Error::invalid("this is a resumed stream; receive it with --resume"));
            }
            if st.header.snapshot.guid != h.snapshot.guid
                || st.header.base.as_ref().map(|b| b.guid) != h.base.as_ref().map(|b| b.guid)
                || st.offset != h.resume_offset
            {
                return Err(Error::invalid(format!(
                    "the stream does not continue the partial receive into {n}; its token is {}",
                    token_of(&st)
                )));
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&img_path)
                .map_err(|e| Error::io("cannot open the partial receive", e))?;
            if f.try_lock().is_err() {
                return Err(Error::new(ErrorKind::Busy, format!("another receive into {n} is running")));
            }
            let (_, t) = self.check_target(&n, &h, &snap, opts.force)?;
            (f, t, self.receive_space_floor(&n)?)
        } else {
            if let Some(st) = &state {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "a partial receive into {n} exists; continue it with `subvol send --resume {} ...`, or drop it with `subvol receive {n} --abort`",
                        token_of(st)
                    ),
                ));
            }
            if let Ok(f) = File::open(&img_path) {
                if f.try_lock().is_err() {
                    return Err(Error::new(ErrorKind::Busy, format!("another receive into {n} is running")));
                }
                drop(f);
                let _ = std::fs::remove_file(&img_path);
            }
            clock.mark("header");
            let (base, t) = self.check_target(&n, &h, &snap, opts.force)?;
            let floor = self.receive_space_floor(&n)?;
            clock.mark("check");
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&img_path)
                .map_err(|e| Error::io(format!("cannot create {}", img_path.display()), e))?;
            if f.try_lock().is_err() {
                return Err(Error::new(ErrorKind::Busy, format!("another receive into {n} is running")));
            }
            let setup = (|| -> Result<()> {
                // Records written in place over blocks shared with the base
                // (long ones, and short ones where staging is unavailable)
                // are copies-on-write; a one-block CoW extent size keeps XFS
                // from reserving up to 128 KiB of staging beyond each one (a
                // hint only: other filesystems refuse it, which is fine).
                let _ = subvol_os::hints::set_extent_hints(&f, None, Some(4096));
                if let Some(bp) = &base {
                    let b = open_image(bp, false).map_err(|e| Error::io("cannot open the base", e))?;
                    if self.meta.reflink {
                        subvol_os::reflink::ficlone(&f, &b).map_err(|e| Error::os("cannot clone the base", e))?;
                    } else {
                        let size = b.metadata().map_err(|e| Error::io("stat", e))?.len();
                        f.set_len(size).map_err(|e| Error::io("size", e))?;
                        for (off, len) in subvol_os::alloc::data_ranges(&b, size).map_err(|e| Error::os("scan", e))? {
                            subvol_os::copy::copy_range(&b, &f, off, len, |_| {})
                                .map_err(|e| Error::os("cannot copy the base", e))?;
                        }
                    }
                }
                f.set_len(h.virtual_size).map_err(|e| Error::io("cannot size the received image", e))?;
                if opts.resume {
                    f.sync_all().map_err(|e| Error::io("sync", e))?;
                    self.write_state(&state_path, &PartialState { header: h.clone(), offset: 0 })?;
                }
                Ok(())
            })();
            if let Err(e) = setup {
                let _ = std::fs::remove_file(&img_path);
                return Err(e);
            }
            (f, t, floor)
        };
        drop(lock);
        clock.mark("setup");
        subvol_os::crash::point("receive-after-setup");

        // Phase 2, unlocked: apply the records to our private image.
        let mut applied = h.resume_offset;
        // What the state file says is durably applied.
        let mut durable = h.resume_offset;
        let mut since_checkpoint = 0u64;
        let mut since_writeback = 0u64;
        let writeback = crate::writeback::BackgroundWriteback::start(&file);
        // Small ranges go through a scratch file and reflinks (see staging).
        let mut staged = if self.meta.reflink { StagedWrites::new(&file, &self.layout.receive_dir()) } else { None };
        // Long ones go straight to the device (see direct_writes).
        let mut direct = DirectWrites::start(&file);
        let mut end = None;
        let stopped = format!("receive into {n} stopped");
        let result = (|| -> Result<()> {
            while let Some(rec) = reader.next_record().map_err(stream_error)? {
                match rec {
                    Record::Data { offset, data } => {
                        // Records never overlap (the reader checks), so no
                        // path can undo what another wrote.
                        let len = data.len() as u64;
                        if let Some(st) = staged.as_mut().filter(|st| st.accepts(offset, len)) {
                            st.stage(offset, &data)?;
                        } else if let Some(d) = direct.as_mut().filter(|_| DirectWrites::accepts(offset, len)) {
                            d.write(offset, &data)?;
                        } else {
                            file.write_all_at(&data, offset)
                                .map_err(|e| Error::io("cannot write the received image", e))?;
                            since_writeback += len;
                        }
                        applied = offset + len;
                        floor.wrote(len, &stopped)?;
                        subvol_os::crash::point("receive-mid-stream");
                        since_checkpoint += len;
                        if since_writeback >= WRITEBACK_BYTES {
                            writeback.kick();
                            since_writeback = 0;
                        }
                        progress(reader.bytes_read, 0);
                    }
                    Record::Hole { offset, length } => {
                        punch_or_zero(&file, offset, length)?;
                        applied = offset + length;
                    }
                    Record::End(t) => end = Some(t),
                }
                if opts.resume && since_checkpoint >= CHECKPOINT_BYTES {
                    if let Some(st) = staged.as_mut() {
                        st.flush()?;
                    }
                    if let Some(d) = direct.as_mut() {
                        d.wait()?;
                    }
                    file.sync_data().map_err(|e| Error::io("sync", e))?;
                    durable = applied / 4096 * 4096;
                    self.write_state(&state_path, &PartialState { header: h.clone(), offset: durable })?;
                    since_checkpoint = 0;
                }
            }
            if let Some(st) = staged.as_mut() {
                st.flush()?;
            }
            if let Some(d) = direct.as_mut() {
                d.wait()?;
            }
            Ok(())
        })();
        clock.mark("apply");
        if let Err(e) = result {
            if opts.resume {
                // What arrived intact is kept; staged ranges that cannot
                // be put in place are sent again.
                if let Some(st) = staged.as_mut() {
                    if st.flush().is_err() {
                        applied = applied.min(st.first_pending().unwrap_or(applied));
                    }
                }
                if let Some(d) = direct.as_mut() {
                    // Not knowing what was written, trust only the checkpoint.
                    let known = if d.wait().is_ok() { applied } else { durable };
                    applied = applied.min(d.lowest_failed().unwrap_or(known));
                }
                // A failed sync (a lost write) keeps the last checkpoint:
                // a second sync would report success for the lost pages.
                let offset = match file.sync_data() {
                    Ok(()) => (applied / 4096 * 4096).max(durable),
                    Err(_) => durable,
                };
                let st = PartialState { header: h.clone(), offset };
                if offset != durable {
                    self.write_state(&state_path, &st)?;
                }
                return Err(Error::new(
                    e.kind,
                    format!(
                        "{}; the receive can resume: `subvol send --resume {} {}{} | subvol receive {n} --resume`",
                        e.message,
                        token_of(&st),
                        h.snapshot.name,
                        h.base.as_ref().map(|b| format!(" --from {}", b.name)).unwrap_or_default()
                    ),
                ));
            }
            // No write may still land in it when it goes.
            drop(direct);
            drop(staged);
            drop(file);
            let _ = std::fs::remove_file(&img_path);
            return Err(e);
        }
        drop(staged);
        drop(direct);
        drop(writeback);
        clock.mark("writeback-stop");
        // The one-block CoW hint was for applying the stream only: XFS copies
        // it into whole-file clones (NAME following this snapshot), where it
        // would fragment the subvolume after every snapshot.
        let _ = subvol_os::hints::set_extent_hints(&file, None, Some(0));
        let totals = end.ok_or_else(|| Error::new(ErrorKind::Corrupt, "stream ended without END"))?;
        file.sync_all().map_err(|e| Error::io("cannot sync the received image", e))?;
        clock.mark("sync");

        subvol_os::crash::point("receive-before-publish");
        // Phase 3, locked: publish the snapshot, then let NAME follow.
        let _lock = self.lock()?;
        // A receive of the same stream may have published it meanwhile.
        if let Some(holder) = self.snapshots_with_guid(h.snapshot.guid)?.first() {
            drop(file);
            let _ = std::fs::remove_file(&img_path);
            let _ = std::fs::remove_file(&state_path);
            return Err(guid_taken(&n, &h, &holder.name));
        }
        let created: DateTime<Utc> = DateTime::parse_from_rfc3339(&h.created)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| Error::new(ErrorKind::Corrupt, "stream: bad creation time"))?;
        let fs: FsKind = h.fs.parse().map_err(|e: String| Error::new(ErrorKind::Corrupt, e))?;
        let mut meta = SubvolumeMeta::new_subvolume(fs, created);
        meta.kind = ObjectKind::Snapshot;
        meta.guid = h.snapshot.guid;
        meta.origin = Some(Origin { name: h.source_name.clone(), guid: h.source_guid });
        meta.tags = h.tags.clone();
        meta.content = Some(crate::snapshot::content_stamp(&file)?);
        write_meta(&file, &meta)?;
        file.sync_all().map_err(|e| Error::io("sync", e))?;
        // Snapshots newer than the base go first (--force, checked above).
        if matches!(target, Target::Replace) || opts.force {
            self.drop_newer_than_base(&n, &h)?;
        }
        let dir = self.layout.snapshot_dir(&n);
        std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir).map_err(|e| Error::io("mkdir", e))?;
        let dst = self.layout.snapshot_image(&n, &snap);
        crate::recovery::mark_unprotected(&self.layout)?;
        rename_noreplace(&img_path, &dst).map_err(|e| Error::os(format!("cannot publish {n}@{snap}"), e))?;
        subvol_os::fsync::fsync_dir(&dir).map_err(|e| Error::os("cannot make the change durable", e))?;
        subvol_os::flags::set_immutable(&file, true).map_err(|e| Error::os("cannot protect the snapshot", e))?;
        crate::recovery::clear_unprotected(&self.layout);
        drop(file);
        let _ = std::fs::remove_file(&state_path);
        clock.mark("publish");
        subvol_os::crash::point("receive-before-follow");
        let (followed, note) = match target {
            Target::Stays(why) => (false, Some(why)),
            Target::Absent | Target::Follows | Target::Replace => {
                self.follow(&n, &dst, h.source_guid)?;
                (true, None)
            }
        };
        clock.mark("follow");
        Ok(ReceiveReport {
            name: format!("{n}@{snap}"),
            full: h.base.is_none(),
            data_bytes: totals.data_bytes,
            hole_bytes: totals.hole_bytes,
            records: totals.records,
            stream_bytes: reader.bytes_read,
            followed,
            note,
        })
    }

    /// Every snapshot in the pool with guid `guid`: one, unless an older
    /// subvol received a stream under two names (`pool check` reports it).
    fn snapshots_with_guid(&self, guid: uuid::Uuid) -> Result<Vec<SubvolumeInfo>> {
        let guid = guid.to_string();
        Ok(self.list_snapshots(None)?.into_iter().filter(|s| s.guid == guid).collect())
    }

    /// Refuses a stream whose snapshot guid the pool has elsewhere than at
    /// `n@snap`. A guid names one snapshot in a pool: two images with one
    /// guid would make a later increment's base ambiguous.
    fn refuse_taken_guid(&self, n: &str, snap: &str, h: &StreamHeader) -> Result<Option<SubvolumeInfo>> {
        let holders = self.snapshots_with_guid(h.snapshot.guid)?;
        let here = format!("{n}@{snap}");
        if let Some(mine) = holders.iter().find(|s| s.name == here) {
            return Ok(Some(mine.clone()));
        }
        match holders.first() {
            None => Ok(None),
            Some(other) => Err(guid_taken(n, h, &other.name)),
        }
    }

    /// The stream's snapshot is already `n@snap`: a retry (e.g. after a
    /// crash between publishing the snapshot and updating the subvolume).
    /// Nothing is written, except that a subvolume still at the base
    /// follows now; the stream is read to the end (and verified) so the
    /// sender finishes normally. Refused, before anything is written, when
    /// another snapshot of the pool has the guid.
    fn already_received(
        &self,
        n: &str,
        snap: &str,
        h: &StreamHeader,
        reader: &mut StreamReader<&mut dyn Read>,
    ) -> Result<Option<ReceiveReport>> {
        let Some(have) = self.refuse_taken_guid(n, snap, h)? else { return Ok(None) };
        let image = self.layout.subvolume_image(n);
        let mounted = !KernelView::read()?.attachments(&image).is_empty();
        let at_received = image.exists() && !self.changed_since(&image, &have.image)?;
        let follow = !at_received && !mounted && self.at_base(n, h, &image)?;
        while let Some(rec) = reader.next_record().map_err(stream_error)? {
            if matches!(rec, Record::End(_)) {
                break;
            }
        }
        if follow {
            self.follow(n, &have.image, h.source_guid)?;
        }
        let note = if follow { "the subvolume now follows it" } else { "nothing changed" };
        Ok(Some(ReceiveReport {
            name: have.name,
            full: h.base.is_none(),
            data_bytes: 0,
            hole_bytes: 0,
            records: 0,
            stream_bytes: reader.bytes_read,
            followed: at_received || follow,
            note: Some(format!("already received; {note}")),
        }))
    }

    /// Whether subvolume `n` is where the stream would make it follow:
    /// absent (a receive creates it), or unchanged since the stream's base.
    fn at_base(&self, n: &str, h: &StreamHeader, image: &Path) -> Result<bool> {
        if !image.exists() {
            return Ok(true);
        }
        let Some(base) = &h.base else { return Ok(false) };
        let metas = snapshot_metas(&self.snapshot_images(n)?)?;
        match base_index(n, &metas, base)? {
            Some(i) => Ok(!self.changed_since(image, &metas[i].1)?),
            None => Ok(false),
        }
    }

    fn drop_newer_than_base(&self, n: &str, h: &StreamHeader) -> Result<()> {
        let Some(base) = &h.base else { return Ok(()) };
        let metas = snapshot_metas(&self.snapshot_images(n)?)?;
        let Some(i) = base_index(n, &metas, base)? else { return Ok(()) };
        let base_created = metas[i].2.created;
        for (s, _, m) in &metas {
            if m.created > base_created {
                self.delete_snapshot_locked(
                    &ObjectName { subvolume: n.to_string(), snapshot: Some(s.clone()) },
                    false,
                )?;
            }
        }
        Ok(())
    }

    /// Points subvolume `n` at a clone of the received snapshot `snap_path`.
    fn follow(&self, n: &str, snap_path: &Path, source_guid: uuid::Uuid) -> Result<()> {
        let image = self.layout.subvolume_image(n);
        // The new image keeps the subvolume's metadata and extent size hint
        // (a new subvolume gets the default hint). XFS only takes the hint
        // on a file without extents, so it is set before the clone.
        let (meta, hint) = match open_image(&image, false) {
            Ok(f) => {
                let meta = read_meta(&f).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{n}: {e}")))?;
                (meta, subvol_os::hints::extent_hints(&f).map(|(ext, _)| ext).unwrap_or(0))
            }
            Err(_) => {
                let src = open_image(snap_path, false).map_err(|e| Error::io("open", e))?;
                let sm = read_meta(&src).map_err(|e| Error::new(ErrorKind::Corrupt, e))?;
                let mut m = SubvolumeMeta::new_subvolume(sm.fs, Utc::now());
                m.guid = source_guid;
                (m, crate::subvolume::DEFAULT_EXTENT_HINT_BYTES)
            }
        };
        let tmp_path = self.layout.tmp_image("follow", n);
        let result = (|| {
            let src = open_image(snap_path, false).map_err(|e| Error::io("open", e))?;
            let tmp = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp_path)
                .map_err(|e| Error::io("create", e))?;
            if hint > 0 {
                let _ = subvol_os::hints::set_extent_hints(&tmp, Some(hint), None);
            }
            if self.meta.reflink {
                subvol_os::reflink::ficlone(&tmp, &src).map_err(|e| Error::os("cannot clone the snapshot", e))?;
            } else {
                let size = src.metadata().map_err(|e| Error::io("stat", e))?.len();
                tmp.set_len(size).map_err(|e| Error::io("size", e))?;
                for (off, len) in subvol_os::alloc::data_ranges(&src, size).map_err(|e| Error::os("scan", e))? {
                    subvol_os::copy::copy_range(&src, &tmp, off, len, |_| {}).map_err(|e| Error::os("copy", e))?;
                }
            }
            write_meta(&tmp, &meta)?;
            tmp.sync_all().map_err(|e| Error::io("sync", e))?;
            std::fs::rename(&tmp_path, &image).map_err(|e| Error::io(format!("cannot update {n}"), e))?;
            subvol_os::fsync::fsync_dir(&self.layout.subvolumes_dir())
                .map_err(|e| Error::os("cannot make the change durable", e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        result
    }
}

fn token_of(st: &PartialState) -> ResumeToken {
    ResumeToken { target: st.header.snapshot.guid, base: st.header.base.as_ref().map(|b| b.guid), offset: st.offset }
}

/// The refusal of a stream whose snapshot the pool has as `holder`.
fn guid_taken(n: &str, h: &StreamHeader, holder: &str) -> Error {
    let (sub, _) = holder.split_once('@').unwrap_or((holder, ""));
    let fix = if sub == n {
        "nothing to receive".to_string()
    } else {
        format!("receive into {sub}, or delete {holder} first")
    };
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "the stream's snapshot {} (guid {}) is already here as {holder}; {fix}",
            h.snapshot.name, h.snapshot.guid
        ),
    )
}

/// Punches a hole; where the host cannot (EOPNOTSUPP), writes zeroes.
fn punch_or_zero(file: &File, offset: u64, length: u64) -> Result<()> {
    match subvol_os::alloc::punch_hole(file, offset, length) {
        Ok(()) => Ok(()),
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            let zeros = vec![0u8; 1 << 20];
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
