//! Subvolume lifecycle on real hosts: create, list, info, resize, rename,
//! delete, on XFS and btrfs.

use crate::harness::*;
use crate::require_privileges;

fn lifecycle(kind: HostKind) {
    let host = TestHost::new(kind, "6G");
    let c = host.run(&["create", "web", "--size", "1G", "--json"]).json();
    assert_eq!(c["name"], "web");
    assert_eq!(c["fs"], "xfs");
    assert_eq!(c["type"], "subvolume");
    host.run(&["create", "db", "--size", "512M", "--fs", "ext4", "--mkfs-opt=-L", "--mkfs-opt=dbdata"]).ok();
    host.run(&["create", "vm", "--size", "2G", "--fs", "raw"]).ok();
    let list = host.run(&["list", "--json"]).json();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db", "vm", "web"]);
    for s in list.as_array().unwrap() {
        let alloc = s["allocated_bytes"].as_u64().unwrap();
        let size = s["virtual_size_bytes"].as_u64().unwrap();
        assert!(alloc < size / 4, "{} is not sparse: {alloc} of {size}", s["name"]);
        assert!(s["image"].as_str().unwrap().starts_with(path_str(&host.pool)));
        assert!(s["created"].as_str().unwrap().ends_with('Z'));
        assert!(s["mount_point"].is_null());
    }
    let table = host.run(&["list"]).ok();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("web") && table.contains("ext4"));
    let db_label = sh("blkid", &["-o", "value", "-s", "LABEL", host.info("db")["image"].as_str().unwrap()]);
    assert_eq!(db_label.trim(), "dbdata");

    // Offline grow of each kind; the filesystem grows too.
    host.run(&["resize", "web", "2G"]).ok();
    host.run(&["resize", "db", "1G"]).ok();
    host.run(&["resize", "vm", "3G"]).ok();
    assert_eq!(host.info("web")["virtual_size_bytes"], 2u64 << 30);
    assert_eq!(host.info("vm")["virtual_size_bytes"], 3u64 << 30);
    let web_img = host.info("web")["image"].as_str().unwrap().to_string();
    let dblocks = sh("xfs_db", &["-r", "-c", "sb 0", "-c", "print dblocks", &web_img]);
    let blocks: u64 = dblocks.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(blocks * 4096, 2u64 << 30, "xfs did not grow: {dblocks}");
    let db_img = host.info("db")["image"].as_str().unwrap().to_string();
    let dump = sh("dumpe2fs", &["-h", &db_img]);
    let count: u64 = dump
        .lines()
        .find(|l| l.starts_with("Block count:"))
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(count * 4096, 1u64 << 30, "ext4 did not grow");
    // Growing to the same size again is a no-op that succeeds.
    host.run(&["resize", "web", "2G"]).ok();

    host.run(&["rename", "web", "www"]).ok();
    host.run(&["info", "web"]).fails(3, "no subvolume");
    let guid_before = c["guid"].as_str().unwrap().to_string();
    assert_eq!(host.info("www")["guid"], guid_before.as_str(), "rename must keep the identity");
    host.run(&["rename", "www", "db"]).fails(4, "already exists");
    for n in ["www", "db", "vm"] {
        host.run(&["delete", n]).ok();
    }
    assert!(host.run(&["list", "--json"]).json().as_array().unwrap().is_empty());
    assert!(std::fs::read_dir(host.pool.join(".subvol/tmp")).unwrap().next().is_none(), "temp files left behind");
}

#[test]
fn lifecycle_on_xfs_host() {
    require_privileges!("lifecycle_on_xfs_host");
    lifecycle(HostKind::Xfs);
}

#[test]
fn lifecycle_on_btrfs_host() {
    require_privileges!("lifecycle_on_btrfs_host");
    lifecycle(HostKind::Btrfs);
}

#[test]
fn interrupted_create_leaves_no_trace() {
    require_privileges!("interrupted_create_leaves_no_trace");
    let host = TestHost::xfs();
    // A crashed create leaves an image in the tmp dir; the next mutating
    // command removes it, and it never shows as a subvolume.
    let stale = host.pool.join(".subvol/tmp/create.ghost.123456789abc.img");
    std::fs::write(&stale, b"partial").unwrap();
    assert!(host.run(&["list", "--json"]).json().as_array().unwrap().is_empty());
    host.run(&["create", "real", "--size", "300M"]).ok();
    assert!(!stale.exists(), "stale temp image survived a mutating command");
}

/// Every mutating call may be retried (a crash, a timeout, Kubernetes):
/// finding the pool as asked is success, reported as such; finding
/// something else under the name is still refused.
#[test]
fn retried_calls_succeed_and_say_so() {
    require_privileges!("retried_calls_succeed_and_say_so");
    let host = TestHost::new(HostKind::Xfs, "3G");
    let outcome = |args: &[&str]| host.run(args).json()["outcome"].as_str().unwrap().to_string();
    assert_eq!(outcome(&["create", "a", "--size", "300M", "--json"]), "done");
    let before = tree_state(&host.pool);
    assert_eq!(outcome(&["create", "a", "--size", "300M", "--json"]), "already_done");
    assert!(host.run(&["create", "a", "--size", "300M"]).ok().starts_with("already created: a"));
    host.run(&["create", "a", "--size", "400M"]).fails(4, "already exists as 300M xfs (asked: 400M xfs)");
    host.run(&["create", "a", "--size", "300M", "--guarantee"]).fails(4, "(asked: 300M xfs guaranteed)");
    assert_eq!(tree_state(&host.pool), before);

    let snap = |args: &[&str]| host.run(args).json()[0]["outcome"].as_str().unwrap().to_string();
    assert_eq!(snap(&["snapshot", "a@s", "--json"]), "done");
    assert_eq!(snap(&["snapshot", "a@s", "--json"]), "already_done");
    // A snapshot of an earlier `a` is not this one.
    host.run(&["create", "b", "--size", "300M"]).ok();
    host.run(&["snapshot", "b@s"]).ok();
    host.run(&["snapshot", "a@t"]).ok();
    host.run(&["snapshot", "a@t", "b@t"]).fails(4, "not all the others do");
    host.run(&["delete", "b", "--keep-snapshots"]).ok();
    host.run(&["create", "b", "--size", "300M"]).ok();
    host.run(&["snapshot", "b@s"]).fails(4, "taken from an earlier subvolume");

    assert_eq!(outcome(&["clone", "a@s", "c", "--json"]), "done");
    assert_eq!(outcome(&["clone", "a@s", "c", "--json"]), "already_done");
    host.run(&["clone", "a@t", "c"]).fails(4, "not a clone of a@t");

    assert!(host.run(&["hold", "a@s", "keep"]).ok().starts_with("held"));
    assert!(host.run(&["hold", "a@s", "keep"]).ok().starts_with("already held"));
    assert!(host.run(&["release", "a@s", "keep"]).ok().starts_with("released"));
    assert!(host.run(&["release", "a@s", "keep"]).ok().contains("nothing released"));

    assert!(host.run(&["rename", "c", "d"]).ok().starts_with("renamed"));
    assert!(host.run(&["rename", "c", "d"]).ok().starts_with("already renamed"));
    host.run(&["rename", "c", "e"]).fails(3, "no subvolume");

    assert!(host.run(&["delete", "d"]).ok().starts_with("deleted"));
    assert!(host.run(&["delete", "d"]).ok().contains("not there; nothing deleted"));
    assert!(host.run(&["delete", "a@t"]).ok().starts_with("deleted"));
    assert!(host.run(&["delete", "a@t"]).ok().contains("not there"));
    // --recursive finishes what a crash left: snapshots of a gone subvolume.
    host.run(&["delete", "b", "--keep-snapshots"]).ok();
    assert!(host.run(&["delete", "b", "--recursive"]).ok().starts_with("deleted"));
    host.run(&["info", "b@s"]).fails(3, "no snapshot");
}
