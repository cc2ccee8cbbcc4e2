//! Building manifests. After a snapshot is published (never while its
//! subvolume is frozen), and by a scrub for snapshots that have none (older
//! ones, received ones).
//!
//! A manifest is derived from the previous snapshot's: the extent diff
//! between the two images (the one `send` uses) names the chunks whose host
//! blocks changed; only those are read and hashed, every other entry is
//! copied. A 1% change of an image costs about 1% of it (rounded up to
//! whole chunks), not a full read.

use crate::chunk_io::{self, Job, Outcome, Pace, Plan, Source, MAX_READ};
use crate::error::{Error, ErrorKind, Result};
use crate::extent_cache::CacheKey;
use crate::manifest_store::{ManifestStore, Stored};
use crate::pool::Pool;
use crate::snapshot::{Progress, SnapshotReport};
use crate::subvolume::{open_image, read_meta};
use serde::Serialize;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;
use subvol_core::chunks::{layouts, Layout};
use subvol_core::diff::diff;
use subvol_core::manifest::{dirty_chunks, BuiltBy, Entry, Geometry, Manifest, Provenance, CHUNK_SIZE};
use subvol_core::{ExtentMap, ObjectName, SubvolumeMeta};

/// Starts manifest builds somewhere else (the CLI: a detached copy of
/// itself) and says whether it did; given the pool and `NAME@SNAP`s.
pub type Background = Box<dyn Fn(&std::path::Path, &[String]) -> bool + Send + Sync>;

/// One manifest built.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// `NAME@SNAP`.
    pub name: String,
    /// The snapshot whose manifest gave the unchanged chunks.
    pub base: Option<String>,
    pub bytes_read: u64,
    pub chunks_hashed: u64,
    pub chunks_copied: u64,
    pub build_us: u64,
}

/// What building a subvolume's missing manifests did.
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub(crate) reports: Vec<BuildReport>,
    /// Snapshots (`NAME@SNAP`) whose manifest could not be built, and why
    /// (an unreadable chunk, a full host): the others are built anyway.
    pub(crate) failed: Vec<(String, String)>,
}

/// A snapshot image opened for reading.
pub(crate) struct OpenSnapshot {
    /// `NAME@SNAP`.
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) meta: SubvolumeMeta,
    /// `None` on a host without inode generations: no manifest can be kept.
    pub(crate) key: Option<CacheKey>,
    pub(crate) size: u64,
}

impl OpenSnapshot {
    pub(crate) fn key(&self) -> Result<CacheKey> {
        self.key.ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("{}: this host has no inode generations to key a manifest by", self.name),
            )
        })
    }

    /// The image's extent map, asked of the host now. Not from the map
    /// cache: it trusts a snapshot never to change, and a manifest must not
    /// (a snapshot written to after its immutable flag was lifted has moved
    /// blocks; a stale map would group its chunks with other snapshots').
    pub(crate) fn extents(&self) -> Result<ExtentMap> {
        subvol_os::fiemap::fiemap(&self.file, true).map_err(|e| Error::os(format!("cannot map {}", self.name), e))
    }

    /// Whether the image is still the one at its path (not deleted or
    /// replaced while we read it).
    pub(crate) fn still_there(&self) -> bool {
        let (Ok(now), Ok(ours)) = (std::fs::symlink_metadata(&self.path), self.file.metadata()) else { return false };
        now.ino() == ours.ino() && now.dev() == ours.dev()
    }
}

/// Which snapshots of a subvolume to build: all missing ones, or one
/// snapshot and the missing ones taken between the newest that has a
/// manifest and it (builds a killed builder left undone).
#[derive(Debug, Clone)]
pub(crate) enum Wanted {
    All,
    Upto(String),
    Only(String),
}

impl Pool {
    /// The snapshots of subvolume `name`, oldest first. Images that cannot
    /// be opened or whose metadata is unreadable are left out (`pool check`
    /// reports them).
    pub(crate) fn open_group(&self, name: &str) -> Result<Vec<OpenSnapshot>> {
        let mut out = Vec::new();
        for (snap, path) in self.snapshot_images(name)? {
            let Ok(file) = open_image(&path, false) else { continue };
            let Ok(meta) = read_meta(&file) else { continue };
            let size = file.metadata().map_err(|e| Error::io("cannot stat the snapshot image", e))?.len();
            let key = CacheKey::of(&file, meta.guid);
            out.push(OpenSnapshot { name: format!("{name}@{snap}"), path, file, meta, key, size });
        }
        out.sort_by(|a, b| a.meta.created.cmp(&b.meta.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// After a snapshot is published: its manifest is built in the
    /// background if the program gave a way ([`Pool::set_background`]),
    /// else here. Best effort: a snapshot without a manifest gets one from
    /// the next builder or scrub.
    pub(crate) fn manifests_after_snapshot(&self, reports: &[SnapshotReport]) {
        let names: Vec<String> = reports.iter().filter(|r| r.outcome.changed()).map(|r| r.name.clone()).collect();
        if names.is_empty() {
            return;
        }
        if let Some(start) = &self.background {
            if start(self.root(), &names) {
                return;
            }
        }
        let _ = self.build_after_snapshot(&names, false, &|_| {}, &|_, _| {});
    }

    /// Builds the manifests of freshly taken snapshots (`NAME@SNAP`s), and
    /// of snapshots taken since the newest one with a manifest whose build
    /// was interrupted. What the detached builder runs.
    pub fn build_after_snapshot(
        &self,
        names: &[String],
        idle: bool,
        on_wait: &dyn Fn(u32),
        progress: Progress<'_>,
    ) -> Result<Vec<BuildReport>> {
        let mut wanted = Vec::new();
        for n in names {
            let obj = ObjectName::parse_snapshot(n)?;
            wanted.push((obj.subvolume, Wanted::Upto(obj.snapshot.unwrap_or_default())));
        }
        let _lock = crate::worker::WorkerLock::take(&self.layout.build_lock(), on_wait)?;
        let mut out = Vec::new();
        for (group, w) in &wanted {
            let built = self.build_group(group, w, BuiltBy::Snapshot, Pace { rate: None, idle }, progress)?;
            if let Some((name, why)) = built.failed.first() {
                return Err(Error::new(ErrorKind::Io, format!("the manifest of {name} could not be built: {why}")));
            }
            out.extend(built.reports);
        }
        Ok(out)
    }

    /// Builds the missing manifests `wanted` in subvolume `group`'s
    /// snapshots, each from the newest older snapshot that has one. The
    /// caller holds the build lock.
    pub(crate) fn build_group(
        &self,
        group: &str,
        wanted: &Wanted,
        built_by: BuiltBy,
        pace: Pace,
        progress: Progress<'_>,
    ) -> Result<Built> {
        let snaps = self.open_group(group)?;
        let target = match wanted {
            Wanted::All => None,
            Wanted::Upto(s) | Wanted::Only(s) => {
                let full = format!("{group}@{s}");
                match snaps.iter().position(|x| x.name == full) {
                    Some(i) => Some(i),
                    None => return Ok(Built::default()),
                }
            }
        };
        let store = ManifestStore::new(self.layout.manifests_dir());
        // The newest snapshot so far with a manifest file, and the one
        // loaded as a base (read only when a build needs it: a pool of
        // many snapshots would otherwise read every manifest each time).
        let mut newest: Option<usize> = None;
        let mut loaded: Option<(usize, ExtentMap, Manifest)> = None;
        let mut out = Built::default();
        for (i, s) in snaps.iter().enumerate() {
            if target.is_some_and(|t| i > t) {
                break;
            }
            let Some(key) = s.key else { continue };
            if store.path(&key).exists() {
                newest = Some(i);
                continue;
            }
            let build = match (wanted, target) {
                (Wanted::All, _) => true,
                (Wanted::Only(_), t) => t == Some(i),
                (Wanted::Upto(_), t) => t == Some(i) || newest.is_some(),
            };
            if !build {
                continue;
            }
            if let Some(b) = newest.filter(|&b| loaded.as_ref().map(|l| l.0) != Some(b)) {
                let bs = &snaps[b];
                // A damaged base (which `pool check` and scrub report) is
                // no base: everything is read.
                loaded = match bs.key.map(|k| store.read(&k, bs.meta.guid, bs.size)) {
                    Some(Stored::Found(m)) if m.geometry().chunk_size() == CHUNK_SIZE => Some((b, bs.extents()?, m)),
                    _ => None,
                };
            }
            let based = loaded.as_ref().filter(|l| Some(l.0) == newest).map(|(b, bmap, bm)| (&snaps[*b], bmap, bm));
            let made = s.extents().and_then(|map| {
                // Fresh, so a send of this snapshot can take it from the
                // cache instead of mapping the image again.
                self.remember_map(&s.file, &s.meta, &map);
                let (m, report) = build_one(s, &map, based, built_by, pace, progress)?;
                store.write(&key, &m)?;
                Ok((map, m, report))
            });
            let (map, m, report) = match made {
                Ok(x) => x,
                Err(e) => {
                    out.failed.push((s.name.clone(), e.message));
                    continue;
                }
            };
            // Deleted while we read it: its manifest must not outlive it.
            if !s.still_there() {
                store.remove(&key);
                continue;
            }
            out.reports.push(report);
            newest = Some(i);
            loaded = Some((i, map, m));
        }
        Ok(out)
    }
}

/// Builds one snapshot's manifest from its base's (or from nothing).
fn build_one(
    s: &OpenSnapshot,
    map: &ExtentMap,
    base: Option<(&OpenSnapshot, &ExtentMap, &Manifest)>,
    built_by: BuiltBy,
    pace: Pace,
    progress: Progress<'_>,
) -> Result<(Manifest, BuildReport)> {
    let start = Instant::now();
    let geometry = Geometry::new(CHUNK_SIZE, s.size).map_err(|e| Error::invalid(e.to_string()))?;
    let empty = ExtentMap::default();
    let (bmap, bsize, bman) = match base {
        Some((b, bmap, bm)) => (bmap, b.size, Some(bm)),
        None => (&empty, 0, None),
    };
    let dirty = dirty_chunks(CHUNK_SIZE, bsize, &diff(bmap, bsize, map, s.size));
    let mut plan = Dirty::new(Some(map), geometry, &dirty, progress);
    let stats = chunk_io::run(&mut plan, &[Source::new(&s.file)], pace)?;
    if let Some((i, why)) = plan.unreadable.first() {
        return Err(Error::new(
            ErrorKind::Io,
            format!("cannot build the manifest of {}: chunk {i} cannot be read ({why})", s.name),
        ));
    }
    let mut hashed = plan.hashed;
    hashed.sort_unstable_by_key(|h| h.0);
    let provenance = Provenance {
        built_by,
        base: base.map(|(b, _, _)| b.meta.guid),
        built_at: chrono::Utc::now().timestamp(),
        bytes_read: stats.bytes_read,
        chunks_hashed: stats.chunks_read,
        chunks_copied: 0,
        build_us: start.elapsed().as_micros() as u64,
    };
    let mut m = Manifest::derive(bman, geometry, &dirty, &hashed, s.meta.guid, provenance)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", s.name)))?;
    let fresh = hashed.iter().filter(|h| h.1 != Entry::Zero).count() as u64;
    let copied = m.data_chunks().saturating_sub(fresh);
    m.provenance.chunks_copied = copied;
    let report = BuildReport {
        name: s.name.clone(),
        base: base.map(|(b, _, _)| b.name.clone()),
        bytes_read: stats.bytes_read,
        chunks_hashed: stats.chunks_read,
        chunks_copied: copied,
        build_us: provenance.build_us,
    };
    Ok((m, report))
}

/// Reads the dirty chunks that hold data (the others are zero chunks, known
/// without a read), in runs of up to [`MAX_READ`]. Without an extent map
/// every dirty chunk is read (a receive knows its records wrote them).
pub(crate) struct Dirty<'a> {
    map: Option<&'a ExtentMap>,
    geometry: Geometry,
    /// Dirty chunks not planned yet: ranges, the first one cut as planned.
    todo: std::collections::VecDeque<Range<u64>>,
    pub(crate) hashed: Vec<(u64, Entry)>,
    pub(crate) unreadable: Vec<(u64, String)>,
    total: u64,
    done: u64,
    progress: Progress<'a>,
}

impl<'a> Dirty<'a> {
    pub(crate) fn new(
        map: Option<&'a ExtentMap>,
        geometry: Geometry,
        dirty: &[Range<u64>],
        progress: Progress<'a>,
    ) -> Self {
        let total = dirty.iter().flat_map(|r| r.clone()).map(|i| geometry.chunk(i).1).sum();
        Dirty {
            map,
            geometry,
            todo: dirty.iter().cloned().collect(),
            hashed: Vec::new(),
            unreadable: Vec::new(),
            total,
            done: 0,
            progress,
        }
    }

    fn peek(&mut self) -> Option<u64> {
        while self.todo.front().is_some_and(|r| r.is_empty()) {
            self.todo.pop_front();
        }
        self.todo.front().map(|r| r.start)
    }

    fn advance(&mut self) {
        if let Some(r) = self.todo.front_mut() {
            r.start += 1;
        }
    }

    /// Whether chunk `i` is known to be zero without a read.
    fn known_zero(&self, i: u64) -> bool {
        let Some(map) = self.map else { return false };
        let c = u64::from(self.geometry.chunk_size());
        layouts(map, self.geometry.image_size(), c, i..i + 1).pop().unwrap_or(Layout::Zero) == Layout::Zero
    }
}

impl Plan for Dirty<'_> {
    type Tag = u64;

    fn next_job(&mut self) -> Result<Option<Job<u64>>> {
        let mut job: Option<Job<u64>> = None;
        while let Some(i) = self.peek() {
            let (offset, len) = self.geometry.chunk(i);
            if self.known_zero(i) {
                self.advance();
                self.hashed.push((i, Entry::Zero));
                self.done += len;
                continue;
            }
            match &mut job {
                None => job = Some(Job { source: 0, offset, chunks: vec![(i, len)] }),
                Some(j) if j.offset + j.len() == offset && j.len() + len <= MAX_READ => j.chunks.push((i, len)),
                Some(_) => break,
            }
            self.advance();
        }
        Ok(job)
    }

    fn done(&mut self, tag: u64, outcome: Outcome) -> Result<()> {
        self.done += self.geometry.chunk(tag).1;
        (self.progress)(self.done, self.total);
        match outcome {
            Outcome::Read(e) => self.hashed.push((tag, e)),
            Outcome::Unreadable(why) => self.unreadable.push((tag, why)),
        }
        Ok(())
    }
}
