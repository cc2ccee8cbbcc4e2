//! Chunk reads: what `subvol scrub --repair-from` asks of a replica pool
//! (the chunks of one snapshot, named by guid) and the framed, checksummed
//! bytes it gets back (docs/STREAM.md, "Chunk reads"). The replica may be
//! another host, so the reader trusts nothing: every frame is
//! length-limited before it is read, checksummed, and in order; the repair
//! then checks each chunk against its own manifest before writing it.

use crate::manifest::{Geometry, Hash, MAX_CHUNK_SIZE};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::PathBuf;
use uuid::Uuid;

/// The first bytes of a chunk-read reply.
pub const MAGIC: &[u8; 8] = b"SVCHUNKS";
/// Format version; a reader refuses another.
pub const VERSION: u16 = 1;
/// Longest header JSON.
pub const MAX_HEADER: usize = 65536;
/// Longest reason of an UNREADABLE record.
pub const MAX_REASON: usize = 4096;
/// Longest chunk list a request carries (text, on a command line).
pub const MAX_LIST_LEN: usize = 64 << 10;

const CHUNK: u8 = 1;
const UNREADABLE: u8 = 2;
const END: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkReadError {
    #[error("the replica's reply is damaged: {0}")]
    Damaged(String),
    #[error("cannot read the replica's reply: {0}")]
    Io(String),
    #[error("{0:?} is not a chunk list such as 0-3,17")]
    List(String),
    #[error("{0:?} is not a replica: give a pool directory (/srv/pool) or HOST:/POOLDIR")]
    Replica(String),
}

fn damaged(why: impl Into<String>) -> ChunkReadError {
    ChunkReadError::Damaged(why.into())
}

/// What the replica says about its copy of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHeader {
    /// `NAME@SNAP` there (from another host: escape before printing).
    pub snapshot: String,
    pub guid: Uuid,
    pub chunk_size: u32,
    pub image_size: u64,
    /// Its manifest's root, 64 hex digits.
    pub root: String,
}

impl ReplyHeader {
    pub fn geometry(&self) -> Result<Geometry, ChunkReadError> {
        Geometry::new(self.chunk_size, self.image_size).map_err(|e| damaged(e.to_string()))
    }
}

/// One record of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Chunk `index` holds these bytes there.
    Chunk { index: u64, bytes: Vec<u8> },
    /// The replica could not read chunk `index` (its words).
    Unreadable { index: u64, reason: String },
}

impl Record {
    pub fn index(&self) -> u64 {
        match self {
            Record::Chunk { index, .. } | Record::Unreadable { index, .. } => *index,
        }
    }
}

/// The root as hex.
pub fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a reply, hashing everything it writes for the END record.
pub struct ReplyWriter<W: Write> {
    out: W,
    hasher: blake3::Hasher,
    geometry: Geometry,
    records: u64,
    next: u64,
}

impl<W: Write> ReplyWriter<W> {
    pub fn new(mut out: W, header: &ReplyHeader) -> std::io::Result<Self> {
        let geometry = header.geometry().map_err(std::io::Error::other)?;
        let json = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        let mut b = Vec::with_capacity(48 + json.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(json.len() as u32).to_le_bytes());
        b.extend_from_slice(&json);
        let sum = blake3::hash(&b);
        b.extend_from_slice(sum.as_bytes());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&b);
        out.write_all(&b)?;
        Ok(ReplyWriter { out, hasher, geometry, records: 0, next: 0 })
    }

    fn record(&mut self, kind: u8, index: u64, payload: &[u8]) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(48 + payload.len());
        b.push(kind);
        b.extend_from_slice(&[0, 0, 0]);
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        let sum = blake3::hash(&b);
        b.extend_from_slice(sum.as_bytes());
        self.hasher.update(&b);
        self.out.write_all(&b)
    }

    fn check(&mut self, index: u64) -> std::io::Result<()> {
        if index < self.next || index >= self.geometry.chunks() {
            return Err(std::io::Error::other(format!("chunk {index} out of order or past the image")));
        }
        self.next = index + 1;
        self.records += 1;
        Ok(())
    }

    pub fn chunk(&mut self, index: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.check(index)?;
        if bytes.len() as u64 != self.geometry.chunk(index).1 {
            return Err(std::io::Error::other(format!("chunk {index} has {} bytes", bytes.len())));
        }
        self.record(CHUNK, index, bytes)
    }

    pub fn unreadable(&mut self, index: u64, reason: &str) -> std::io::Result<()> {
        self.check(index)?;
        let mut end = reason.len().min(MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.record(UNREADABLE, index, &reason.as_bytes()[..end])
    }

    /// The END record; returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        let sum = *self.hasher.finalize().as_bytes();
        let records = self.records;
        self.record(END, records, &sum)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads a reply, checking every frame; `next` gives the records in order
/// and `None` after a sound END.
pub struct ReplyReader<R: Read> {
    input: R,
    hasher: blake3::Hasher,
    header: ReplyHeader,
    geometry: Geometry,
    records: u64,
    next: u64,
    ended: bool,
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), ChunkReadError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => damaged("it ends early"),
        _ => ChunkReadError::Io(e.to_string()),
    })
}

impl<R: Read> ReplyReader<R> {
    pub fn new(mut input: R) -> Result<Self, ChunkReadError> {
        let mut fixed = [0u8; 16];
        read_exact(&mut input, &mut fixed)?;
        if &fixed[..8] != MAGIC {
            return Err(damaged("it does not start with SVCHUNKS"));
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version != VERSION {
            return Err(damaged(format!("format version {version}, this subvol reads {VERSION}")));
        }
        if fixed[10..12] != [0, 0] {
            return Err(damaged("reserved header bytes are not zero"));
        }
        let len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as usize;
        if len > MAX_HEADER {
            return Err(damaged(format!("a {len}-byte header (at most {MAX_HEADER})")));
        }
        let mut rest = vec![0u8; len + 32];
        read_exact(&mut input, &mut rest)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update(&fixed);
        hasher.update(&rest[..len]);
        if hasher.finalize().as_bytes() != &rest[len..] {
            return Err(damaged("the header's checksum does not match"));
        }
        hasher.update(&rest[len..]);
        let header: ReplyHeader =
            serde_json::from_slice(&rest[..len]).map_err(|e| damaged(format!("header JSON: {e}")))?;
        let geometry = header.geometry()?;
        if header.root.len() != 64 || !header.root.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(damaged("the root is not 64 hex digits"));
        }
        crate::text::validate("the replica's snapshot name", &header.snapshot, 300)
            .map_err(|e| damaged(e.to_string()))?;
        Ok(ReplyReader { input, hasher, header, geometry, records: 0, next: 0, ended: false })
    }

    pub fn header(&self) -> &ReplyHeader {
        &self.header
    }

    /// The next record; `Ok(None)` once END is read and checked.
    pub fn next_record(&mut self) -> Result<Option<Record>, ChunkReadError> {
        if self.ended {
            return Ok(None);
        }
        let mut fixed = [0u8; 16];
        read_exact(&mut self.input, &mut fixed)?;
        let kind = fixed[0];
        if fixed[1..4] != [0, 0, 0] {
            return Err(damaged("reserved record bytes are not zero"));
        }
        let index = u64::from_le_bytes(fixed[4..12].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(fixed[12..16].try_into().unwrap_or_default()) as usize;
        let limit = match kind {
            CHUNK => MAX_CHUNK_SIZE as usize,
            UNREADABLE => MAX_REASON,
            END => 32,
            other => return Err(damaged(format!("unknown record type {other}"))),
        };
        if len > limit {
            return Err(damaged(format!("a {len}-byte record payload (at most {limit})")));
        }
        let before_end = *self.hasher.finalize().as_bytes();
        let mut rest = vec![0u8; len + 32];
        read_exact(&mut self.input, &mut rest)?;
        let mut h = blake3::Hasher::new();
        h.update(&fixed);
        h.update(&rest[..len]);
        if h.finalize().as_bytes() != &rest[len..] {
            return Err(damaged(format!("record {} fails its checksum", self.records)));
        }
        self.hasher.update(&fixed);
        self.hasher.update(&rest);
        rest.truncate(len);
        if kind == END {
            if index != self.records || rest != before_end {
                return Err(damaged("the END record does not match what came before it"));
            }
            let mut probe = [0u8; 1];
            match self.input.read(&mut probe) {
                Ok(0) => {}
                Ok(_) => return Err(damaged("bytes follow the END record")),
                Err(e) => return Err(ChunkReadError::Io(e.to_string())),
            }
            self.ended = true;
            return Ok(None);
        }
        if index < self.next || index >= self.geometry.chunks() {
            return Err(damaged(format!("chunk {index} is out of order or past the image")));
        }
        self.next = index + 1;
        self.records += 1;
        if kind == CHUNK {
            if len as u64 != self.geometry.chunk(index).1 {
                return Err(damaged(format!("chunk {index} has {len} bytes, not {}", self.geometry.chunk(index).1)));
            }
            return Ok(Some(Record::Chunk { index, bytes: rest }));
        }
        let reason = String::from_utf8(rest).map_err(|_| damaged("a reason that is not UTF-8"))?;
        Ok(Some(Record::Unreadable { index, reason }))
    }
}

/// Chunk ranges as text: `0-3,17` (ascending, merged).
pub fn format_list(ranges: &[Range<u64>]) -> String {
    let mut out: Vec<String> = Vec::new();
    for r in merge(ranges.to_vec()) {
        if r.end == r.start + 1 {
            out.push(r.start.to_string());
        } else {
            out.push(format!("{}-{}", r.start, r.end - 1));
        }
    }
    out.join(",")
}

/// Parses `0-3,17` (inclusive ends) into ascending, merged ranges.
pub fn parse_list(s: &str) -> Result<Vec<Range<u64>>, ChunkReadError> {
    let bad = || ChunkReadError::List(s.chars().take(80).collect());
    if s.is_empty() || s.len() > MAX_LIST_LEN {
        return Err(bad());
    }
    let num = |t: &str| -> Result<u64, ChunkReadError> {
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if b < a || b == u64::MAX {
            return Err(bad());
        }
        out.push(a..b + 1);
    }
    Ok(merge(out))
}

/// Sorts and merges overlapping or touching ranges; drops empty ones.
pub fn merge(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The chunks (of `chunk_size` bytes) that byte ranges `(offset, length)` touch.
pub fn chunks_of(chunk_size: u64, ranges: impl IntoIterator<Item = (u64, u64)>) -> Vec<Range<u64>> {
    merge(
        ranges
            .into_iter()
            .filter(|&(_, len)| len > 0 && chunk_size > 0)
            .map(|(off, len)| off / chunk_size..off.saturating_add(len).div_ceil(chunk_size))
            .collect(),
    )
}

/// Where `--repair-from` reads: a pool directory here, or one on another
/// host (`HOST:/POOLDIR`, or `HOST:` for that host's default pool).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Replica {
    /// `[user@]host`; `None`: this machine.
    pub host: Option<String>,
    /// `None`: the other host's default pool.
    pub pool: Option<PathBuf>,
}

impl Replica {
    pub fn parse(s: &str) -> Result<Replica, ChunkReadError> {
        let bad = || ChunkReadError::Replica(s.chars().take(200).collect());
        crate::text::validate("the replica", s, crate::endpoint::MAX_ENDPOINT_LEN).map_err(|_| bad())?;
        if s.starts_with('/') {
            return Ok(Replica { host: None, pool: Some(PathBuf::from(s)) });
        }
        let (host, pool) = s.split_once(':').ok_or_else(bad)?;
        // A leading '-' would reach ssh as an option.
        if host.is_empty() || host.starts_with('-') || host.contains(char::is_whitespace) || host.contains('/') {
            return Err(bad());
        }
        let pool = match pool {
            "" => None,
            p if p.starts_with('/') => Some(PathBuf::from(p)),
            _ => return Err(bad()),
        };
        Ok(Replica { host: Some(host.to_string()), pool })
    }
}

impl std::fmt::Display for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pool = self.pool.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        match &self.host {
            Some(h) => write!(f, "{h}:{pool}"),
            None => write!(f, "{pool}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(image_size: u64) -> ReplyHeader {
        ReplyHeader {
            snapshot: "db@a".into(),
            guid: Uuid::from_u128(7),
            chunk_size: 4096,
            image_size,
            root: "ab".repeat(32),
        }
    }

    fn reply(records: &[Record], image_size: u64) -> Vec<u8> {
        let mut w = ReplyWriter::new(Vec::new(), &header(image_size)).unwrap();
        for r in records {
            match r {
                Record::Chunk { index, bytes } => w.chunk(*index, bytes).unwrap(),
                Record::Unreadable { index, reason } => w.unreadable(*index, reason).unwrap(),
            }
        }
        w.finish().unwrap()
    }

    fn read_all(b: &[u8]) -> Result<(ReplyHeader, Vec<Record>), ChunkReadError> {
        let mut r = ReplyReader::new(b)?;
        let mut out = Vec::new();
        while let Some(x) = r.next_record()? {
            out.push(x);
        }
        Ok((r.header().clone(), out))
    }

    fn sample() -> (Vec<Record>, u64) {
        let size = 4096 * 5 + 512;
        let recs = vec![
            Record::Chunk { index: 1, bytes: vec![3; 4096] },
            Record::Unreadable { index: 2, reason: "EIO".into() },
            Record::Chunk { index: 5, bytes: vec![9; 512] },
        ];
        (recs, size)
    }

    #[test]
    fn a_reply_reads_back_as_written() {
        let (recs, size) = sample();
        let (h, got) = read_all(&reply(&recs, size)).unwrap();
        assert_eq!(h, header(size));
        assert_eq!(got, recs);
    }

    #[test]
    fn any_flipped_cut_or_extended_byte_is_refused() {
        let (recs, size) = sample();
        let good = reply(&recs, size);
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x20;
            assert!(read_all(&b).is_err(), "flip at {i}");
        }
        for cut in [0, 10, 100, good.len() - 1] {
            assert!(read_all(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
    }

    #[test]
    fn records_out_of_order_wrong_length_or_oversized_are_refused() {
        let mut w = ReplyWriter::new(Vec::new(), &header(4096 * 4)).unwrap();
        w.chunk(2, &[1; 4096]).unwrap();
        assert!(w.chunk(1, &[1; 4096]).is_err());
        assert!(w.chunk(3, &[1; 100]).is_err());
        assert!(w.chunk(9, &[1; 4096]).is_err());
        // A hostile writer: a record claiming a huge payload is refused
        // before anything is allocated for it.
        let mut b = reply(&[], 4096 * 4);
        let end = b.len() - 80;
        b.truncate(end);
        let mut rec = vec![CHUNK, 0, 0, 0];
        rec.extend_from_slice(&0u64.to_le_bytes());
        rec.extend_from_slice(&u32::MAX.to_le_bytes());
        b.extend_from_slice(&rec);
        let e = read_all(&b).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
    }

    #[test]
    fn replicas_parse_as_written_and_options_are_refused() {
        assert_eq!(Replica::parse("/srv/b").unwrap(), Replica { host: None, pool: Some("/srv/b".into()) });
        assert_eq!(
            Replica::parse("root@h:/srv/b").unwrap(),
            Replica { host: Some("root@h".into()), pool: Some("/srv/b".into()) }
        );
        assert_eq!(Replica::parse("h:").unwrap(), Replica { host: Some("h".into()), pool: None });
        for bad in ["", "-oProxy=x:/p", "h:rel", "rel", "h x:/p", "a/b:/p", "h:/p\u{1b}[2J"] {
            assert!(Replica::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Replica::parse("root@h:/srv/b").unwrap().to_string(), "root@h:/srv/b");
    }

    #[test]
    fn byte_ranges_become_the_chunks_they_touch() {
        assert_eq!(chunks_of(4096, [(0, 1), (4095, 2), (3 * 4096, 4096)]), vec![0..2, 3..4]);
        assert_eq!(chunks_of(4096, [(10, 0)]), Vec::<Range<u64>>::new());
    }

    proptest! {
        #[test]
        fn chunk_lists_round_trip(v in proptest::collection::vec((0u64..10_000, 1u64..50), 1..40)) {
            let ranges: Vec<Range<u64>> = v.iter().map(|&(a, n)| a..a + n).collect();
            let merged = merge(ranges.clone());
            let text = format_list(&ranges);
            prop_assert_eq!(parse_list(&text).unwrap(), merged.clone());
            // Every chunk of the input is in exactly one merged range.
            for r in &ranges {
                for i in r.clone() {
                    prop_assert_eq!(merged.iter().filter(|m| m.contains(&i)).count(), 1);
                }
            }
        }

        #[test]
        fn garbage_lists_are_refused_or_parse_sorted(s in "[0-9,\\-]{0,30}") {
            if let Ok(r) = parse_list(&s) {
                prop_assert!(r.windows(2).all(|w| w[0].end < w[1].start));
            }
        }

        #[test]
        fn replies_round_trip(chunks in proptest::collection::btree_map(0u64..64, any::<u8>(), 0..20)) {
            let size = 64 * 4096 - 100;
            let recs: Vec<Record> = chunks
                .iter()
                .map(|(&i, &b)| {
                    let len = Geometry::new(4096, size).unwrap().chunk(i).1 as usize;
                    if b % 5 == 0 {
                        Record::Unreadable { index: i, reason: format!("e{b}") }
                    } else {
                        Record::Chunk { index: i, bytes: vec![b; len] }
                    }
                })
                .collect();
            let (_, got) = read_all(&reply(&recs, size)).unwrap();
            prop_assert_eq!(got, recs);
        }
    }
}
