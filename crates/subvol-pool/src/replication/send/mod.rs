//! Sending a snapshot as a stream: everything (full) or only the ranges
//! whose host blocks differ from a base snapshot (incremental), found from
//! the two extent maps without reading unchanged data.

mod content_diff;
mod content_root;
mod reader;

use crate::error::{Error, ErrorKind, Result};
use crate::io_sizes::is_block_aligned;
use crate::pool::Pool;
use crate::snapshot::Progress;
use crate::subvolume::{open_image, read_meta};
pub(super) use content_diff::content_diff;
use reader::Piece;
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use subvol_core::diff::{diff, Change, ExtentDiff};
use subvol_core::stream::{SnapshotRef, StreamError, StreamHeader, StreamWriter};
use subvol_core::token::ResumeToken;
use subvol_core::{ExtentMap, ObjectName, SubvolumeMeta};

/// What a send will carry, known before any data is read.
#[derive(Debug, Clone, Serialize)]
pub struct SendEstimate {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub virtual_size_bytes: u64,
    /// Bytes of DATA records the stream will carry (before compression).
    pub data_bytes: u64,
    pub hole_bytes: u64,
    pub ranges: usize,
    /// The host has no reflinks, so the diff compared contents.
    pub content_compared: bool,
}

/// What a send did.
#[derive(Debug, Clone, Serialize)]
pub struct SendReport {
    pub name: String,
    pub data_bytes: u64,
    pub hole_bytes: u64,
    pub records: u64,
    pub stream_bytes: u64,
    pub content_compared: bool,
    /// The root of the snapshot's manifest the stream carried (hex): the
    /// receiver publishes only an image with this root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_root: Option<String>,
    /// Why the stream carried no root (the receiver could not verify it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

/// A snapshot opened for sending.
struct Side {
    obj: ObjectName,
    file: File,
    meta: SubvolumeMeta,
    size: u64,
}

impl Pool {
    fn open_snapshot(&self, name: &str) -> Result<Side> {
        let obj = ObjectName::parse_snapshot(name)?;
        let path = self.object_image(&obj)?;
        let file = open_image(&path, false).map_err(|e| Error::io(format!("cannot open {obj}"), e))?;
        let meta = read_meta(&file).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{obj}: {e}")))?;
        let size = file.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len();
        Ok(Side { obj, file, meta, size })
    }

    /// The changes from `base` (or from nothing) to `target`. Both maps
    /// come from the extent cache while the snapshots are sealed (the
    /// manifest builder caches a new snapshot's map in the background), so
    /// an increment does not pay two FIEMAPs of whole images.
    fn plan(&self, target: &Side, base: Option<&Side>) -> Result<(ExtentDiff, bool)> {
        let tmap = self.snapshot_map(&target.file, &target.meta)?;
        let Some(base) = base else {
            return Ok((diff(&ExtentMap::default(), 0, &tmap, target.size), false));
        };
        if self.meta.reflink {
            let bmap = self.snapshot_map(&base.file, &base.meta)?;
            return Ok((diff(&bmap, base.size, &tmap, target.size), false));
        }
        // No shared blocks to compare: compare contents block by block.
        Ok((content_diff(&base.file, base.size, &target.file, target.size)?, true))
    }

    fn open_pair(&self, name: &str, from: Option<&str>) -> Result<(Side, Option<Side>)> {
        let target = self.open_snapshot(name)?;
        let base = from.map(|f| self.open_snapshot(f)).transpose()?;
        if let Some(b) = &base {
            if b.meta.guid == target.meta.guid {
                return Err(Error::invalid(format!("--from {} is the snapshot being sent", b.obj)));
            }
            if b.meta.created > target.meta.created {
                return Err(Error::invalid(format!(
                    "--from {} is newer than {}; send from an older snapshot",
                    b.obj, target.obj
                )));
            }
        }
        Ok((target, base))
    }

    /// `send --estimate`: what the stream will carry, from the extent maps.
    pub fn send_estimate(&self, name: &str, from: Option<&str>) -> Result<SendEstimate> {
        let (target, base) = self.open_pair(name, from)?;
        let (d, content_compared) = self.plan(&target, base.as_ref())?;
        Ok(SendEstimate {
            name: target.obj.to_string(),
            from: base.map(|b| b.obj.to_string()),
            virtual_size_bytes: target.size,
            data_bytes: d.data_bytes(),
            hole_bytes: d.hole_bytes(),
            ranges: d.changes.len(),
            content_compared,
        })
    }

    /// Writes the stream of `name` (incremental from `from`) to `out`.
    /// With `resume`, continues an interrupted stream after checking that
    /// the token names these very snapshots.
    pub fn send(
        &self,
        name: &str,
        from: Option<&str>,
        zstd_level: Option<i32>,
        resume: Option<&ResumeToken>,
        out: &mut dyn Write,
        progress: Progress<'_>,
    ) -> Result<SendReport> {
        let mut clock = crate::trace::PhaseClock::start("send");
        zstd_level.map(crate::option_rules::check_zstd_level).transpose()?;
        let (target, base) = self.open_pair(name, from)?;
        let resume_offset = resume.map(|t| resume_offset(t, &target, base.as_ref())).transpose()?.unwrap_or(0);
        let (root, unverified) = match self.content_root(&target)? {
            content_root::Root::Carried(r) => (Some(r), None),
            content_root::Root::None(why) => (None, Some(why)),
        };
        clock.mark("manifest");
        let (d, content_compared) = self.plan(&target, base.as_ref())?;
        clock.mark("plan");
        let mut header = stream_header(&target, base.as_ref(), resume_offset);
        header.manifest = root.clone();
        let mut w = StreamWriter::new(out, header, zstd_level).map_err(stream_err)?;
        let total = d.data_bytes();
        let mut done = 0u64;
        let changes: Vec<Change> = clip(&d.changes, resume_offset).collect();
        reader::for_each_piece(&target.file, &changes, &target.obj.to_string(), |piece| {
            match piece {
                Piece::Hole { offset, length } => w.hole(offset, length).map_err(stream_err)?,
                Piece::Data { offset, data } => {
                    // Zero-filled blocks travel as holes: they read the same.
                    if data.iter().all(|&b| b == 0) {
                        w.hole(offset, data.len() as u64).map_err(stream_err)?;
                    } else {
                        w.data(offset, data).map_err(stream_err)?;
                    }
                    done += data.len() as u64;
                    progress(done, total);
                }
            }
            Ok(())
        })?;
        let (_, totals, stream_bytes) = w.finish().map_err(stream_err)?;
        clock.mark("data");
        Ok(SendReport {
            name: target.obj.to_string(),
            data_bytes: totals.data_bytes,
            hole_bytes: totals.hole_bytes,
            records: totals.records,
            stream_bytes,
            content_compared,
            content_root: root.map(|r| r.root),
            unverified,
        })
    }
}

/// Where a resumed stream starts: the token's offset, once the token is
/// known to name `target` and `base` and its offset to fit.
fn resume_offset(t: &ResumeToken, target: &Side, base: Option<&Side>) -> Result<u64> {
    if t.target != target.meta.guid {
        return Err(Error::invalid(format!("the resume token is for another snapshot than {}", target.obj)));
    }
    if t.base != base.map(|b| b.meta.guid) {
        return Err(Error::invalid(
            "the resume token was made for another --from base; give the same --from as the first send",
        ));
    }
    if t.offset > target.size || !is_block_aligned(t.offset) {
        return Err(Error::invalid("the resume token's offset does not fit this snapshot"));
    }
    Ok(t.offset)
}

/// The header of a stream of `target` (incremental from `base`).
fn stream_header(target: &Side, base: Option<&Side>, resume_offset: u64) -> StreamHeader {
    StreamHeader {
        stream_guid: uuid::Uuid::new_v4(),
        source_name: target.obj.subvolume.clone(),
        source_guid: target.meta.origin.as_ref().map(|o| o.guid).unwrap_or(target.meta.guid),
        snapshot: SnapshotRef { name: target.obj.to_string(), guid: target.meta.guid },
        created: crate::subvolume::rfc3339(target.meta.created),
        fs: target.meta.fs.to_string(),
        tags: target.meta.tags.clone(),
        base: base.map(|b| SnapshotRef { name: b.obj.to_string(), guid: b.meta.guid }),
        virtual_size: target.size,
        block_size: subvol_core::stream::BLOCK_SIZE,
        resume_offset,
        manifest: None,
    }
}

/// A failure to write the stream; a receiver that went away says so.
fn stream_err(e: StreamError) -> Error {
    match e {
        StreamError::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
            Error::new(ErrorKind::Io, "the receiver went away (broken pipe)")
        }
        other => Error::new(ErrorKind::Io, format!("cannot write the stream: {other}")),
    }
}

/// The changes at or after `from`, the first one cut to start there.
fn clip(changes: &[Change], from: u64) -> impl Iterator<Item = Change> + '_ {
    changes.iter().filter_map(move |c| {
        let end = c.offset() + c.length();
        if end <= from {
            return None;
        }
        let start = c.offset().max(from);
        Some(match c {
            Change::Data { .. } => Change::Data { offset: start, length: end - start },
            Change::Hole { .. } => Change::Hole { offset: start, length: end - start },
        })
    })
}
