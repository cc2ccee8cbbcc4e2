//! The end of phase 2 when the stream carried a content root (docs/STREAM.md,
//! header field `manifest`): the manifest of the image about to be
//! published must have the sender's root, or nothing is published.
//!
//! The manifest is built the way a snapshot's is, from a base and the
//! chunks that changed: every chunk a DATA record touched, and the chunks a
//! HOLE record covers in part, are read back from the image after it was
//! synced and hashed; chunks a HOLE covers whole are zero; every other
//! chunk's entry comes from the base snapshot's manifest here, loaded under
//! the pool lock in setup. Without a usable one (a base received before
//! streams carried roots, one written to since it was taken) and for a
//! resumed stream (what its first attempt wrote is not known here), every
//! chunk the image holds data in is read. A different root means the image
//! is not the sender's snapshot.
//!
//! What this does not see: rot in base chunks no record touched (their
//! entries are the manifest's, not the bytes'); a scrub of the replica
//! finds that.

use super::Receive;
use crate::chunk_io::{self, Pace, Source};
use crate::error::{Error, ErrorKind, Result};
use crate::extent_cache::{sealed, CacheKey};
use crate::manifest_build::Dirty;
use crate::manifest_store::{ManifestStore, Stored};
use crate::pool::Pool;
use crate::subvolume::{open_image, read_meta};
use std::fs::File;
use std::path::Path;
use std::time::Instant;
use subvol_core::chunk_read::hex;
use subvol_core::diff::diff;
use subvol_core::manifest::{
    dirty_chunks, hole_chunks, BuiltBy, ChunkSet, Entry, Geometry, Manifest, Provenance, CHUNK_SIZE,
};
use subvol_core::stream::Record;
use subvol_core::ExtentMap;

/// A verified manifest, to be stored with the snapshot.
pub(super) struct Verified {
    /// `None` on a host without inode generations: nothing to key it by.
    pub(super) key: Option<CacheKey>,
    pub(super) manifest: Manifest,
}

/// The base snapshot as setup found it, under the pool lock.
pub(super) struct BaseInfo {
    /// `NAME@SNAP` here.
    pub(super) name: String,
    /// Its manifest, if it has a sound one and is unchanged since taken.
    manifest: Option<BaseManifest>,
}

struct BaseManifest {
    size: u64,
    manifest: Manifest,
}

impl BaseInfo {
    /// The base snapshot `name` at `path`, which must have `guid`. Anything
    /// that keeps its manifest from being trusted leaves it out: the
    /// verification then reads every chunk with data.
    pub(super) fn load(pool: &Pool, name: String, path: &Path, guid: uuid::Uuid) -> BaseInfo {
        let manifest = (|| {
            let file = open_image(path, false).ok()?;
            let meta = read_meta(&file).ok()?;
            if meta.guid != guid || !sealed(&file, &meta) {
                return None;
            }
            let size = file.metadata().ok()?.len();
            let key = CacheKey::of(&file, meta.guid)?;
            match ManifestStore::new(pool.layout.manifests_dir()).read(&key, meta.guid, size) {
                Stored::Found(manifest) => Some(BaseManifest { size, manifest }),
                _ => None,
            }
        })();
        BaseInfo { name, manifest }
    }
}

/// What the records of a stream touched, chunk by chunk.
pub(super) struct Touched {
    chunk_size: u32,
    image_size: u64,
    /// Chunks to read back: DATA records' and partly punched ones.
    read: ChunkSet,
    /// Chunks a HOLE record covered whole.
    zeroed: ChunkSet,
}

impl Touched {
    pub(super) fn new(chunk_size: Option<u32>, image_size: u64) -> Touched {
        let chunk_size = chunk_size.unwrap_or(CHUNK_SIZE);
        Touched { chunk_size, image_size, read: ChunkSet::new(chunk_size), zeroed: ChunkSet::new(chunk_size) }
    }

    pub(super) fn record(&mut self, rec: &Record) {
        match rec {
            Record::Data { offset, data } => self.read.add_bytes(*offset, data.len() as u64),
            Record::Hole { offset, length } => {
                let (whole, part) = hole_chunks(self.chunk_size, self.image_size, *offset, *length);
                self.zeroed.add_chunks(whole);
                for r in part {
                    self.read.add_chunks(r);
                }
            }
            Record::End(_) => {}
        }
    }
}

/// Whether a failed verification found another content (the image goes)
/// rather than failing to look (a resumable receive keeps it).
pub(super) fn is_mismatch(e: &Error) -> bool {
    e.kind == ErrorKind::Corrupt
}

impl Receive<'_> {
    /// Builds the manifest of the synced `image` and checks its root
    /// against the stream's.
    pub(super) fn verify_content(
        &mut self,
        image: &File,
        base: Option<&BaseInfo>,
        touched: Touched,
    ) -> Result<Option<Verified>> {
        let h = &self.header;
        let Some(carried) = &h.manifest else { return Ok(None) };
        let want = carried.root_bytes().ok_or_else(|| Error::new(ErrorKind::Corrupt, "stream: bad content root"))?;
        let start = Instant::now();
        let geometry = Geometry::new(carried.chunk_size, h.virtual_size)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("stream: {e}")))?;
        let usable = base
            .and_then(|b| b.manifest.as_ref())
            .filter(|b| b.manifest.geometry().chunk_size() == carried.chunk_size && h.resume_offset == 0);
        let read_all = h.resume_offset > 0 || (h.base.is_some() && usable.is_none());
        let (dirty, zeroed, map) = if read_all {
            // Every chunk with data, found from the image's extent map: the
            // work follows the data, not the image's size.
            let map =
                subvol_os::fiemap::fiemap(image, true).map_err(|e| Error::os("cannot map the received image", e))?;
            let all = dirty_chunks(carried.chunk_size, 0, &diff(&ExtentMap::default(), 0, &map, h.virtual_size));
            (all, Vec::new(), Some(map))
        } else {
            let Touched { mut read, zeroed, .. } = touched;
            read.resized(usable.map_or(0, |b| b.size), h.virtual_size);
            (read.into_ranges(), zeroed.into_ranges(), None::<ExtentMap>)
        };
        let base_manifest = if read_all { None } else { usable.map(|b| &b.manifest) };
        let mut plan = Dirty::new(map.as_ref(), geometry, &dirty, &|_, _| {});
        let stats = chunk_io::run(&mut plan, &[Source::new(image)], Pace { rate: None, idle: false })?;
        let name = format!("{}@{}", self.name, self.snap);
        if let Some((i, why)) = plan.unreadable.first() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("cannot verify {name}: chunk {i} of the received image cannot be read ({why})"),
            ));
        }
        let mut hashed = std::mem::take(&mut plan.hashed);
        hashed.sort_unstable_by_key(|e| e.0);
        let provenance = Provenance {
            built_by: BuiltBy::Receive,
            base: base_manifest.map(|m| m.guid),
            built_at: chrono::Utc::now().timestamp(),
            bytes_read: stats.bytes_read,
            chunks_hashed: stats.chunks_read,
            chunks_copied: 0,
            build_us: 0,
        };
        let mut manifest =
            Manifest::derive_zeroed(base_manifest, geometry, &dirty, &hashed, &zeroed, h.snapshot.guid, provenance)
                .map_err(|e| Error::new(ErrorKind::Io, format!("{name}: {e}")))?;
        let got = manifest.root();
        if got != want {
            let base_hint = match base {
                Some(b) => {
                    format!(", or this pool's copy of the base {} is damaged (`subvol scrub {}`)", b.name, b.name)
                }
                None => String::new(),
            };
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{name} is not the sender's snapshot: the received image's content root is {}, the stream says {}; the stream was altered or damaged on its way, the sender's snapshot rotted since its manifest was built (scrub it there){base_hint}; nothing was published",
                    &hex(&got)[..16],
                    &carried.root[..16],
                ),
            ));
        }
        let fresh = hashed.iter().filter(|e| e.1 != Entry::Zero).count() as u64;
        manifest.provenance.chunks_copied = manifest.data_chunks().saturating_sub(fresh);
        manifest.provenance.build_us = start.elapsed().as_micros() as u64;
        self.clock.mark("verify");
        crate::trace::note(
            "receive",
            &format!(
                "content root verified: {} chunks read ({} bytes), {} entries from the base's manifest",
                stats.chunks_read, stats.bytes_read, manifest.provenance.chunks_copied
            ),
        );
        Ok(Some(Verified { key: CacheKey::of(image, h.snapshot.guid), manifest }))
    }
}
