//! Mounting: data survives an umount/mount round trip, mounts are found
//! from the kernel's tables, online grow works, nothing leaks.

use crate::harness::*;
use crate::require_privileges;
use std::path::Path;

#[test]
fn mount_roundtrip_keeps_data_and_leaks_nothing() {
    require_privileges!("mount_roundtrip_keeps_data_and_leaks_nothing");
    let host = TestHost::xfs();
    host.run(&["create", "data", "--size", "1G"]).ok();
    let m = host.run(&["mount", "data", "--json"]).json();
    assert_eq!(m["name"], "data");
    assert_eq!(m["already_mounted"], false);
    assert_eq!(m["direct_io"], true, "loop device must use direct I/O");
    let mp = Path::new(m["mount_point"].as_str().unwrap()).to_path_buf();
    assert_eq!(mp, host.pool.join("mnt/data"));
    let payload: Vec<u8> = (0..8 << 20).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(mp.join("blob"), &payload).unwrap();
    let want = hash_file(&mp.join("blob"));
    let info = host.info("data");
    assert_eq!(info["mount_point"], mp.to_str().unwrap());
    assert!(info["loop_device"].as_str().unwrap().starts_with("/dev/loop"));
    // Mounting again says where it is and succeeds.
    let again = host.run(&["mount", "data"]).ok();
    assert!(again.contains("already mounted at"), "{again}");
    host.run(&["umount", "data"]).ok();
    assert!(host.info("data")["mount_point"].is_null());
    let img = host.info("data")["image"].as_str().unwrap().to_string();
    assert!(loops_under(Path::new(&img)).is_empty(), "loop device not detached after umount");
    assert!(!mp.exists(), "default mount point not removed");
    // Mount read-only at an explicit path, with options.
    let alt = host.dir.path().join("elsewhere");
    host.run(&["mount", "data", path_str(&alt), "--ro", "-o", "noatime"]).ok();
    assert_eq!(hash_file(&alt.join("blob")), want);
    assert!(std::fs::write(alt.join("nope"), b"x").is_err(), "read-only mount accepted a write");
    host.run(&["umount", "data"]).ok();
    host.run(&["mount", "data"]).ok();
    assert_eq!(hash_file(&mp.join("blob")), want);
    host.run(&["delete", "data", "--force"]).ok();
    assert!(loops_under(&host.pool).is_empty());
    assert!(mounts_under(&host.pool).is_empty());
}

fn statvfs_bytes(p: &Path) -> u64 {
    let out = sh("stat", &["-f", "-c", "%b %S", path_str(p)]);
    let mut it = out.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

#[test]
fn online_grow_of_mounted_xfs() {
    require_privileges!("online_grow_of_mounted_xfs");
    let host = TestHost::xfs();
    host.run(&["create", "g", "--size", "512M"]).ok();
    let mp = host.run(&["mount", "g", "--json"]).json()["mount_point"].as_str().unwrap().to_string();
    std::fs::write(format!("{mp}/before"), b"kept").unwrap();
    let small = statvfs_bytes(Path::new(&mp));
    host.run(&["resize", "g", "2G"]).ok();
    let big = statvfs_bytes(Path::new(&mp));
    assert!(big > small * 3, "xfs did not grow online: {small} -> {big}");
    assert_eq!(std::fs::read(format!("{mp}/before")).unwrap(), b"kept");
    host.run(&["resize", "g", "1G"]).fails(2, "cannot shrink");
    host.run(&["umount", "g"]).ok();
}

#[test]
fn online_grow_of_mounted_ext4() {
    require_privileges!("online_grow_of_mounted_ext4");
    let host = TestHost::xfs();
    host.run(&["create", "e", "--size", "256M", "--fs", "ext4"]).ok();
    let mp = host.run(&["mount", "e", "--json"]).json()["mount_point"].as_str().unwrap().to_string();
    let small = statvfs_bytes(Path::new(&mp));
    let before = tree_state(&host.pool);
    let r = host.run(&["resize", "e", "1G"]);
    if r.code == 9 {
        // ext4's online resize ioctl needs CAP_SYS_RESOURCE; some sandboxes
        // (this project's CI machines among them) run root without it. The
        // refusal must come before anything changed; offline grow works.
        eprintln!("NOTE online_grow_of_mounted_ext4: no CAP_SYS_RESOURCE, checking the refusal and the offline path");
        r.fails(9, "CAP_SYS_RESOURCE");
        assert_eq!(tree_state(&host.pool), before);
        host.run(&["umount", "e"]).ok();
        host.run(&["resize", "e", "1G"]).ok();
        let mp = host.run(&["mount", "e", "--json"]).json()["mount_point"].as_str().unwrap().to_string();
        assert!(statvfs_bytes(Path::new(&mp)) > small * 3);
    } else {
        r.ok();
        assert!(statvfs_bytes(Path::new(&mp)) > small * 3, "ext4 did not grow online");
    }
    host.run(&["umount", "e"]).ok();
}

/// issue 12 item 1: a symlink planted at `$POOL/mnt/NAME` (or at the mount
/// base) is never followed by mount or umount; `pool check` reports it and
/// `--repair` removes the link, never what it points to.
#[test]
fn planted_symlinks_at_mount_points_are_never_followed() {
    require_privileges!("planted_symlinks_at_mount_points_are_never_followed");
    let host = TestHost::xfs();
    host.run(&["create", "web", "--size", "512M"]).ok();
    // A directory outside the pool, standing in for /etc.
    let outside = host.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"mine").unwrap();
    let base = host.pool.join("mnt");
    std::fs::create_dir_all(&base).unwrap();
    let link = base.join("web");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let before = tree_state(&host.pool);
    host.run(&["mount", "web"]).fails(8, "is a symlink");
    assert!(mounts_under(&outside).is_empty(), "mounted through the planted symlink");
    assert!(mounts_under(&host.pool).is_empty());
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"mine");
    assert_eq!(tree_state(&host.pool), before);
    assert!(host.info("web")["mount_point"].is_null());
    // pool check reports the link; --repair removes the link only.
    let r = host.run(&["pool", "check"]).fails(8, "pool check --repair");
    assert!(r.stdout.contains("planted at a mount point"), "{}", r.stdout);
    host.run(&["pool", "check", "--repair"]).ok();
    assert!(std::fs::symlink_metadata(&link).is_err(), "repair left the symlink");
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"mine");
    host.run(&["pool", "check"]).ok();

    // umount refuses while a symlink sits at the default mount point.
    let alt = host.dir.path().join("alt");
    host.run(&["mount", "web", path_str(&alt)]).ok();
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    host.run(&["umount", "web"]).fails(8, "is a symlink");
    assert_eq!(mounts_under(&alt).len(), 1, "umount went ahead despite the planted symlink");
    std::fs::remove_file(&link).unwrap();
    host.run(&["umount", "web"]).ok();
    assert!(mounts_under(&alt).is_empty());

    // The mount base itself replaced by a symlink.
    std::fs::remove_dir(&base).unwrap();
    std::os::unix::fs::symlink(&outside, &base).unwrap();
    host.run(&["mount", "web"]).fails(8, "is a symlink");
    assert!(mounts_under(&outside).is_empty(), "mounted below a planted mount base");
    assert!(!outside.join("web").exists(), "created a mount point through the planted base");
    host.run(&["pool", "check", "--repair"]).ok();
    assert!(std::fs::symlink_metadata(&base).is_err());

    // An explicit path inside the pool is refused; one below the mount base
    // is walked without following symlinks.
    host.run(&["mount", "web", path_str(&host.pool.join("subvolumes/x"))]).fails(2, "inside the pool");
    std::fs::create_dir(&base).unwrap();
    std::os::unix::fs::symlink(&outside, base.join("deep")).unwrap();
    host.run(&["mount", "web", path_str(&base.join("deep/web"))]).fails(8, "is a symlink");
    assert!(mounts_under(&outside).is_empty());
    std::fs::remove_file(base.join("deep")).unwrap();

    // A mount base others can write is refused, naming the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    host.run(&["mount", "web"]).fails(2, "chmod go-w");
    assert!(mounts_under(&host.pool).is_empty());
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mp = mount(&host, "web");
    assert_eq!(mp, base.join("web"));
    host.run(&["umount", "web"]).ok();
    assert!(!mp.exists());
    assert!(loops_under(&host.pool).is_empty());
}

/// `pool init --mount-base` refuses a directory others can write.
#[test]
fn mount_base_writable_by_others_is_refused_at_init() {
    require_privileges!("mount_base_writable_by_others_is_refused_at_init");
    use std::os::unix::fs::PermissionsExt;
    let host = TestHost::xfs();
    let open = host.dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let dir = host.mnt.join("pool2");
    subvol(&dir, &["pool", "init", path_str(&dir), "--mount-base", path_str(&open)]).fails(2, "chmod go-w");
    assert!(!dir.join(".subvol/pool.meta").exists(), "the pool was created anyway");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    subvol(&dir, &["pool", "init", path_str(&dir), "--mount-base", path_str(&open)]).ok();
    subvol(&dir, &["create", "a", "--size", "512M"]).ok();
    let m = subvol(&dir, &["mount", "a", "--json"]).json();
    assert_eq!(m["mount_point"], path_str(&open.join("a")));
    // Made writable by others afterwards: mount refuses.
    subvol(&dir, &["umount", "a"]).ok();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    subvol(&dir, &["mount", "a"]).fails(2, "writable by group or others");
    assert!(mounts_under(&open).is_empty());
}
