//! The replica's half of `scrub --repair-from`: the chunks of one snapshot,
//! named by guid, as a chunk-read reply (docs/STREAM.md, "Chunk reads").
//! It sends its manifest's root so that the repairing pool can refuse a
//! copy with other content before using a byte of it, and reads with
//! O_DIRECT (what the disk holds, not a cached copy).

use crate::chunk_io::Source;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest_build::OpenSnapshot;
use crate::manifest_store::{ManifestStore, Stored};
use crate::pool::Pool;
use std::io::Write;
use std::ops::Range;
use subvol_core::chunk_read::{hex, ReplyHeader, ReplyWriter};

/// Most chunks one request may ask for (a 64 GiB image's worth at 256 KiB).
pub const MAX_REQUEST_CHUNKS: u64 = 1 << 18;

impl Pool {
    /// Every snapshot of the pool, oldest first within each subvolume.
    pub(crate) fn all_snapshots(&self) -> Vec<OpenSnapshot> {
        let mut groups: Vec<String> = std::fs::read_dir(self.layout.snapshots_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| subvol_core::name::validate_part(n).is_ok())
            .collect();
        groups.sort();
        groups.iter().flat_map(|g| self.open_group(g).unwrap_or_default()).collect()
    }

    /// Writes chunks `chunks` of the snapshot with `guid` to `out`, with its
    /// manifest's root. Refused when the pool has no such snapshot or no
    /// sound manifest of it (nothing would vouch for what it sends).
    pub fn read_chunks(&self, guid: uuid::Uuid, chunks: &[Range<u64>], out: &mut dyn Write) -> Result<()> {
        let count: u64 = chunks.iter().map(|r| r.end - r.start).sum();
        if count > MAX_REQUEST_CHUNKS {
            return Err(Error::invalid(format!("{count} chunks asked at once; at most {MAX_REQUEST_CHUNKS}")));
        }
        let snap = self.all_snapshots().into_iter().find(|s| s.meta.guid == guid).ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("no snapshot with guid {guid} in {}", self.root().display()))
        })?;
        let store = ManifestStore::new(self.layout.manifests_dir());
        let manifest = match store.read(&snap.key()?, guid, snap.size) {
            Stored::Found(m) => m,
            Stored::Missing => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "{} has no manifest here yet; run `subvol scrub {}` on this pool first",
                        snap.name, snap.name
                    ),
                ))
            }
            Stored::OtherSize(_) => {
                return Err(Error::new(ErrorKind::Corrupt, format!("{} changed size after it was taken", snap.name)))
            }
            Stored::Damaged(why) => {
                return Err(Error::new(ErrorKind::Corrupt, format!("the manifest of {} is damaged: {why}", snap.name)))
            }
        };
        let g = manifest.geometry();
        let header = ReplyHeader {
            snapshot: snap.name.clone(),
            guid,
            chunk_size: g.chunk_size(),
            image_size: g.image_size(),
            root: hex(&manifest.root()),
        };
        let fail = |e: std::io::Error| Error::io("cannot write the chunks", e);
        let mut w = ReplyWriter::new(out, &header).map_err(fail)?;
        let src = Source::new(&snap.file);
        let mut buf = crate::chunk_io::AlignedBuf::new(g.chunk_size() as usize);
        for i in chunks.iter().flat_map(|r| r.clone()).filter(|&i| i < g.chunks()) {
            let (offset, len) = g.chunk(i);
            let piece = buf.slice(len as usize);
            match src.read(piece, offset) {
                Ok(()) => w.chunk(i, piece).map_err(fail)?,
                Err(e) => w.unreadable(i, &e.to_string()).map_err(fail)?,
            }
        }
        w.finish().map_err(fail)?;
        Ok(())
    }
}
