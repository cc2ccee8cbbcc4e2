//! The replication stream, format v1 (docs/STREAM.md is its public
//! description). A header naming what is sent, then DATA and HOLE records in
//! ascending offset order, then END with totals and a hash of the whole
//! stream. Every part carries a BLAKE3 checksum and every length is bounded,
//! so a reader needs O(1) memory and rejects any damaged or hostile stream
//! before it can write outside the declared size.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use uuid::Uuid;

pub const MAGIC: &[u8; 8] = b"SVSTREAM";
pub const MAJOR: u16 = 1;
/// 1.1 added the optional header field `manifest` (the content's root).
pub const MINOR: u16 = 1;
/// Feature flags 0..16 are optional (a reader may ignore unknown ones);
/// 16..32 are mandatory (a reader must refuse unknown ones).
pub const FLAG_ZSTD: u32 = 1 << 16;
const KNOWN_MANDATORY: u32 = FLAG_ZSTD;
const MANDATORY_MASK: u32 = 0xffff_0000;
/// Largest header JSON.
pub const MAX_HEADER_JSON: usize = 64 * 1024;
/// Largest logical length of one DATA record.
pub const MAX_DATA_RECORD: u64 = 1 << 20;
/// Largest stored payload (compressed data may be a little larger).
pub const MAX_PAYLOAD: usize = (MAX_DATA_RECORD as usize) + (MAX_DATA_RECORD as usize >> 7) + 4096;

/// The block size of format 1: a fixed value.
pub const BLOCK_SIZE: u32 = 4096;
/// Largest image a stream may declare (the largest `create` makes).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 62;
/// Longest `created` text (RFC 3339 needs about 35 bytes).
const MAX_CREATED_LEN: usize = 64;

const KIND_DATA: u8 = 1;
const KIND_HOLE: u8 = 2;
const KIND_END: u8 = 3;
const RFLAG_ZSTD: u8 = 1;
const RECORD_HEADER: usize = 24;
const SUM: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(
        "not a subvol stream (bad magic); was it encrypted (use --identity/--passphrase-file) or is it another format?"
    )]
    BadMagic,
    #[error("stream format {0}.{1} is newer than this subvol reads (1.x); upgrade subvol on the receiver")]
    UnknownVersion(u16, u16),
    #[error("stream uses mandatory features {0:#x} that this subvol does not know; upgrade subvol on the receiver")]
    UnknownFeatures(u32),
    #[error("stream is corrupt: {0}")]
    Corrupt(String),
    #[error("stream is truncated: it ends before its END record{0}")]
    Truncated(String),
    #[error("stream I/O error: {0}")]
    Io(#[from] io::Error),
}

fn corrupt(msg: impl Into<String>) -> StreamError {
    StreamError::Corrupt(msg.into())
}

/// One snapshot named in a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// `NAME@SNAP` on the sender.
    pub name: String,
    pub guid: Uuid,
}

/// The sent snapshot's content root (format 1.1): the root of its
/// manifest at `chunk_size`. A receiver computes the root of the image it
/// is about to publish and refuses another one, so a replica is known to be
/// a copy of the snapshot without re-reading either side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentRoot {
    pub chunk_size: u32,
    /// 64 lowercase hex digits.
    pub root: String,
}

impl ContentRoot {
    pub fn new(chunk_size: u32, root: &crate::manifest::Hash) -> ContentRoot {
        ContentRoot { chunk_size, root: crate::chunk_read::hex(root) }
    }

    /// The root's bytes; `None` if it is not 64 lowercase hex digits.
    pub fn root_bytes(&self) -> Option<crate::manifest::Hash> {
        crate::manifest::parse_hash(&self.root)
    }
}

/// What a stream carries (the header's JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamHeader {
    pub stream_guid: Uuid,
    /// The subvolume the snapshot was taken of.
    pub source_name: String,
    pub source_guid: Uuid,
    pub snapshot: SnapshotRef,
    /// The snapshot's creation time, RFC 3339.
    pub created: String,
    /// `xfs`, `ext4` or `raw`.
    pub fs: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Incremental streams: the snapshot the receiver must already have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<SnapshotRef>,
    pub virtual_size: u64,
    pub block_size: u32,
    /// Records start at this offset (a resumed stream).
    #[serde(default)]
    pub resume_offset: u64,
    /// The snapshot's content root; absent in 1.0 streams and where the
    /// sender has no manifest of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ContentRoot>,
}

impl StreamHeader {
    /// What a receiver accepts beyond the framing the reader checks: every
    /// string is what subvol itself would store (names and tags follow the
    /// name rules, `created` is RFC 3339, `fs` a known kind), and the
    /// geometry is plausible (format 1's fixed block size, a size between
    /// the smallest image of its filesystem and [`MAX_VIRTUAL_SIZE`], a
    /// block-aligned resume offset). Error texts never echo a control
    /// character.
    pub fn validate(&self) -> Result<(), StreamError> {
        fn bad(field: &str, e: impl std::fmt::Display) -> StreamError {
            corrupt(format!("header field {field}: {e}"))
        }
        crate::name::validate_part(&self.source_name).map_err(|e| bad("source_name", e))?;
        crate::ObjectName::parse_snapshot(&self.snapshot.name).map_err(|e| bad("snapshot.name", e))?;
        if let Some(b) = &self.base {
            crate::ObjectName::parse_snapshot(&b.name).map_err(|e| bad("base.name", e))?;
        }
        if self.tags.len() > crate::text::MAX_TAGS {
            return Err(bad("tags", format!("{} tags; the limit is {}", self.tags.len(), crate::text::MAX_TAGS)));
        }
        for t in &self.tags {
            crate::name::validate_part(t).map_err(|e| bad("tags", e))?;
        }
        crate::text::validate("created", &self.created, MAX_CREATED_LEN).map_err(|e| bad("created", e))?;
        chrono::DateTime::parse_from_rfc3339(&self.created).map_err(|e| bad("created", e))?;
        let fs: crate::FsKind = self
            .fs
            .parse()
            .map_err(|_| bad("fs", format!("{:?} is not xfs, ext4 or raw", crate::text::escape(&self.fs))))?;
        if self.block_size != BLOCK_SIZE {
            return Err(bad("block_size", format!("{} (format 1 uses {BLOCK_SIZE})", self.block_size)));
        }
        let min = fs.min_size_bytes();
        if self.virtual_size < min || self.virtual_size > MAX_VIRTUAL_SIZE {
            return Err(bad(
                "virtual_size",
                format!("{} bytes; a {fs} image is {} to {} bytes", self.virtual_size, min, MAX_VIRTUAL_SIZE),
            ));
        }
        if !self.virtual_size.is_multiple_of(u64::from(BLOCK_SIZE))
            || !self.resume_offset.is_multiple_of(u64::from(BLOCK_SIZE))
            || self.resume_offset > self.virtual_size
        {
            return Err(bad("resume_offset", "not a block boundary inside the image"));
        }
        if let Some(m) = &self.manifest {
            crate::manifest::Geometry::new(m.chunk_size, self.virtual_size)
                .map_err(|e| bad("manifest.chunk_size", e))?;
            if m.root_bytes().is_none() {
                return Err(bad("manifest.root", "not 64 lowercase hex digits"));
            }
        }
        Ok(())
    }
}

/// One record read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Data { offset: u64, data: Vec<u8> },
    Hole { offset: u64, length: u64 },
    End(Totals),
}

/// What the END record states, checked by the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Totals {
    pub data_bytes: u64,
    pub hole_bytes: u64,
    pub records: u64,
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} records, {} data bytes, {} hole bytes", self.records, self.data_bytes, self.hole_bytes)
    }
}

/// Writes a stream. Records must come in ascending, non-overlapping order.
pub struct StreamWriter<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    header: StreamHeader,
    zstd_level: Option<i32>,
    next_offset: u64,
    totals: Totals,
    /// Bytes written so far, for progress.
    pub bytes_written: u64,
}

impl<W: Write> StreamWriter<W> {
    /// Writes the header. `zstd_level` enables per-record compression.
    pub fn new(mut out: W, header: StreamHeader, zstd_level: Option<i32>) -> Result<Self, StreamError> {
        let json = serde_json::to_vec(&header).map_err(|e| corrupt(e.to_string()))?;
        if json.len() > MAX_HEADER_JSON {
            return Err(corrupt("header too large"));
        }
        let flags = if zstd_level.is_some() { FLAG_ZSTD } else { 0 };
        let mut buf = Vec::with_capacity(20 + json.len() + SUM);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&MAJOR.to_le_bytes());
        buf.extend_from_slice(&MINOR.to_le_bytes());
        buf.extend_from_slice(&flags.to_le_bytes());
        buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        buf.extend_from_slice(&json);
        let sum = blake3::hash(&buf);
        buf.extend_from_slice(sum.as_bytes());
        out.write_all(&buf)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&buf);
        let next_offset = header.resume_offset;
        Ok(StreamWriter {
            out,
            hasher,
            header,
            zstd_level,
            next_offset,
            totals: Totals::default(),
            bytes_written: buf.len() as u64,
        })
    }

    fn check_range(&self, offset: u64, length: u64) -> Result<(), StreamError> {
        let end = offset.checked_add(length).ok_or_else(|| corrupt("range overflows"))?;
        if offset < self.next_offset || end > self.header.virtual_size || length == 0 {
            return Err(corrupt(format!("record {offset}+{length} out of order or out of bounds")));
        }
        Ok(())
    }

    fn emit(&mut self, kind: u8, rflags: u8, offset: u64, length: u64, payload: &[u8]) -> Result<(), StreamError> {
        let mut head = [0u8; RECORD_HEADER];
        head[0] = kind;
        head[1] = rflags;
        head[4..12].copy_from_slice(&offset.to_le_bytes());
        head[12..20].copy_from_slice(&length.to_le_bytes());
        head[20..24].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let mut h = blake3::Hasher::new();
        h.update(&head);
        h.update(payload);
        let sum = h.finalize();
        for part in [&head[..], payload, sum.as_bytes()] {
            self.out.write_all(part)?;
            self.hasher.update(part);
        }
        self.bytes_written += (RECORD_HEADER + payload.len() + SUM) as u64;
        self.totals.records += 1;
        Ok(())
    }

    /// Data at `offset`; split into records of at most 1 MiB.
    pub fn data(&mut self, offset: u64, data: &[u8]) -> Result<(), StreamError> {
        let mut off = offset;
        for chunk in data.chunks(MAX_DATA_RECORD as usize) {
            self.check_range(off, chunk.len() as u64)?;
            let compressed = match self.zstd_level {
                Some(level) => Some(zstd::bulk::compress(chunk, level)?),
                None => None,
            };
            match compressed {
                Some(c) if c.len() < chunk.len() => self.emit(KIND_DATA, RFLAG_ZSTD, off, chunk.len() as u64, &c)?,
                _ => self.emit(KIND_DATA, 0, off, chunk.len() as u64, chunk)?,
            }
            self.totals.data_bytes += chunk.len() as u64;
            off += chunk.len() as u64;
            self.next_offset = off;
        }
        Ok(())
    }

    /// A range that reads as zeroes.
    pub fn hole(&mut self, offset: u64, length: u64) -> Result<(), StreamError> {
        self.check_range(offset, length)?;
        self.emit(KIND_HOLE, 0, offset, length, &[])?;
        self.totals.hole_bytes += length;
        self.next_offset = offset + length;
        Ok(())
    }

    /// Writes END and returns the output, the totals and the stream's size.
    pub fn finish(mut self) -> Result<(W, Totals, u64), StreamError> {
        let totals = self.totals;
        let stream_hash = self.hasher.finalize();
        let mut payload = Vec::with_capacity(24 + SUM);
        payload.extend_from_slice(&totals.data_bytes.to_le_bytes());
        payload.extend_from_slice(&totals.hole_bytes.to_le_bytes());
        payload.extend_from_slice(&totals.records.to_le_bytes());
        payload.extend_from_slice(stream_hash.as_bytes());
        self.emit(KIND_END, 0, 0, 0, &payload)?;
        self.out.flush()?;
        Ok((self.out, totals, self.bytes_written))
    }
}

/// Reads and verifies a stream, one record at a time.
pub struct StreamReader<R: Read> {
    input: R,
    hasher: blake3::Hasher,
    pub header: StreamHeader,
    pub flags: u32,
    next_offset: u64,
    totals: Totals,
    done: bool,
    /// Bytes read so far, for progress.
    pub bytes_read: u64,
}

fn read_exact_or_truncated<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), StreamError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            StreamError::Truncated(format!(" (in {what})"))
        } else {
            StreamError::Io(e)
        }
    })
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self, StreamError> {
        let mut fixed = [0u8; 20];
        read_exact_or_truncated(&mut input, &mut fixed, "the header")?;
        if &fixed[0..8] != MAGIC {
            return Err(StreamError::BadMagic);
        }
        let major = u16::from_le_bytes([fixed[8], fixed[9]]);
        let minor = u16::from_le_bytes([fixed[10], fixed[11]]);
        if major != MAJOR {
            return Err(StreamError::UnknownVersion(major, minor));
        }
        let flags = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]);
        let unknown = flags & MANDATORY_MASK & !KNOWN_MANDATORY;
        if unknown != 0 {
            return Err(StreamError::UnknownFeatures(unknown));
        }
        let json_len = u32::from_le_bytes([fixed[16], fixed[17], fixed[18], fixed[19]]) as usize;
        if json_len > MAX_HEADER_JSON {
            return Err(corrupt(format!("header of {json_len} bytes is larger than {MAX_HEADER_JSON}")));
        }
        let mut json = vec![0u8; json_len];
        read_exact_or_truncated(&mut input, &mut json, "the header")?;
        let mut sum = [0u8; SUM];
        read_exact_or_truncated(&mut input, &mut sum, "the header")?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&fixed);
        hasher.update(&json);
        if hasher.finalize().as_bytes() != &sum {
            return Err(corrupt("header checksum mismatch"));
        }
        hasher.update(&sum);
        let header: StreamHeader = serde_json::from_slice(&json).map_err(|e| corrupt(format!("header: {e}")))?;
        if header.block_size == 0 || !header.virtual_size.is_multiple_of(u64::from(header.block_size)) {
            return Err(corrupt("header: size is not a whole number of blocks"));
        }
        if header.resume_offset > header.virtual_size {
            return Err(corrupt("header: resume offset beyond the end"));
        }
        let next_offset = header.resume_offset;
        Ok(StreamReader {
            input,
            hasher,
            header,
            flags,
            next_offset,
            totals: Totals::default(),
            done: false,
            bytes_read: (20 + json_len + SUM) as u64,
        })
    }

    /// The next record, verified. After END, `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<Record>, StreamError> {
        if self.done {
            return Ok(None);
        }
        let mut head = [0u8; RECORD_HEADER];
        read_exact_or_truncated(&mut self.input, &mut head, "a record")?;
        let kind = head[0];
        let rflags = head[1];
        let offset = u64::from_le_bytes(head[4..12].try_into().unwrap_or_default());
        let length = u64::from_le_bytes(head[12..20].try_into().unwrap_or_default());
        let payload_len = u32::from_le_bytes(head[20..24].try_into().unwrap_or_default()) as usize;
        if head[2] != 0 || head[3] != 0 || rflags & !RFLAG_ZSTD != 0 {
            return Err(corrupt("record has unknown flags"));
        }
        let max_payload = match kind {
            KIND_DATA => MAX_PAYLOAD,
            KIND_HOLE => 0,
            KIND_END => 24 + SUM,
            k => return Err(corrupt(format!("unknown record type {k}"))),
        };
        if payload_len > max_payload {
            return Err(corrupt(format!("record payload of {payload_len} bytes is too large")));
        }
        let mut payload = vec![0u8; payload_len];
        read_exact_or_truncated(&mut self.input, &mut payload, "a record")?;
        let mut sum = [0u8; SUM];
        read_exact_or_truncated(&mut self.input, &mut sum, "a record")?;
        let mut h = blake3::Hasher::new();
        h.update(&head);
        h.update(&payload);
        if h.finalize().as_bytes() != &sum {
            return Err(corrupt(format!("record checksum mismatch at offset {offset}")));
        }
        self.bytes_read += (RECORD_HEADER + payload_len + SUM) as u64;
        if kind == KIND_END {
            if payload_len != 24 + SUM || offset != 0 || length != 0 || rflags != 0 {
                return Err(corrupt("malformed END record"));
            }
            let stated = Totals {
                data_bytes: u64::from_le_bytes(payload[0..8].try_into().unwrap_or_default()),
                hole_bytes: u64::from_le_bytes(payload[8..16].try_into().unwrap_or_default()),
                records: u64::from_le_bytes(payload[16..24].try_into().unwrap_or_default()),
            };
            if self.hasher.finalize().as_bytes() != &payload[24..24 + SUM] {
                return Err(corrupt("whole-stream checksum mismatch"));
            }
            if stated != self.totals {
                return Err(corrupt(format!("END states {stated} but the stream held {}", self.totals)));
            }
            // Nothing may follow END.
            let mut probe = [0u8; 1];
            loop {
                match self.input.read(&mut probe) {
                    Ok(0) => break,
                    Ok(_) => return Err(corrupt("data after the END record")),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(StreamError::Io(e)),
                }
            }
            self.done = true;
            return Ok(Some(Record::End(stated)));
        }
        for part in [&head[..], &payload[..], &sum[..]] {
            self.hasher.update(part);
        }
        let end = offset.checked_add(length).ok_or_else(|| corrupt("record range overflows"))?;
        if length == 0 || offset < self.next_offset || end > self.header.virtual_size {
            return Err(corrupt(format!("record {offset}+{length} is out of order or beyond the declared size")));
        }
        self.totals.records += 1;
        self.next_offset = end;
        if kind == KIND_HOLE {
            if rflags != 0 {
                return Err(corrupt("HOLE record with flags"));
            }
            self.totals.hole_bytes += length;
            return Ok(Some(Record::Hole { offset, length }));
        }
        if length > MAX_DATA_RECORD {
            return Err(corrupt(format!("DATA record of {length} bytes is larger than {MAX_DATA_RECORD}")));
        }
        let data = if rflags & RFLAG_ZSTD != 0 {
            if self.flags & FLAG_ZSTD == 0 {
                return Err(corrupt("compressed record in a stream not marked compressed"));
            }
            let d = zstd::bulk::decompress(&payload, length as usize).map_err(|e| corrupt(format!("zstd: {e}")))?;
            if d.len() as u64 != length {
                return Err(corrupt("decompressed length differs from the record length"));
            }
            d
        } else {
            if payload.len() as u64 != length {
                return Err(corrupt("DATA payload length differs from the record length"));
            }
            payload
        };
        self.totals.data_bytes += length;
        Ok(Some(Record::Data { offset, data }))
    }

    /// End of the last applied record: everything below it is received.
    pub fn position(&self) -> u64 {
        self.next_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(size: u64) -> StreamHeader {
        StreamHeader {
            stream_guid: Uuid::from_u128(1),
            source_name: "web".into(),
            source_guid: Uuid::from_u128(2),
            snapshot: SnapshotRef { name: "web@b".into(), guid: Uuid::from_u128(3) },
            created: "2026-01-01T00:00:00Z".into(),
            fs: "raw".into(),
            tags: vec![],
            base: Some(SnapshotRef { name: "web@a".into(), guid: Uuid::from_u128(4) }),
            virtual_size: size,
            block_size: 4096,
            resume_offset: 0,
            manifest: None,
        }
    }

    fn sample(level: Option<i32>) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), header(1 << 24), level).unwrap();
        w.data(0, &[7u8; 10000]).unwrap();
        w.hole(16384, 8192).unwrap();
        w.data(1 << 20, &(0..1_300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
        w.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Record>, StreamError> {
        let mut r = StreamReader::new(bytes)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_plain_and_compressed() {
        for level in [None, Some(3)] {
            let bytes = sample(level);
            let recs = read_all(&bytes).unwrap();
            assert_eq!(recs.len(), 1 + 1 + 2 + 1);
            assert_eq!(recs[0], Record::Data { offset: 0, data: vec![7u8; 10000] });
            assert_eq!(recs[1], Record::Hole { offset: 16384, length: 8192 });
            match recs.last().unwrap() {
                Record::End(t) => assert_eq!((t.data_bytes, t.hole_bytes, t.records), (1_310_000, 8192, 4)),
                other => panic!("{other:?}"),
            }
        }
        assert!(sample(Some(3)).len() < sample(None).len() / 4);
    }

    #[test]
    fn writer_refuses_bad_ranges() {
        let mut w = StreamWriter::new(Vec::new(), header(8192), None).unwrap();
        assert!(w.data(8192, &[1]).is_err());
        w.data(4096, &[1; 10]).unwrap();
        assert!(w.hole(0, 10).is_err(), "out of order accepted");
    }

    #[test]
    fn refuses_unknown_versions_and_features() {
        let mut b = sample(None);
        b[8] = 2;
        assert!(matches!(read_all(&b), Err(StreamError::UnknownVersion(2, MINOR))));
        let mut b = sample(None);
        b[14] |= 0x02; // an unknown mandatory flag (bit 17)
        assert!(matches!(read_all(&b), Err(StreamError::UnknownFeatures(_))));
        let mut b = sample(None);
        b[0] = b'X';
        assert!(matches!(read_all(&b), Err(StreamError::BadMagic)));
    }

    /// An attacker can compute valid checksums; END's totals must still
    /// match what was received, and the error must read as a sentence.
    #[test]
    fn forged_end_totals_are_refused_in_words() {
        let mut w = StreamWriter::new(Vec::new(), header(1 << 20), None).unwrap();
        w.data(0, &[1u8; 4096]).unwrap();
        w.totals.records += 1;
        let bytes = w.finish().unwrap().0;
        let err = read_all(&bytes).unwrap_err().to_string();
        assert!(
            err.contains("END states 2 records, 4096 data bytes, 0 hole bytes but the stream held 1 records"),
            "{err}"
        );
        assert!(!err.contains('{'), "a debug struct reached the message: {err}");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let mut b = sample(None);
        b.push(0);
        assert!(read_all(&b).is_err());
    }

    #[test]
    fn validate_refuses_hostile_strings_and_geometry() {
        let good = header(1 << 20);
        good.validate().unwrap();
        type Edit = Box<dyn Fn(&mut StreamHeader)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("source_name", Box::new(|h| h.source_name = "web\u{1b}[2J".into())),
            ("source_name", Box::new(|h| h.source_name = "a".repeat(64 << 10))),
            ("source_name", Box::new(|h| h.source_name = "x\ny".into())),
            ("tags", Box::new(|h| h.tags = vec!["ok".into(), "two\nrows".into()])),
            ("tags", Box::new(|h| h.tags = vec!["t".repeat(200)])),
            ("tags", Box::new(|h| h.tags = (0..65).map(|i| format!("t{i}")).collect())),
            ("snapshot.name", Box::new(|h| h.snapshot.name = "web@\u{7}".into())),
            ("base.name", Box::new(|h| h.base = Some(SnapshotRef { name: "../x".into(), guid: Uuid::nil() }))),
            ("created", Box::new(|h| h.created = "yesterday\u{1b}".into())),
            ("created", Box::new(|h| h.created = "2026-13-01T00:00:00Z".into())),
            ("fs", Box::new(|h| h.fs = "zfs".into())),
            ("block_size", Box::new(|h| h.block_size = 512)),
            ("virtual_size", Box::new(|h| h.virtual_size = 1 << 63)),
            ("virtual_size", Box::new(|h| h.virtual_size = 0)),
            (
                "virtual_size",
                Box::new(|h| {
                    h.fs = "xfs".into();
                    h.virtual_size = 64 << 20;
                }),
            ),
            ("resume_offset", Box::new(|h| h.resume_offset = 100)),
            (
                "manifest.chunk_size",
                Box::new(|h| h.manifest = Some(ContentRoot { chunk_size: 3000, root: "0".repeat(64) })),
            ),
            ("manifest.root", Box::new(|h| h.manifest = Some(ContentRoot { chunk_size: 4096, root: "0".repeat(63) }))),
            ("manifest.root", Box::new(|h| h.manifest = Some(ContentRoot { chunk_size: 4096, root: "A".repeat(64) }))),
            (
                "manifest.root",
                Box::new(|h| {
                    h.manifest = Some(ContentRoot { chunk_size: 4096, root: format!("\u{1b}[2J{}", "0".repeat(60)) })
                }),
            ),
        ];
        let mut with_root = good.clone();
        with_root.manifest = Some(ContentRoot::new(1 << 18, &[0xab; 32]));
        with_root.validate().unwrap();
        assert_eq!(with_root.manifest.as_ref().and_then(ContentRoot::root_bytes), Some([0xab; 32]));
        for (field, f) in cases {
            let mut h = good.clone();
            f(&mut h);
            let e = h.validate().expect_err(field).to_string();
            assert!(e.contains(field), "{field}: {e}");
            assert!(!e.chars().any(crate::text::is_unsafe), "error echoes a control character: {e:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn a_validated_header_holds_only_safe_strings(name in "\\PC{0,20}|[a-z\\x00-\\x1f]{1,8}", tag in "\\PC{0,20}|[a-z\\x00-\\x1f]{1,8}", bs in prop::sample::select(vec![0u32, 1, 512, 4096, 65536]), blocks in 0u64..1024) {
            let mut h = header(blocks * 4096);
            h.source_name = name;
            h.tags = vec![tag];
            h.block_size = bs;
            if h.validate().is_ok() {
                prop_assert!(crate::name::validate_part(&h.source_name).is_ok());
                for s in h.tags.iter().chain([&h.source_name, &h.created, &h.fs, &h.snapshot.name]) {
                    prop_assert!(crate::text::validate("s", s, 128).is_ok());
                }
                prop_assert_eq!(h.block_size, BLOCK_SIZE);
                prop_assert!(h.virtual_size >= 4096);
            }
        }

        #[test]
        fn any_flipped_bit_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8, level in prop::option::of(1i32..4)) {
            let mut b = sample(level);
            let i = pos.index(b.len());
            b[i] ^= 1 << bit;
            prop_assert!(read_all(&b).is_err(), "flip at {} accepted", i);
        }

        #[test]
        fn any_truncation_is_rejected(cut in any::<prop::sample::Index>()) {
            let b = sample(Some(1));
            let n = cut.index(b.len());
            prop_assert!(read_all(&b[..n]).is_err());
        }

        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..2048), keep_magic in any::<bool>()) {
            if keep_magic && bytes.len() > 20 {
                bytes[..8].copy_from_slice(MAGIC);
                bytes[8] = 1; bytes[9] = 0;
            }
            let _ = read_all(&bytes);
        }
    }
}
