//! `subvol scrub --repair-from [HOST:]POOL`: after a scrub found damage,
//! fetch only the damaged chunks from a replica holding the same snapshots
//! (same guid, same manifest root) and write them back.
//!
//! Nothing from the replica is written unless it hashes to what OUR
//! manifest recorded for that chunk: a replica can only give back the bytes
//! the snapshot held, never other ones. A damaged host block is usually
//! shared by several images (snapshots of one subvolume, the live one):
//! the good bytes go into every image whose chunk still lives in that
//! block, the first by a write, the others by a reflink of the repaired
//! range (so they keep sharing), and every written chunk is read back
//! (O_DIRECT) and verified.
//!
//! Snapshots are immutable: the flag is lifted only around the write, and
//! the modification time is put back to the one recorded when the
//! snapshot was taken (`pool check` compares it). Before the first write a
//! record names every image the repair may touch (`scrub/repairing`); a
//! repair killed half way leaves that record, and the next command's
//! recovery puts flags and times back (the chunks themselves are then good,
//! or still damaged and repaired by the next run).

use crate::chunk_io::{AlignedBuf, Source};
use crate::error::{Error, ErrorKind, Result};
use crate::extent_cache::CacheKey;
use crate::manifest_build::OpenSnapshot;
use crate::manifest_store::{ManifestStore, Stored};
use crate::pool::Pool;
use crate::scrub_report::ScrubReport;
use crate::snapshot::Progress;
use crate::sync::{RepairFrom, Reply};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use subvol_core::chunk_read::{hex, merge, Record};
use subvol_core::chunks::{layouts, Layout};
use subvol_core::manifest::{Entry, Manifest, CHUNK_SIZE};
use subvol_core::scrub::{damaged_ranges, Fault, Verdict};
use subvol_core::ExtentMap;

/// A byte range of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

/// An image the repair wrote good bytes into, verified after.
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    /// `NAME@SNAP`, or `NAME` for a live subvolume.
    pub name: String,
    pub live: bool,
    pub ranges: Vec<ByteRange>,
    pub bytes: u64,
}

/// Damage that is still there, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Lost {
    pub name: String,
    pub ranges: Vec<ByteRange>,
    pub bytes: u64,
    pub why: String,
}

/// What a repair did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    /// The replica as written.
    pub replica: String,
    pub repaired: Vec<Repaired>,
    pub lost: Vec<Lost>,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    /// Chunks the replica sent that did not match our manifest (refused,
    /// not written).
    pub chunks_refused: u64,
    /// Every damaged chunk was repaired and verified.
    pub complete: bool,
}

/// An image that may be written.
struct Image {
    name: String,
    path: PathBuf,
    live: bool,
    file: File,
    size: u64,
    map: ExtentMap,
    manifest: Option<Manifest>,
    key: Option<CacheKey>,
    /// The modification time to put back (snapshots: the recorded one).
    mtime: Option<SystemTime>,
    writer: Option<Writer>,
}

struct Writer {
    file: File,
    was_immutable: bool,
}

/// One damaged chunk (a position and the host blocks it lives in) and
/// every image reading it.
struct Group {
    pos: u64,
    expected: Entry,
    /// The snapshot whose replica copy is asked for it.
    fetch_from: uuid::Uuid,
    targets: Vec<usize>,
}

/// The record of images a repair may be writing (`scrub/repairing`).
fn intent(pool: &Pool) -> PathBuf {
    pool.layout.scrub_dir().join("repairing")
}

fn stamp_time(meta: &subvol_core::SubvolumeMeta) -> Option<SystemTime> {
    let ns = meta.content.as_ref()?.mtime_ns;
    let ns = u64::try_from(ns).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(ns))
}

/// After a repair killed half way: puts back the modification time and
/// immutable flag of every snapshot it named. Best effort; returns the
/// images it fixed.
pub(crate) fn finish_interrupted(layout: &crate::layout::Layout) -> Vec<String> {
    let path = layout.scrub_dir().join("repairing");
    let Ok(text) = std::fs::read_to_string(&path) else { return Vec::new() };
    let mut fixed = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&*layout.snapshots_dir().to_string_lossy())) {
        let p = Path::new(line);
        let Ok(f) = crate::subvolume::open_image(p, false) else { continue };
        let Ok(meta) = crate::subvolume::read_meta(&f) else { continue };
        // Written or not, its cached map may be stale (blocks moved).
        if let Some(k) = crate::extent_cache::CacheKey::of(&f, meta.guid) {
            crate::extent_cache::ExtentCache::new(layout.cache_dir()).remove(&k);
        }
        if subvol_os::flags::is_immutable(&f).unwrap_or(true) {
            continue;
        }
        if let Some(t) = stamp_time(&meta) {
            if let Ok(w) = std::fs::OpenOptions::new().write(true).open(p) {
                let _ = w.set_modified(t);
            }
        }
        if subvol_os::flags::set_immutable(&f, true).is_ok() {
            fixed.push(line.to_string());
        }
    }
    let _ = std::fs::remove_file(&path);
    fixed
}

impl Image {
    fn snapshot(s: OpenSnapshot, store: &ManifestStore) -> Result<Image> {
        let manifest = match s.key.map(|k| store.read(&k, s.meta.guid, s.size)) {
            Some(Stored::Found(m)) => Some(m),
            _ => None,
        };
        let map = s.extents()?;
        let mtime = stamp_time(&s.meta).or_else(|| s.file.metadata().and_then(|m| m.modified()).ok());
        Ok(Image {
            name: s.name,
            path: s.path,
            live: false,
            file: s.file,
            size: s.size,
            map,
            manifest,
            key: s.key,
            mtime,
            writer: None,
        })
    }

    fn layout(&self, pos: u64) -> Option<Layout> {
        layouts(&self.map, self.size, u64::from(CHUNK_SIZE), pos..pos + 1).pop()
    }

    /// Opens the image for writing, lifting its immutable flag.
    fn writer(&mut self) -> Result<&File> {
        if self.writer.is_none() {
            let f = &self.file;
            let was_immutable = subvol_os::flags::is_immutable(f).map_err(|e| Error::os("cannot read the flags", e))?;
            if was_immutable {
                subvol_os::flags::set_immutable(f, false)
                    .map_err(|e| Error::os(format!("cannot lift the immutable flag of {}", self.name), e))?;
            }
            let w = crate::subvolume::open_image(&self.path, true)
                .map_err(|e| Error::io(format!("cannot open {} for the repair", self.name), e))?;
            let same = w.metadata().ok().map(|m| m.ino()) == self.file.metadata().ok().map(|m| m.ino());
            if !same {
                return Err(Error::new(ErrorKind::Busy, format!("{} was replaced during the repair", self.name)));
            }
            self.writer = Some(Writer { file: w, was_immutable });
        }
        Ok(&self.writer.as_ref().expect("just set").file)
    }

    /// Makes the writes durable and puts the time and flag back.
    fn close(&mut self, cache: &crate::extent_cache::ExtentCache) -> Result<()> {
        let Some(w) = self.writer.take() else { return Ok(()) };
        // Its blocks moved: the cached map would lie to the next send (an
        // entry a listing made meanwhile goes too).
        if let Some(k) = &self.key {
            cache.remove(k);
        }
        w.file.sync_all().map_err(|e| Error::io(format!("cannot sync {}", self.name), e))?;
        if let (false, Some(t)) = (self.live, self.mtime) {
            w.file.set_modified(t).map_err(|e| Error::io(format!("cannot put back the time of {}", self.name), e))?;
        }
        if w.was_immutable {
            subvol_os::flags::set_immutable(&self.file, true)
                .map_err(|e| Error::os(format!("cannot make {} immutable again", self.name), e))?;
        }
        Ok(())
    }
}

/// Chunk positions (ascending, each once) as byte ranges of an image.
fn byte_ranges(size: u64, positions: &[u64]) -> Vec<ByteRange> {
    let Ok(g) = subvol_core::manifest::Geometry::new(CHUNK_SIZE, size) else { return Vec::new() };
    let chunks: Vec<(u64, Fault)> = positions.iter().map(|&p| (p, Fault::Mismatch)).collect();
    damaged_ranges(g, &chunks).into_iter().map(|r| ByteRange { offset: r.offset, length: r.length }).collect()
}

/// Where the repair stands, chunk by chunk.
#[derive(Default)]
struct Tally {
    /// (image, position) -> why it is lost.
    lost: BTreeMap<(usize, u64), String>,
    written: BTreeMap<(usize, u64), Entry>,
    fetched: u64,
    bytes: u64,
    refused: u64,
}

impl Pool {
    /// Repairs the damage `report` found from `from`. Holds the pool lock.
    pub fn repair(&self, report: &ScrubReport, from: &RepairFrom, progress: Progress<'_>) -> Result<RepairReport> {
        let _lock = self.lock()?;
        finish_interrupted(&self.layout);
        let store = ManifestStore::new(self.layout.manifests_dir());
        let mut images: Vec<Image> = Vec::new();
        for s in self.all_snapshots() {
            let name = s.name.clone();
            match Image::snapshot(s, &store) {
                Ok(i) => images.push(i),
                Err(e) if report.damaged().any(|d| d.name == name) => return Err(e),
                Err(_) => {}
            }
        }
        let mut tally = Tally::default();
        let mut extra_lost: Vec<Lost> = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut by_key: HashMap<(u64, Layout, Entry), usize> = HashMap::new();
        let chunk = u64::from(CHUNK_SIZE);
        for o in report.damaged() {
            let listed: u64 = o.damaged.iter().map(|r| r.length).sum();
            let Some(ii) = images.iter().position(|i| i.name == o.name) else {
                extra_lost.push(Lost {
                    name: o.name.clone(),
                    ranges: o.damaged.iter().map(|r| ByteRange { offset: r.offset, length: r.length }).collect(),
                    bytes: o.damaged_bytes,
                    why: "it was deleted or replaced since the scrub".into(),
                });
                continue;
            };
            if o.damaged.is_empty() || o.damaged_bytes > listed {
                extra_lost.push(Lost {
                    name: o.name.clone(),
                    ranges: Vec::new(),
                    bytes: o.damaged_bytes - listed,
                    why: match &o.problem {
                        Some(p) if o.damaged.is_empty() => format!("{p}; that cannot be repaired in place"),
                        _ => "more damage than one scrub lists; run the repair again after this one".into(),
                    },
                });
            }
            let Some(m) = images[ii].manifest.clone() else {
                for r in &o.damaged {
                    extra_lost.push(Lost {
                        name: o.name.clone(),
                        ranges: vec![ByteRange { offset: r.offset, length: r.length }],
                        bytes: r.length,
                        why: "it has no sound manifest to check good bytes against".into(),
                    });
                }
                continue;
            };
            let ranges = subvol_core::chunk_read::chunks_of(chunk, o.damaged.iter().map(|r| (r.offset, r.length)));
            for pos in ranges.into_iter().flatten() {
                let expected = m.entry(pos);
                let layout = images[ii].layout(pos).unwrap_or(Layout::Private);
                // Only chunks in host blocks can be shared; others are their own group.
                let key =
                    (pos, if matches!(layout, Layout::Blocks { .. }) { layout } else { Layout::Private }, expected);
                let shared = matches!(key.1, Layout::Blocks { .. });
                match by_key.get(&key).copied().filter(|_| shared) {
                    Some(g) => groups[g].targets.push(ii),
                    None => {
                        by_key.insert(key, groups.len());
                        groups.push(Group { pos, expected, fetch_from: m.guid, targets: vec![ii] });
                    }
                }
            }
        }
        // Images outside the report that read the same damaged blocks:
        // snapshots whose manifest expects the same bytes, and live
        // subvolumes that nothing has attached.
        let live = self.live_sharers(&by_key, &mut images, &mut extra_lost);
        for ((pos, layout, expected), &g) in by_key.iter().filter(|(k, _)| matches!(k.1, Layout::Blocks { .. })) {
            for (ii, img) in images.iter().enumerate() {
                if groups[g].targets.contains(&ii) {
                    continue;
                }
                let expects = img.manifest.as_ref().map(|m| m.entry(*pos)) == Some(*expected);
                if (img.live && live.contains(&ii) || expects) && img.layout(*pos).as_ref() == Some(layout) {
                    groups[g].targets.push(ii);
                }
            }
        }
        let mut paths: Vec<String> =
            groups.iter().flat_map(|g| g.targets.iter().map(|&i| images[i].path.display().to_string())).collect();
        paths.sort();
        paths.dedup();
        if !groups.is_empty() {
            subvol_os::fsync::write_atomic(&intent(self), format!("{}\n", paths.join("\n")).as_bytes())
                .map_err(|e| Error::os("cannot record the repair", e))?;
            crate::recovery::mark_unprotected(&self.layout)?;
        }
        let total = groups.len() as u64 * chunk;
        // Their blocks are about to move: cached maps go before any write,
        // so a crash before `close` leaves none stale (recovery, which puts
        // the recorded mtime back, removes them too).
        let cache = crate::extent_cache::ExtentCache::new(self.layout.cache_dir());
        for k in images.iter().filter_map(|i| i.key.as_ref()) {
            cache.remove(k);
        }
        let result = self.fetch_and_write(from, &mut images, &groups, &mut tally, &|d| progress(d, total));
        let mut closed = Ok(());
        for img in images.iter_mut() {
            if let Err(e) = img.close(&cache) {
                closed = closed.and(Err(e));
            }
        }
        result?;
        closed?;
        let _ = std::fs::remove_file(intent(self));
        crate::recovery::clear_unprotected(&self.layout);
        self.verify_written(&images, &mut tally);
        let out = self.repair_report(from, &images, &groups, tally, extra_lost);
        self.record_repairs(&images, &out);
        Ok(out)
    }

    /// Live subvolumes reading damaged blocks. Unattached ones become
    /// images to repair (their index returned); attached ones are in use,
    /// so their damage is reported as not repaired.
    fn live_sharers(
        &self,
        by_key: &HashMap<(u64, Layout, Entry), usize>,
        images: &mut Vec<Image>,
        lost: &mut Vec<Lost>,
    ) -> Vec<usize> {
        let mut out = Vec::new();
        if by_key.is_empty() {
            return out;
        }
        let kernel = crate::kernel::KernelView::read().ok();
        let names: Vec<String> = std::fs::read_dir(self.layout.subvolumes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| crate::layout::name_of_image(Path::new(&e.file_name())))
            .collect();
        for name in names {
            let path = self.layout.subvolume_image(&name);
            let Ok(file) = crate::subvolume::open_image(&path, false) else { continue };
            let (Ok(map), Ok(meta)) = (subvol_os::fiemap::fiemap(&file, true), file.metadata()) else { continue };
            let size = meta.len();
            let chunk = u64::from(CHUNK_SIZE);
            let hit: Vec<u64> = by_key
                .iter()
                .filter(|((pos, layout, _), _)| {
                    matches!(layout, Layout::Blocks { .. })
                        && layouts(&map, size, chunk, *pos..*pos + 1).first() == Some(layout)
                })
                .map(|((pos, _, _), _)| *pos)
                .collect();
            if hit.is_empty() {
                continue;
            }
            let attached = kernel.as_ref().is_none_or(|k| !k.attachments(&path).is_empty());
            if attached {
                let mut hit = hit;
                hit.sort_unstable();
                hit.dedup();
                let ranges = byte_ranges(size, &hit);
                lost.push(Lost {
                    bytes: ranges.iter().map(|r| r.length).sum(),
                    ranges,
                    name: name.clone(),
                    why: format!(
                        "the live subvolume {name} still reads the damaged blocks and is in use (attached or mounted): \
                         not written under it; unmount it and run the repair again, or restore its files from a repaired snapshot"
                    ),
                });
                continue;
            }
            out.push(images.len());
            images.push(Image {
                name: name.clone(),
                path,
                live: true,
                file,
                size,
                map,
                manifest: None,
                key: None,
                mtime: None,
                writer: None,
            });
        }
        out
    }

    /// Asks the replica for each group's chunk and writes what matches.
    fn fetch_and_write(
        &self,
        from: &RepairFrom,
        images: &mut [Image],
        groups: &[Group],
        tally: &mut Tally,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let mut requests: BTreeMap<uuid::Uuid, Vec<usize>> = BTreeMap::new();
        for (g, group) in groups.iter().enumerate() {
            requests.entry(group.fetch_from).or_default().push(g);
        }
        let chunk = u64::from(CHUNK_SIZE);
        let mut done = 0u64;
        for (guid, mut wanted) in requests {
            wanted.sort_by_key(|&g| groups[g].pos);
            let Some(src) = images.iter().position(|i| i.manifest.as_ref().is_some_and(|m| m.guid == guid)) else {
                continue;
            };
            let ours = images[src].manifest.clone().expect("found by its manifest");
            let name = images[src].name.clone();
            let positions: Vec<std::ops::Range<u64>> =
                merge(wanted.iter().map(|&g| groups[g].pos..groups[g].pos + 1).collect());
            let mut answered: Vec<usize> = Vec::new();
            let mut refusal: Option<String> = None;
            let mut failure: Option<Error> = None;
            let fetched = from.fetch(guid, &positions, &mut |reply| match reply {
                Reply::Header(h) => {
                    let (g, root) = (ours.geometry(), hex(&ours.root()));
                    if h.guid != guid || h.chunk_size != g.chunk_size() || h.image_size != g.image_size() || h.root != root {
                        let why = format!(
                            "the replica's copy ({}) has manifest root {}…, ours is {}…: not the same content; refused",
                            subvol_core::text::escape(&h.snapshot),
                            &h.root.get(..16).unwrap_or(""),
                            &root[..16]
                        );
                        refusal = Some(why.clone());
                        return Err(Error::new(ErrorKind::Corrupt, why));
                    }
                    Ok(())
                }
                Reply::Record(rec) => {
                    let Some(&g) = wanted.iter().find(|&&g| groups[g].pos == rec.index()) else {
                        return Err(Error::new(ErrorKind::Corrupt, "the replica sent a chunk it was not asked for"));
                    };
                    answered.push(g);
                    done += chunk;
                    progress(done);
                    match rec {
                        Record::Unreadable { reason, .. } => {
                            let why = format!("the replica cannot read it either ({})", subvol_core::text::escape(&reason));
                            for &t in &groups[g].targets {
                                tally.lost.insert((t, groups[g].pos), why.clone());
                            }
                            Ok(())
                        }
                        Record::Chunk { bytes, .. } => {
                            tally.fetched += 1;
                            tally.bytes += bytes.len() as u64;
                            if Entry::of(&bytes) != groups[g].expected {
                                tally.refused += 1;
                                for &t in &groups[g].targets {
                                    tally.lost.insert(
                                        (t, groups[g].pos),
                                        "the replica's bytes do not match our manifest (its copy is damaged too); refused, not written".into(),
                                    );
                                }
                                return Ok(());
                            }
                            if let Err(e) = write_group(images, &groups[g], &bytes, tally) {
                                failure = Some(Error::new(e.kind, e.message.clone()));
                                return Err(e);
                            }
                            Ok(())
                        }
                    }
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            let why = match (fetched, refusal) {
                (_, Some(r)) => r,
                (Err(e), None) => format!("the replica could not give it: {}", subvol_core::text::escape(&e.message)),
                (Ok(()), None) => "the replica did not send it".into(),
            };
            for &g in wanted.iter().filter(|g| !answered.contains(g)) {
                for &t in &groups[g].targets {
                    tally.lost.entry((t, groups[g].pos)).or_insert_with(|| why.clone());
                }
            }
            let _ = name;
        }
        Ok(())
    }

    /// Reads every written chunk back from the device and checks it.
    fn verify_written(&self, images: &[Image], tally: &mut Tally) {
        let mut buf = AlignedBuf::new(CHUNK_SIZE as usize);
        let written: Vec<((usize, u64), Entry)> = tally.written.iter().map(|(k, v)| (*k, *v)).collect();
        for ((i, pos), expected) in written {
            let img = &images[i];
            let (offset, len) =
                subvol_core::manifest::Geometry::new(CHUNK_SIZE, img.size).map(|g| g.chunk(pos)).unwrap_or((0, 0));
            let piece = buf.slice(len as usize);
            let good = Source::new(&img.file).read(piece, offset).is_ok() && Entry::of(piece) == expected;
            if !good {
                tally.written.remove(&(i, pos));
                tally.lost.insert((i, pos), "it still reads wrong after the repair wrote it".into());
            }
        }
    }

    fn repair_report(
        &self,
        from: &RepairFrom,
        images: &[Image],
        groups: &[Group],
        tally: Tally,
        mut lost: Vec<Lost>,
    ) -> RepairReport {
        let _ = groups;
        let mut repaired: Vec<Repaired> = Vec::new();
        let mut by_image: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (i, pos) in tally.written.keys() {
            by_image.entry(*i).or_default().push(*pos);
        }
        for (i, positions) in by_image {
            let ranges = byte_ranges(images[i].size, &positions);
            repaired.push(Repaired {
                name: images[i].name.clone(),
                live: images[i].live,
                bytes: ranges.iter().map(|r| r.length).sum(),
                ranges,
            });
        }
        let mut lost_by: BTreeMap<(usize, String), Vec<u64>> = BTreeMap::new();
        for ((i, pos), why) in &tally.lost {
            lost_by.entry((*i, why.clone())).or_default().push(*pos);
        }
        for ((i, why), positions) in lost_by {
            let ranges = byte_ranges(images[i].size, &positions);
            lost.push(Lost { name: images[i].name.clone(), bytes: ranges.iter().map(|r| r.length).sum(), ranges, why });
        }
        lost.sort_by(|a, b| a.name.cmp(&b.name));
        repaired.sort_by(|a, b| a.name.cmp(&b.name));
        RepairReport {
            replica: from.describe(),
            complete: lost.is_empty(),
            repaired,
            lost,
            chunks_fetched: tally.fetched,
            bytes_fetched: tally.bytes,
            chunks_refused: tally.refused,
        }
    }

    /// The scrub records forget the damage the repair removed: a snapshot
    /// with none left is clean again (`pool status`, `info`, `pool check`).
    fn record_repairs(&self, images: &[Image], report: &RepairReport) {
        let mut results = self.scrub_results();
        let mut changed = false;
        for r in report.repaired.iter().filter(|r| !r.live) {
            let Some(img) = images.iter().find(|i| i.name == r.name) else { continue };
            let Some(guid) = img.manifest.as_ref().map(|m| m.guid) else { continue };
            let Some(o) = results.snapshots.get_mut(&guid) else { continue };
            let fixed = |d: &subvol_core::scrub::DamagedRange| {
                r.ranges.iter().any(|x| x.offset <= d.offset && d.offset + d.length <= x.offset + x.length)
            };
            let before = o.damaged.len();
            let gone: u64 = o.damaged.iter().filter(|d| fixed(d)).map(|d| d.length).sum();
            o.damaged.retain(|d| !fixed(d));
            o.damaged_bytes = o.damaged_bytes.saturating_sub(gone);
            if o.damaged.is_empty() && o.damaged_bytes == 0 && o.problem.is_none() {
                o.verdict = Verdict::Clean;
            }
            changed |= before != o.damaged.len();
        }
        if changed {
            let _ = subvol_os::fsync::write_atomic(&self.layout.scrub_results(), &results.encode());
        }
    }
}

/// Writes a verified chunk into every image of its group: the first by a
/// write, the others by a reflink of the first's range (they keep sharing
/// its new block), or a write where the host cannot reflink.
fn write_group(images: &mut [Image], g: &Group, bytes: &[u8], tally: &mut Tally) -> Result<()> {
    let offset = g.pos * u64::from(CHUNK_SIZE);
    let mut first: Option<usize> = None;
    for &t in &g.targets {
        let cloned = match first {
            Some(f) if f != t => {
                let src = images[f].writer.as_ref().map(|w| w.file.try_clone());
                let dst = images[t].writer()?;
                match src {
                    Some(Ok(s)) => {
                        subvol_os::reflink::ficlonerange(dst, &s, offset, bytes.len() as u64, offset).is_ok()
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !cloned {
            let name = images[t].name.clone();
            let w = images[t].writer()?;
            w.write_all_at(bytes, offset).map_err(|e| Error::io(format!("cannot write the repair into {name}"), e))?;
            w.sync_data().map_err(|e| Error::io(format!("cannot sync {name}"), e))?;
        }
        first.get_or_insert(t);
        tally.written.insert((t, g.pos), g.expected);
        subvol_os::crash::point("repair-after-write");
    }
    Ok(())
}
