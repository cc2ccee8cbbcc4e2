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
