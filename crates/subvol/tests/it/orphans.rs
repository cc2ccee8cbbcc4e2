//! Orphans (issue 12 item 8): an image deleted while mounted keeps its loop
//! device, its mount and its blocks. `list`, `pool status` and `pool check`
//! must show it, `mount`/`umount` of a re-created NAME must give one clear
//! error, and `pool check --repair` or `umount --force NAME` must release it.

use crate::harness::*;
use crate::require_privileges;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes available to unprivileged writers on the filesystem holding `p`.
fn avail_bytes(p: &Path) -> u64 {
    let out = sh("stat", &["-f", "-c", "%a %S", path_str(p)]);
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

/// Creates and mounts NAME in `pool`, writes `len` bytes that reach the
/// host image, then deletes the image behind subvol's back (the careless
/// `rm`). Returns the mount point.
fn mount_write_and_rm(pool: &Path, name: &str, len: usize) -> PathBuf {
    subvol(pool, &["create", name, "--size", "1G"]).ok();
    let mp = PathBuf::from(subvol(pool, &["mount", name, "--json"]).json()["mount_point"].as_str().unwrap());
    write_data(&mp.join("data"), 7, len);
    sh("sync", &["-f", path_str(&mp.join("data"))]);
    std::fs::remove_file(pool.join(format!("subvolumes/{name}.img"))).unwrap();
    mp
}

/// Whether `losetup -a` still lists a device backed by a file under `dir`.
fn losetup_lists(dir: &Path) -> bool {
    sh("losetup", &["-a"]).lines().any(|l| l.contains(path_str(dir)))
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn orphan_is_listed_checked_and_released_by_repair() {
    require_privileges!("orphan_is_listed_checked_and_released_by_repair");
    let host = TestHost::xfs();
    // Another pool on the same host with an orphan of its own: never ours.
    let other = host.mnt.join("other");
    subvol(&other, &["pool", "init", path_str(&other)]).ok();
    mount_write_and_rm(&other, "web", 1 << 20);

    let mp = mount_write_and_rm(&host.pool, "web", 64 << 20);

    // list: the table is empty, a marked section shows the orphan.
    let table = host.run(&["list"]).ok();
    assert!(table.contains("DELETED WHILE ATTACHED"), "{table}");
    assert!(table.contains(path_str(&mp)), "{table}");
    assert!(!table.contains(path_str(&other)), "claimed another pool's orphan: {table}");
    // list --json: still the array scripts parse, with a warning on stderr.
    let r = host.run(&["list", "--json"]);
    assert_eq!(r.code, 0);
    assert_eq!(r.json().as_array().map(Vec::len), Some(0), "{}", r.stdout);
    assert!(r.stderr.contains("deleted while attached"), "{}", r.stderr);

    // pool status: count, held bytes, warning.
    let st = host.run(&["pool", "status", "--json"]).json();
    let orphans = st["orphans"].as_array().unwrap();
    assert_eq!(orphans.len(), 1, "{st}");
    assert_eq!(orphans[0]["name"], "web");
    assert_eq!(orphans[0]["mount_points"][0], path_str(&mp));
    assert!(orphans[0]["loop_device"].as_str().unwrap().starts_with("/dev/loop"));
    let held = orphans[0]["held_bytes"].as_u64().expect("XFS reports the held blocks");
    assert!(held >= 64 << 20, "held {held}");
    assert!(st["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("pool check --repair")));
    let human = host.run(&["pool", "status"]).ok();
    assert!(human.contains("orphans:") && human.contains("WARNING"), "{human}");

    // pool check: a problem naming both fixes.
    let r = host.run(&["pool", "check"]).fails(8, "pool check --repair");
    assert!(r.stdout.contains("deleted while attached") && r.stdout.contains("umount --force web"), "{}", r.stdout);
    assert!(!r.stdout.contains(path_str(&other)), "{}", r.stdout);

    // A re-created NAME: mount and umount give the same clear error and
    // change nothing.
    host.run(&["create", "web", "--size", "1G"]).ok();
    let before = tree_state(&host.pool);
    let alt = host.dir.path().join("alt");
    for args in [&["mount", "web"][..], &["umount", "web"], &["mount", "web", path_str(&alt)]] {
        host.run(args).fails(5, "umount --force web");
    }
    assert_eq!(tree_state(&host.pool), before);
    assert!(!alt.exists(), "the refused mount created its mount point");
    assert_eq!(mounts_under(&host.pool), vec![mp.clone()]);
    assert!(host.info("web")["mount_point"].is_null());

    // --repair releases it and the host gets the space back.
    let free_before = avail_bytes(&host.mnt);
    let out = host.run(&["pool", "check", "--repair"]).ok();
    assert!(out.contains("repaired: unmounted from"), "{out}");
    assert!(loops_under(&host.pool).is_empty(), "loop device left attached");
    assert!(!losetup_lists(&host.pool), "losetup -a still lists the orphan");
    assert!(mounts_under(&host.pool).is_empty());
    // XFS frees a deleted inode's blocks in the background (inodegc):
    // give it a few seconds.
    let mut freed = 0;
    for _ in 0..50 {
        freed = avail_bytes(&host.mnt).saturating_sub(free_before);
        if freed + (1 << 20) >= held {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("orphan held {held} bytes; repair returned {freed} bytes to the host");
    assert!(freed + (1 << 20) >= held, "held {held}, freed {freed}");
    host.run(&["pool", "check"]).ok();
    // The other pool's orphan is untouched.
    assert_eq!(loops_under(&other).len(), 1);
    assert_eq!(mounts_under(&other).len(), 1);

    // The re-created NAME now mounts where the old one was.
    assert_eq!(mount(&host, "web"), mp);
    host.run(&["umount", "web"]).ok();
}

#[test]
fn umount_force_releases_an_orphan_even_with_files_open() {
    require_privileges!("umount_force_releases_an_orphan_even_with_files_open");
    let host = TestHost::xfs();
    let mp = mount_write_and_rm(&host.pool, "web", 16 << 20);
    // Without --force: one clear error, not "no subvolume web".
    host.run(&["umount", "web"]).fails(5, "umount --force web");
    // A writer keeps a file open: the unmount is lazy, and said to be.
    let open = std::fs::OpenOptions::new().append(true).open(mp.join("data")).unwrap();
    let out = host.run(&["umount", "--force", "web"]).ok();
    assert!(out.contains("unmounted lazily") && out.contains("still in use"), "{out}");
    assert!(mounts_under(&host.pool).is_empty(), "still mounted");
    assert_eq!(loops_under(&host.pool).len(), 1, "detached under an open file");
    host.run(&["pool", "check"]).fails(8, "pool check --repair");
    drop(open);
    wait_until("the loop device detaches", Duration::from_secs(10), || loops_under(&host.pool).is_empty());
    host.run(&["pool", "check"]).ok();

    // A snapshot deleted while mounted (its immutable flag lifted first).
    host.run(&["create", "db", "--size", "512M"]).ok();
    host.run(&["snapshot", "db"]).ok();
    let snap = host.run(&["list", "-s", "db", "--json"]).json()[1]["name"].as_str().unwrap().to_string();
    let snap_mp = mount(&host, &snap);
    let image = host.info(&snap)["image"].as_str().unwrap().to_string();
    sh("chattr", &["-i", &image]);
    std::fs::remove_file(&image).unwrap();
    let table = host.run(&["list", "db"]).ok();
    assert!(table.contains(&snap) && table.contains("DELETED WHILE ATTACHED"), "{table}");
    host.run(&["mount", &snap]).fails(5, &format!("umount --force {snap}"));
    let out = host.run(&["umount", "--force", &snap]).ok();
    assert!(out.contains(&format!("unmounted from {}", snap_mp.display())) && out.contains("detached"), "{out}");
    assert!(loops_under(&host.pool).is_empty());
    assert!(mounts_under(&host.pool).is_empty());
    host.run(&["pool", "check"]).ok();
    host.run(&["umount", "--force", "web"]).fails(3, "no subvolume");
}

#[test]
fn pool_umount_counts_and_releases_orphans() {
    require_privileges!("pool_umount_counts_and_releases_orphans");
    let dir = tempdir();
    let _cleanup = Teardown(dir.path().to_path_buf());
    let pool = dir.path().join("pool");
    subvol(&pool, &["pool", "init", path_str(&pool), "--backing-image", "2G"]).ok();
    mount_write_and_rm(&pool, "a", 1 << 20);
    subvol(&pool, &["pool", "umount", path_str(&pool)]).fails(5, "a (deleted, still attached)");
    subvol(&pool, &["pool", "umount", path_str(&pool), "--force"]).ok();
    assert!(loops_under(dir.path()).is_empty(), "pool umount --force left loop devices");
    assert!(mounts_under(dir.path()).is_empty());
}
