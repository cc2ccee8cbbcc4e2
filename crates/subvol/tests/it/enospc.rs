//! The ENOSPC promise, as shipped: thin subvolumes on a small, overcommitted
//! XFS host, `subvol guard` running as users run it, and writers as fast
//! and as many as the machine allows. Afterwards no writer saw an error,
//! every file checksums, the kernel log has no space or I/O error for the
//! pool's loop devices, and `xfs_repair -n` finds every inner XFS clean.
//!
//! These tests fill whole hosts at full speed, so they take turns (one at a
//! time within this binary) to keep their timing meaningful.

use crate::harness::*;
use crate::require_privileges;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A child process killed when the test ends, however it ends. A writer
/// blocked on a frozen filesystem cannot die until it is thawed (the host's
/// teardown thaws), so this waits a few seconds at most, never for ever.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        for _ in 0..50 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `subvol guard` as users run it (default interval), logging to a file.
fn start_guard(host: &TestHost) -> (Reaped, PathBuf) {
    start_guard_with(host, &[])
}

/// `subvol guard` with `extra` arguments, logging to a file.
fn start_guard_with(host: &TestHost, extra: &[&str]) -> (Reaped, PathBuf) {
    let log = host.dir.path().join("guard.log");
    let child = Command::new(BIN)
        .args(["--pool", path_str(&host.pool), "guard"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("guard: watching") {
        assert!(start.elapsed() < Duration::from_secs(20), "the guard did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Reaped(child), log)
}

/// Fills the host outside the pool with `mib` MiB (allocated, not sparse).
fn ballast(host: &TestHost, mib: u64) -> PathBuf {
    let p = host.mnt.join("ballast");
    sh("fallocate", &["-l", &format!("{mib}M"), path_str(&p)]);
    p
}

/// Waits for the guard to hold writers frozen at the low watermark.
fn wait_hard_freeze(log: &Path, writers: &mut [Reaped], secs: u64) {
    let start = Instant::now();
    loop {
        let l = std::fs::read_to_string(log).unwrap_or_default();
        if l.contains("until the high watermark)") || l.contains("holding until the high watermark") {
            return;
        }
        let done: Vec<String> =
            writers.iter_mut().filter_map(|w| w.0.try_wait().ok().flatten().map(|s| format!("{s}"))).collect();
        assert!(done.len() < writers.len(), "every writer finished without a hard freeze: {done:?}\n{l}");
        assert!(start.elapsed() < Duration::from_secs(secs), "no hard freeze within {secs}s:\n{l}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for every writer to exit and asserts each succeeded.
fn wait_writers_ok(writers: &mut [Reaped], what: &[&str], log: &Path, secs: u64) {
    let start = Instant::now();
    for (w, name) in writers.iter_mut().zip(what) {
        loop {
            if let Some(st) = w.0.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(e) = w.0.stderr.as_mut() {
                    let _ = std::io::Read::read_to_string(e, &mut err);
                }
                assert!(st.success(), "writer {name} failed ({st}): {err}\nguard log:\n{}", read(log));
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "writer {name} never finished after space came back; guard log:\n{}",
                read(log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// fio writing `size` into `dir` with one engine, verifying what it wrote
/// (crc32c headers in every block, read back after the write).
fn fio(dir: &Path, kind: &str, size: &str) -> Reaped {
    let mut args: Vec<String> = vec![
        "--name=w".into(),
        format!("--directory={}", dir.display()),
        format!("--size={size}"),
        "--rw=write".into(),
        "--bs=1M".into(),
        "--verify=crc32c".into(),
        "--do_verify=1".into(),
        "--end_fsync=1".into(),
        "--minimal".into(),
        // No verify-state file in the working directory.
        "--verify_state_save=0".into(),
    ];
    match kind {
        "buffered" => args.extend(["--ioengine=psync".into()]),
        "direct" => args.extend(["--ioengine=libaio".into(), "--direct=1".into(), "--iodepth=16".into()]),
        // Stores into a shared mapping, msync at the end.
        "mmap" => args.extend(["--ioengine=mmap".into()]),
        other => panic!("unknown writer {other}"),
    }
    Reaped(Command::new("fio").args(&args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("fio"))
}

/// `cp` of a cached 64 MiB file into `dir`, `count` times, then `sync -f`.
fn cp_loop(src: &Path, dir: &Path, count: u32) -> Reaped {
    let script = format!(
        "set -e; for i in $(seq 1 {count}); do cp {src} {dir}/f$i; done; sync -f {dir}",
        src = src.display(),
        dir = dir.display()
    );
    Reaped(Command::new("bash").args(["-c", &script]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
}

/// Busy loops on every core until dropped: the guard's poll comes late.
struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let threads = (0..n)
            .map(|_| {
                let s = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !s.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                })
            })
            .collect();
        CpuHog { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Unmounts each subvolume and runs `xfs_repair -n` on its image.
fn repair_clean(host: &TestHost, names: &[&str]) {
    for n in names {
        host.run(&["umount", n]).ok();
        let img = host.info(n)["image"].as_str().unwrap().to_string();
        let out = Command::new("xfs_repair").args(["-n", &img]).output().unwrap();
        assert!(out.status.success(), "xfs_repair -n {n}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

fn assert_capped(host: &TestHost, name: &str) {
    let i = host.info(name);
    // The kernel keeps the cap as a fraction of a limit that moves with free
    // memory: it reads back within a few percent.
    let cap =
        i["attachments"][0]["writeback_cap_bytes"].as_u64().unwrap_or_else(|| panic!("{name} is not capped: {i}"));
    assert!(cap.abs_diff(64 << 20) <= (64 << 20) / 20, "{name} is capped at {cap}: {i}");
}

/// The host: 1.6 GiB XFS, one thin 4 GiB XFS subvolume mounted (and
/// checked to be capped), the kernel log marked. Returns the host, the log
/// marker, the mount point and the loop device's name.
fn one_thin_subvolume() -> (TestHost, KernelLog, PathBuf, String) {
    let host = TestHost::new(HostKind::Xfs, "1600M");
    let kmsg = KernelLog::mark();
    host.run(&["create", "thin", "--size", "4G"]).ok();
    let mp = mount(&host, "thin");
    assert_capped(&host, "thin");
    let dev = loop_name(&host, "thin");
    (host, kmsg, mp, dev)
}

#[test]
fn guard_catches_a_cp_from_page_cache() {
    require_privileges!("guard_catches_a_cp_from_page_cache");
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (host, kmsg, mp, dev) = one_thin_subvolume();
    let src = host.dir.path().join("src");
    write_data(&src, 3, 64 << 20);
    let want = hash_file(&src); // and now it is in the page cache
    let ball = ballast(&host, 700);
    let (_guard, log) = start_guard(&host);
    let mut w = [cp_loop(&src, &mp, 14)];
    wait_hard_freeze(&log, &mut w, 120);
    // Blocked, not failed.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(w[0].0.try_wait().unwrap().is_none(), "cp ended while frozen:\n{}", read(&log));
    let st = host.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["frozen"][0]["name"], "thin", "{st}");
    assert!(st["guard_pid"].as_u64().is_some(), "{st}");
    std::fs::remove_file(&ball).unwrap();
    wait_writers_ok(&mut w, &["cp"], &log, 180);
    for i in 1..=14 {
        assert_eq!(hash_file(&mp.join(format!("f{i}"))), want, "f{i}");
    }
    let complaints = kmsg.complaints(&[dev]);
    assert!(complaints.is_empty(), "kernel: {complaints:#?}\nguard log:\n{}", read(&log));
    repair_clean(&host, &["thin"]);
    eprintln!("guard log:\n{}", read(&log));
}

#[test]
fn guard_catches_fio_buffered_at_full_speed() {
    require_privileges!("guard_catches_fio_buffered_at_full_speed");
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (host, kmsg, mp, dev) = one_thin_subvolume();
    let ball = ballast(&host, 700);
    let (_guard, log) = start_guard(&host);
    let mut w = [fio(&mp, "buffered", "1000M")];
    wait_hard_freeze(&log, &mut w, 120);
    std::fs::remove_file(&ball).unwrap();
    wait_writers_ok(&mut w, &["fio buffered"], &log, 180);
    let complaints = kmsg.complaints(&[dev]);
    assert!(complaints.is_empty(), "kernel: {complaints:#?}\nguard log:\n{}", read(&log));
    repair_clean(&host, &["thin"]);
    eprintln!("guard log:\n{}", read(&log));
}

/// Three thin subvolumes written at once by a buffered, an O_DIRECT and an
/// mmap writer, and a guaranteed one that must keep writing throughout.
fn three_writers_and_a_guaranteed_one(busy_cpu: bool) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // 3 GiB host, 1.2 GiB ballast, 300M guaranteed: ~1.4 GiB of headroom
    // before, ~2.6 GiB after the ballast goes; the thin writers want 1.05 GiB
    // beyond the low watermark (~0.6 GiB with three thin subvolumes) only
    // fits after.
    let host = TestHost::new(HostKind::Xfs, "3G");
    let kmsg = KernelLog::mark();
    let kinds = ["buffered", "direct", "mmap"];
    let mut mps = Vec::new();
    let mut devs = Vec::new();
    for k in kinds {
        host.run(&["create", k, "--size", "2G"]).ok();
        mps.push(mount(&host, k));
        assert_capped(&host, k);
        devs.push(loop_name(&host, k));
    }
    host.run(&["create", "safe", "--size", "300M", "--guarantee"]).ok();
    let safe = mount(&host, "safe");
    devs.push(loop_name(&host, "safe"));
    let ball = ballast(&host, 1200);
    let (_guard, log) = start_guard(&host);
    let hog = busy_cpu.then(CpuHog::start);
    let mut w: Vec<Reaped> = kinds.iter().zip(&mps).map(|(k, mp)| fio(mp, k, "350M")).collect();
    wait_hard_freeze(&log, &mut w, 180);
    assert!(!read(&log).contains("froze safe"), "a guaranteed subvolume was frozen:\n{}", read(&log));
    // The guaranteed subvolume writes while the others are frozen.
    let mut g = [fio(&safe, "buffered", "200M")];
    wait_writers_ok(&mut g, &["guaranteed"], &log, 120);
    // A thin writer is blocked, not failed: one that ended did so with
    // success (it finished its share while the guard had thawed after a
    // reclaim, before the hard freeze); its data is verified below.
    for w in w.iter_mut() {
        if let Some(status) = w.0.try_wait().unwrap() {
            assert!(status.success(), "a thin writer failed while frozen ({status:?}):\n{}", read(&log));
        }
    }
    std::fs::remove_file(&ball).unwrap();
    wait_writers_ok(&mut w, &kinds, &log, 240);
    drop(hog);
    for mp in &mps {
        sh("sync", &["-f", path_str(mp)]);
    }
    let complaints = kmsg.complaints(&devs);
    assert!(complaints.is_empty(), "kernel: {complaints:#?}\nguard log:\n{}", read(&log));
    repair_clean(&host, &["buffered", "direct", "mmap", "safe"]);
    eprintln!("guard log:\n{}", read(&log));
}

#[test]
fn guard_catches_three_writers_of_every_kind() {
    require_privileges!("guard_catches_three_writers_of_every_kind");
    three_writers_and_a_guaranteed_one(false);
}

#[test]
fn guard_catches_three_writers_on_a_busy_cpu() {
    require_privileges!("guard_catches_three_writers_on_a_busy_cpu");
    three_writers_and_a_guaranteed_one(true);
}

/// Every path that attaches a thin image caps its dirty page cache; a
/// guaranteed one keeps the kernel's limits; a cap removed by hand is
/// reported by `pool check`, restored by `--repair` and by the guard.
#[test]
fn every_attach_caps_thin_writeback() {
    require_privileges!("every_attach_caps_thin_writeback");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M"]).ok();
    mount(&host, "a");
    assert_capped(&host, "a");
    let st = host.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["thin_writeback_cap_bytes"], 64u64 << 20);
    assert!(host.run(&["info", "a"]).ok().contains("dirty cap"));
    // Remount.
    host.run(&["umount", "a"]).ok();
    mount(&host, "a");
    assert_capped(&host, "a");
    // Online resize keeps it.
    host.run(&["resize", "a", "768M"]).ok();
    assert_capped(&host, "a");
    // Snapshot, clone, rollback (which remounts).
    host.run(&["snapshot", "a@s"]).ok();
    host.run(&["clone", "a@s", "c"]).ok();
    mount(&host, "c");
    assert_capped(&host, "c");
    host.run(&["rollback", "a@s", "--force"]).ok();
    assert_capped(&host, "a");
    // A snapshot is read-only: nothing to cap.
    mount(&host, "a@s");
    assert!(host.info("a@s")["attachments"][0]["writeback_cap_bytes"].is_null());
    // Guaranteed: the kernel's limits; thin again: capped again.
    host.run(&["set", "c", "guarantee=on"]).ok();
    assert!(host.info("c")["attachments"][0]["writeback_cap_bytes"].is_null());
    host.run(&["set", "c", "guarantee=off"]).ok();
    assert_capped(&host, "c");
    // Removed by hand: check warns, --repair restores.
    let dev = host.info("c")["loop_device"].as_str().unwrap().to_string();
    let rdev = std::fs::metadata(&dev).map(|m| std::os::unix::fs::MetadataExt::rdev(&m)).unwrap();
    let bdi = format!("/sys/class/bdi/{}:{}", libc::major(rdev), libc::minor(rdev));
    std::fs::write(format!("{bdi}/strict_limit"), "0").unwrap();
    let r = host.run(&["pool", "check"]);
    assert!(r.stdout.contains("without its dirty page cache cap"), "{}", r.stdout);
    let st = host.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["uncapped_thin"][0], "c", "{st}");
    host.run(&["pool", "check", "--repair"]).ok();
    assert_capped(&host, "c");
    // The guard restores it too, within a second or two.
    std::fs::write(format!("{bdi}/strict_limit"), "0").unwrap();
    let (guard, log) = start_guard(&host);
    // It runs ahead of busy writers (docs/SPACE.md): nice -10.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", guard.0.id())).unwrap();
    let nice: i32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(16).unwrap().parse().unwrap();
    assert_eq!(nice, -10, "{stat}");
    let start = Instant::now();
    while host.info("c")["attachments"][0]["writeback_cap_bytes"].is_null() {
        assert!(start.elapsed() < Duration::from_secs(10), "the guard did not restore the cap:\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(read(&log).contains("restored it"), "{}", read(&log));
    // A second guard is refused.
    host.run(&["guard", "--once"]).fails(5, "already watches");
}

/// Mounting a thin subvolume in an overcommitted pool that no guard
/// watches warns once; `pool status` says whether a guard watches. A thin
/// raw image, which no guard can freeze, is refused in an overcommitted
/// pool unless the user accepts the risk.
#[test]
fn unguarded_overcommit_is_told() {
    require_privileges!("unguarded_overcommit_is_told");
    let host = TestHost::new(HostKind::Xfs, "1G");
    host.run(&["create", "big", "--size", "8G"]).ok();
    let r = host.run(&["mount", "big"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("no guard watches"), "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    let st = host.run(&["pool", "status", "--json"]).json();
    assert!(st["guard_pid"].is_null());
    assert!(st["warnings"][0].as_str().unwrap().contains("no guard watches"), "{st}");
    assert!(host.run(&["pool", "status"]).ok().contains("not running"));
    {
        let (_guard, _log) = start_guard(&host);
        host.run(&["umount", "big"]).ok();
        let r = host.run(&["mount", "big"]);
        assert!(!r.stderr.contains("no guard"), "{}", r.stderr);
        assert!(host.run(&["pool", "status"]).ok().contains("watching (pid"));
    }
    // Raw and thin in an overcommitted pool: refused, the pool untouched.
    host.run(&["create", "vm", "--size", "4G", "--fs", "raw"]).fails(6, "--thin-unsafe");
    host.run(&["info", "vm"]).fails(3, "");
    host.run(&["create", "vm", "--size", "4G", "--fs", "raw", "--thin-unsafe"]).ok();
    host.run(&["create", "vm2", "--size", "64M", "--fs", "raw", "--guarantee"]).ok();
}

/// Resize and snapshot of a subvolume the guard holds frozen are refused
/// up front (exit 5, naming the guard) instead of hanging behind the freeze
/// with the image already grown.
#[test]
fn commands_on_a_guard_frozen_subvolume_name_the_guard() {
    require_privileges!("commands_on_a_guard_frozen_subvolume_name_the_guard");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M"]).ok();
    mount(&host, "a");
    let size = host.info("a")["virtual_size_bytes"].as_u64().unwrap();
    // A low watermark above the host's free space: the guard freezes at once.
    host.run(&["guard", "--once", "--low-watermark", "100G", "--high-watermark", "200G"]).ok();
    assert_eq!(host.run(&["pool", "status", "--json"]).json()["frozen"][0]["name"], "a");
    host.run(&["resize", "a", "768M"]).fails(5, "the guard froze it");
    assert_eq!(host.info("a")["virtual_size_bytes"].as_u64().unwrap(), size, "the image grew anyway");
    host.run(&["snapshot", "a"]).fails(5, "the guard froze it");
    assert_eq!(host.run(&["list", "--snapshots", "--json"]).json().as_array().unwrap().len(), 1);
    host.run(&["umount", "a"]).ok(); // thaws first
}

/// A guard stopped (SIGTERM, as systemd stops it; SIGINT, as Ctrl-C does)
/// while it holds subvolumes frozen thaws them first: nothing would thaw
/// them after it, and their writers would block for ever.
#[test]
fn a_stopped_guard_thaws_what_it_froze() {
    require_privileges!("a_stopped_guard_thaws_what_it_froze");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M"]).ok();
    let mp = mount(&host, "a");
    for signal in ["-TERM", "-INT"] {
        // A low watermark above the host's free space: it freezes at once.
        let (mut guard, log) = start_guard_with(&host, &["--low-watermark", "100G", "--high-watermark", "200G"]);
        let start = Instant::now();
        while !read(&log).contains("froze a at") {
            assert!(start.elapsed() < Duration::from_secs(20), "the guard did not freeze a:\n{}", read(&log));
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(host.run(&["pool", "status", "--json"]).json()["frozen"][0]["name"], "a");
        sh("kill", &[signal, &guard.0.id().to_string()]);
        let status = guard.0.wait().unwrap();
        assert!(status.success(), "{signal}: the guard exited with {status}:\n{}", read(&log));
        assert!(read(&log).contains("the guard stopped; nothing watches the host now"), "{}", read(&log));
        assert!(host.run(&["pool", "status", "--json"]).json()["frozen"].as_array().unwrap().is_empty());
        // Writable: a write to a frozen filesystem would block.
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = mp.join("probe");
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::write(&probe, b"x").is_ok());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(ok) => assert!(ok, "{signal}: the write failed"),
            Err(_) => {
                let _ = Command::new("fsfreeze").args(["--unfreeze", path_str(&mp)]).output();
                panic!("{signal}: the guard left a frozen:\n{}", read(&log));
            }
        }
    }
    host.run(&["pool", "check"]).ok();
}

/// On a nearly full host with no guard, a snapshot of a mounted subvolume
/// is refused before freezing (exit 6, with the numbers) instead of making
/// the inner XFS write its log into a full host; `pool status` warns.
#[test]
fn snapshot_on_a_full_host_is_refused_before_freezing() {
    require_privileges!("snapshot_on_a_full_host_is_refused_before_freezing");
    let host = TestHost::new(HostKind::Xfs, "1G");
    let kmsg = KernelLog::mark();
    host.run(&["create", "a", "--size", "512M"]).ok();
    let mp = mount(&host, "a");
    write_data(&mp.join("f"), 1, 8 << 20);
    let dev = loop_name(&host, "a");
    let free = host.run(&["pool", "status", "--json"]).json()["free_bytes"].as_u64().unwrap();
    // Leave about 40 MiB.
    sh("fallocate", &["-l", &(free - (40 << 20)).to_string(), path_str(&host.mnt.join("ballast"))]);
    let r = host.run(&["snapshot", "a"]);
    assert_eq!(r.code, 6, "{r:?}");
    assert!(r.stderr.contains("free but freezing 1 mounted subvolume"), "{}", r.stderr);
    let st = host.run(&["pool", "status", "--json"]).json();
    assert!(
        st["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("below the safety margin")),
        "{st}"
    );
    host.run(&["resize", "a", "768M"]).fails(6, "free");
    // The filesystem is alive: it reads back and unmounts cleanly.
    assert_eq!(std::fs::metadata(mp.join("f")).unwrap().len(), 8 << 20);
    std::fs::remove_file(host.mnt.join("ballast")).unwrap();
    host.run(&["snapshot", "a"]).ok();
    let complaints = kmsg.complaints(&[dev]);
    assert!(complaints.is_empty(), "kernel: {complaints:#?}");
    repair_clean(&host, &["a"]);
}
