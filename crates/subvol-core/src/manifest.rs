//! Manifests: what every chunk of a snapshot image held when it was taken,
//! so that a later read can tell good data from rot (XFS and ext4 keep no
//! data checksums). docs/FORMAT.md ("Manifests") is the public description.
//!
//! An image is cut into aligned chunks of `chunk_size` bytes (the last one
//! may be shorter). A chunk that reads as zeroes (a hole, an unwritten
//! extent, or written zeroes) is a *zero chunk* and has no hash; every other
//! chunk has the BLAKE3 hash of its bytes. Entries depend on the bytes alone,
//! never on how the host stores them, so two images with equal content have
//! equal manifests and equal roots (a replica whose receiver turned zero
//! blocks into holes included). Zero chunks cost nothing: only runs of data
//! chunks are stored, so a sparse 4 TiB image has a manifest as small as its
//! data.
//!
//! A snapshot's manifest is usually derived from the previous snapshot's
//! ([`dirty_chunks`], [`Manifest::derive`]): only the chunks whose host blocks
//! differ (the extent diff that `send` uses) are read and hashed again.

use crate::diff::ExtentDiff;
use std::ops::Range;
use uuid::Uuid;

/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Format version of manifests written by this build.
pub const FORMAT: u32 = 1;
/// Chunk size of the manifests subvol builds. Chosen by measurement
/// (docs/BENCHMARKS.md, "Manifests"): a 4 KiB change costs one chunk read
/// and hashed, and a 4 GiB image's manifest is 512 KiB.
pub const CHUNK_SIZE: u32 = 256 << 10;
/// Smallest chunk a manifest may use: the block size of every image.
pub const MIN_CHUNK_SIZE: u32 = 4096;
/// Largest chunk a manifest may use: bounds the memory a reader needs.
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;

const MAGIC: &[u8; 8] = b"SVMANFST";
const ROOT_TAG: &[u8; 8] = b"SVMROOT1";
/// Bytes before the run table (docs/FORMAT.md lists each field).
const HEADER_LEN: usize = 112;
const SUM_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is damaged: {0}")]
    Damaged(String),
    #[error("manifest format version {0} is newer than this subvol understands; upgrade subvol")]
    UnknownVersion(u32),
    #[error("chunk size {0} is not a power of two between 4 KiB and 16 MiB")]
    BadChunkSize(u64),
    #[error("cannot derive the manifest: {0}")]
    Inconsistent(String),
}

fn damaged(why: impl Into<String>) -> ManifestError {
    ManifestError::Damaged(why.into())
}

/// What one chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    /// Reads as zeroes.
    Zero,
    /// The BLAKE3 hash of the chunk's bytes.
    Data(Hash),
}

impl Entry {
    /// The entry of a chunk's bytes.
    pub fn of(bytes: &[u8]) -> Entry {
        if is_zero(bytes) {
            Entry::Zero
        } else {
            Entry::Data(*blake3::hash(bytes).as_bytes())
        }
    }
}

/// A hash from 64 lowercase hex digits (how streams and replies carry
/// roots); `None` for anything else.
pub fn parse_hash(s: &str) -> Option<Hash> {
    let b = s.as_bytes();
    if b.len() != 64 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Whether every byte is zero, sixteen at a time.
fn is_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(16);
    let zero_word = |w: &[u8]| {
        let mut a = [0u8; 16];
        a.copy_from_slice(w);
        u128::from_ne_bytes(a) == 0
    };
    words.by_ref().all(zero_word) && words.remainder().iter().all(|&b| b == 0)
}

/// How an image is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    chunk_size: u32,
    image_size: u64,
}

impl Geometry {
    pub fn new(chunk_size: u32, image_size: u64) -> Result<Geometry, ManifestError> {
        if !chunk_size.is_power_of_two() || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(ManifestError::BadChunkSize(chunk_size.into()));
        }
        Ok(Geometry { chunk_size, image_size })
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    pub fn image_size(&self) -> u64 {
        self.image_size
    }

    /// Number of chunks (the last may be short).
    pub fn chunks(&self) -> u64 {
        self.image_size.div_ceil(self.chunk_size.into())
    }

    /// Byte range `(offset, length)` of chunk `i`.
    pub fn chunk(&self, i: u64) -> (u64, u64) {
        let start = i.saturating_mul(self.chunk_size.into()).min(self.image_size);
        let end = start.saturating_add(self.chunk_size.into()).min(self.image_size);
        (start, end - start)
    }
}

/// Who built a manifest, and from what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltBy {
    /// Right after the snapshot was taken: it records what was snapshotted.
    Snapshot,
    /// By a scrub, from the image as it was found then (a snapshot older than
    /// manifests, or a received one): it could not be verified.
    Scrub,
    /// By a receive, from the bytes it wrote and its base's manifest, and
    /// equal to the root the stream carried: a copy of the sender's.
    Receive,
}

impl BuiltBy {
    fn code(self) -> u8 {
        match self {
            BuiltBy::Snapshot => 1,
            BuiltBy::Scrub => 2,
            BuiltBy::Receive => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BuiltBy::Snapshot => "snapshot",
            BuiltBy::Scrub => "scrub",
            BuiltBy::Receive => "receive",
        }
    }
}

/// How a manifest was built: shown by `info`, and what the tests count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provenance {
    pub built_by: BuiltBy,
    /// The snapshot whose manifest gave the unchanged chunks (none: every
    /// chunk with data was read).
    pub base: Option<Uuid>,
    /// Unix time (seconds) the build finished.
    pub built_at: i64,
    /// Bytes read from the image.
    pub bytes_read: u64,
    /// Chunks read and hashed.
    pub chunks_hashed: u64,
    /// Chunks whose entries came from the base's manifest.
    pub chunks_copied: u64,
    /// Wall time of the build, in microseconds.
    pub build_us: u64,
}

impl Provenance {
    /// A manifest made by `built_by` whose build nothing measured (made
    /// from known entries: tests, benchmarks, other programs).
    pub fn unmeasured(built_by: BuiltBy) -> Provenance {
        Provenance { built_by, base: None, built_at: 0, bytes_read: 0, chunks_hashed: 0, chunks_copied: 0, build_us: 0 }
    }
}

/// A run of consecutive data chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    first: u64,
    hashes: Vec<Hash>,
}

impl Run {
    fn end(&self) -> u64 {
        self.first + self.hashes.len() as u64
    }
}

/// The manifest of one snapshot image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    geometry: Geometry,
    /// The snapshot it describes (a manifest found under another snapshot's
    /// key is refused).
    pub guid: Uuid,
    pub provenance: Provenance,
    /// Data chunks only, ascending; never empty, never touching.
    runs: Vec<Run>,
}

/// Collects data entries in ascending chunk order into maximal runs.
struct RunBuilder {
    runs: Vec<Run>,
}

impl RunBuilder {
    fn push(&mut self, i: u64, h: Hash) {
        match self.runs.last_mut() {
            Some(r) if r.end() == i => r.hashes.push(h),
            _ => self.runs.push(Run { first: i, hashes: vec![h] }),
        }
    }
}

impl Manifest {
    /// A manifest from every chunk's entry, in order (tests and small
    /// images; the pool derives them).
    pub fn from_entries(
        geometry: Geometry,
        guid: Uuid,
        provenance: Provenance,
        entries: impl IntoIterator<Item = Entry>,
    ) -> Manifest {
        let mut b = RunBuilder { runs: Vec::new() };
        for (i, e) in (0..geometry.chunks()).zip(entries) {
            if let Entry::Data(h) = e {
                b.push(i, h);
            }
        }
        Manifest { geometry, guid, provenance, runs: b.runs }
    }

    /// The manifest of an image from its base's manifest (`None`: an empty
    /// base) and the entries of its dirty chunks (`hashed`: one per chunk of
    /// `dirty`, in ascending order; see [`dirty_chunks`]). Every other chunk
    /// keeps the base's entry, or is zero past the base's end.
    pub fn derive(
        base: Option<&Manifest>,
        geometry: Geometry,
        dirty: &[Range<u64>],
        hashed: &[(u64, Entry)],
        guid: Uuid,
        provenance: Provenance,
    ) -> Result<Manifest, ManifestError> {
        Manifest::derive_zeroed(base, geometry, dirty, hashed, &[], guid, provenance)
    }

    /// [`Manifest::derive`], where the chunks of `zeroed` (sorted, disjoint
    /// ranges) are known to read as zeroes without a read (a receive
    /// punched them whole): they lose the base's entry unless `dirty` also
    /// has them. Costs O(base entries + dirty chunks), whatever the
    /// ranges' length.
    pub fn derive_zeroed(
        base: Option<&Manifest>,
        geometry: Geometry,
        dirty: &[Range<u64>],
        hashed: &[(u64, Entry)],
        zeroed: &[Range<u64>],
        guid: Uuid,
        provenance: Provenance,
    ) -> Result<Manifest, ManifestError> {
        let bad = |why: String| Err(ManifestError::Inconsistent(why));
        if zeroed.windows(2).any(|w| w[0].end > w[1].start) || zeroed.iter().any(|r| r.start > r.end) {
            return bad("zeroed ranges are not sorted and disjoint".into());
        }
        if let Some(b) = base {
            if b.geometry.chunk_size != geometry.chunk_size {
                return bad(format!(
                    "the base uses {}-byte chunks, not {}",
                    b.geometry.chunk_size, geometry.chunk_size
                ));
            }
        }
        if dirty.windows(2).any(|w| w[0].end > w[1].start) || dirty.iter().any(|r| r.start > r.end) {
            return bad("dirty ranges are not sorted and disjoint".into());
        }
        let total: u64 = dirty.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        if total != hashed.len() as u64 {
            return bad(format!("{} dirty chunks but {} entries", total, hashed.len()));
        }
        let mut hashed_iter = hashed.iter();
        for i in dirty.iter().flat_map(|r| r.clone()) {
            match hashed_iter.next() {
                Some((j, _)) if *j == i => {}
                _ => return bad(format!("no entry for dirty chunk {i}")),
            }
        }
        let within = |ranges: &[Range<u64>], i: u64| {
            let k = ranges.partition_point(|r| r.end <= i);
            ranges.get(k).is_some_and(|r| r.start <= i)
        };
        let is_dirty = |i: u64| within(dirty, i) || within(zeroed, i);
        let chunks = geometry.chunks();
        let mut kept: Vec<(u64, Hash)> = Vec::new();
        if let Some(b) = base {
            for r in &b.runs {
                for (k, h) in r.hashes.iter().enumerate() {
                    let i = r.first + k as u64;
                    if i >= chunks || is_dirty(i) {
                        continue;
                    }
                    // A data entry hashes the chunk's length too: where the
                    // size changed the caller must have marked it dirty.
                    if b.geometry.chunk(i).1 != geometry.chunk(i).1 {
                        return bad(format!("chunk {i} changed length but is not dirty"));
                    }
                    kept.push((i, *h));
                }
            }
        }
        let fresh = hashed.iter().filter_map(|(i, e)| match e {
            Entry::Data(h) => Some((*i, *h)),
            Entry::Zero => None,
        });
        let mut all: Vec<(u64, Hash)> = kept.into_iter().chain(fresh).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        let mut b = RunBuilder { runs: Vec::new() };
        for (i, h) in all {
            b.push(i, h);
        }
        Ok(Manifest { geometry, guid, provenance, runs: b.runs })
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The entry of chunk `i` (zero past the end).
    pub fn entry(&self, i: u64) -> Entry {
        let k = self.runs.partition_point(|r| r.end() <= i);
        match self.runs.get(k) {
            Some(r) if r.first <= i => Entry::Data(r.hashes[(i - r.first) as usize]),
            _ => Entry::Zero,
        }
    }

    /// Data chunks as `(first chunk, hashes)` runs, ascending.
    pub fn data_runs(&self) -> impl Iterator<Item = (u64, &[Hash])> {
        self.runs.iter().map(|r| (r.first, r.hashes.as_slice()))
    }

    /// Number of data (non-zero) chunks.
    pub fn data_chunks(&self) -> u64 {
        self.runs.iter().map(|r| r.hashes.len() as u64).sum()
    }

    /// The root hash: one value for the whole image's content (at this
    /// chunk size). BLAKE3 of `SVMROOT1`, the chunk size (u32), the image
    /// size (u64), the run count (u64), each run's first chunk and length
    /// (u64, u64) and then every data chunk's hash in order, all
    /// little-endian. Computable from the image alone.
    pub fn root(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(ROOT_TAG);
        h.update(&self.geometry.chunk_size.to_le_bytes());
        h.update(&self.geometry.image_size.to_le_bytes());
        h.update(&(self.runs.len() as u64).to_le_bytes());
        for r in &self.runs {
            h.update(&r.first.to_le_bytes());
            h.update(&(r.hashes.len() as u64).to_le_bytes());
        }
        for r in &self.runs {
            for x in &r.hashes {
                h.update(x);
            }
        }
        *h.finalize().as_bytes()
    }

    /// The binary encoding (docs/FORMAT.md): header, run table, hashes, the
    /// root, then the BLAKE3 of everything before it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let data = self.data_chunks() as usize;
        let mut out = Vec::with_capacity(HEADER_LEN + self.runs.len() * 16 + data * 32 + 64);
        let p = &self.provenance;
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&self.geometry.chunk_size.to_le_bytes());
        out.extend_from_slice(&self.geometry.image_size.to_le_bytes());
        out.extend_from_slice(self.guid.as_bytes());
        out.push(p.built_by.code());
        out.extend_from_slice(&[0u8; 7]);
        out.extend_from_slice(p.base.unwrap_or(Uuid::nil()).as_bytes());
        out.extend_from_slice(&p.built_at.to_le_bytes());
        for v in [p.bytes_read, p.chunks_hashed, p.chunks_copied, p.build_us, self.runs.len() as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        debug_assert_eq!(out.len(), HEADER_LEN);
        for r in &self.runs {
            out.extend_from_slice(&r.first.to_le_bytes());
            out.extend_from_slice(&(r.hashes.len() as u64).to_le_bytes());
        }
        for r in &self.runs {
            for h in &r.hashes {
                out.extend_from_slice(h);
            }
        }
        out.extend_from_slice(&self.root());
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes [`Manifest::to_bytes`], refusing anything damaged: the
    /// checksum, every length, the run table's order and bounds, and the
    /// stored root against the one computed.
    pub fn from_bytes(b: &[u8]) -> Result<Manifest, ManifestError> {
        if b.len() < HEADER_LEN + 2 * SUM_LEN {
            return Err(damaged(format!("{} bytes is shorter than any manifest", b.len())));
        }
        if &b[..8] != MAGIC {
            return Err(damaged("not a manifest (bad magic)"));
        }
        let (body, sum) = b.split_at(b.len() - SUM_LEN);
        if blake3::hash(body).as_bytes() != sum {
            return Err(damaged("checksum mismatch"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or_default());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap_or_default());
        let version = u32_at(8);
        if version == 0 {
            return Err(damaged("format version 0"));
        }
        if version > FORMAT {
            return Err(ManifestError::UnknownVersion(version));
        }
        let geometry = Geometry::new(u32_at(12), u64_at(16))?;
        let uuid_at = |o: usize| Uuid::from_bytes(b[o..o + 16].try_into().unwrap_or_default());
        if b[41..48].iter().any(|&x| x != 0) {
            return Err(damaged("reserved bytes are not zero"));
        }
        let built_by = match b[40] {
            1 => BuiltBy::Snapshot,
            2 => BuiltBy::Scrub,
            3 => BuiltBy::Receive,
            other => return Err(damaged(format!("unknown builder {other}"))),
        };
        let base = Some(uuid_at(48)).filter(|u| !u.is_nil());
        let provenance = Provenance {
            built_by,
            base,
            built_at: u64_at(64) as i64,
            bytes_read: u64_at(72),
            chunks_hashed: u64_at(80),
            chunks_copied: u64_at(88),
            build_us: u64_at(96),
        };
        let run_count = u64_at(104);
        let table_end = usize::try_from(run_count)
            .ok()
            .and_then(|n| n.checked_mul(16))
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&e| e <= body.len())
            .ok_or_else(|| damaged("run table longer than the file"))?;
        let chunks = geometry.chunks();
        let mut spans: Vec<(u64, u64)> = Vec::with_capacity((table_end - HEADER_LEN) / 16);
        let mut data = 0u64;
        for o in (HEADER_LEN..table_end).step_by(16) {
            let (first, count) = (u64_at(o), u64_at(o + 8));
            let end = first.checked_add(count).filter(|&e| count > 0 && e <= chunks);
            let Some(end) = end else { return Err(damaged(format!("run at chunk {first} is empty or too long"))) };
            if spans.last().is_some_and(|&(f, c)| f + c >= first) {
                return Err(damaged(format!("run at chunk {first} is out of order")));
            }
            spans.push((first, count));
            data += end - first;
        }
        let hashes_end = usize::try_from(data)
            .ok()
            .and_then(|n| n.checked_mul(32))
            .and_then(|n| n.checked_add(table_end))
            .ok_or_else(|| damaged("too many hashes"))?;
        if hashes_end.checked_add(SUM_LEN) != Some(body.len()) {
            return Err(damaged("length does not match the run table"));
        }
        let mut at = table_end;
        let mut runs = Vec::with_capacity(spans.len());
        for (first, count) in spans {
            let hashes: Vec<Hash> =
                b[at..at + count as usize * 32].chunks_exact(32).map(|c| c.try_into().unwrap_or_default()).collect();
            at += count as usize * 32;
            runs.push(Run { first, hashes });
        }
        let m = Manifest { geometry, guid: uuid_at(24), provenance, runs };
        if m.root() != b[hashes_end..hashes_end + SUM_LEN] {
            return Err(damaged("stored root does not match its entries"));
        }
        Ok(m)
    }
}

/// The chunks of a target image whose entries cannot come from its base's
/// manifest: every chunk a change of `diff` touches, and, when the size
/// changed, the chunk where the smaller image ended mid-chunk (a data
/// entry's hash covers the chunk's length). Sorted, merged ranges of chunk
/// indices.
pub fn dirty_chunks(chunk_size: u32, base_size: u64, diff: &ExtentDiff) -> Vec<Range<u64>> {
    let mut set = ChunkSet::new(chunk_size);
    for ch in &diff.changes {
        set.add_bytes(ch.offset(), ch.length());
    }
    set.resized(base_size, diff.target_size);
    set.into_ranges()
}

/// How a HOLE of `offset .. offset + length` in an image of `image_size`
/// bytes meets chunks: the chunks it covers whole (zero without a read),
/// and the at most two chunks it covers in part (to read: the rest of
/// their bytes is not the hole's).
pub fn hole_chunks(chunk_size: u32, image_size: u64, offset: u64, length: u64) -> (Range<u64>, Vec<Range<u64>>) {
    let c = u64::from(chunk_size.max(1));
    let end = offset.saturating_add(length).min(image_size);
    if offset >= end {
        return (0..0, Vec::new());
    }
    // The image's last chunk may be short: a hole to the image's end covers it whole.
    let full_end = if end == image_size { image_size.div_ceil(c) } else { end / c };
    let full = offset.div_ceil(c)..full_end;
    if full.is_empty() {
        let within: Range<u64> = offset / c..(end - 1) / c + 1;
        return (0..0, std::iter::once(within).collect());
    }
    let mut part = Vec::new();
    if !offset.is_multiple_of(c) {
        part.push(offset / c..offset / c + 1);
    }
    if full_end * c < end {
        part.push(full_end..full_end + 1);
    }
    (full, part)
}

/// A set of chunk indices, kept as sorted, merged ranges: the chunks a
/// change touched. Adding in ascending order (how stream records and
/// extent diffs come) costs O(1) each; any order is correct.
#[derive(Debug, Clone)]
pub struct ChunkSet {
    chunk_size: u64,
    ranges: Vec<Range<u64>>,
    sorted: bool,
}

impl ChunkSet {
    pub fn new(chunk_size: u32) -> ChunkSet {
        ChunkSet { chunk_size: chunk_size.max(1).into(), ranges: Vec::new(), sorted: true }
    }

    /// Marks every chunk that bytes `offset .. offset + length` touch.
    pub fn add_bytes(&mut self, offset: u64, length: u64) {
        if length == 0 {
            return;
        }
        let end = offset.saturating_add(length);
        self.add_chunks(offset / self.chunk_size..end.div_ceil(self.chunk_size));
    }

    /// Marks chunks `r`.
    pub fn add_chunks(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if last.start <= r.start && last.end >= r.start => last.end = last.end.max(r.end),
            Some(last) if last.end < r.start => self.ranges.push(r),
            None => self.ranges.push(r),
            Some(_) => {
                self.ranges.push(r);
                self.sorted = false;
            }
        }
    }

    /// Where an image changed size from `base_size` to `target_size`: the
    /// chunk where the smaller one ended mid-chunk exists in the target
    /// (its last one, or one it goes on past) with another length or new
    /// bytes.
    pub fn resized(&mut self, base_size: u64, target_size: u64) {
        let smaller = base_size.min(target_size);
        if base_size != target_size && !smaller.is_multiple_of(self.chunk_size) {
            let i = smaller / self.chunk_size;
            self.add_chunks(i..i + 1);
        }
    }

    /// The chunks, as sorted, merged ranges of indices.
    pub fn into_ranges(mut self) -> Vec<Range<u64>> {
        if !self.sorted {
            self.ranges.sort_by_key(|r| r.start);
        }
        let mut out: Vec<Range<u64>> = Vec::with_capacity(self.ranges.len());
        for r in self.ranges {
            match out.last_mut() {
                Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::test_blocks::{Blocks, BS};

    fn map_of(blocks: &Blocks) -> ExtentMap {
        crate::extent::test_blocks::map_of(blocks, false)
    }
    use crate::diff::diff;
    use crate::extent::ExtentMap;
    use proptest::prelude::*;

    /// Small chunks keep the model's images small: 4 blocks per chunk.
    const CS: u32 = 16384;

    fn prov() -> Provenance {
        Provenance {
            built_by: BuiltBy::Snapshot,
            base: None,
            built_at: 1_700_000_000,
            bytes_read: 1,
            chunks_hashed: 2,
            chunks_copied: 3,
            build_us: 4,
        }
    }

    /// The bytes of the image. Physical block 0 holds zeroes (written
    /// zeroes must be a zero chunk too).
    fn bytes_of(blocks: &Blocks, size_blocks: usize) -> Vec<u8> {
        let mut out = vec![0u8; size_blocks * BS as usize];
        for (i, b) in blocks.iter().enumerate().take(size_blocks) {
            if let Some((phys, false)) = b {
                let fill = (*phys % 251) as u8;
                out[i * BS as usize..(i + 1) * BS as usize].fill(fill);
                out[i * BS as usize] = fill.wrapping_mul(3);
            }
        }
        out
    }

    fn full(bytes: &[u8], guid: Uuid) -> Manifest {
        let g = Geometry::new(CS, bytes.len() as u64).unwrap();
        Manifest::from_entries(g, guid, prov(), bytes.chunks(CS as usize).map(Entry::of))
    }

    fn blocks_strategy() -> impl Strategy<Value = Blocks> {
        proptest::collection::vec(proptest::option::weighted(0.7, (0u64..30, proptest::bool::weighted(0.15))), 0..40)
    }

    /// Builds the target's manifest as the pool does: from the base's and
    /// the entries of the dirty chunks only.
    fn incremental(base: &Blocks, bsz: usize, target: &Blocks, tsz: usize) -> (Manifest, Vec<Range<u64>>) {
        let guid = Uuid::from_u128(7);
        let bbytes = bytes_of(base, bsz);
        let tbytes = bytes_of(target, tsz);
        let d = diff(&map_of(base), bbytes.len() as u64, &map_of(target), tbytes.len() as u64);
        let dirty = dirty_chunks(CS, bbytes.len() as u64, &d);
        let g = Geometry::new(CS, tbytes.len() as u64).unwrap();
        let hashed: Vec<(u64, Entry)> = dirty
            .iter()
            .flat_map(|r| r.clone())
            .map(|i| {
                let (o, l) = g.chunk(i);
                (i, Entry::of(&tbytes[o as usize..(o + l) as usize]))
            })
            .collect();
        let m = Manifest::derive(Some(&full(&bbytes, guid)), g, &dirty, &hashed, guid, prov()).unwrap();
        (m, dirty)
    }

    proptest! {
        #[test]
        fn derived_equals_built_from_scratch(base in blocks_strategy(), target in blocks_strategy(), extra in 0usize..6) {
            let tsz = target.len() + extra;
            let (m, _) = incremental(&base, base.len(), &target, tsz);
            let want = full(&bytes_of(&target, tsz), Uuid::from_u128(7));
            prop_assert_eq!(m.root(), want.root());
            prop_assert_eq!(m, want);
        }

        #[test]
        fn only_changed_chunks_are_dirty(base in blocks_strategy(), changed in proptest::collection::vec(any::<bool>(), 40)) {
            // Target = base with some blocks rewritten to fresh physical blocks.
            let target: Blocks = base.iter().enumerate().map(|(i, b)| match b {
                Some(_) if changed[i] => Some((1000 + i as u64, false)),
                other => *other,
            }).collect();
            let (_, dirty) = incremental(&base, base.len(), &target, base.len());
            let touched: std::collections::BTreeSet<u64> = target.iter().zip(&base).enumerate()
                .filter(|(_, (t, b))| t != b).map(|(i, _)| i as u64 * BS / u64::from(CS)).collect();
            let dirty: std::collections::BTreeSet<u64> = dirty.iter().flat_map(|r| r.clone()).collect();
            prop_assert_eq!(dirty, touched);
        }

        #[test]
        fn a_derivation_from_nothing_reads_only_data(target in blocks_strategy()) {
            let bytes = bytes_of(&target, target.len());
            let d = diff(&ExtentMap::default(), 0, &map_of(&target), bytes.len() as u64);
            let dirty = dirty_chunks(CS, 0, &d);
            let g = Geometry::new(CS, bytes.len() as u64).unwrap();
            let hashed: Vec<(u64, Entry)> = dirty.iter().flat_map(|r| r.clone())
                .map(|i| { let (o, l) = g.chunk(i); (i, Entry::of(&bytes[o as usize..(o + l) as usize])) }).collect();
            let m = Manifest::derive(None, g, &dirty, &hashed, Uuid::from_u128(7), prov()).unwrap();
            prop_assert_eq!(m, full(&bytes, Uuid::from_u128(7)));
            for i in dirty.iter().flat_map(|r| r.clone()) {
                let (o, l) = g.chunk(i);
                let mapped = target.iter().enumerate().any(|(b, x)| {
                    matches!(x, Some((_, false))) && (b as u64 * BS) >= o && (b as u64 * BS) < o + l
                });
                prop_assert!(mapped, "chunk {} has no written block but was read", i);
            }
        }

        #[test]
        fn round_trip_and_any_flip_is_refused(target in blocks_strategy(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let m = full(&bytes_of(&target, target.len()), Uuid::from_u128(0xabc));
            let bytes = m.to_bytes();
            prop_assert_eq!(Manifest::from_bytes(&bytes), Ok(m));
            let mut bad = bytes.clone();
            let i = pos.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(Manifest::from_bytes(&bad).is_err(), "flip at {} accepted", i);
            prop_assert!(Manifest::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        }

        #[test]
        fn a_chunk_set_holds_exactly_the_touched_chunks(
            writes in proptest::collection::vec((0u64..200_000, 0u64..70_000), 0..30),
            sizes in (0u64..300_000, 0u64..300_000),
        ) {
            let mut set = ChunkSet::new(CS);
            let mut want = std::collections::BTreeSet::new();
            for &(o, l) in &writes {
                set.add_bytes(o, l);
                want.extend((o..o + l).map(|b| b / u64::from(CS)));
            }
            let (bsz, tsz) = sizes;
            set.resized(bsz, tsz);
            if bsz != tsz && bsz.min(tsz) % u64::from(CS) != 0 {
                want.insert(bsz.min(tsz) / u64::from(CS));
            }
            let ranges = set.into_ranges();
            prop_assert!(ranges.windows(2).all(|w| w[0].end < w[1].start), "not sorted and merged: {:?}", ranges);
            let got: std::collections::BTreeSet<u64> = ranges.iter().flat_map(|r| r.clone()).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn a_hole_splits_into_the_chunks_it_covers_whole_and_in_part(size in 1u64..2_000_000, o in 0u64..2_000_000, l in 0u64..2_000_000) {
            let c = u64::from(CS);
            let (full, part) = hole_chunks(CS, size, o, l);
            let end = (o + l).min(size);
            for i in 0..size.div_ceil(c) {
                let (cs, ce) = (i * c, ((i + 1) * c).min(size));
                let covered = o.max(cs) < end.min(ce);
                let whole = o <= cs && ce <= end;
                prop_assert_eq!(full.contains(&i), covered && whole, "chunk {} full", i);
                prop_assert_eq!(part.iter().any(|r| r.contains(&i)), covered && !whole, "chunk {} part", i);
            }
        }

        #[test]
        fn zeroed_chunks_lose_their_base_entries(base in blocks_strategy(), from in 0u64..12, len in 0u64..12) {
            // The target is the base with chunks from..from+len zeroed whole.
            let bytes = bytes_of(&base, base.len());
            let g = Geometry::new(CS, bytes.len() as u64).unwrap();
            let zeroed: Vec<Range<u64>> = std::iter::once(from.min(g.chunks())..(from + len).min(g.chunks())).collect();
            let mut target = bytes.clone();
            for i in zeroed[0].clone() {
                let (o, l) = g.chunk(i);
                target[o as usize..(o + l) as usize].fill(0);
            }
            let guid = Uuid::from_u128(7);
            let m = Manifest::derive_zeroed(Some(&full(&bytes, guid)), g, &[], &[], &zeroed, guid, prov()).unwrap();
            prop_assert_eq!(m, full(&target, guid));
        }

        #[test]
        fn hashes_round_trip_through_hex(h in any::<[u8; 32]>()) {
            prop_assert_eq!(parse_hash(&crate::chunk_read::hex(&h)), Some(h));
            prop_assert_eq!(parse_hash(&crate::chunk_read::hex(&h).to_uppercase()).is_some(), h.iter().all(|b| b & 0xf0 < 0xa0 && b & 0xf < 0xa));
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::from_bytes(&bytes);
        }
    }

    #[test]
    fn entries_depend_on_content_only() {
        assert_eq!(Entry::of(&[0u8; 4096]), Entry::Zero);
        assert_eq!(Entry::of(&[]), Entry::Zero);
        let mut b = vec![0u8; 4099];
        b[4098] = 1;
        assert_eq!(Entry::of(&b), Entry::Data(*blake3::hash(&b).as_bytes()));
        // A written-zero chunk and a hole give the same manifest and root.
        let g = Geometry::new(CS, 3 * u64::from(CS)).unwrap();
        let a = Manifest::from_entries(g, Uuid::nil(), prov(), [Entry::Zero, Entry::of(&b), Entry::Zero]);
        let z = Manifest::from_entries(g, Uuid::nil(), prov(), [Entry::of(&[0; 16384]), Entry::of(&b), Entry::Zero]);
        assert_eq!(a.root(), z.root());
        assert_eq!(a.data_chunks(), 1);
        assert_eq!(a.entry(1), Entry::of(&b));
        assert_eq!(a.entry(2), Entry::Zero);
        assert_eq!(a.entry(99), Entry::Zero);
    }

    #[test]
    fn geometry_refuses_odd_chunks_and_cuts_the_last_one_short() {
        assert!(Geometry::new(3000, 1).is_err());
        assert!(Geometry::new(2048, 1).is_err());
        assert!(Geometry::new(32 << 20, 1).is_err());
        let g = Geometry::new(65536, 65536 * 2 + 4096).unwrap();
        assert_eq!(g.chunks(), 3);
        assert_eq!(g.chunk(2), (131072, 4096));
        assert_eq!(g.chunk(3), (135168, 0));
        assert_eq!(Geometry::new(65536, 0).unwrap().chunks(), 0);
    }

    #[test]
    fn a_huge_sparse_image_costs_its_data_only() {
        let g = Geometry::new(CHUNK_SIZE, 1 << 62).unwrap();
        let mut b = vec![0u8; 100];
        b[0] = 9;
        let hashed = vec![(5u64, Entry::of(&b))];
        let m = Manifest::derive(None, g, std::slice::from_ref(&(5..6)), &hashed, Uuid::nil(), prov()).unwrap();
        let bytes = m.to_bytes();
        assert!(bytes.len() < 400, "{} bytes", bytes.len());
        assert_eq!(Manifest::from_bytes(&bytes).unwrap().root(), m.root());
    }

    #[test]
    fn derive_refuses_what_does_not_add_up() {
        let g = Geometry::new(CS, 4 * u64::from(CS)).unwrap();
        let z = (0u64, Entry::Zero);
        assert!(Manifest::derive(None, g, std::slice::from_ref(&(0..2)), &[z], Uuid::nil(), prov()).is_err());
        assert!(
            Manifest::derive(None, g, std::slice::from_ref(&(0..1)), &[(1, Entry::Zero)], Uuid::nil(), prov()).is_err()
        );
        let other = Manifest::from_entries(Geometry::new(65536, 0).unwrap(), Uuid::nil(), prov(), []);
        assert!(Manifest::derive(Some(&other), g, &[], &[], Uuid::nil(), prov()).is_err());
        // A base whose last data chunk was short, not marked dirty.
        let short =
            Manifest::from_entries(Geometry::new(CS, 4096).unwrap(), Uuid::nil(), prov(), [Entry::Data([1; 32])]);
        assert!(Manifest::derive(Some(&short), g, &[], &[], Uuid::nil(), prov()).is_err());
    }
}
