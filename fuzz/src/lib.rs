//! The bodies of the fuzz targets in `fuzz_targets/`, one function per target.
//!
//! They live here rather than in the targets so that
//! `crates/subvol-core/tests/fuzz_regressions.rs` can include this file (with
//! `#[path]`) and run every seed of `fuzz/corpus/<target>/` through exactly the
//! same calls and checks under a plain `cargo test`. So this file may only use
//! what subvol-core's own integration tests can: `subvol_core`, `blake3`,
//! `serde_json`, `uuid` and std.
//!
//! Each function must never panic for any input: a panic is a finding.
//! Besides "no panic", the functions check what a caller relies on (a decoded
//! value survives its own encoder, a decoded stream stays inside its declared
//! size, ...), with `assert!`.

use std::io::{self, Read};
use subvol_core::encryption::EncryptionRecord;
use subvol_core::extent::{Extent, ExtentMap};
use subvol_core::manifest::Manifest;
use subvol_core::meta::{self, PoolMeta, SubvolumeMeta};
use subvol_core::retention::KeepPolicy;
use subvol_core::scrub::{ScrubProgress, ScrubResults};
use subvol_core::stream::{self, Record, SnapshotRef, StreamHeader, StreamReader, StreamWriter, Totals};
use subvol_core::sync_target::SyncTarget;
use subvol_core::token::ResumeToken;
use uuid::Uuid;

/// The largest DATA record a reader may return.
const MAX_RECORD: usize = stream::MAX_DATA_RECORD as usize;
/// Size of a stream's fixed header, a record header and a checksum.
const FIXED: usize = 20;
const RECORD_HEADER: usize = 24;
const SUM: usize = 32;

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// Reads a whole stream, checking what the receiver relies on for every
/// record it is handed. Returns the records read and whether the stream
/// ended with a clean END (`Ok(None)` after it).
pub fn read_stream<R: Read>(input: R) -> (Vec<Record>, Result<(), String>) {
    let mut r = match StreamReader::new(input) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Err(e.to_string())),
    };
    let h = r.header.clone();
    assert!(h.block_size > 0, "accepted a zero block size");
    assert!(h.virtual_size % u64::from(h.block_size) == 0, "accepted a size that is not whole blocks");
    assert!(h.resume_offset <= h.virtual_size, "accepted a resume offset beyond the end");
    assert_eq!(r.position(), h.resume_offset);
    check_header_validation(&h);
    let mut records = Vec::new();
    let mut next = h.resume_offset;
    let mut totals = Totals::default();
    let mut ended = false;
    loop {
        match r.next_record() {
            Ok(None) => {
                assert!(ended, "Ok(None) before END");
                return (records, Ok(()));
            }
            Ok(Some(rec)) => {
                assert!(!ended, "a record after END");
                match &rec {
                    Record::Data { offset, data } => {
                        assert!(!data.is_empty() && data.len() <= MAX_RECORD, "DATA of {} bytes", data.len());
                        let end = offset.checked_add(data.len() as u64).expect("DATA range overflows");
                        assert!(*offset >= next && end <= h.virtual_size, "DATA {offset}+{} out of place", data.len());
                        next = end;
                        totals.data_bytes += data.len() as u64;
                        totals.records += 1;
                    }
                    Record::Hole { offset, length } => {
                        let end = offset.checked_add(*length).expect("HOLE range overflows");
                        assert!(*length > 0 && *offset >= next && end <= h.virtual_size, "HOLE {offset}+{length}");
                        next = end;
                        totals.hole_bytes += length;
                        totals.records += 1;
                    }
                    Record::End(t) => {
                        assert_eq!(*t, totals, "END totals differ from the records handed out");
                        ended = true;
                    }
                }
                assert_eq!(r.position(), next, "position() is not the end of the last record");
                records.push(rec);
            }
            Err(e) => {
                assert!(!ended, "an error after END");
                return (records, Err(e.to_string()));
            }
        }
    }
}

/// What the receiver relies on from `StreamHeader::validate`: it never
/// panics, and a header it accepts holds only names that are safe file
/// names, strings without control characters, and format 1's geometry.
pub fn check_header_validation(h: &subvol_core::stream::StreamHeader) {
    let Ok(()) = h.validate() else { return };
    assert!(subvol_core::name::validate_part(&h.source_name).is_ok(), "accepted source_name {:?}", h.source_name);
    assert!(subvol_core::ObjectName::parse_snapshot(&h.snapshot.name).is_ok(), "accepted snapshot name");
    assert!(h.tags.len() <= subvol_core::text::MAX_TAGS, "accepted {} tags", h.tags.len());
    for s in h.tags.iter().chain([&h.source_name, &h.created, &h.fs, &h.snapshot.name]) {
        assert!(!s.chars().any(subvol_core::text::is_unsafe), "accepted a control character in {s:?}");
        assert!(s.len() <= 128, "accepted a {}-byte string", s.len());
    }
    assert_eq!(h.block_size, subvol_core::stream::BLOCK_SIZE, "accepted block size {}", h.block_size);
    assert!(
        h.virtual_size > 0 && h.virtual_size <= subvol_core::stream::MAX_VIRTUAL_SIZE,
        "accepted size {}",
        h.virtual_size
    );
    assert!(h.resume_offset.is_multiple_of(u64::from(h.block_size)), "accepted resume offset {}", h.resume_offset);
}

/// Target `stream_decode`: raw bytes into `StreamReader`.
pub fn stream_decode(data: &[u8]) {
    let (records, _) = read_stream(data);
    // Every record costs at least a record header and a checksum, so what is
    // handed out can never be much larger than the input.
    let handed_out: usize = records
        .iter()
        .map(|r| match r {
            Record::Data { data, .. } => data.len(),
            _ => 0,
        })
        .sum();
    assert!(records.len() <= data.len() / (RECORD_HEADER + SUM) + 1);
    // zstd may expand, but a record never exceeds MAX_RECORD.
    assert!(handed_out <= records.len() * MAX_RECORD);
}

/// Turns fuzzer bytes into a stream whose checksums are all right, so that
/// `stream_fixup` reaches the checks behind them (JSON header, record
/// ranges, zstd, END totals). Layout of `data`:
///
/// `ctl: u8`, then a stream with every 32-byte checksum left out: the 20-byte
/// fixed header (its magic and major version are forced), the header JSON,
/// then records (24-byte head, payload). Lengths that run past the input are
/// cut to what is there.
///
/// `ctl` bit 0: fill in END's whole-stream hash; bit 1: fill in END's totals
/// (as the sum of all DATA/HOLE lengths); bit 2: keep a trailing partial
/// record (to reach the truncation paths).
pub fn stream_fix(data: &[u8]) -> Vec<u8> {
    let Some((&ctl, rest)) = data.split_first() else { return Vec::new() };
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut fixed = [0u8; FIXED];
    let n = rest.len().min(FIXED);
    fixed[..n].copy_from_slice(&rest[..n]);
    let mut rest = &rest[n..];
    fixed[..8].copy_from_slice(stream::MAGIC);
    fixed[8..10].copy_from_slice(&stream::MAJOR.to_le_bytes());
    let declared = u32::from_le_bytes([fixed[16], fixed[17], fixed[18], fixed[19]]) as usize;
    let json_len = declared.min(rest.len()).min(stream::MAX_HEADER_JSON);
    fixed[16..20].copy_from_slice(&(json_len as u32).to_le_bytes());
    out.extend_from_slice(&fixed);
    out.extend_from_slice(&rest[..json_len]);
    rest = &rest[json_len..];
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    let mut whole = blake3::Hasher::new();
    whole.update(&out);
    let (mut data_bytes, mut hole_bytes, mut count) = (0u64, 0u64, 0u64);
    while rest.len() >= RECORD_HEADER {
        let mut head = [0u8; RECORD_HEADER];
        head.copy_from_slice(&rest[..RECORD_HEADER]);
        rest = &rest[RECORD_HEADER..];
        let declared = u32::from_le_bytes([head[20], head[21], head[22], head[23]]) as usize;
        let len = declared.min(rest.len());
        head[20..24].copy_from_slice(&(len as u32).to_le_bytes());
        let mut payload = rest[..len].to_vec();
        rest = &rest[len..];
        let length = u64::from_le_bytes(head[12..20].try_into().unwrap_or_default());
        if head[0] == 3 && payload.len() == 24 + SUM {
            if ctl & 2 != 0 {
                payload[0..8].copy_from_slice(&data_bytes.to_le_bytes());
                payload[8..16].copy_from_slice(&hole_bytes.to_le_bytes());
                payload[16..24].copy_from_slice(&count.to_le_bytes());
            }
            if ctl & 1 != 0 {
                payload[24..].copy_from_slice(whole.finalize().as_bytes());
            }
        }
        let mut h = blake3::Hasher::new();
        h.update(&head);
        h.update(&payload);
        let sum = h.finalize();
        for part in [&head[..], &payload[..], sum.as_bytes()] {
            out.extend_from_slice(part);
            if head[0] != 3 {
                whole.update(part);
            }
        }
        match head[0] {
            1 => data_bytes = data_bytes.wrapping_add(length),
            2 => hole_bytes = hole_bytes.wrapping_add(length),
            _ => {}
        }
        if head[0] != 3 {
            count += 1;
        }
    }
    if ctl & 4 != 0 {
        out.extend_from_slice(rest);
    }
    out
}

/// The inverse of [`stream_fix`] for a well-formed stream: drops every
/// checksum (used to turn sample streams into `stream_fixup` seeds).
pub fn stream_unfix(stream: &[u8], ctl: u8) -> Vec<u8> {
    let mut out = vec![ctl];
    let json_len = u32::from_le_bytes(stream[16..20].try_into().unwrap_or_default()) as usize;
    out.extend_from_slice(&stream[..FIXED + json_len]);
    let mut rest = &stream[FIXED + json_len + SUM..];
    while rest.len() >= RECORD_HEADER + SUM {
        let len = u32::from_le_bytes(rest[20..24].try_into().unwrap_or_default()) as usize;
        out.extend_from_slice(&rest[..RECORD_HEADER + len]);
        rest = &rest[RECORD_HEADER + len + SUM..];
    }
    out
}

/// Target `stream_fixup`: fuzzer bytes with checksums filled in, decoded.
pub fn stream_fixup(data: &[u8]) {
    let fixed = stream_fix(data);
    stream_decode(&fixed);
}

/// Reads bytes to a caller in small pieces and sometimes answers
/// `Interrupted`, as a pipe or socket may: a correct reader must give the
/// same result as with a slice.
pub struct AwkwardReader<'a> {
    data: &'a [u8],
    step: usize,
    interrupt_every: u32,
    calls: u32,
}

impl<'a> AwkwardReader<'a> {
    pub fn new(data: &'a [u8], step: usize, interrupt_every: u32) -> Self {
        AwkwardReader { data, step: step.max(1), interrupt_every, calls: 0 }
    }
}

impl Read for AwkwardReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.interrupt_every != 0 && self.calls.is_multiple_of(self.interrupt_every) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "EINTR"));
        }
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// `Interrupted` answers from the reader in `stream_roundtrip`. Off: the
/// reader does not retry an `Interrupted` read after END (see
/// fuzz/README.md, finding 2); turn on once that is fixed.
pub const INJECT_INTERRUPTED: bool = true;

/// Fuzzer bytes as a source of numbers; zeroes once used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// Most data one `stream_roundtrip` input may write (a little over three
/// records' worth, so splitting at `MAX_DATA_RECORD` is covered).
const ROUNDTRIP_DATA_CAP: u64 = 3 * stream::MAX_DATA_RECORD + 4096;
const ZSTD_LEVELS: [i32; 8] = [-5, -1, 0, 1, 2, 3, 5, 9];

/// Target `stream_roundtrip`: a stream written by `StreamWriter` from
/// fuzzer-chosen operations must read back, record for record.
///
/// Layout: `ctl: u8` (bit 0 zstd, bits 1-3 zstd level, bits 4-5 block size,
/// bit 6 resume offset, bit 7 incremental), `blocks: u16`, [`resume: u32`],
/// `name_len: u8`, name bytes, `reader: u8`, then operations of 5 bytes:
/// `op: u8` (bit 0 hole, bit 1 gap in blocks, bit 2 length × 64, bits 3-4
/// data pattern, bit 7 an invalid operation that must be refused),
/// `gap: u16`, `len: u16`.
pub fn stream_roundtrip(data: &[u8]) {
    let mut b = Bytes(data);
    let ctl = b.u8();
    let level = (ctl & 1 != 0).then(|| ZSTD_LEVELS[usize::from((ctl >> 1) & 7)]);
    let block_size: u32 = [1, 512, 4096, 65536][usize::from((ctl >> 4) & 3)];
    let virtual_size = u64::from(block_size) * (u64::from(b.u16()) + 1);
    let resume_offset = if ctl & 0x40 != 0 { u64::from(b.u32()) % (virtual_size + 1) } else { 0 };
    let name_len = usize::from(b.u8() % 48);
    let name = String::from_utf8_lossy(b.take(name_len)).into_owned();
    let reader_mode = b.u8();
    let header = StreamHeader {
        stream_guid: Uuid::from_u128(0x5eed_0001),
        source_name: name.clone(),
        source_guid: Uuid::from_u128(u128::from(ctl) << 64 | 2),
        snapshot: SnapshotRef { name: format!("{name}@snap"), guid: Uuid::from_u128(3) },
        created: "2026-01-01T00:00:00Z".into(),
        fs: "raw".into(),
        tags: vec![name.clone(), String::new()],
        base: (ctl & 0x80 != 0).then(|| SnapshotRef { name: format!("{name}@base"), guid: Uuid::from_u128(4) }),
        virtual_size,
        block_size,
        resume_offset,
        // A root travels unchanged (with odd name lengths).
        manifest: (name_len % 2 == 1)
            .then(|| subvol_core::stream::ContentRoot { chunk_size: 256 << 10, root: format!("{:064x}", name.len()) }),
    };
    let mut w = StreamWriter::new(Vec::new(), header.clone(), level).expect("writer refused a valid header");
    let mut expected: Vec<Record> = Vec::new();
    let mut totals = Totals::default();
    let mut cursor = resume_offset;
    let mut data_total = 0u64;
    let mut ops = 0;
    while !b.is_empty() && ops < 64 {
        ops += 1;
        let op = b.u8();
        let gap = u64::from(b.u16()) * if op & 2 != 0 { u64::from(block_size) } else { 1 };
        let len = (u64::from(b.u16()) + 1) * if op & 4 != 0 { 64 } else { 1 };
        if op & 0x80 != 0 {
            // An invalid operation: refused before anything is written.
            let before = w.bytes_written;
            let r = match op & 0x60 {
                0x00 if cursor > 0 => w.hole(cursor - 1 - gap.min(cursor - 1), len),
                0x20 => w.hole(cursor.max(1) + gap, 0),
                _ => w.data(virtual_size + gap, &[1]),
            };
            assert!(r.is_err(), "writer accepted invalid op {op:#x} at {cursor}");
            assert_eq!(w.bytes_written, before, "a refused op wrote bytes");
            continue;
        }
        let Some(offset) = cursor.checked_add(gap).filter(|&o| o < virtual_size) else { break };
        let mut len = len.min(virtual_size - offset);
        if op & 1 != 0 {
            w.hole(offset, len).expect("writer refused a valid hole");
            expected.push(Record::Hole { offset, length: len });
            totals.hole_bytes += len;
            totals.records += 1;
        } else {
            len = len.min(ROUNDTRIP_DATA_CAP - data_total);
            if len == 0 {
                break;
            }
            data_total += len;
            let bytes = pattern((op >> 3) & 3, op, len as usize);
            w.data(offset, &bytes).expect("writer refused valid data");
            for (i, chunk) in bytes.chunks(MAX_RECORD).enumerate() {
                expected.push(Record::Data { offset: offset + (i * MAX_RECORD) as u64, data: chunk.to_vec() });
                totals.records += 1;
            }
            totals.data_bytes += len;
        }
        cursor = offset + len;
    }
    let (bytes, wrote, size) = w.finish().expect("finish failed");
    assert_eq!(wrote, totals);
    assert_eq!(size, bytes.len() as u64);
    expected.push(Record::End(totals));

    let check = |records: Vec<Record>, result: Result<(), String>, how: &str| {
        assert_eq!(result, Ok(()), "{how}: the reader refused a stream the writer made");
        assert_eq!(records.len(), expected.len(), "{how}: record count");
        for (i, (got, want)) in records.iter().zip(&expected).enumerate() {
            assert!(got == want, "{how}: record {i} differs");
        }
    };
    let mut r = StreamReader::new(&bytes[..]).expect("header refused");
    assert_eq!(r.header, header);
    // Block sizes other than 4096 and arbitrary names decode, and are then
    // refused by validation (what `receive` does before storing anything).
    check_header_validation(&r.header);
    if block_size != subvol_core::stream::BLOCK_SIZE || subvol_core::name::validate_part(&name).is_err() {
        assert!(r.header.validate().is_err(), "validated block size {block_size} / name {name:?}");
    }
    let mut records = Vec::new();
    while let Some(rec) = r.next_record().expect("record refused") {
        records.push(rec);
    }
    assert_eq!(r.bytes_read, bytes.len() as u64);
    assert_eq!(r.position(), cursor);
    check(records, Ok(()), "slice");
    if reader_mode != 0 {
        let step = usize::from(reader_mode & 0x1f) * 7 + 1;
        // Every second to eighth call (never every call: read_exact would
        // rightly retry forever).
        let every = if INJECT_INTERRUPTED && reader_mode >> 5 != 0 { u32::from(reader_mode >> 5) + 1 } else { 0 };
        let (records, result) = read_stream(AwkwardReader::new(&bytes, step, every));
        check(records, result, "awkward reader");
    }
}

/// Data of `len` bytes: constant (compresses), counting, pseudo-random
/// (does not compress), or mixed.
fn pattern(kind: u8, seed: u8, len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    (0..len)
        .map(|i| match kind {
            0 => seed,
            1 => (i % 251) as u8,
            2 => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
            _ => {
                if (i / 4096) % 2 == 0 {
                    0
                } else {
                    (i as u8).wrapping_mul(31) ^ seed
                }
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Metadata records
// ---------------------------------------------------------------------------

/// A record of `kind`/`version` around `json`, with the right checksum.
pub fn meta_frame(kind: &str, version: u32, json: &[u8]) -> Vec<u8> {
    let mut out = format!("subvol-{kind}/{version} blake3={}\n", blake3::hash(json).to_hex()).into_bytes();
    out.extend_from_slice(json);
    out.push(b'\n');
    out
}

fn meta_check(record: &[u8]) {
    if let Ok(m) = SubvolumeMeta::decode(record) {
        let again = SubvolumeMeta::decode(&m.encode());
        assert!(again.as_ref() == Ok(&m), "SubvolumeMeta does not survive encode: {m:?} -> {again:?}");
    }
    if let Ok(m) = PoolMeta::decode(record) {
        let again = PoolMeta::decode(&m.encode());
        assert!(again.as_ref() == Ok(&m), "PoolMeta does not survive encode: {m:?} -> {again:?}");
    }
    if let Ok(t) = SyncTarget::decode(record, None) {
        let again = SyncTarget::decode(&t.encode(), Some(&t.file_name()));
        assert!(again.as_ref() == Ok(&t), "SyncTarget does not survive encode: {t:?} -> {again:?}");
    }
    if let Ok(r) = EncryptionRecord::decode(record) {
        let again = EncryptionRecord::decode(&r.encode());
        assert!(again.as_ref() == Ok(&r), "EncryptionRecord does not survive encode: {r:?} -> {again:?}");
    }
    if let Ok(p) = ScrubProgress::decode(record) {
        let again = ScrubProgress::decode(&p.encode());
        assert!(again.as_ref() == Ok(&p), "ScrubProgress does not survive encode: {p:?} -> {again:?}");
    }
    if let Ok(r) = ScrubResults::decode(record) {
        let again = ScrubResults::decode(&r.encode());
        assert!(again.as_ref() == Ok(&r), "ScrubResults does not survive encode: {r:?} -> {again:?}");
    }
    if let Ok(v) = meta::decode::<serde_json::Value>("intent", 1, record) {
        // Floats need not round-trip exactly through serde_json; everything
        // else must decode again.
        assert!(meta::decode::<serde_json::Value>("intent", 1, &meta::encode("intent", 1, &v)).is_ok());
    }
}

/// Target `meta_decode`: the input as a whole record, and as the JSON body of
/// a record of each type with a valid checksum (so the JSON is reached).
pub fn meta_decode(data: &[u8]) {
    meta_check(data);
    if data.len() <= meta::MAX_META_BYTES {
        for kind in ["object", "pool", "intent", "sync-target", "encryption", "scrub-progress", "scrub-results"] {
            meta_check(&meta_frame(kind, 1, data));
        }
    }
}

// ---------------------------------------------------------------------------
// Extent maps
// ---------------------------------------------------------------------------

const MAP_MAGIC: &[u8; 8] = b"SVEXTMP1";

/// `ExtentMap::from_bytes` accepts extents that end past `u64::MAX`, whose
/// byte counts then overflow (fuzz/README.md, finding 1). While that is open
/// the target skips such maps so it can look for other bugs; set to false
/// with the fix.
pub const TOLERATE_EXTENT_END_OVERFLOW: bool = false;

fn with_hash(mut body: Vec<u8>) -> Vec<u8> {
    let sum = blake3::hash(&body);
    body.extend_from_slice(sum.as_bytes());
    body
}

/// Uses a decoded map the way the pool does (space accounting, diffs).
fn extent_check(bytes: &[u8]) {
    let Some(m) = ExtentMap::from_bytes(bytes) else { return };
    if TOLERATE_EXTENT_END_OVERFLOW && m.extents.iter().any(|e| e.logical.checked_add(e.length).is_none()) {
        return;
    }
    for e in &m.extents {
        assert!(e.length > 0, "zero-length extent kept");
    }
    for w in m.extents.windows(2) {
        assert!(w[0].logical <= w[1].logical && w[0].end() <= w[1].logical, "unsorted or overlapping extents");
    }
    assert_eq!(ExtentMap::from_bytes(&m.to_bytes()).as_ref(), Some(&m), "map does not survive to_bytes");
    let mapped = m.mapped_bytes();
    let shared = m.shared_bytes();
    assert!(shared <= mapped);
    let ranges = m.physical_ranges();
    let exclusive = subvol_core::space::exclusive_bytes(&[ranges.clone(), ranges]);
    assert_eq!(exclusive.len(), 2);
    let size = m.extents.last().map(Extent::end).unwrap_or(0);
    let empty = ExtentMap::default();
    let d = subvol_core::diff::diff(&m, size, &m, size);
    let _ = (d.data_bytes(), d.hole_bytes());
    let d = subvol_core::diff::diff(&empty, 0, &m, size);
    let _ = (d.data_bytes(), d.hole_bytes());
    let d = subvol_core::diff::diff(&m, size, &empty, size / 2);
    let _ = (d.data_bytes(), d.hole_bytes());
}

/// Target `extent_map`: the input as a cache file; as a body after the magic
/// with a valid checksum; and as extents with the right count and checksum.
pub fn extent_map(data: &[u8]) {
    extent_check(data);
    let mut body = MAP_MAGIC.to_vec();
    body.extend_from_slice(data);
    extent_check(&with_hash(body));
    let n = data.len() / 28;
    let mut body = MAP_MAGIC.to_vec();
    body.extend_from_slice(&(n as u64).to_le_bytes());
    body.extend_from_slice(&data[..n * 28]);
    extent_check(&with_hash(body));
}

// ---------------------------------------------------------------------------
// Manifests
// ---------------------------------------------------------------------------

fn manifest_check(bytes: &[u8]) {
    if let Ok(m) = Manifest::from_bytes(bytes) {
        // One encoding per manifest: what decodes is what it encodes to.
        assert!(m.to_bytes() == bytes, "a decoded manifest encodes differently: {m:?}");
        let g = m.geometry();
        assert!(m.data_chunks() <= g.chunks(), "more data chunks than chunks: {m:?}");
        assert!(m.entry(g.chunks()) == subvol_core::manifest::Entry::Zero);
    }
}

/// Target `manifest_decode`: the input as a manifest file, and as the body
/// of one with a valid checksum (so the header, run table and root checks
/// are reached): never panics; what decodes re-encodes to the same bytes.
pub fn manifest_decode(data: &[u8]) {
    manifest_check(data);
    let mut body = b"SVMANFST".to_vec();
    body.extend_from_slice(data);
    manifest_check(&with_hash(body));
}

// ---------------------------------------------------------------------------
// Text parsers
// ---------------------------------------------------------------------------

/// Target `resume_token`: any text; a parsed token prints as one that parses
/// to the same token. Inputs of at least 40 bytes also make a token from
/// their first 40 bytes, then splice the rest into its text.
pub fn resume_token(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(t) = s.parse::<ResumeToken>() {
        assert_eq!(t.to_string().parse::<ResumeToken>(), Ok(t));
    }
    if data.len() >= 40 {
        let target = Uuid::from_bytes(data[0..16].try_into().unwrap_or_default());
        let base = Uuid::from_bytes(data[16..32].try_into().unwrap_or_default());
        let offset = u64::from_le_bytes(data[32..40].try_into().unwrap_or_default());
        let base = (data[16] & 1 != 0).then_some(base);
        let t = ResumeToken { target, base, offset };
        let text = t.to_string();
        assert_eq!(text.parse::<ResumeToken>(), Ok(t));
        // Splice: the rest of the input replaces a part of the text.
        let rest = &data[40..];
        if let Some((&at, patch)) = rest.split_first() {
            let mut bytes = text.into_bytes();
            let at = usize::from(at) % (bytes.len() + 1);
            let end = (at + patch.len()).min(bytes.len());
            bytes.splice(at..end, patch.iter().copied());
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(u) = s.parse::<ResumeToken>() {
                assert_eq!(u.to_string().parse::<ResumeToken>(), Ok(u));
            }
        }
    }
}

/// Target `mountinfo`: a mount table, and each line's options as `-o` text.
pub fn mountinfo(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let entries = subvol_core::mountinfo::parse(&s);
    assert!(entries.len() <= s.lines().count());
    for e in &entries {
        assert!(!e.fstype.contains(' ') && !e.options.contains(' '));
        let _ = e.is_read_only();
        let _ = subvol_core::mountopts::parse_mount_options(&e.options, false);
        let _ = subvol_core::mountopts::parse_mount_options(&e.super_options, false);
    }
    let _ = subvol_core::mountopts::parse_mount_options(&s, true);
}

/// `format_size` rounds sizes of 15.95E and more up to "16.0E", which
/// `parse_size` refuses (fuzz/README.md, finding 4). While that is open the
/// target skips that text; set to false with the fix.
pub const TOLERATE_FORMAT_SIZE_16E: bool = false;

/// Target `size`: a size given on the command line.
pub fn size(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(n) = subvol_core::size::parse_size(&s) {
        assert!(n > 0);
        let text = subvol_core::size::format_size(n);
        if TOLERATE_FORMAT_SIZE_16E && text == "16.0E" {
            return;
        }
        let back = subvol_core::size::parse_size(&text).expect("format_size output does not parse");
        if !text.contains('.') {
            assert_eq!(back, n, "{text}");
        }
    }
}

/// Target `name`: a subvolume or snapshot name.
pub fn name(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(n) = subvol_core::name::ObjectName::parse(&s) {
        assert_eq!(n.to_string(), s, "a name does not print as given");
        assert!(!n.subvolume.is_empty() && n.subvolume.len() <= subvol_core::name::MAX_NAME_LEN);
        for part in std::iter::once(&n.subvolume).chain(n.snapshot.as_ref()) {
            assert!(part != "." && part != ".." && !part.contains('/') && !part.contains('\0'));
            assert!(!part.starts_with('.') && !part.starts_with('-'));
        }
    }
    let _ = subvol_core::name::ObjectName::parse_subvolume(&s);
    let _ = subvol_core::name::ObjectName::parse_snapshot(&s);
}

/// Target `keep_policy`: a `--keep` retention policy.
pub fn keep_policy(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(p) = s.parse::<KeepPolicy>() {
        assert!(!p.is_empty());
        assert_eq!(p.to_string().parse::<KeepPolicy>(), Ok(p));
    }
}
