//! Manifests and scrub (issue 16) on real XFS and btrfs hosts: rot in a host
//! block is found in every snapshot that shares it; an interrupted scrub
//! resumes where it stopped; manifests of incremental snapshots read only
//! their changed chunks; a scrub of many snapshots reads their shared data
//! once; a killed builder leaves no manifest or a whole one.

use crate::harness::*;
use crate::require_privileges;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The chunk size of manifests (docs/FORMAT.md).
const C: u64 = 256 << 10;
const MIB: u64 = 1 << 20;

fn image(host: &TestHost, name: &str) -> PathBuf {
    PathBuf::from(host.info(name)["image"].as_str().unwrap())
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes `len` bytes of noise into a (live, raw) image at `offset`.
fn write_at(img: &Path, offset: u64, len: u64, seed: u64) {
    let f = File::options().write(true).open(img).unwrap();
    f.write_all_at(&noise(seed, len as usize), offset).unwrap();
    f.sync_all().unwrap();
}

fn drop_caches() {
    sh("sync", &[]);
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

fn settle(host: &TestHost) {
    wait_for_builders(host.dir.path());
}

/// The host device offset of byte `offset` of `file`: FIEMAP's address on
/// XFS; on btrfs that is a logical address, mapped to the device by
/// btrfs-map-logical.
fn device_offset(host: &TestHost, kind: HostKind, file: &Path, offset: u64) -> u64 {
    let map = subvol_os::fiemap::fiemap(File::open(file).unwrap(), true).unwrap();
    let e = map.extents.iter().find(|e| e.logical <= offset && offset < e.end()).expect("offset is mapped");
    let addr = e.physical + (offset - e.logical);
    if kind == HostKind::Xfs {
        return addr;
    }
    let dev = sh("findmnt", &["-n", "-o", "SOURCE", path_str(&host.mnt)]).trim().to_string();
    let out = sh("btrfs-map-logical", &["-l", &addr.to_string(), "-b", "4096", &dev]);
    let phys = out.lines().find_map(|l| l.split("physical ").nth(1)).expect(&out);
    phys.split_whitespace().next().unwrap().parse().unwrap()
}

/// Rot: flips a byte in the host block holding byte `offset` of `file`,
/// below the filesystem (every image sharing the block sees it).
pub(crate) fn flip_host_block(host: &TestHost, kind: HostKind, file: &Path, offset: u64) {
    let at = device_offset(host, kind, file, offset);
    let dev = File::options().read(true).write(true).open(host.dir.path().join("host.img")).unwrap();
    let mut b = [0u8; 1];
    dev.read_exact_at(&mut b, at).unwrap();
    dev.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
    dev.sync_all().unwrap();
    drop_caches();
}

/// A change of one snapshot by hand: immutable flag lifted, a byte
/// written (copy on write: only this image changes), its modification time
/// put back so that only a scrub can tell.
fn flip_in_snapshot(img: &Path, offset: u64) {
    sh("chattr", &["-i", path_str(img)]);
    let f = File::options().read(true).write(true).open(img).unwrap();
    let mtime = f.metadata().unwrap().modified().unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 1], offset).unwrap();
    f.sync_all().unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    sh("chattr", &["+i", path_str(img)]);
    drop_caches();
}

/// The damaged ranges a scrub report gives a snapshot, as (offset, length, fault).
fn ranges(report: &serde_json::Value, name: &str) -> Vec<(u64, u64, String)> {
    let s = report["snapshots"].as_array().unwrap().iter().find(|s| s["name"] == name).expect(name);
    s["damaged"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|r| {
                    (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap(), r["fault"].as_str().unwrap().into())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn damage_is_found_in_every_snapshot_sharing_it(kind: HostKind) {
    let host = TestHost::new(kind, "3G");
    host.run(&["create", "r", "--size", "128M", "--fs", "raw"]).ok();
    let img = image(&host, "r");
    write_at(&img, 0, 16 * MIB, 1);
    host.run(&["snapshot", "r@s1"]).ok();
    write_at(&img, 8 * MIB, MIB, 2);
    host.run(&["snapshot", "r@s2"]).ok();
    write_at(&img, 12 * MIB, MIB, 3);
    host.run(&["snapshot", "r@s3"]).ok();
    settle(&host);
    host.run(&["scrub", "--all"]).ok();
    // Rot in a block the three snapshots and r share (chunk 1) ...
    flip_host_block(&host, kind, &image(&host, "r@s1"), 300_000);
    // ... and r@s2 changed by hand where it shares with r@s3 and r (chunk
    // 32): the write copies the block, so only r@s2 changes.
    flip_in_snapshot(&image(&host, "r@s2"), 8 * MIB + 5000);
    let check = host.run(&["pool", "check"]);
    assert!(!check.stdout.contains("changed after it was taken"), "{}", check.stdout);
    let r = host.run(&["scrub", "--all", "--json"]).fails(8, "scrub found damage in r@s1, r@s2, r@s3, and in r (live)");
    assert!(r.stderr.contains("--repair-from"), "{}", r.stderr);
    let j = r.json();
    // btrfs checks its own data checksums and refuses the rotten block.
    let rot = if kind == HostKind::Btrfs { "unreadable" } else { "mismatch" };
    let chunk1 = (C, C, rot.to_string());
    assert_eq!(ranges(&j, "r@s1"), vec![chunk1.clone()]);
    assert_eq!(ranges(&j, "r@s2"), vec![chunk1.clone(), (32 * C, C, "mismatch".into())]);
    assert_eq!(ranges(&j, "r@s3"), vec![chunk1.clone()]);
    assert_eq!(j["live_damaged"][0]["name"], "r");
    assert_eq!(j["live_damaged"][0]["damaged"][0]["offset"], C);
    assert_eq!(j["clean"], false);
    // What status, info and check say afterwards.
    let st = host.run(&["pool", "status", "--json"]).json();
    let damaged: Vec<&str> =
        st["scrub"]["damaged"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(damaged, ["r@s1", "r@s2", "r@s3"]);
    assert!(host.run(&["pool", "status"]).ok().contains("scrub found damage in r@s1, r@s2, r@s3"));
    let info = host.info("r@s2");
    assert_eq!(info["integrity"]["last_scrub"]["verdict"], "damaged");
    assert_eq!(info["integrity"]["last_scrub"]["damaged"][1]["offset"], 32 * C);
    assert!(host.run(&["info", "r@s2"]).ok().contains("DAMAGED at"));
    let c = host.run(&["pool", "check"]).fails(8, "");
    assert!(c.stdout.contains("found damage in r@s2: 512K damaged at 262144+262144"), "{}", c.stdout);
}

#[test]
fn damage_is_found_in_every_snapshot_sharing_it_on_xfs() {
    require_privileges!("damage_is_found_in_every_snapshot_sharing_it_on_xfs");
    damage_is_found_in_every_snapshot_sharing_it(HostKind::Xfs);
}

#[test]
fn damage_is_found_in_every_snapshot_sharing_it_on_btrfs() {
    require_privileges!("damage_is_found_in_every_snapshot_sharing_it_on_btrfs");
    damage_is_found_in_every_snapshot_sharing_it(HostKind::Btrfs);
}

#[test]
fn an_interrupted_scrub_resumes_where_it_stopped() {
    require_privileges!("an_interrupted_scrub_resumes_where_it_stopped");
    let host = TestHost::new(HostKind::Xfs, "3G");
    host.run(&["create", "r", "--size", "512M", "--fs", "raw"]).ok();
    let img = image(&host, "r");
    write_at(&img, 0, 160 * MIB, 4);
    host.run(&["snapshot", "r@s1"]).ok();
    write_at(&img, 100 * MIB, MIB, 5);
    host.run(&["snapshot", "r@s2"]).ok();
    settle(&host);
    // Rot early on, found before the interruption.
    flip_host_block(&host, HostKind::Xfs, &image(&host, "r@s1"), 2 * C + 77);
    let progress = host.pool.join(".subvol/scrub/progress");
    let mut child = Command::new(BIN)
        .args(["--pool", path_str(&host.pool), "scrub", "--all", "--bwlimit", "16M"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !progress.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(progress.exists(), "the scrub recorded no progress in 30 s");
    let saved =
        subvol_core::scrub::ScrubProgress::decode(&std::fs::read(&progress).unwrap()).expect("a whole progress record");
    assert!(saved.next_chunk > 0 && saved.next_chunk < saved.total_chunks, "{saved:?}");
    let st = host.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["scrub"]["interrupted"]["done_bytes"], saved.next_chunk * C);
    assert!(host.run(&["pool", "status"]).ok().contains("`subvol scrub --all` resumes it"));
    let r = host.run(&["scrub", "--all", "--json"]).fails(8, "r@s1, r@s2");
    let j = r.json();
    assert_eq!(j["resumed_at_bytes"], saved.next_chunk * C);
    // What the first part found is kept; the rest is read once.
    assert_eq!(ranges(&j, "r@s1"), vec![(2 * C, C, "mismatch".into())]);
    assert_eq!(ranges(&j, "r@s2"), vec![(2 * C, C, "mismatch".into())]);
    let unique = 161 * MIB;
    let read = j["bytes_read"].as_u64().unwrap();
    assert!(read <= unique - saved.next_chunk * C + MIB, "resumed scrub read {read} of {unique}");
    assert!(!progress.exists(), "a finished scrub left its progress behind");
    let again = host.run(&["scrub", "--all", "--json"]).fails(8, "r@s1").json();
    assert!(again["resumed_at_bytes"].is_null());
    assert_eq!(again["bytes_read"], unique);
}

/// What the test expects the builder of one snapshot to have read: the
/// chunks its writes touched.
fn touched(writes: &[(u64, u64)]) -> BTreeSet<u64> {
    writes.iter().flat_map(|&(o, l)| o / C..(o + l).div_ceil(C)).collect()
}

#[test]
fn manifests_of_incremental_snapshots_read_only_their_changed_chunks() {
    require_privileges!("manifests_of_incremental_snapshots_read_only_their_changed_chunks");
    let host = TestHost::new(HostKind::Xfs, "3G");
    host.run(&["create", "r", "--size", "128M", "--fs", "raw"]).ok();
    let img = image(&host, "r");
    write_at(&img, 0, 64 * MIB, 6);
    host.run(&["snapshot", "r@s0"]).ok();
    let mut expect = Vec::new();
    let mut x = 12345u64;
    for i in 1..=20u64 {
        let mut writes = Vec::new();
        for _ in 0..(1 + i % 5) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            writes.push(((x >> 33) % (64 * MIB / 4096) * 4096, 4096));
        }
        if i % 4 == 0 {
            writes.push((i * MIB, MIB));
        }
        for &(o, l) in &writes {
            write_at(&img, o, l, 100 + i);
        }
        host.run(&["snapshot", &format!("r@s{i}")]).ok();
        expect.push(touched(&writes));
    }
    settle(&host);
    let d0 = &host.info("r@s0")["integrity"]["details"];
    assert_eq!(d0["bytes_read"], 64 * MIB, "the first manifest reads the data, not the holes");
    for (i, chunks) in expect.iter().enumerate() {
        let name = format!("r@s{}", i + 1);
        let info = host.info(&name);
        let d = &info["integrity"]["details"];
        assert_eq!(info["integrity"]["manifest"], "present", "{name}");
        assert_eq!(d["built_by"], "snapshot");
        assert_eq!(d["base"], host.info(&format!("r@s{i}"))["guid"], "{name} was not built from its predecessor");
        assert_eq!(d["chunks_hashed"], chunks.len(), "{name}: {d}");
        assert_eq!(d["bytes_read"], chunks.len() as u64 * C, "{name}: {d}");
        // Another program can read the manifest: an independent decoder,
        // against the root computed from the image alone.
        if i % 5 == 4 {
            assert_eq!(independent_root(&host, &name), d["root"].as_str().unwrap(), "{name}");
        }
    }
    host.run(&["scrub", "--all"]).ok();
}

/// The root of a snapshot as docs/FORMAT.md defines it, from its image;
/// also decodes its manifest file by the documented layout and checks the
/// stored root and checksum.
fn independent_root(host: &TestHost, name: &str) -> String {
    let img = image(host, name);
    let data = std::fs::read(&img).unwrap();
    let guid: String = host.info(name)["guid"].as_str().unwrap().replace('-', "");
    let dir = host.pool.join(".subvol/manifests");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&guid))
        .expect("a manifest named by the snapshot's guid")
        .path();
    let m = std::fs::read(file).unwrap();
    let u64_at = |o: usize| u64::from_le_bytes(m[o..o + 8].try_into().unwrap());
    assert_eq!(&m[..8], b"SVMANFST");
    assert_eq!(u32::from_le_bytes(m[12..16].try_into().unwrap()), C as u32);
    assert_eq!(u64_at(16), data.len() as u64);
    let (body, sum) = m.split_at(m.len() - 32);
    assert_eq!(blake3::hash(body).as_bytes(), sum);
    // Entries from the image: maximal runs of chunks that are not all zero.
    let mut runs: Vec<(u64, Vec<[u8; 32]>)> = Vec::new();
    for (i, chunk) in data.chunks(C as usize).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        let h = *blake3::hash(chunk).as_bytes();
        match runs.last_mut() {
            Some((first, v)) if *first + v.len() as u64 == i as u64 => v.push(h),
            _ => runs.push((i as u64, vec![h])),
        }
    }
    let mut h = blake3::Hasher::new();
    h.update(b"SVMROOT1");
    h.update(&(C as u32).to_le_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(&(runs.len() as u64).to_le_bytes());
    for (first, v) in &runs {
        h.update(&first.to_le_bytes());
        h.update(&(v.len() as u64).to_le_bytes());
    }
    for (_, v) in &runs {
        for x in v {
            h.update(x);
        }
    }
    let root = h.finalize();
    assert_eq!(u64_at(104), runs.len() as u64, "run count");
    assert_eq!(&body[body.len() - 32..], root.as_bytes(), "stored root");
    root.to_hex().to_string()
}

#[test]
fn scrubbing_many_snapshots_reads_their_shared_data_once() {
    require_privileges!("scrubbing_many_snapshots_reads_their_shared_data_once");
    let host = TestHost::new(HostKind::Xfs, "3G");
    host.run(&["create", "r", "--size", "512M", "--fs", "raw"]).ok();
    let img = image(&host, "r");
    write_at(&img, 0, 64 * MIB, 7);
    host.run(&["snapshot", "r@s0"]).ok();
    settle(&host);
    drop_caches();
    let one = host.run(&["scrub", "r", "--json"]).json();
    assert_eq!(one["bytes_read"], 64 * MIB);
    for i in 1..20u64 {
        write_at(&img, i * 3 * MIB, MIB, 200 + i);
        host.run(&["snapshot", &format!("r@s{i}")]).ok();
    }
    settle(&host);
    drop_caches();
    let twenty = host.run(&["scrub", "r", "--json"]).json();
    assert_eq!(twenty["snapshots"].as_array().unwrap().len(), 20);
    assert_eq!(twenty["bytes_verified"], 20 * 512 * MIB);
    // The base once, and each changed MiB once (later snapshots share it).
    assert_eq!(twenty["bytes_read"], 64 * MIB + 19 * MIB, "{twenty}");
    assert_eq!(twenty["clean"], true);
    let text = host.run(&["scrub", "r"]).ok();
    assert!(text.contains("scrubbed 20 snapshot(s) (r): 20 clean"), "{text}");
    assert!(text.contains("not covered: r (live subvolume)"), "{text}");
    assert!(!host.run(&["scrub", "r", "--snapshots-only"]).ok().contains("live subvolume"));
}

#[test]
fn missing_and_damaged_manifests_are_reported_and_made_again() {
    require_privileges!("missing_and_damaged_manifests_are_reported_and_made_again");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "r", "--size", "64M", "--fs", "raw"]).ok();
    let img = image(&host, "r");
    write_at(&img, 0, 8 * MIB, 8);
    host.run(&["snapshot", "r@s1"]).ok();
    write_at(&img, 4 * MIB, 4096, 9);
    host.run(&["snapshot", "r@s2"]).ok();
    settle(&host);
    let manifest_of = |name: &str| {
        let guid = host.info(name)["guid"].as_str().unwrap().replace('-', "");
        std::fs::read_dir(host.pool.join(".subvol/manifests"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&guid))
    };
    // An older snapshot without a manifest: a warning, then created by scrub.
    std::fs::remove_file(manifest_of("r@s1").unwrap()).unwrap();
    assert_eq!(host.info("r@s1")["integrity"]["manifest"], "missing");
    let check = host.run(&["pool", "check"]).ok();
    assert!(check.contains("snapshots without a manifest yet: r@s1 (`subvol scrub` creates them)"), "{check}");
    let out = host.run(&["scrub", "r"]).ok();
    assert!(
        out.contains("manifest created: r@s1 (hashed from the image as it is now: created, not verified)"),
        "{out}"
    );
    assert_eq!(host.info("r@s1")["integrity"]["details"]["built_by"], "scrub");
    // A damaged manifest: an error, removed by --repair, made again.
    let m2 = manifest_of("r@s2").unwrap();
    let mut bytes = std::fs::read(&m2).unwrap();
    bytes[130] ^= 1;
    std::fs::write(&m2, bytes).unwrap();
    host.run(&["pool", "check"]).fails(8, "");
    host.run(&["scrub", "r"]).fails(8, "scrub could not verify r@s2");
    assert_eq!(host.info("r@s2")["integrity"]["manifest"], "damaged");
    let repaired = host.run(&["pool", "check", "--repair"]).ok();
    assert!(repaired.contains("the manifest of snapshot r@s2 is damaged"), "{repaired}");
    host.run(&["scrub", "r@s2"]).ok();
    // A manifest no snapshot has, and a deleted snapshot's.
    std::fs::write(host.pool.join(".subvol/manifests/0123-4-5.manifest"), b"x").unwrap();
    host.run(&["delete", "r@s1"]).ok();
    let check = host.run(&["pool", "check", "--repair"]).ok();
    assert!(check.contains("stale manifest") && check.contains("0123-4-5.manifest"), "{check}");
    assert_eq!(std::fs::read_dir(host.pool.join(".subvol/manifests")).unwrap().count(), 1, "r@s2's alone");
    host.run(&["scrub", "nope"]).fails(3, "no subvolume");
    host.run(&["scrub"]).fails(2, "");
}

#[test]
fn a_killed_manifest_builder_leaves_no_manifest_or_a_whole_one() {
    require_privileges!("a_killed_manifest_builder_leaves_no_manifest_or_a_whole_one");
    let host = TestHost::new(HostKind::Xfs, "3G");
    host.run(&["create", "r", "--size", "512M", "--fs", "raw"]).ok();
    let img = image(&host, "r");
    write_at(&img, 0, 192 * MIB, 10);
    let mut x = 99u64;
    for round in 0..8u64 {
        write_at(&img, round * 7 * MIB, 3 * MIB, 300 + round);
        host.run(&["snapshot", &format!("r@k{round}")]).ok();
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis((x >> 33) % 400));
        for pid in background_builders(host.dir.path()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    settle(&host);
    // No manifest is torn: none is reported damaged.
    let check = host.run(&["pool", "check"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert!(!check.stdout.contains("is damaged"), "{}", check.stdout);
    host.run(&["pool", "check", "--repair"]).ok();
    host.run(&["scrub", "--all"]).ok();
    for round in 0..8 {
        assert_eq!(host.info(&format!("r@k{round}"))["integrity"]["manifest"], "present");
    }
}

#[test]
fn scrub_runs_beside_a_mounted_subvolume_and_its_writer() {
    require_privileges!("scrub_runs_beside_a_mounted_subvolume_and_its_writer");
    let host = TestHost::new(HostKind::Xfs, "3G");
    host.run(&["create", "db", "--size", "1G"]).ok();
    let mp = mount(&host, "db");
    write_data(&mp.join("a"), 1, 32 << 20);
    host.run(&["snapshot", "db@one"]).ok();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (flag, dir) = (stop.clone(), mp.clone());
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            write_data(&dir.join(format!("w{}", i % 8)), i, 1 << 20);
            i += 1;
        }
        i
    });
    host.run(&["snapshot", "db@two"]).ok();
    settle(&host);
    let j = host.run(&["scrub", "--all", "--json"]).json();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    assert_eq!(j["clean"], true, "{j}");
    assert_eq!(j["live"][0], "db");
    assert_eq!(host.info("db")["integrity"]["manifest"], "none");
    host.run(&["umount", "db"]).ok();
}

/// On a host without reflinks snapshots are copies: nothing is shared, so
/// each manifest reads all its data and a scrub reads every snapshot; a
/// changed byte is still found in exactly its snapshot.
#[test]
fn scrub_on_a_host_without_reflinks_reads_every_copy() {
    require_privileges!("scrub_on_a_host_without_reflinks_reads_every_copy");
    let host = TestHost::new(HostKind::Ext4, "2G");
    host.run(&["create", "r", "--size", "64M", "--fs", "raw"]).ok();
    let img = image(&host, "r");
    write_at(&img, 0, 8 * MIB, 11);
    host.run(&["snapshot", "r@s1"]).ok();
    write_at(&img, 0, 4096, 12);
    host.run(&["snapshot", "r@s2"]).ok();
    settle(&host);
    assert_eq!(host.info("r@s2")["integrity"]["details"]["bytes_read"], 8 * MIB, "a copy shares nothing with its base");
    let j = host.run(&["scrub", "--all", "--json"]).json();
    assert_eq!(j["bytes_read"], 16 * MIB);
    assert_eq!(j["clean"], true);
    flip_in_snapshot(&image(&host, "r@s2"), 3 * C + 9);
    let j = host.run(&["scrub", "--all", "--json"]).fails(8, "scrub found damage in r@s2:").json();
    assert_eq!(ranges(&j, "r@s2"), vec![(3 * C, C, "mismatch".into())]);
    assert!(ranges(&j, "r@s1").is_empty());
}

/// Pool `a` with raw subvolume r and snapshots s1..s3 sharing chunk 1 (s4
/// too when `four`), and pool `b` holding s1..s3 as received by streams,
/// with manifests of its own (built by its first scrub).
struct Pair {
    a: TestHost,
    b: TestHost,
}

fn replicated_pair(four: bool) -> Pair {
    let a = TestHost::new(HostKind::Xfs, "2G");
    let b = TestHost::new(HostKind::Xfs, "2G");
    a.run(&["create", "r", "--size", "64M", "--fs", "raw"]).ok();
    let img = image(&a, "r");
    write_at(&img, 0, 16 * MIB, 11);
    a.run(&["snapshot", "r@s1"]).ok();
    write_at(&img, 8 * MIB, MIB, 12);
    a.run(&["snapshot", "r@s2"]).ok();
    write_at(&img, 12 * MIB, MIB, 13);
    a.run(&["snapshot", "r@s3"]).ok();
    if four {
        write_at(&img, 20 * MIB, MIB, 14);
        a.run(&["snapshot", "r@s4"]).ok();
    }
    settle(&a);
    a.run(&["scrub", "--all"]).ok();
    let (s, r) = pipe(&a.pool, &["r@s1"], &b.pool, &["r"]);
    s.ok();
    r.ok();
    for (snap, base) in [("r@s2", "r@s1"), ("r@s3", "r@s2")] {
        let (s, r) = pipe(&a.pool, &[snap, "--from", base], &b.pool, &["r"]);
        s.ok();
        r.ok();
    }
    Pair { a, b }
}

fn hashes(host: &TestHost, names: &[&str]) -> Vec<String> {
    names.iter().map(|n| hash_file(&image(host, n))).collect()
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_string()).collect()
}

/// Rot in a block three snapshots and the live subvolume share, repaired
/// from a replica: every image byte-exact again, sharing kept, the next
/// scrub clean, `pool check` quiet. `remote`: the replica over ssh.
fn repair_restores_every_image_sharing_the_damaged_block(remote: bool) {
    let p = replicated_pair(false);
    p.b.run(&["scrub", "--all"]).ok();
    let all = ["r@s1", "r@s2", "r@s3", "r"];
    let before = hashes(&p.a, &all);
    flip_host_block(&p.a, HostKind::Xfs, &image(&p.a, "r@s1"), C + 4321);
    assert_ne!(hashes(&p.a, &all), before, "the flip reached the images");
    let sshd = remote.then(|| Sshd::start(p.a.dir.path()));
    let replica = if remote { format!("root@127.0.0.1:{}", path_str(&p.b.pool)) } else { path_str(&p.b.pool).into() };
    let mut args: Vec<String> =
        ["scrub", "--all", "--repair-from", &replica, "--json"].iter().map(|s| s.to_string()).collect();
    if let Some(s) = &sshd {
        args.extend(["--remote-bin".to_string(), BIN.to_string()]);
        args.extend(s.opts());
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let j = p.a.run(&argv).json();
    let rep = &j["repair"];
    assert_eq!(rep["complete"], true, "{j}");
    assert_eq!(names(&rep["repaired"]), ["r", "r@s1", "r@s2", "r@s3"], "{rep}");
    assert_eq!(rep["repaired"][1]["ranges"][0]["offset"], C);
    assert_eq!(rep["repaired"][1]["ranges"][0]["length"], C);
    // One chunk fetched for the four images that shared the block.
    assert_eq!(rep["chunks_fetched"], 1, "{rep}");
    drop_caches();
    assert_eq!(hashes(&p.a, &all), before, "the images are byte-exact again");
    let again = p.a.run(&["scrub", "--all", "--json"]).json();
    assert_eq!(again["clean"], true, "{again}");
    let check = p.a.run(&["pool", "check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    for s in ["r@s1", "r@s2", "r@s3"] {
        assert!(sh("lsattr", &[path_str(&image(&p.a, s))]).contains('i'), "{s} is immutable again");
    }
    let st = p.a.run(&["pool", "status", "--json"]).json();
    assert!(st["scrub"]["damaged"].as_array().unwrap().is_empty(), "{st}");
}

#[test]
fn repair_from_a_local_replica_restores_every_image_sharing_the_block() {
    require_privileges!("repair_from_a_local_replica_restores_every_image_sharing_the_block");
    repair_restores_every_image_sharing_the_damaged_block(false);
}

#[test]
fn repair_from_a_replica_over_ssh_restores_every_image_sharing_the_block() {
    require_privileges!("repair_from_a_replica_over_ssh_restores_every_image_sharing_the_block");
    repair_restores_every_image_sharing_the_damaged_block(true);
}

/// What a replica cannot give is not written, and named: its copy of the
/// chunk rotten too (refused by our manifest), its copy of a snapshot with
/// another manifest root (refused whole), a snapshot it lacks. Exit 8, the
/// pool's images as they were.
#[test]
fn what_the_replica_cannot_give_is_lost_and_nothing_is_written() {
    require_privileges!("what_the_replica_cannot_give_is_lost_and_nothing_is_written");
    let p = replicated_pair(true);
    // The replica's r@s3 differs in chunk 48 before its manifest is made
    // (as received from a sender that sent no root): its root is not ours.
    let guid = p.b.info("r@s3")["guid"].as_str().unwrap().replace('-', "");
    for e in std::fs::read_dir(p.b.pool.join(".subvol/manifests")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&guid) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    flip_in_snapshot(&image(&p.b, "r@s3"), 12 * MIB + 100);
    p.b.run(&["scrub", "--all"]).ok();
    // ... and its chunk 1 rots after: its manifest still says what it was.
    flip_host_block(&p.b, HostKind::Xfs, &image(&p.b, "r@s1"), C + 99);
    flip_host_block(&p.a, HostKind::Xfs, &image(&p.a, "r@s1"), C + 4321);
    flip_in_snapshot(&image(&p.a, "r@s3"), 12 * MIB + 7);
    flip_in_snapshot(&image(&p.a, "r@s4"), 20 * MIB + 7);
    let all = ["r@s1", "r@s2", "r@s3", "r@s4", "r"];
    let damaged = hashes(&p.a, &all);
    let r = p.a.run(&["scrub", "--all", "--repair-from", path_str(&p.b.pool), "--json"]);
    let r = r.fails(8, "could not repair everything; lost: ");
    let j = r.json();
    let rep = &j["repair"];
    assert_eq!(rep["complete"], false);
    assert!(rep["repaired"].as_array().unwrap().is_empty(), "{rep}");
    assert_eq!(rep["chunks_refused"], 1, "{rep}");
    let lost = rep["lost"].as_array().unwrap();
    let why = |name: &str, offset: u64| -> String {
        lost.iter()
            .find(|l| l["name"] == name && l["ranges"][0]["offset"] == offset)
            .unwrap_or_else(|| panic!("{name} at {offset} is not lost: {rep}"))["why"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for name in ["r@s1", "r@s2", "r@s3", "r@s4", "r"] {
        assert!(why(name, C).contains("do not match our manifest"), "{name}: {}", why(name, C));
    }
    assert!(why("r@s3", 48 * C).contains("not the same content"), "{}", why("r@s3", 48 * C));
    assert!(why("r@s4", 80 * C).contains("no snapshot with guid"), "{}", why("r@s4", 80 * C));
    assert!(r.stderr.contains("r@s4 (20971520+262144)"), "{}", r.stderr);
    drop_caches();
    assert_eq!(hashes(&p.a, &all), damaged, "nothing was written");
    let check = p.a.run(&["pool", "check"]);
    assert!(!check.stdout.contains("changed after it was taken"), "{}", check.stdout);
    // Without a replica: the same damage, named with its ranges, exit 8.
    let plain = p.a.run(&["scrub", "--all"]).fails(8, "scrub found damage in r@s1, r@s2, r@s3, r@s4");
    assert!(
        plain.stdout.contains("DAMAGED r@s4: 512K damaged at 262144+262144 mismatch, 20971520+262144 mismatch"),
        "{}",
        plain.stdout
    );
    assert!(plain.stderr.contains("--repair-from"), "{}", plain.stderr);
}

/// A repair killed right after a write: the next command puts flags and
/// times back (`pool check` finds nothing), and the next repair finishes.
#[test]
fn a_repair_killed_mid_write_is_finished_by_the_next_command() {
    require_privileges!("a_repair_killed_mid_write_is_finished_by_the_next_command");
    let p = replicated_pair(false);
    p.b.run(&["scrub", "--all"]).ok();
    let all = ["r@s1", "r@s2", "r@s3", "r"];
    let before = hashes(&p.a, &all);
    flip_host_block(&p.a, HostKind::Xfs, &image(&p.a, "r@s1"), C + 4321);
    // Snapshots' extent maps are cached now (a listing maps them).
    p.a.run(&["list", "--snapshots"]).ok();
    let killed = subvol_env(
        &p.a.pool,
        &["scrub", "--all", "--repair-from", path_str(&p.b.pool)],
        &[("SUBVOL_CRASH_AT", "repair-after-write")],
    );
    assert_eq!(killed.code, -1, "{killed:?}");
    assert!(p.a.pool.join(".subvol/scrub/repairing").exists());
    let check = p.a.run(&["pool", "check"]);
    // The repair moved r@s1's blocks and recovery put its recorded mtime
    // back (it is sealed again): a cached map of it, if any, is a new one.
    let s1 = image(&p.a, "r@s1");
    let guid = p.a.info("r@s1")["guid"].as_str().unwrap().replace('-', "");
    for e in std::fs::read_dir(p.a.pool.join(".subvol/cache")).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(&guid) {
            let cached = subvol_core::ExtentMap::from_bytes(&std::fs::read(e.path()).unwrap()).unwrap();
            let now = subvol_os::fiemap::fiemap(File::open(&s1).unwrap(), true).unwrap();
            assert_eq!(cached.physical_ranges(), now.physical_ranges(), "a stale cached map of r@s1 survived");
        }
    }
    assert!(!check.stdout.contains("changed after it was taken"), "{}", check.stdout);
    for s in ["r@s1", "r@s2", "r@s3"] {
        assert!(sh("lsattr", &[path_str(&image(&p.a, s))]).contains('i'), "{s} is immutable again");
    }
    assert!(!p.a.pool.join(".subvol/scrub/repairing").exists());
    let j = p.a.run(&["scrub", "--all", "--repair-from", path_str(&p.b.pool), "--json"]).json();
    assert_eq!(j["repair"]["complete"], true, "{j}");
    drop_caches();
    assert_eq!(hashes(&p.a, &all), before);
    assert_eq!(p.a.run(&["scrub", "--all", "--json"]).json()["clean"], true);
    // Idempotent: nothing left to do.
    let again = p.a.run(&["scrub", "--all", "--repair-from", path_str(&p.b.pool), "--json"]).json();
    assert!(again["repair"]["repaired"].as_array().unwrap().is_empty(), "{again}");
}

/// The damaged ranges of an XFS snapshot are traced to the file holding
/// them (the snapshot mounted read-only, its files' extents compared).
#[test]
fn damage_is_traced_to_the_files_inside_the_snapshot() {
    require_privileges!("damage_is_traced_to_the_files_inside_the_snapshot");
    let host = TestHost::new(HostKind::Xfs, "3G");
    host.run(&["create", "f", "--size", "512M", "--fs", "xfs"]).ok();
    let mp = mount(&host, "f");
    std::fs::create_dir(mp.join("dir")).unwrap();
    write_data(&mp.join("dir/victim.bin"), 5, 4 * MIB as usize);
    write_data(&mp.join("other.bin"), 6, 4 * MIB as usize);
    sh("sync", &[]);
    let inside = subvol_os::fiemap::fiemap(File::open(mp.join("dir/victim.bin")).unwrap(), true).unwrap();
    let at = inside.extents[0].physical + 3 * 4096 + 17;
    host.run(&["snapshot", "f@s1"]).ok();
    host.run(&["umount", "f"]).ok();
    settle(&host);
    host.run(&["scrub", "--all"]).ok();
    flip_in_snapshot(&image(&host, "f@s1"), at);
    let r = host.run(&["scrub", "f@s1", "--json"]).fails(8, "scrub found damage in f@s1");
    let j = r.json();
    let files = &j["files"][0];
    assert_eq!(files["name"], "f@s1", "{j}");
    assert_eq!(files["files"][0]["path"], "dir/victim.bin", "{j}");
    assert_eq!(files["files"].as_array().unwrap().len(), 1, "{j}");
    let human = host.run(&["scrub", "f@s1"]).fails(8, "");
    assert!(human.stdout.contains("damaged file in f@s1: dir/victim.bin"), "{}", human.stdout);
    assert!(mounts_under(host.dir.path()).iter().all(|m| !m.to_string_lossy().contains("mnt.f@s1")));
}

/// A raw image has no files: the report says so instead of guessing.
#[test]
fn files_of_a_raw_snapshot_are_not_guessed() {
    require_privileges!("files_of_a_raw_snapshot_are_not_guessed");
    let host = TestHost::new(HostKind::Xfs, "1G");
    host.run(&["create", "r", "--size", "16M", "--fs", "raw"]).ok();
    write_at(&image(&host, "r"), 0, MIB, 3);
    host.run(&["snapshot", "r@s1"]).ok();
    settle(&host);
    host.run(&["scrub", "--all"]).ok();
    flip_in_snapshot(&image(&host, "r@s1"), 100);
    let j = host.run(&["scrub", "--all", "--json"]).fails(8, "").json();
    assert!(j["files"][0]["note"].as_str().unwrap().contains("raw image has no filesystem"), "{j}");
}
