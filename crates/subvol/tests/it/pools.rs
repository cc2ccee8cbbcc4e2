//! Pools: probing the host, backing-image pools, status.

use crate::harness::*;
use crate::require_privileges;

#[test]
fn init_probes_reflinks() {
    require_privileges!("init_probes_reflinks");
    let xfs = TestHost::xfs();
    let st = xfs.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["host_fs"], "xfs");
    assert_eq!(st["reflink"], true);
    let btrfs = TestHost::new(HostKind::Btrfs, "2G");
    let st = btrfs.run(&["pool", "status", "--json"]).json();
    assert_eq!(st["host_fs"], "btrfs");
    assert_eq!(st["reflink"], true);
    // A plain directory on the ext4 test disk: no reflinks, and it says so.
    let dir = tempdir();
    let p = dir.path().join("p");
    let out = subvol(&p, &["pool", "init", path_str(&p)]).ok();
    if sh("stat", &["-f", "-c", "%T", path_str(dir.path())]).trim() == "ext2/ext3" {
        assert!(out.contains("no reflinks"), "{out}");
    }
}

#[test]
fn backing_image_pool_survives_umount_and_mount() {
    require_privileges!("backing_image_pool_survives_umount_and_mount");
    let dir = tempdir();
    let _cleanup = Teardown(dir.path().to_path_buf());
    let pool = dir.path().join("pool");
    let out = subvol(&pool, &["pool", "init", path_str(&pool), "--backing-image", "2G", "--json"]).json();
    assert_eq!(out["host_fs"], "xfs");
    assert_eq!(out["reflink"], true);
    assert_eq!(out["backing_image"], path_str(&dir.path().join("pool.img")));
    subvol(&pool, &["create", "a", "--size", "300M"]).ok();
    let mp = subvol(&pool, &["mount", "a", "--json"]).json()["mount_point"].as_str().unwrap().to_string();
    std::fs::write(format!("{mp}/f"), b"persist").unwrap();
    subvol(&pool, &["pool", "umount", path_str(&pool)]).fails(5, "--force");
    subvol(&pool, &["pool", "umount", path_str(&pool), "--force"]).ok();
    assert!(loops_under(dir.path()).is_empty(), "pool umount leaked loop devices");
    subvol(&pool, &["list"]).fails(11, "subvol pool mount");
    subvol(&pool, &["pool", "mount", path_str(&pool)]).ok();
    let again = subvol(&pool, &["pool", "mount", path_str(&pool)]).ok();
    assert!(again.contains("already mounted"), "{again}");
    let mp = subvol(&pool, &["mount", "a", "--json"]).json()["mount_point"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read(format!("{mp}/f")).unwrap(), b"persist");
    let st = subvol(&pool, &["pool", "status", "--json"]).json();
    assert_eq!(st["subvolumes"], 1);
    assert_eq!(st["mounted"], 1);
    assert!(st["capacity_bytes"].as_u64().unwrap() > 1 << 30);
    subvol(&pool, &["pool", "umount", path_str(&pool), "--force"]).ok();
}

/// `pool destroy` refuses while something is mounted, held or watched,
/// removes everything with --force, can be finished after a kill, is a
/// no-op the second time, and keeps files it did not make.
#[test]
fn destroy_refuses_then_removes_everything() {
    require_privileges!("destroy_refuses_then_removes_everything");
    let host = TestHost::new(HostKind::Xfs, "3G");
    let p = path_str(&host.pool).to_string();
    host.run(&["create", "a", "--size", "300M"]).ok();
    let mp = mount(&host, "a");
    host.run(&["snapshot", "a@s"]).ok();
    host.run(&["hold", "a@s", "keep"]).ok();
    // The images and the pool record (the guard and `status` add caches).
    let kept = |h: &TestHost| -> Vec<(std::path::PathBuf, u64)> {
        tree_state(&h.pool)
            .into_iter()
            .filter(|(f, _)| !f.starts_with(h.pool.join(".subvol/cache")) && !f.ends_with("guard.lock"))
            .collect()
    };
    let before = kept(&host);
    host.run(&["pool", "destroy", &p]).fails(5, "still mounted: a");
    host.run(&["umount", "a"]).ok();
    host.run(&["pool", "destroy", &p]).fails(5, "held: a@s (keep)");
    let mut guard = std::process::Command::new(BIN)
        .args(["--pool", &p, "guard"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let watched = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !host.run(&["pool", "status", "--json"]).json()["guard_pid"].is_null()
    });
    let refused = host.run(&["pool", "destroy", &p, "--force"]);
    guard.kill().unwrap();
    guard.wait().unwrap();
    assert!(watched, "the guard never showed up");
    refused.fails(5, "a guard (pid");
    assert_eq!(kept(&host), before, "a refused destroy changed the pool");

    // Killed after the pool record went: no command sees a pool, and
    // destroy finishes the job.
    mount(&host, "a");
    let r = subvol_env(&host.pool, &["pool", "destroy", &p, "--force"], &[("SUBVOL_CRASH_AT", "destroy-record-gone")]);
    assert_eq!(r.code, -1, "not killed at destroy-record-gone: {r:?}");
    assert!(mounts_under(&host.pool).is_empty() && loops_under(&host.pool).is_empty());
    host.run(&["list"]).fails(11, "not a subvol pool");
    host.run(&["pool", "destroy", &p]).ok();
    assert!(!host.pool.exists(), "the pool directory stayed");
    assert!(!mp.exists());
    assert!(host.run(&["pool", "destroy", &p]).ok().contains("nothing destroyed"));

    // A pool made in a directory that held other files keeps them.
    let shared = host.mnt.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("notes"), b"mine").unwrap();
    subvol(&shared, &["pool", "init", path_str(&shared), "--force"]).ok();
    subvol(&shared, &["create", "b", "--size", "8M", "--fs", "raw"]).ok();
    subvol(&shared, &["snapshot", "b@s"]).ok();
    let r = subvol(&shared, &["pool", "destroy", path_str(&shared)]);
    assert!(r.stderr.contains("holds files subvol did not make"), "{r:?}");
    r.ok();
    let left: Vec<_> = std::fs::read_dir(&shared).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, ["notes"]);
}

/// A backing-image pool is destroyed whether mounted or not: its XFS is
/// unmounted and its image removed.
#[test]
fn destroy_removes_a_backing_image_pool() {
    require_privileges!("destroy_removes_a_backing_image_pool");
    let dir = tempdir();
    let _cleanup = Teardown(dir.path().to_path_buf());
    let pool = dir.path().join("pool");
    subvol(&pool, &["pool", "init", path_str(&pool), "--backing-image", "1G"]).ok();
    subvol(&pool, &["create", "a", "--size", "300M"]).ok();
    subvol(&pool, &["mount", "a"]).ok();
    subvol(&pool, &["pool", "umount", path_str(&pool), "--force"]).ok();
    let out = subvol(&pool, &["pool", "destroy", path_str(&pool), "--json"]).json();
    assert_eq!(out["backing_image_removed"], path_str(&dir.path().join("pool.img")));
    assert_eq!(out["subvolumes"], 1);
    assert!(!pool.exists() && !dir.path().join("pool.img").exists());
    assert!(mounts_under(dir.path()).is_empty() && loops_under(dir.path()).is_empty());
}
