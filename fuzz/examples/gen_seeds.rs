//! Writes the seed corpus under fuzz/corpus/<target>/seed-*: small valid
//! inputs made with subvol-core's own encoders, so the fuzzer starts from
//! inputs that get past magic numbers and checksums.
//!
//! Run from fuzz/: `cargo run --example gen_seeds` (overwrites the seeds).

use std::path::{Path, PathBuf};
use subvol_core::extent::{Extent, ExtentFlags, ExtentMap};
use subvol_core::manifest::{BuiltBy, Entry, Geometry, Manifest, Provenance};
use subvol_core::meta::{self, PoolMeta, SubvolumeMeta};
use subvol_core::scrub::{ScrubProgress, ScrubResults};
use subvol_core::stream::{SnapshotRef, StreamHeader, StreamWriter};
use subvol_core::token::ResumeToken;
use uuid::Uuid;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus().join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn small_stream(zstd: Option<i32>, incremental: bool) -> Vec<u8> {
    let header = StreamHeader {
        stream_guid: Uuid::from_u128(0x11),
        source_name: "web".into(),
        source_guid: Uuid::from_u128(0x22),
        snapshot: SnapshotRef { name: "web@b".into(), guid: Uuid::from_u128(0x33) },
        created: "2026-01-01T00:00:00Z".into(),
        fs: "xfs".into(),
        tags: vec!["daily".into()],
        base: incremental.then(|| SnapshotRef { name: "web@a".into(), guid: Uuid::from_u128(0x44) }),
        virtual_size: 1 << 20,
        block_size: 4096,
        resume_offset: if incremental { 4096 } else { 0 },
    };
    let mut w = StreamWriter::new(Vec::new(), header, zstd).unwrap();
    w.data(8192, &[0x5a; 300]).unwrap();
    w.hole(12288, 4096).unwrap();
    w.data(65536, &(0..2000u32).map(|i| (i * 7 % 256) as u8).collect::<Vec<_>>()).unwrap();
    w.finish().unwrap().0
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // Streams: the released samples plus two small ones.
    let full = std::fs::read(root.join("tests/data/v1-full.stream")).unwrap();
    let inc = std::fs::read(root.join("tests/data/v1-incremental-zstd.stream")).unwrap();
    let plain = small_stream(None, false);
    let zstd = small_stream(Some(3), true);
    for (name, s) in [
        ("v1-full.stream", &full),
        ("v1-incremental-zstd.stream", &inc),
        ("small-plain", &plain),
        ("small-zstd", &zstd),
    ] {
        put("stream_decode", name, s);
        put("stream_fixup", name, &subvol_fuzz::stream_unfix(s, 0x03));
        assert_eq!(&subvol_fuzz::stream_fix(&subvol_fuzz::stream_unfix(s, 0x03)), s, "fix(unfix) of {name}");
    }
    // Round trip: ctl, blocks, [resume], name_len, name, reader, ops.
    put(
        "stream_roundtrip",
        "plain",
        &[
            0x20, 0xff, 0x00, 3, b'w', b'e', b'b', 0, 0x00, 0, 0, 0xff, 0x0f, 0x01, 2, 0, 0x10, 0, 0x0a, 0, 0, 0x00,
            0x10,
        ],
    );
    put(
        "stream_roundtrip",
        "zstd-awkward",
        &[0x27, 0x10, 0x00, 2, b'v', b'm', 0x25, 0x0c, 0, 0, 0xff, 0xff, 0x03, 1, 0, 0, 1, 0x14, 0, 0, 0xff, 0x3f],
    );
    put(
        "stream_roundtrip",
        "resume-incremental",
        &[0xe1, 0x40, 0x00, 0x00, 0x20, 0x00, 0x00, 0, 1, 0x08, 4, 0, 0, 2, 0x80, 0, 0, 0, 0, 0xa0, 0, 0, 0, 0],
    );

    // Metadata: whole records, and their JSON bodies (for the framed path).
    let sub_json = r#"{"kind":"snapshot","guid":"01234567-89ab-cdef-0123-456789abcdef","fs":"xfs","created":"2026-01-02T03:04:05.123456789Z","origin":{"name":"web","guid":"00000000-0000-0000-0000-0000000000aa"},"properties":{"subvol:guarantee":"on","note":"x"},"tags":["daily","weekly"],"holds":["replication"]}"#;
    let sub: SubvolumeMeta = serde_json::from_str(sub_json).unwrap();
    let plain_sub_json = r#"{"kind":"subvolume","guid":"fedcba98-7654-3210-fedc-ba9876543210","fs":"raw","created":"2025-12-31T23:59:59Z"}"#;
    let plain_sub: SubvolumeMeta = serde_json::from_str(plain_sub_json).unwrap();
    let pool_json = r#"{"format":1,"uuid":"6f1c1a2e-0000-4000-8000-000000000001","created":"2026-01-01T00:00:00+00:00","reflink":true,"backing_image":"/var/lib/subvol.img","mount_base":"/mnt/subvol","options":{"compression":"none"}}"#;
    let pool: PoolMeta = serde_json::from_str(pool_json).unwrap();
    put("meta_decode", "object-snapshot", &sub.encode());
    put("meta_decode", "object-subvolume", &plain_sub.encode());
    put("meta_decode", "pool", &pool.encode());
    put("meta_decode", "intent", &meta::encode("intent", 1, &serde_json::json!({"old": "web", "new": "www"})));
    put("meta_decode", "json-object", sub_json.as_bytes());
    put("meta_decode", "json-pool", pool_json.as_bytes());
    put("meta_decode", "json-intent", br#"{"old":"a","new":"b"}"#);

    // Extent maps: encoded maps, and bare extents (for the counted path).
    let e = |l: u64, p: u64, n: u64, f: u32| Extent { logical: l, physical: p, length: n, flags: ExtentFlags(f) };
    let m = ExtentMap::new(vec![
        e(0, 1 << 20, 4096, 0),
        e(4096, 8 << 20, 65536, ExtentFlags::SHARED),
        e(1 << 20, 0, 4096, ExtentFlags::UNWRITTEN),
        e(2 << 20, 0, 4096, ExtentFlags::DELALLOC | ExtentFlags::LAST),
    ])
    .unwrap();
    put("extent_map", "map", &m.to_bytes());
    put("extent_map", "empty", &ExtentMap::default().to_bytes());
    let bytes = m.to_bytes();
    put("extent_map", "extents", &bytes[16..bytes.len() - 32]);

    // Manifests: one with runs and zero chunks, an empty one; and the
    // bodies after the magic (the framed path).
    let prov = Provenance {
        built_by: BuiltBy::Snapshot,
        base: Some(Uuid::from_u128(0x55)),
        built_at: 1_780_000_000,
        bytes_read: 524_288,
        chunks_hashed: 2,
        chunks_copied: 3,
        build_us: 1234,
    };
    let g = Geometry::new(65536, 7 * 65536 + 4096).unwrap();
    let entries = [Entry::Data([1; 32]), Entry::Zero, Entry::Data([2; 32]), Entry::Data([3; 32]), Entry::Zero];
    let man = Manifest::from_entries(g, Uuid::from_u128(0x66), prov, entries.into_iter().chain([Entry::Zero, Entry::Zero, Entry::Data([4; 32])]));
    let empty = Manifest::from_entries(Geometry::new(262144, 0).unwrap(), Uuid::nil(), Provenance { built_by: BuiltBy::Scrub, base: None, ..prov }, []);
    put("manifest_decode", "runs", &man.to_bytes());
    put("manifest_decode", "empty", &empty.to_bytes());
    let b = man.to_bytes();
    put("manifest_decode", "body", &b[8..b.len() - 32]);

    // Scrub records.
    let found = serde_json::json!({
        "name": "web@a", "guid": Uuid::from_u128(0x77), "verdict": "damaged", "manifest_created": true,
        "damaged": [{"offset": 262144, "length": 262144, "fault": "mismatch"}], "damaged_bytes": 262144,
        "scrubbed_at": "2026-06-01T00:00:00Z"
    });
    let progress: ScrubProgress = serde_json::from_value(serde_json::json!({
        "scope": "--all", "started": "2026-06-01T00:00:00Z", "chunk_size": 262144, "next_chunk": 40,
        "total_chunks": 4096, "members": [Uuid::from_u128(0x77), Uuid::from_u128(0x78)], "found": [found.clone()]
    }))
    .unwrap();
    let results: ScrubResults = serde_json::from_value(serde_json::json!({
        "last": {"scope": "web", "started": "2026-06-01T00:00:00Z", "finished": "2026-06-01T01:00:00Z",
                 "resumed": true, "snapshots": 2, "damaged": 1, "unverified": 0, "manifests_created": 1,
                 "bytes_read": 1u64 << 30, "bytes_verified": 8u64 << 30},
        "snapshots": {Uuid::from_u128(0x77).to_string(): found}
    }))
    .unwrap();
    put("meta_decode", "scrub-progress", &progress.encode());
    put("meta_decode", "scrub-results", &results.encode());

    // Resume tokens.
    let full_tok = ResumeToken { target: Uuid::from_u128(0xabc), base: None, offset: 1 << 30 };
    let inc_tok = ResumeToken { target: Uuid::from_u128(7), base: Some(Uuid::from_u128(8)), offset: 4096 };
    put("resume_token", "full", full_tok.to_string().as_bytes());
    put("resume_token", "incremental", format!("  {inc_tok}\n").as_bytes());
    let mut raw = vec![0x42u8; 16];
    raw.extend_from_slice(&[0x43; 16]);
    raw.extend_from_slice(&4096u64.to_le_bytes());
    raw.extend_from_slice(b"\x30+12");
    put("resume_token", "splice", &raw);

    // Mount tables: this machine's, and the kernel doc's examples.
    // (Lines of the build sandbox's own mounts are left out.)
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let table: String = table.lines().filter(|l| !l.contains("sandbox")).map(|l| format!("{l}\n")).collect();
    put("mountinfo", "proc-self", table.as_bytes());
    put(
        "mountinfo",
        "examples",
        b"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
          100 25 7:3 / /var/lib/subvol/mnt/my\\040vol rw,relatime shared:5 propagate_from:2 - xfs /dev/loop3 rw,attr2\n\
          101 25 7:4 / /x ro - xfs /dev/loop4 ro\n",
    );

    for (i, s) in ["512M", "1.5T", "10GiB", " 2 m ", "4096", "0.5K", "7E", "1.25kb"].iter().enumerate() {
        put("size", &i.to_string(), s.as_bytes());
    }
    for (i, s) in ["web01", "vm@2026-01-01T00.00.00Z", "_hidden", "x.y-z@a"].iter().enumerate() {
        put("name", &i.to_string(), s.as_bytes());
    }
    for (i, s) in ["last=5, daily=7,weekly=4", "hourly=24,monthly=12,yearly=3", "last=1"].iter().enumerate() {
        put("keep_policy", &i.to_string(), s.as_bytes());
    }
}
