//! Issue 16, end to end: a stream carries its snapshot's content root (its
//! manifest's root); the receiver builds the manifest of the image it is
//! about to publish, from what it wrote and its base's manifest, and
//! publishes only an image with that root. A replica is then known to be a
//! bit-exact copy without re-reading either side.

use crate::harness::*;
use crate::require_privileges;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use subvol_core::stream::{ContentRoot, Record, StreamHeader, StreamReader, StreamWriter};

/// The manifests' chunk size.
const C: u64 = 256 << 10;
const VERIFIED: &str = "content root verified";

fn image(host: &TestHost, name: &str) -> PathBuf {
    PathBuf::from(host.info(name)["image"].as_str().unwrap())
}

/// Writes `len` bytes derived from `seed` at `offset` of an image, synced.
fn pwrite(img: &Path, offset: u64, len: usize, seed: u8) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    f.write_all_at(&bytes, offset).unwrap();
    f.sync_all().unwrap();
}

fn send(a: &TestHost, snap: &str, from: Option<&str>, out: &Path) {
    let mut args = vec!["send", snap, "-o", path_str(out)];
    if let Some(f) = from {
        args.extend(["--from", f]);
    }
    a.run(&args).ok();
}

fn receive(pool: &Path, file: &Path) -> Run {
    subvol_env(pool, &["receive", "v", "--input", path_str(file)], &[("SUBVOL_TRACE", "1")])
}

fn details(host: &TestHost, name: &str) -> serde_json::Value {
    host.info(name)["integrity"]["details"].clone()
}

/// A raw subvolume `v` of 32 MiB with 16 MiB of data, snapshot `v@s1`, and
/// its full stream.
fn first_snapshot(a: &TestHost, dir: &Path) -> PathBuf {
    a.run(&["create", "v", "--size", "32M", "--fs", "raw"]).ok();
    let img = image(a, "v");
    for i in 0..16u64 {
        pwrite(&img, i << 20, 1 << 20, i as u8 + 1);
    }
    a.run(&["snapshot", "v@s1"]).ok();
    let s1 = dir.join("s1");
    send(a, "v@s1", None, &s1);
    s1
}

/// Three 4 KiB writes in three chunks, chunk 30 rewritten whole, and a hole
/// punched from 4 KiB into chunk 20 to the end of chunk 23, snapshot `v@s2`, and its stream from
/// `v@s1`.
fn second_snapshot(a: &TestHost, dir: &Path) -> PathBuf {
    let img = image(a, "v");
    for at in [C + 8192, 9 * C, 40 * C + 4096] {
        pwrite(&img, at, 4096, 0x5a);
    }
    // Chunk 30 rewritten whole: hashed from the stream, not read back.
    pwrite(&img, 30 * C, C as usize, 0x33);
    let (from, to) = (20 * C + 4096, 24 * C);
    sh("fallocate", &["-p", "-o", &from.to_string(), "-l", &(to - from).to_string(), path_str(&img)]);
    a.run(&["snapshot", "v@s2"]).ok();
    let s2 = dir.join("s2");
    send(a, "v@s2", Some("v@s1"), &s2);
    s2
}

/// Writes `stream` anew to `out`, as an attacker who can compute checksums
/// would: `header` may change the header, `data` the DATA records' bytes;
/// every record checksum and the END hash are made anew.
fn rewrite(stream: &Path, out: &Path, header: impl FnOnce(&mut StreamHeader), mut data: impl FnMut(&mut Vec<u8>)) {
    let bytes = std::fs::read(stream).unwrap();
    let mut r = StreamReader::new(&bytes[..]).unwrap();
    let mut h = r.header.clone();
    header(&mut h);
    let mut w = StreamWriter::new(Vec::new(), h, None).unwrap();
    while let Some(rec) = r.next_record().unwrap() {
        match rec {
            Record::Data { offset, data: mut d } => {
                data(&mut d);
                w.data(offset, &d).unwrap();
            }
            Record::Hole { offset, length } => w.hole(offset, length).unwrap(),
            Record::End(_) => {}
        }
    }
    std::fs::write(out, w.finish().unwrap().0).unwrap();
}

/// One byte of the stream's first DATA record changed, the header (and its
/// content root) kept.
fn forge(stream: &Path, out: &Path) {
    let mut changed = false;
    rewrite(
        stream,
        out,
        |_| {},
        |d| {
            if !changed {
                d[100] ^= 1;
                changed = true;
            }
        },
    );
    assert!(changed, "the stream has no DATA record to alter");
}

/// Pools `a` and `b` on `kind` hosts; `b` holds `v@s1` received from `a`,
/// and `a` has `v@s2` with its stream from `v@s1` (returned).
fn pair_with_increment(kind: HostKind) -> (TestHost, TestHost, tempfile::TempDir, PathBuf) {
    let a = TestHost::new(kind, "2G");
    let b = TestHost::new(kind, "2G");
    let dir = tempdir();
    let s1 = first_snapshot(&a, dir.path());
    receive(&b.pool, &s1).ok();
    let s2 = second_snapshot(&a, dir.path());
    (a, b, dir, s2)
}

/// A full and an incremental receive each verify the sender's root and
/// keep the manifest; the increment's check reads only the chunks its
/// records touched, and a scrub of the replica verifies against it.
fn replica_is_verified(kind: HostKind) {
    let a = TestHost::new(kind, "2G");
    let b = TestHost::new(kind, "2G");
    let dir = tempdir();
    let s1 = first_snapshot(&a, dir.path());
    let r = receive(&b.pool, &s1);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(VERIFIED), "{}", r.stderr);
    wait_for_builders(&a.pool);
    let (da, db) = (details(&a, "v@s1"), details(&b, "v@s1"));
    assert_eq!(db["built_by"], "receive", "{db}");
    assert_eq!(db["root"], da["root"], "replica root differs");
    // The full receive hashed its 64 data chunks as it wrote them: no
    // read back.
    assert!(r.stderr.contains(&format!("{VERIFIED}: 0 chunks read (0 bytes), 64 hashed as written")), "{}", r.stderr);
    assert_eq!(db["bytes_read"], 0, "{db}");

    let s2 = second_snapshot(&a, dir.path());
    let r = receive(&b.pool, &s2);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The three chunks written in part and chunk 20, which the hole covers
    // in part; chunks 21-23 it covers whole are zero without a read.
    assert!(
        r.stderr.contains(&format!("{VERIFIED}: 4 chunks read ({} bytes), 1 hashed as written", 4 * C)),
        "{}",
        r.stderr
    );
    wait_for_builders(&a.pool);
    let (da, db) = (details(&a, "v@s2"), details(&b, "v@s2"));
    assert_eq!(db["built_by"], "receive");
    assert_eq!(db["root"], da["root"]);
    assert_eq!(db["bytes_read"], 4 * C);
    assert_eq!(db["data_chunks"], 64 - 3, "{db}");
    assert_eq!(db["chunks_copied"], 64 - 3 - 5, "{db}");
    assert_eq!(hash_file(&image(&b, "v@s2")), hash_file(&image(&a, "v@s2")));

    let j = b.run(&["scrub", "--all", "--json"]).ok();
    let j: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(j["manifests_created"].as_array().map_or(0, |m| m.len()), 0, "{j}");

    // A base without a manifest here (received from a sender that sent no
    // root): every chunk holding data is read, and the root still checked.
    let guid = b.info("v@s2")["guid"].as_str().unwrap().replace('-', "");
    for e in std::fs::read_dir(b.pool.join(".subvol/manifests")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&guid) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    pwrite(&image(&a, "v"), 50 * C, 4096, 0x77);
    a.run(&["snapshot", "v@s3"]).ok();
    let s3 = dir.path().join("s3");
    send(&a, "v@s3", Some("v@s2"), &s3);
    let r = receive(&b.pool, &s3);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{VERIFIED}: 61 chunks read ({} bytes)", 61 * C)), "{}", r.stderr);
    assert_eq!(hash_file(&image(&b, "v@s3")), hash_file(&image(&a, "v@s3")));
    assert_eq!(details(&b, "v@s3")["built_by"], "receive");
    b.run(&["pool", "check"]).ok();
}

#[test]
fn a_replica_is_verified_by_the_senders_root_on_xfs() {
    require_privileges!("a_replica_is_verified_by_the_senders_root_on_xfs");
    replica_is_verified(HostKind::Xfs);
}

#[test]
fn a_replica_is_verified_by_the_senders_root_on_btrfs() {
    require_privileges!("a_replica_is_verified_by_the_senders_root_on_btrfs");
    replica_is_verified(HostKind::Btrfs);
}

/// A stream altered in transit with valid checksums (every record's and
/// the END hash forged) passes the reader, and is refused by the content
/// root: nothing published, the pool as it was; the subvolume the
/// increment would have been applied to keeps its content.
#[test]
fn a_forged_stream_with_valid_checksums_is_refused_by_the_content_root() {
    require_privileges!("a_forged_stream_with_valid_checksums_is_refused_by_the_content_root");
    let a = TestHost::new(HostKind::Xfs, "2G");
    let b = TestHost::new(HostKind::Xfs, "2G");
    let dir = tempdir();
    let s1 = first_snapshot(&a, dir.path());
    let forged1 = dir.path().join("forged1");
    forge(&s1, &forged1);
    let before = tree_state(&b.pool);
    let r = receive(&b.pool, &forged1).fails(8, "v@s1 is not the sender's snapshot");
    assert!(r.stderr.contains("nothing was published"), "{}", r.stderr);
    assert_eq!(tree_state(&b.pool), before, "a refused stream left something behind");

    receive(&b.pool, &s1).ok();
    let s2 = second_snapshot(&a, dir.path());
    let forged2 = dir.path().join("forged2");
    forge(&s2, &forged2);
    let v = hash_file(&image(&b, "v"));
    let before = tree_state(&b.pool);
    receive(&b.pool, &forged2).fails(8, "v@s2 is not the sender's snapshot");
    assert_eq!(hash_file(&image(&b, "v")), v, "the refused increment changed v");
    assert_eq!(tree_state(&b.pool), before, "a refused increment left something behind");
    b.run(&["pool", "check"]).ok();
    // The genuine stream still goes in.
    receive(&b.pool, &s2).ok();
    assert_eq!(hash_file(&image(&b, "v@s2")), hash_file(&image(&a, "v@s2")));
}

/// A base that rotted on the replica (a block shared by the subvolume and
/// its snapshot) makes the increment's result differ from the sender's
/// snapshot in a chunk the increment only partly rewrote: the root catches
/// it, names the base to scrub, and the scrub then finds the damage.
#[test]
fn a_rotten_base_on_the_replica_is_caught_by_the_content_root() {
    require_privileges!("a_rotten_base_on_the_replica_is_caught_by_the_content_root");
    let (_a, b, _dir, s2) = pair_with_increment(HostKind::Xfs);
    // Chunk 9 is rewritten at its start only; rot 64 KiB further in, in
    // the host block v and v@s1 share.
    crate::scrub::flip_host_block(&b, HostKind::Xfs, &image(&b, "v@s1"), 9 * C + (64 << 10));
    receive(&b.pool, &s2).fails(8, "this pool's copy of the base v@s1 is damaged");
    assert!(b.run(&["list", "--snapshots", "--json"]).ok().contains("v@s1"));
    assert!(!b.run(&["list", "--snapshots", "--json"]).ok().contains("v@s2"), "the refused increment was published");
    b.run(&["scrub", "v@s1"]).fails(8, "v@s1");
}

/// The root of `image`'s content at `chunk_size`, as any program computes
/// it from the bytes alone (docs/FORMAT.md).
fn root_of(image: &Path, chunk_size: u32) -> String {
    use subvol_core::manifest::{BuiltBy, Entry, Geometry, Manifest, Provenance};
    let bytes = std::fs::read(image).unwrap();
    let g = Geometry::new(chunk_size, bytes.len() as u64).unwrap();
    let prov = Provenance::unmeasured(BuiltBy::Snapshot);
    let entries = (0..g.chunks()).map(|i| {
        let (o, l) = g.chunk(i);
        Entry::of(&bytes[o as usize..(o + l) as usize])
    });
    subvol_core::chunk_read::hex(&Manifest::from_entries(g, uuid::Uuid::nil(), prov, entries).root())
}

/// A sender may choose another chunk size (up to 16 MiB, longer than one
/// read): the receiver cannot use its base's 256 KiB manifest then, reads
/// every chunk holding data, and checks the root at that size.
#[test]
fn a_root_at_another_chunk_size_is_checked_by_reading_the_data() {
    require_privileges!("a_root_at_another_chunk_size_is_checked_by_reading_the_data");
    let (a, b, dir, s2) = pair_with_increment(HostKind::Xfs);
    const BIG: u32 = 8 << 20;
    let root = root_of(&image(&a, "v@s2"), BIG);
    let rechunk = |root: String, out: &Path| {
        let at_big = |h: &mut StreamHeader| h.manifest = Some(ContentRoot { chunk_size: BIG, root });
        rewrite(&s2, out, at_big, |_| {});
    };
    let wrong = dir.path().join("wrong");
    rechunk("0".repeat(64), &wrong);
    receive(&b.pool, &wrong).fails(8, "v@s2 is not the sender's snapshot");
    let right = dir.path().join("right");
    rechunk(root, &right);
    let r = receive(&b.pool, &right);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // 16 MiB of data in two 8 MiB chunks, both read.
    assert!(r.stderr.contains(&format!("{VERIFIED}: 2 chunks read ({} bytes)", 16u64 << 20)), "{}", r.stderr);
    assert_eq!(hash_file(&image(&b, "v@s2")), hash_file(&image(&a, "v@s2")));
}
