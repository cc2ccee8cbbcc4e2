//! Regression tests from fuzzing (fuzz/, see fuzz/README.md).
//!
//! 1. Every seed in fuzz/corpus/<target>/ goes through the same calls and
//!    checks as the fuzz target `<target>`: the target bodies live in
//!    fuzz/src/lib.rs, included here, so `cargo test` keeps exercising them
//!    without libFuzzer or a nightly toolchain.
//! 2. Every fuzz finding is kept below as an inline input.

#[allow(dead_code)]
#[path = "../../../fuzz/src/lib.rs"]
mod targets;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seed-")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).expect("seed"))).collect()
}

fn run_seeds(target: &str, f: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let r = std::panic::catch_unwind(|| f(&bytes));
        assert!(r.is_ok(), "seed {} of fuzz target {target} panics", path.display());
    }
}

macro_rules! seeds {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                run_seeds(stringify!($target), targets::$target);
            }
        )*
    };
}

mod seeds {
    use super::*;
    seeds!(
        stream_decode,
        stream_fixup,
        stream_roundtrip,
        meta_decode,
        extent_map,
        manifest_decode,
        resume_token,
        mountinfo,
        size,
        name,
        keep_policy,
    );
}

/// The seeds are meaningful inputs, not just non-crashing ones: the stream
/// seeds decode to the end, the metadata seeds decode.
#[test]
fn seeds_are_valid_inputs() {
    for (path, bytes) in corpus("stream_decode") {
        let (records, result) = targets::read_stream(&bytes[..]);
        assert_eq!(result, Ok(()), "{}", path.display());
        assert!(records.len() >= 2, "{}", path.display());
    }
    for (path, bytes) in corpus("stream_fixup") {
        let (_, result) = targets::read_stream(&targets::stream_fix(&bytes)[..]);
        assert_eq!(result, Ok(()), "{}", path.display());
    }
    for (path, bytes) in corpus("meta_decode") {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let ok = if name.starts_with("seed-json-") {
            let kind = if name.contains("object") {
                "object"
            } else if name.contains("pool") {
                "pool"
            } else if name.contains("encryption") {
                "encryption"
            } else {
                "intent"
            };
            subvol_core::meta::decode::<serde_json::Value>(kind, 1, &targets::meta_frame(kind, 1, &bytes)).is_ok()
        } else {
            subvol_core::SubvolumeMeta::decode(&bytes).is_ok()
                || subvol_core::PoolMeta::decode(&bytes).is_ok()
                || subvol_core::meta::decode::<serde_json::Value>("intent", 1, &bytes).is_ok()
                || subvol_core::encryption::EncryptionRecord::decode(&bytes).is_ok()
                || subvol_core::scrub::ScrubProgress::decode(&bytes).is_ok()
                || subvol_core::scrub::ScrubResults::decode(&bytes).is_ok()
        };
        assert!(ok, "{name} does not decode");
    }
    for (path, bytes) in corpus("manifest_decode") {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let framed = |b: &[u8]| {
            let mut body = b"SVMANFST".to_vec();
            body.extend_from_slice(b);
            let sum = blake3::hash(&body);
            body.extend_from_slice(sum.as_bytes());
            body
        };
        let bytes = if name == "seed-body" { framed(&bytes) } else { bytes };
        assert!(subvol_core::manifest::Manifest::from_bytes(&bytes).is_ok(), "{name} does not decode");
    }
    for (path, bytes) in corpus("mountinfo") {
        assert!(!subvol_core::mountinfo::parse(&String::from_utf8_lossy(&bytes)).is_empty(), "{}", path.display());
    }
}

// ---------------------------------------------------------------------------
// Findings, each with its input inline (fuzz/README.md tells the story).
// All four findings are fixed; these tests keep them fixed.
// ---------------------------------------------------------------------------

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// An extent-map cache file as `ExtentMap::to_bytes` writes it: magic,
/// `count`, the raw extent bytes, then BLAKE3 of all that.
fn extent_cache_raw(count: u64, extents: &[u8]) -> Vec<u8> {
    let mut b = b"SVEXTMP1".to_vec();
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(extents);
    let sum = blake3::hash(&b);
    b.extend_from_slice(sum.as_bytes());
    b
}

/// The same from (logical, physical, length, flags) tuples.
fn extent_cache(extents: &[(u64, u64, u64, u32)]) -> Vec<u8> {
    let mut raw = Vec::new();
    for &(logical, physical, length, flags) in extents {
        raw.extend_from_slice(&logical.to_le_bytes());
        raw.extend_from_slice(&physical.to_le_bytes());
        raw.extend_from_slice(&length.to_le_bytes());
        raw.extend_from_slice(&flags.to_le_bytes());
    }
    extent_cache_raw(extents.len() as u64, &raw)
}

/// What the pool does with a cache file (subvol-pool/src/space.rs): decode,
/// then count bytes. `Err` if that panics.
fn use_extent_cache(b: &[u8]) -> std::thread::Result<Option<(u64, u64, usize)>> {
    std::panic::catch_unwind(|| {
        subvol_core::ExtentMap::from_bytes(b).map(|m| (m.mapped_bytes(), m.shared_bytes(), m.physical_ranges().len()))
    })
}

/// Finding 1 (fuzz target `extent_map`, within seconds): a cache file with a
/// valid checksum whose extents run past 2^64 is accepted (`Extent::end`
/// saturates, so the overlap check in `ExtentMap::new` passes), and
/// `mapped_bytes()` then overflows: "attempt to add with overflow" at
/// crates/subvol-core/src/extent.rs:76 in debug builds, a wrapped, wrong
/// byte count in release builds.
#[test]
fn extent_map_refuses_extents_ending_past_u64_max() {
    // Smallest form: [0, 2^64-1) and [2^64-1, 2^64).
    let b = hex("53564558544d5031 0200000000000000
         0000000000000000 0000000000000000 ffffffffffffffff 00000000
         ffffffffffffffff 0000000000000000 0100000000000000 00000000
         1421db3ed6aab48925387f0ad4b021060db97cbf524b130ec877db8b654b8d69");
    assert_eq!(b, extent_cache(&[(0, 0, u64::MAX, 0), (u64::MAX, 0, 1, 0)]));
    assert!(matches!(use_extent_cache(&b), Ok(None)), "accepted a map of more than 2^64 bytes");
    // The fuzzer's input, through the target's third form (its whole-28-byte
    // prefix as extents, with the count and checksum made right).
    let found = hex("53564558544d50310400000000ffffffffffffffffffffffffffffffffffffffffff
         ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
         ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
         ffffffff000000000000007ebc3a2e966292c00654ef");
    let n = found.len() / 28;
    assert!(matches!(use_extent_cache(&extent_cache_raw(n as u64, &found[..n * 28])), Ok(None)));
    // One extent alone running past the end.
    let b = extent_cache(&[(u64::MAX - 10, 0, 4096, 0)]);
    assert!(matches!(use_extent_cache(&b), Ok(None)));
}

/// Finding 2 (by reading extent.rs while writing the target; a fuzzer is
/// unlikely to guess the count): `ExtentMap::from_bytes` computes
/// `16 + n * 28` unchecked (crates/subvol-core/src/extent.rs:116); for
/// n = 0x0924924924924924, n * 28 = 2^64 - 16 passes `checked_mul` and the
/// addition overflows: a panic in debug builds ("attempt to add with
/// overflow"). Release builds wrap to 0 and refuse the file, as they should.
#[test]
fn extent_map_count_near_usize_max_is_refused() {
    let b = hex("53564558544d5031 2449922449922409
         449b430e310104d9bfc47edd010bd1a2efa3403b1550a07d6de2ac5a78fb079a");
    assert_eq!(b, extent_cache_raw(0x0924_9249_2492_4924, &[]));
    assert!(matches!(use_extent_cache(&b), Ok(None)));
}

/// Hands out `data` and then, once, answers `Interrupted` before reporting
/// the end, as a pipe may when a signal arrives (std's `Read` contract:
/// the caller retries).
struct InterruptedAtEof<'a> {
    data: &'a [u8],
    interrupted: bool,
}

impl std::io::Read for InterruptedAtEof<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.data.is_empty() && !self.interrupted {
            self.interrupted = true;
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Finding 3 (fuzz target `stream_roundtrip` with `INJECT_INTERRUPTED`): the
/// reader's check that nothing follows END does a single `read()`
/// (crates/subvol-core/src/stream.rs, `self.input.read(&mut probe)` in
/// `next_record`) and turns an `Interrupted` answer into
/// `StreamError::Io` instead of retrying, so a valid stream from a pipe is
/// refused at its very end if a signal lands there.
#[test]
fn stream_end_probe_retries_interrupted() {
    use subvol_core::stream::{Record, StreamReader};
    let stream = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/v1-incremental-zstd.stream"),
    )
    .expect("sample stream");
    let mut r = StreamReader::new(InterruptedAtEof { data: &stream, interrupted: false }).expect("header");
    loop {
        match r.next_record() {
            Ok(Some(Record::End(_))) => break,
            Ok(Some(_)) => {}
            other => panic!("valid stream refused: {other:?}"),
        }
    }
    assert!(matches!(r.next_record(), Ok(None)));
}

/// Finding 4 (fuzz target `size`, after about 3 million runs): the fuzzer's
/// input is "  " + "0" * 118 + "18446744073709551615\n\n"; it parses to
/// u64::MAX, which `format_size` prints as "16.0E" (it rounds 15.99...E up,
/// crates/subvol-core/src/size.rs, `format!("{value:.1}{unit}")`), and
/// `parse_size` refuses "16.0E" as too large: what subvol prints for a
/// size of 15.95E or more cannot be given back to it, and overstates it.
#[test]
fn format_size_output_parses_back() {
    use subvol_core::size::{format_size, parse_size};
    let found = format!("  {}18446744073709551615\n\n", "0".repeat(118));
    assert_eq!(parse_size(&found), Ok(u64::MAX));
    for n in [u64::MAX, u64::MAX - (1 << 50), (15 << 60) + (95 << 60) / 100] {
        let text = format_size(n);
        assert!(parse_size(&text).is_ok(), "{n} prints as {text:?}, which does not parse");
    }
}
