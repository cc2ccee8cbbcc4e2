//! The end of phase 2 when the stream carried a content root (docs/STREAM.md,
//! header field `manifest`): the manifest of the image about to be
//! published must have the sender's root, or nothing is published.
//!
//! The manifest is built the way a snapshot's is, from a base and the
//! chunks that changed: a chunk the records wrote whole (or any chunk of a
//! full stream, whose image starts sparse) is hashed from the records'
//! bytes as they pass; a chunk they change in part is read back from the
//! image after it was synced and hashed (the rest of its bytes is the
//! base's); chunks a HOLE covers whole are zero; every other chunk's entry
//! comes from the base snapshot's manifest here, loaded under the pool
//! lock in setup. Without a usable one (a base received before
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
use subvol_core::manifest::{dirty_chunks, BuiltBy, ChunkSet, Entry, Geometry, Manifest, Provenance};
use subvol_core::record_chunks::{ChunkOutcome, RecordChunks};
use subvol_core::stream::{Record, StreamHeader};
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

/// What the records of a stream changed, chunk by chunk (only when the
/// stream carries a root to check).
pub(super) struct Touched(Option<RecordChunks>);

impl Touched {
    pub(super) fn new(h: &StreamHeader) -> Touched {
        let chunks = h.manifest.as_ref().and_then(|m| Geometry::new(m.chunk_size, h.virtual_size).ok());
        // A full stream's image starts sparse: what no record covers is zero.
        Touched(chunks.map(|g| RecordChunks::new(g, h.base.is_none() && h.resume_offset == 0)))
    }

    pub(super) fn record(&mut self, rec: &Record) {
        let Some(rc) = &mut self.0 else { return };
        match rec {
            Record::Data { offset, data } => rc.data(*offset, data),
            Record::Hole { offset, length } => rc.hole(*offset, *length),
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
        // The chunks to read, and the entries the records gave in flight.
        let (read, zeroed, determined, map) = if read_all {
            // Every chunk with data, found from the image's extent map: the
            // work follows the data, not the image's size.
            let map =
                subvol_os::fiemap::fiemap(image, true).map_err(|e| Error::os("cannot map the received image", e))?;
            let all = dirty_chunks(carried.chunk_size, 0, &diff(&ExtentMap::default(), 0, &map, h.virtual_size));
            (all, Vec::new(), Vec::new(), Some(map))
        } else {
            let out = touched.0.map(RecordChunks::finish).unwrap_or(ChunkOutcome {
                determined: Vec::new(),
                undetermined: Vec::new(),
                zeroed: Vec::new(),
            });
            let mut read = ChunkSet::new(carried.chunk_size);
            for r in &out.undetermined {
                read.add_chunks(r.clone());
            }
            // Where the size changed, the chunk the smaller image ended in.
            let mut resized = ChunkSet::new(carried.chunk_size);
            resized.resized(usable.map_or(0, |b| b.size), h.virtual_size);
            for r in resized.into_ranges() {
                if !out.determined.iter().any(|d| r.contains(&d.0)) {
                    read.add_chunks(r);
                }
            }
            (read.into_ranges(), out.zeroed, out.determined, None::<ExtentMap>)
        };
        let base_manifest = if read_all { None } else { usable.map(|b| &b.manifest) };
        let mut plan = Dirty::new(map.as_ref(), geometry, &read, &|_, _| {});
        let stats = chunk_io::run(&mut plan, &[Source::new(image)], Pace { rate: None, idle: false })?;
        let name = format!("{}@{}", self.name, self.snap);
        if let Some((i, why)) = plan.unreadable.first() {
            return Err(Error::new(
                ErrorKind::Io,
                format!("cannot verify {name}: chunk {i} of the received image cannot be read ({why})"),
            ));
        }
        let in_flight = determined.len() as u64;
        let mut hashed = std::mem::take(&mut plan.hashed);
        hashed.extend(determined);
        hashed.sort_unstable_by_key(|e| e.0);
        let mut dirty_set = ChunkSet::new(carried.chunk_size);
        for (i, _) in &hashed {
            dirty_set.add_chunks(*i..i + 1);
        }
        let dirty = dirty_set.into_ranges();
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
            let partial_hint = if h.resume_offset > 0 {
                ", or the partial image kept for the resume was changed since it was kept"
            } else {
                ""
            };
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{name} is not the sender's snapshot: the received image's content root is {}, the stream says {}; the stream was altered or damaged on its way, the sender's snapshot rotted since its manifest was built (scrub it there){base_hint}{partial_hint}; nothing was published",
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
                "content root verified: {} chunks read ({} bytes), {} hashed as written, {} entries from the base's manifest",
                stats.chunks_read, stats.bytes_read, in_flight, manifest.provenance.chunks_copied
            ),
        );
        Ok(Some(Verified { key: CacheKey::of(image, h.snapshot.guid), manifest }))
    }
}
