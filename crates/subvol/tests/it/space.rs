//! Space: accounting, guarantees and admission control, trim, and the guard
//! stopping writers before a small host fills up.

use crate::harness::*;
use crate::require_privileges;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn host_free(host: &TestHost) -> u64 {
    host.run(&["pool", "status", "--json"]).json()["free_bytes"].as_u64().unwrap()
}

#[test]
fn accounting_exclusive_shared_written() {
    require_privileges!("accounting_exclusive_shared_written");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "256M", "--fs", "raw"]).ok();
    let img = PathBuf::from(host.info("a")["image"].as_str().unwrap());
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", img.display()),
            "bs=1M",
            "count=40",
            "conv=notrunc,fsync",
            "status=none",
        ],
    );
    let i = host.info("a");
    assert_eq!(i["exclusive_bytes"], 40u64 << 20);
    assert_eq!(i["shared_bytes"], 0);
    assert_eq!(i["written_bytes"], 40u64 << 20, "no snapshot yet: everything is new");
    host.run(&["snapshot", "a@s"]).ok();
    let i = host.info("a");
    assert_eq!(i["exclusive_bytes"], 0);
    assert_eq!(i["shared_bytes"], 40u64 << 20);
    assert_eq!(i["written_bytes"], 0);
    sh(
        "dd",
        &["if=/dev/urandom", &format!("of={}", img.display()), "bs=1M", "count=8", "conv=notrunc,fsync", "status=none"],
    );
    let i = host.info("a");
    assert_eq!(i["exclusive_bytes"], 8u64 << 20);
    assert_eq!(i["written_bytes"], 8u64 << 20, "what the next incremental send carries");
    let est = host.run(&["send", "--estimate", "a@s", "--json"]).json();
    assert_eq!(est["data_bytes"], 40u64 << 20);
    let s = host.info("a@s");
    assert_eq!(s["exclusive_bytes"], 8u64 << 20, "the snapshot alone keeps the overwritten 8M");
    let st = host.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["snapshots"], 1);
    assert!(st["overcommit_ratio"].as_f64().unwrap() > 0.0);
    let table = host.run(&["list", "--snapshots"]).ok();
    assert!(table.contains("EXCL") && table.contains("WRITTEN"), "{table}");
}

#[test]
fn admission_control_refuses_what_cannot_be_honoured() {
    require_privileges!("admission_control_refuses_what_cannot_be_honoured");
    let host = TestHost::new(HostKind::Xfs, "1G");
    host.run(&["create", "g", "--size", "600M", "--fs", "raw", "--guarantee"]).ok();
    let img = PathBuf::from(host.info("g")["image"].as_str().unwrap());
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", img.display()),
            "bs=1M",
            "count=500",
            "conv=notrunc,fsync",
            "status=none",
        ],
    );
    // Thin and raw: may overcommit, once the user accepts what that means.
    host.run(&["create", "t", "--size", "8G", "--fs", "raw", "--thin-unsafe"]).ok();
    host.run(&["snapshot", "t@old"]).ok();
    let before = tree_state(&host.pool);
    host.run(&["create", "big", "--size", "900M", "--fs", "raw", "--guarantee"]).fails(6, "needs 900M guaranteed");
    host.run(&["resize", "g", "1G"]).fails(6, "only");
    host.run(&["set", "t", "guarantee=on"]).fails(6, "guarantee=on");
    // A snapshot of g turns its 500M exclusive blocks into shared ones that
    // it may have to copy again: with less room than that, refused.
    let st = host.run(&["pool", "status", "--json"]).json();
    assert!(st["available_bytes"].as_u64().unwrap() < 500 << 20, "{st}");
    host.run(&["snapshot", "g@s"]).fails(6, "snapshot of guaranteed g");
    host.run(&["snapshot", "t@new"]).ok(); // thin: no obligation
    host.run(&["delete", "t@new"]).ok();
    assert_eq!(
        tree_state(&host.pool).iter().filter(|(p, _)| !p.to_string_lossy().contains("/cache/")).collect::<Vec<_>>(),
        before.iter().filter(|(p, _)| !p.to_string_lossy().contains("/cache/")).collect::<Vec<_>>(),
        "a refused operation changed the pool"
    );
    let st = host.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["outstanding_guarantees_bytes"], 100u64 << 20, "g may still need its 100M of holes");
    let msg = host.run(&["create", "big2", "--size", "900M", "--fs", "raw", "--guarantee"]).stderr;
    assert!(msg.contains("deleting snapshots would free") || msg.contains("no unheld snapshot"), "{msg}");
    host.run(&["set", "g", "guarantee=off"]).ok();
    assert_eq!(host.run(&["pool", "status", "--json"]).json()["outstanding_guarantees_bytes"], 0);
    host.run(&["set", "g", "guarantee=maybe"]).fails(2, "on or off");
}

#[test]
fn trim_gives_deleted_space_back() {
    require_privileges!("trim_gives_deleted_space_back");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "1G"]).ok();
    let mp = mount(&host, "a");
    write_data(&mp.join("big"), 1, 200 << 20);
    sh("sync", &[]);
    let alloc_full = host.info("a")["allocated_bytes"].as_u64().unwrap();
    std::fs::remove_file(mp.join("big")).unwrap();
    sh("sync", &[]);
    let free_before = host_free(&host);
    let r = host.run(&["trim", "a", "--json"]).json();
    assert!(r["subvolumes"][0]["trimmed_bytes"].as_u64().unwrap() >= 150 << 20, "{r}");
    let free_after = host_free(&host);
    assert!(free_after >= free_before + (150 << 20), "host free {free_before} -> {free_after}");
    assert!(host.info("a")["allocated_bytes"].as_u64().unwrap() + (150 << 20) <= alloc_full);
    host.run(&["trim"]).fails(2, "--all");
    host.run(&["trim", "--all"]).ok();
}

/// After a snapshot, small writes to a subvolume's shared blocks make XFS
/// reserve a whole CoW extent each (1 MiB with the image's extent hint) and
/// keep the unused rest for minutes; `subvol trim --all` gives it back.
#[test]
fn trim_gives_cow_staging_back() {
    require_privileges!("trim_gives_cow_staging_back");
    let host = TestHost::xfs();
    host.run(&["create", "r", "--size", "256M", "--fs", "raw"]).ok();
    let img = host.pool.join("subvolumes/r.img");
    {
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        let block = vec![0x5au8; 1 << 20];
        for i in 0..256u64 {
            f.write_all_at(&block, i << 20).unwrap();
        }
        f.sync_all().unwrap();
    }
    host.run(&["snapshot", "r@s"]).ok();
    sh("sync", &[]);
    let before = host_free(&host);
    {
        // One 4 KiB write into each of 64 MiB: 256 KiB of data, up to 64 MiB of staging.
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        for i in 0..64u64 {
            f.write_all_at(&[0xa5u8; 4096], (i << 20) + 8192).unwrap();
        }
        f.sync_all().unwrap();
    }
    sh("sync", &[]);
    let staged = before.saturating_sub(host_free(&host));
    eprintln!("256 KiB written after the snapshot held {staged} bytes of host space");
    host.run(&["trim", "--all"]).ok();
    let kept = before.saturating_sub(host_free(&host));
    assert!(kept <= 4 << 20, "after trim the writes hold {kept} bytes of host space (before trim: {staged})");
}

/// Writes `count` files of `size` bytes, fsyncing each; counts progress;
/// stops at the first error and returns it.
fn writer(
    dir: PathBuf,
    count: u64,
    size: usize,
    progress: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Result<Vec<String>, String>> {
    std::thread::spawn(move || {
        let mut hashes = Vec::new();
        for i in 0..count {
            let p = dir.join(format!("f{i}"));
            let mut x = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut data = vec![0u8; size];
            for chunk in data.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x.to_le_bytes();
                chunk.copy_from_slice(&b[..chunk.len()]);
            }
            let mut f = std::fs::File::create(&p).map_err(|e| format!("create f{i}: {e}"))?;
            for part in data.chunks(1 << 20) {
                f.write_all(part).map_err(|e| format!("write f{i}: {e}"))?;
                progress.fetch_add(part.len() as u64, Ordering::Relaxed);
            }
            f.sync_all().map_err(|e| format!("fsync f{i}: {e}"))?;
            hashes.push(blake3::hash(&data).to_hex().to_string());
        }
        Ok(hashes)
    })
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn guard_freezes_writers_before_the_host_is_full() {
    require_privileges!("guard_freezes_writers_before_the_host_is_full");
    // Only what the kernel says from here on: loop numbers are reused, and
    // earlier tests shut XFS down on purpose.
    let klog = KernelLog::mark();
    // Large enough that the thin writer fits once the ballast goes, with the
    // guard's margin (docs/SPACE.md) kept.
    let host = TestHost::new(HostKind::Xfs, "1600M");
    // Ballast outside the pool, deleted later to make room.
    let ballast = host.mnt.join("ballast");
    write_data(&ballast, 9, 900 << 20);
    host.run(&["create", "thin", "--size", "4G"]).ok();
    host.run(&["create", "safe", "--size", "320M", "--guarantee"]).ok();
    let thin = mount(&host, "thin");
    let safe = mount(&host, "safe");
    let log = host.dir.path().join("guard.log");
    let guard = KillOnDrop(
        Command::new(BIN)
            .args(["--pool", path_str(&host.pool), "guard", "--interval-ms", "50"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let guard_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let progress = Arc::new(AtomicU64::new(0));
    let w = writer(thin.clone(), 20, 16 << 20, progress.clone());
    // The thin writer outgrows the host: the guard must freeze it.
    // (It may pause the writer briefly on the way; what matters is the hard
    // freeze at the low watermark.)
    let hard = || {
        let l = guard_log();
        l.contains("until the high watermark)") || l.contains("holding until the high watermark")
    };
    wait_for("the guard to freeze the thin subvolume", 120, || hard() || w.is_finished());
    assert!(!w.is_finished(), "the writer finished without the guard ever freezing: {}", guard_log());
    assert!(!guard_log().contains("froze safe"), "a guaranteed subvolume was frozen");
    let st = host.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["frozen"][0]["name"], "thin", "{st}");
    assert_eq!(st["frozen"][0]["hard"], true, "{st}");
    // Writers block rather than fail.
    std::thread::sleep(Duration::from_millis(500));
    let p1 = progress.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(progress.load(Ordering::Relaxed), p1, "the frozen writer kept writing");
    assert!(!w.is_finished(), "the writer stopped (failed?) while frozen");
    // The guaranteed subvolume still writes its data.
    let g = writer(safe.clone(), 12, 16 << 20, Arc::new(AtomicU64::new(0)));
    let safe_hashes = g.join().unwrap().expect("the guaranteed subvolume must keep writing");
    // Space comes back: the guard thaws, the writer finishes, data verifies.
    std::fs::remove_file(&ballast).unwrap();
    sh("sync", &[]);
    let start = Instant::now();
    while !w.is_finished() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !w.is_finished() {
        drop(guard);
        let _ = Command::new("fsfreeze").args(["--unfreeze", path_str(&thin)]).output();
        panic!("the thin writer never finished after space came back; guard log:\n{}", guard_log());
    }
    let hashes =
        w.join().unwrap().unwrap_or_else(|e| panic!("the thin writer failed: {e}\nguard log:\n{}", guard_log()));
    assert!(guard_log().contains("thawed thin"), "{}", guard_log());
    drop(guard);
    for (i, h) in hashes.iter().enumerate() {
        assert_eq!(&hash_file(&thin.join(format!("f{i}"))), h, "thin f{i}");
    }
    for (i, h) in safe_hashes.iter().enumerate() {
        assert_eq!(&hash_file(&safe.join(format!("f{i}"))), h, "safe f{i}");
    }
    let kmsg = klog.text_since();
    let loopdev = host.info("thin")["loop_device"].as_str().unwrap().trim_start_matches("/dev/").to_string();
    assert!(
        !kmsg.lines().any(|l| l.contains(&format!("XFS ({loopdev})")) && l.contains("shut")),
        "inner XFS shut down"
    );
    host.run(&["umount", "thin"]).ok();
    let img = host.info("thin")["image"].as_str().unwrap().to_string();
    let out = Command::new("xfs_repair").args(["-n", &img]).output().unwrap();
    assert!(out.status.success(), "xfs_repair -n: {}", String::from_utf8_lossy(&out.stderr));
    assert!(Path::new(&img).exists());
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
