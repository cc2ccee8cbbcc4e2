//! Snapshots, clones, rollback, holds and retention on real hosts.

use crate::harness::*;
use crate::require_privileges;
use std::path::Path;
use std::process::{Command, Stdio};

fn contents_are_point_in_time(kind: HostKind) {
    let host = TestHost::new(kind, "6G");
    host.run(&["create", "a", "--size", "1G"]).ok();
    let mp = mount(&host, "a");
    let before = write_data(&mp.join("before"), 1, 3 << 20);
    let r = host.run(&["snapshot", "a@s1", "--tag", "manual", "--json"]).json();
    assert_eq!(r[0]["name"], "a@s1");
    assert_eq!(r[0]["frozen"], true);
    assert_eq!(r[0]["method"], "reflink");
    write_data(&mp.join("before"), 2, 3 << 20);
    write_data(&mp.join("after"), 3, 1 << 20);
    let info = host.info("a@s1");
    assert_eq!(info["type"], "snapshot");
    assert_eq!(info["origin"]["name"], "a");
    assert_eq!(info["tags"][0], "manual");
    let smp = mount(&host, "a@s1");
    assert_eq!(hash_file(&smp.join("before")), before);
    assert!(!smp.join("after").exists(), "data written after the snapshot is in it");
    assert!(std::fs::write(smp.join("x"), b"x").is_err(), "snapshot mount is writable");
    // Snapshots are immutable, even for root.
    let img = info["image"].as_str().unwrap().to_string();
    assert!(std::fs::OpenOptions::new().write(true).open(&img).is_err(), "snapshot image opened for writing");
    assert!(std::fs::remove_file(&img).is_err(), "snapshot image could be removed");
    host.run(&["umount", "a@s1"]).ok();
    host.run(&["umount", "a"]).ok();
}

#[test]
fn snapshot_is_point_in_time_on_xfs() {
    require_privileges!("snapshot_is_point_in_time_on_xfs");
    contents_are_point_in_time(HostKind::Xfs);
}

#[test]
fn snapshot_is_point_in_time_on_btrfs() {
    require_privileges!("snapshot_is_point_in_time_on_btrfs");
    contents_are_point_in_time(HostKind::Btrfs);
}

#[test]
fn snapshot_without_reflinks_is_a_copy() {
    require_privileges!("snapshot_without_reflinks_is_a_copy");
    let host = TestHost::new(HostKind::Ext4, "3G");
    assert_eq!(host.run(&["pool", "status", "--json"]).json()["reflink"], false);
    host.run(&["create", "a", "--size", "512M"]).ok();
    let mp = mount(&host, "a");
    let h = write_data(&mp.join("f"), 7, 8 << 20);
    let r = host.run(&["snapshot", "a@s", "--json"]);
    assert!(r.stderr.contains("full copy"), "no warning: {}", r.stderr);
    assert_eq!(r.json()[0]["method"], "copy");
    write_data(&mp.join("f"), 8, 8 << 20);
    host.run(&["clone", "a@s", "b"]).ok();
    let bmp = mount(&host, "b");
    assert_eq!(hash_file(&bmp.join("f")), h);
}

#[test]
fn snapshot_under_write_load_is_consistent() {
    require_privileges!("snapshot_under_write_load_is_consistent");
    let host = TestHost::xfs();
    host.run(&["create", "busy", "--size", "2G"]).ok();
    let mp = mount(&host, "busy");
    // A writer that keeps creating and rewriting files while we snapshot.
    let script = format!(
        "i=0; while [ $i -lt 400 ]; do dd if=/dev/urandom of={0}/f$((i % 40)) bs=64k count=8 conv=fsync status=none; i=$((i+1)); done",
        mp.display()
    );
    let mut writer =
        Command::new("sh").arg("-c").arg(&script).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    for i in 0..3 {
        host.run(&["snapshot", &format!("busy@s{i}")]).ok();
    }
    let status = writer.wait().unwrap();
    assert!(status.success(), "the writer failed while snapshots were taken");
    for i in 0..3 {
        // A snapshot mounts cleanly as is (read-only, no log replay) ...
        let smp = mount(&host, &format!("busy@s{i}"));
        assert!(std::fs::read_dir(&smp).unwrap().count() > 0);
        host.run(&["umount", &format!("busy@s{i}")]).ok();
        // ... and a clone of it (log replayed) passes xfs_repair -n.
        let clone = format!("c{i}");
        host.run(&["clone", &format!("busy@s{i}"), &clone]).ok();
        let img = host.info(&clone)["image"].as_str().unwrap().to_string();
        let out = Command::new("xfs_repair").args(["-n", &img]).output().unwrap();
        assert!(out.status.success(), "xfs_repair -n failed on {clone}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn origin_clones_and_snapshot_mount_together() {
    require_privileges!("origin_clones_and_snapshot_mount_together");
    for fs in ["xfs", "ext4"] {
        let host = TestHost::xfs();
        host.run(&["create", "o", "--size", "512M", "--fs", fs]).ok();
        let mp = mount(&host, "o");
        let h = write_data(&mp.join("f"), 11, 1 << 20);
        host.run(&["snapshot", "o@s"]).ok();
        host.run(&["clone", "o@s", "c1"]).ok();
        host.run(&["clone", "o@s", "c2"]).ok();
        let m1 = mount(&host, "c1");
        let m2 = mount(&host, "c2");
        let ms = mount(&host, "o@s");
        for m in [&mp, &m1, &m2, &ms] {
            assert_eq!(hash_file(&m.join("f")), h, "{fs}: {}", m.display());
        }
        // Clones are independent, writable filesystems.
        let h1 = write_data(&m1.join("f"), 12, 1 << 20);
        assert_eq!(hash_file(&m2.join("f")), h);
        assert_eq!(hash_file(&mp.join("f")), h);
        assert_eq!(hash_file(&m1.join("f")), h1);
        let info = host.info("c1");
        assert_eq!(info["origin"]["name"], "o@s");
        for n in ["o@s", "c2", "c1", "o"] {
            host.run(&["umount", n]).ok();
        }
    }
}

#[test]
fn clone_rollback_delete_in_every_order() {
    require_privileges!("clone_rollback_delete_in_every_order");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M"]).ok();
    let mp = mount(&host, "a");
    let v1 = write_data(&mp.join("f"), 1, 1 << 20);
    host.run(&["snapshot", "a@v1"]).ok();
    let v2 = write_data(&mp.join("f"), 2, 1 << 20);
    host.run(&["snapshot", "a@v2"]).ok();
    write_data(&mp.join("f"), 3, 1 << 20);

    // Rollback refuses while mounted, then works with --force and remounts.
    host.run(&["rollback", "a@v1"]).fails(5, "--force");
    let r = host.run(&["rollback", "a@v1", "--force", "--json"]).json();
    let pre = r["pre_rollback"].as_str().unwrap().to_string();
    assert_eq!(hash_file(&mp.join("f")), v1);
    // The rollback can be undone.
    host.run(&["umount", "a"]).ok();
    host.run(&["rollback", &pre]).ok();
    let mp = mount(&host, "a");
    assert!(hash_file(&mp.join("f")) != v1);
    host.run(&["umount", "a"]).ok();

    // Clone, then delete the origin: the clone and snapshots live on.
    host.run(&["clone", "a@v2", "b"]).ok();
    host.run(&["delete", "a"]).fails(5, "--recursive");
    host.run(&["delete", "a", "--keep-snapshots"]).ok();
    let bm = mount(&host, "b");
    assert_eq!(hash_file(&bm.join("f")), v2);
    host.run(&["umount", "b"]).ok();
    // Rollback brings a deleted subvolume back from a kept snapshot.
    host.run(&["rollback", "a@v1"]).ok();
    let mp = mount(&host, "a");
    assert_eq!(hash_file(&mp.join("f")), v1);
    host.run(&["umount", "a"]).ok();
    // Delete the snapshot a clone came from: the clone is unaffected.
    host.run(&["delete", "a@v2"]).ok();
    let bm = mount(&host, "b");
    assert_eq!(hash_file(&bm.join("f")), v2);
    host.run(&["umount", "b"]).ok();
    // Snapshot a clone, delete the clone, clone the snapshot.
    host.run(&["snapshot", "b@x"]).ok();
    host.run(&["delete", "b", "--keep-snapshots"]).ok();
    host.run(&["clone", "b@x", "b2"]).ok();
    let m = mount(&host, "b2");
    assert_eq!(hash_file(&m.join("f")), v2);
    host.run(&["umount", "b2"]).ok();
    // Recursive delete takes the snapshots along.
    host.run(&["delete", "a", "--recursive"]).ok();
    assert!(
        host.run(&["list", "--snapshots", "a", "--json"]).code != 0
            || host.run(&["list", "-s", "a", "--json"]).json().as_array().unwrap().is_empty()
    );
    host.run(&["info", "a@v1"]).fails(3, "no snapshot");
}

#[test]
fn several_subvolumes_share_one_point_in_time() {
    require_privileges!("several_subvolumes_share_one_point_in_time");
    let host = TestHost::xfs();
    for n in ["db", "wal", "raw"] {
        let fs = if n == "raw" { "raw" } else { "xfs" };
        host.run(&["create", n, "--size", "512M", "--fs", fs]).ok();
    }
    mount(&host, "db");
    mount(&host, "wal");
    let r = host.run(&["snapshot", "db", "wal", "raw", "--json"]).json();
    let names: Vec<&str> = r.as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    let snap = names[0].split('@').nth(1).unwrap().to_string();
    assert!(names.iter().all(|n| n.ends_with(&format!("@{snap}"))), "{names:?}");
    assert_eq!(r[0]["frozen"], true);
    assert_eq!(r[2]["frozen"], false);
    // The same default name again in the same second gets a suffix.
    host.run(&["snapshot", "db"]).ok();
    assert!(host.run(&["list", "-s", "db", "--json"]).json().as_array().unwrap().len() >= 3);
}

#[test]
fn holds_names_and_freeze_errors() {
    require_privileges!("holds_names_and_freeze_errors");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M"]).ok();
    let mp = mount(&host, "a");
    host.run(&["snapshot", "a@s"]).ok();
    let before = tree_state(&host.pool);
    host.run(&["snapshot", "nope"]).fails(3, "no subvolume");
    host.run(&["info", "a@nope"]).fails(3, "no snapshot");
    host.run(&["clone", "a@nope", "x"]).fails(3, "no snapshot");
    host.run(&["clone", "a@s", "a"]).fails(4, "already exists");
    host.run(&["snapshot", "a@bad/name"]).fails(2, "contains '/'");
    host.run(&["hold", "a@s", "keep"]).ok();
    assert!(host.run(&["hold", "a@s", "keep"]).ok().contains("already held"));
    host.run(&["delete", "a@s"]).fails(5, "held (keep)");
    host.run(&["delete", "a", "--recursive", "--force"]).fails(5, "held");
    assert!(host.run(&["release", "a@s", "other"]).ok().contains("nothing released"));
    // A filesystem frozen by someone else cannot be frozen again: clear
    // error, nothing changed, and it stays as the other party left it.
    sh("fsfreeze", &["--freeze", path_str(&mp)]);
    let r = host.run(&["snapshot", "a@t"]);
    sh("fsfreeze", &["--unfreeze", path_str(&mp)]);
    r.fails(5, "cannot freeze");
    host.run(&["release", "a@s", "keep"]).ok();
    assert_eq!(tree_state(&host.pool), before, "failed commands changed the pool");
    host.run(&["delete", "a@s"]).ok();
}

#[test]
fn killed_while_frozen_is_thawed_by_the_next_command() {
    require_privileges!("killed_while_frozen_is_thawed_by_the_next_command");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M"]).ok();
    let mp = mount(&host, "a");
    let r = subvol_env(&host.pool, &["snapshot", "a@s"], &[("SUBVOL_CRASH_AT", "snapshot-frozen")]);
    assert_eq!(r.code, -1, "the crash point did not kill the process: {r:?}");
    // Frozen now: a write would block. The next command (even a read-only
    // one) thaws it.
    host.run(&["list"]).ok();
    let mp2 = mp.clone();
    let t = std::thread::spawn(move || std::fs::write(mp2.join("after-crash"), b"ok").is_ok());
    let start = std::time::Instant::now();
    while !t.is_finished() && start.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if !t.is_finished() {
        let _ = Command::new("fsfreeze").args(["--unfreeze", path_str(&mp)]).output();
        panic!("the filesystem stayed frozen after the next command");
    }
    assert!(t.join().unwrap());
    // The half-made snapshot is gone; the pool is clean.
    host.run(&["info", "a@s"]).fails(3, "no snapshot");
    host.run(&["snapshot", "a@s"]).ok();
    assert!(Path::new(&mp).join("after-crash").exists());
}

#[test]
fn prune_and_autosnap() {
    require_privileges!("prune_and_autosnap");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M", "--fs", "raw"]).ok();
    for i in 0..5 {
        host.run(&["snapshot", &format!("a@m{i}"), "--tag", "manual"]).ok();
    }
    host.run(&["hold", "a@m0", "keep"]).ok();
    let dry = host.run(&["prune", "a", "--keep-last", "2", "--dry-run", "--json"]).json();
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 0);
    let go: Vec<&str> = dry["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["keep"] == false)
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(go, ["a@m1", "a@m2"]);
    let table = host.run(&["prune", "a", "--keep-last", "2", "--dry-run"]).ok();
    assert!(table.contains("would delete") && table.contains("held (keep)"), "{table}");
    assert_eq!(
        host.run(&["list", "-s", "a", "--json"]).json().as_array().unwrap().len(),
        6,
        "dry run deleted something"
    );
    host.run(&["prune", "a", "--keep-last", "2"]).ok();
    let left: Vec<String> = host
        .run(&["list", "-s", "a", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["a", "a@m0", "a@m3", "a@m4"]);
    host.run(&["prune", "a"]).fails(2, "snapshot.policy");
    host.run(&["set", "a", "snapshot.policy=bogus"]).fails(2, "retention policy");
    host.run(&["set", "a", "color=blue"]).fails(2, "unknown property");
    host.run(&["set", "a", "org.example:owner=ops"]).ok();
    host.run(&["set", "a", "snapshot.policy=last=2"]).ok();
    let got = host.run(&["get", "a", "snapshot.policy", "--json"]).json();
    assert_eq!(got[0]["value"], "last=2");
    assert_eq!(got[0]["name"], "a");
    for _ in 0..4 {
        host.run(&["autosnap"]).ok();
    }
    let autos = host
        .run(&["list", "-s", "a", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"].as_str().unwrap().contains("@auto-"))
        .count();
    assert_eq!(autos, 2, "autosnap must keep its policy's count of its own snapshots");
    // Manual snapshots are not touched by autosnap's pruning.
    assert!(host.run(&["info", "a@m3"]).code == 0);
}

/// A snapshot written to after `chattr -i` (or truncated) no longer matches
/// what was taken or sent: `pool check` says so. Holds, which rewrite its
/// metadata, are not mistaken for a change.
#[test]
fn pool_check_notices_a_snapshot_changed_by_hand() {
    require_privileges!("pool_check_notices_a_snapshot_changed_by_hand");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "a", "--size", "64M", "--fs", "raw"]).ok();
    for s in ["a@s", "a@t"] {
        host.run(&["snapshot", s]).ok();
    }
    host.run(&["hold", "a@s", "keep"]).ok();
    host.run(&["pool", "check"]).ok();
    let img = |s: &str| host.info(s)["image"].as_str().unwrap().to_string();
    let (s, t) = (img("a@s"), img("a@t"));
    sh("chattr", &["-i", &s]);
    sh("dd", &["if=/dev/zero", &format!("of={s}"), "bs=4k", "count=1", "seek=3", "conv=notrunc", "status=none"]);
    sh("chattr", &["+i", &s]);
    sh("chattr", &["-i", &t]);
    sh("truncate", &["-s", "128M", &t]);
    sh("chattr", &["+i", &t]);
    let r = host.run(&["pool", "check"]).fails(8, "");
    assert!(r.stdout.contains(&format!("snapshot {s} changed after it was taken: it was written to")), "{}", r.stdout);
    assert!(r.stdout.contains("its size changed from 67108864 to 134217728 bytes"), "{}", r.stdout);
}
