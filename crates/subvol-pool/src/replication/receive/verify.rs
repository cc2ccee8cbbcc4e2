//! The end of phase 2 when the stream carried a content root (docs/STREAM.md,
//! header field `manifest`): the manifest of the image about to be
//! published must have the sender's root, or nothing is published.
//!
//! The manifest is built the way a snapshot's is, from a base and the
//! chunks that changed: every chunk a record touched (DATA or HOLE) is read
//! back from the image, after it was synced, and hashed; every other chunk's
//! entry comes from the base snapshot's manifest here. Without a usable one
//! (a full stream, a base received before streams carried roots) every
//! chunk the image holds data in is read. A different root means the image
//! is not the sender's snapshot: a stream altered with valid checksums, or
//! a base here whose blocks rotted.

use super::Receive;
use crate::chunk_io::{self, Pace, Source};
use crate::error::{Error, ErrorKind, Result};
use crate::extent_cache::CacheKey;
use crate::manifest_build::Dirty;
use crate::manifest_store::{ManifestStore, Stored};
use crate::subvolume::{open_image, read_meta};
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;
use subvol_core::chunk_read::hex;
use subvol_core::manifest::{BuiltBy, ChunkSet, Geometry, Manifest, Provenance};
use subvol_core::ExtentMap;

/// A verified manifest, to be stored with the snapshot.
pub(super) struct Verified {
    /// `None` on a host without inode generations: nothing to key it by.
    pub(super) key: Option<CacheKey>,
    pub(super) manifest: Manifest,
}

/// A base snapshot's manifest, where it can give the unchanged entries.
struct BaseManifest {
    size: u64,
    manifest: Manifest,
}

impl Receive<'_> {
    /// Builds the manifest of the synced `image` and checks its root
    /// against the stream's. `touched`: the chunks this receive's records
    /// wrote; `base`: the base snapshot's image.
    pub(super) fn verify_content(
        &mut self,
        image: &File,
        base: Option<&Path>,
        touched: ChunkSet,
    ) -> Result<Option<Verified>> {
        let h = &self.header;
        let Some(carried) = &h.manifest else { return Ok(None) };
        let want = carried.root_bytes().ok_or_else(|| Error::new(ErrorKind::Corrupt, "stream: bad content root"))?;
        let start = Instant::now();
        let geometry = Geometry::new(carried.chunk_size, h.virtual_size)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("stream: {e}")))?;
        let base_manifest = base.map(|p| self.base_manifest(p, carried.chunk_size)).transpose()?.flatten();
        // An incremental stream without a usable base manifest: every chunk
        // with data is read, found from the image's extent map.
        let (dirty, map) = match (&h.base, &base_manifest) {
            (Some(_), None) => {
                let map = subvol_os::fiemap::fiemap(image, true)
                    .map_err(|e| Error::os("cannot map the received image", e))?;
                let all: Range<u64> = 0..geometry.chunks();
                (std::iter::once(all).collect(), Some(map))
            }
            _ => {
                let mut set = touched;
                // What an earlier attempt of a resumed stream wrote is not
                // known here: everything before the resume point is read.
                set.add_bytes(0, h.resume_offset);
                set.resized(base_manifest.as_ref().map_or(0, |b| b.size), h.virtual_size);
                (set.into_ranges(), None::<ExtentMap>)
            }
        };
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
            base: base_manifest.as_ref().map(|b| b.manifest.guid),
            built_at: chrono::Utc::now().timestamp(),
            bytes_read: stats.bytes_read,
            chunks_hashed: stats.chunks_read,
            chunks_copied: 0,
            build_us: 0,
        };
        let mut manifest = Manifest::derive(
            base_manifest.as_ref().map(|b| &b.manifest),
            geometry,
            &dirty,
            &hashed,
            h.snapshot.guid,
            provenance,
        )
        .map_err(|e| Error::new(ErrorKind::Io, format!("{name}: {e}")))?;
        let got = manifest.root();
        if got != want {
            let base_hint = match &h.base {
                Some(b) => format!(", or this pool's copy of the base {} is damaged (`subvol scrub` it)", b.name),
                None => String::new(),
            };
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{name} is not the sender's snapshot: the received image's content root is {}, the stream says {}; the stream was altered or damaged on its way{base_hint}; nothing was published",
                    &hex(&got)[..16],
                    &carried.root[..16],
                ),
            ));
        }
        let fresh = hashed.iter().filter(|e| e.1 != subvol_core::manifest::Entry::Zero).count() as u64;
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

    /// The base snapshot's manifest at `chunk_size`, if it has a sound one.
    fn base_manifest(&self, path: &Path, chunk_size: u32) -> Result<Option<BaseManifest>> {
        let file = open_image(path, false).map_err(|e| Error::io("cannot open the base", e))?;
        let meta = read_meta(&file).map_err(|e| Error::new(ErrorKind::Corrupt, format!("the base: {e}")))?;
        let size = file.metadata().map_err(|e| Error::io("cannot stat the base", e))?.len();
        let Some(key) = CacheKey::of(&file, meta.guid) else { return Ok(None) };
        Ok(match ManifestStore::new(self.pool.layout.manifests_dir()).read(&key, meta.guid, size) {
            Stored::Found(m) if m.geometry().chunk_size() == chunk_size => Some(BaseManifest { size, manifest: m }),
            _ => None,
        })
    }
}
