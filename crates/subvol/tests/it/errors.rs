//! Bad input: every refusal is one line, a documented exit code, and leaves
//! the pool exactly as it was.

use crate::harness::*;
use crate::require_privileges;

/// A pool in a plain directory on the test disk: no root needed for raw
/// subvolumes and for every refusal below.
fn plain_pool() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let pool = dir.path().join("pool");
    subvol(&pool, &["pool", "init", path_str(&pool)]).ok();
    (dir, pool)
}

#[test]
fn bad_names_and_sizes_are_refused_and_change_nothing() {
    let (_dir, pool) = plain_pool();
    subvol(&pool, &["create", "keep", "--size", "1M", "--fs", "raw"]).ok();
    let before = tree_state(&pool);
    let long = "a".repeat(129);
    for name in ["..", ".", "a/b", "/", "-x", ".hidden", &long, "a b", "x@y", "a@b@c", "ü", ""] {
        let r = subvol(&pool, &["create", "--size", "1M", "--fs", "raw", "--", name]);
        assert_eq!(r.code, 2, "name {name:?} gave {r:?}");
        assert!(r.stderr.starts_with("subvol: error: "), "{r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    }
    for size in ["0", "-1G", "1..5G", "10Q", "G", "abc", "16E", "1.5"] {
        subvol(&pool, &["create", "x", &format!("--size={size}"), "--fs", "raw"]).fails(2, "size");
    }
    subvol(&pool, &["create", "small", "--size", "1M"]).fails(2, "too small for xfs");
    subvol(&pool, &["create", "keep", "--size", "2M", "--fs", "raw"])
        .fails(4, "already exists as 1M raw (asked: 2M raw)");
    subvol(&pool, &["create", "x", "--size", "1M", "--fs", "zfs"]).fails(2, "zfs");
    subvol(&pool, &["create", "x", "--size", "1M", "--fs", "raw", "--mkfs-opt", "-L"]).fails(2, "--mkfs-opt");
    subvol(&pool, &["info", "nope"]).fails(3, "no subvolume \"nope\"");
    subvol(&pool, &["rename", "nope", "other"]).fails(3, "no subvolume");
    subvol(&pool, &["rename", "keep", "../evil"]).fails(2, "contains '/'");
    subvol(&pool, &["resize", "keep", "512K"]).fails(2, "cannot shrink");
    subvol(&pool, &["resize", "keep", "huge"]).fails(2, "size");
    assert_eq!(tree_state(&pool), before, "a refused command changed the pool");
}

#[test]
fn missing_mkfs_names_the_package() {
    let (_dir, pool) = plain_pool();
    let before = tree_state(&pool);
    let env = [("PATH", "/nonexistent"), ("SUBVOL_TOOL_FALLBACK_DIRS", "")];
    subvol_env(&pool, &["create", "x", "--size", "1G"], &env).fails(10, "install the xfsprogs package");
    subvol_env(&pool, &["create", "x", "--size", "1G", "--fs", "ext4"], &env)
        .fails(10, "install the e2fsprogs package");
    assert_eq!(tree_state(&pool), before);
}

#[test]
fn pool_must_exist_and_be_initialised_once() {
    let dir = tempdir();
    let missing = dir.path().join("nowhere");
    subvol(&missing, &["list"]).fails(11, "subvol pool init");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    subvol(&empty, &["list"]).fails(11, "not a subvol pool");
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("data"), b"x").unwrap();
    subvol(&busy, &["pool", "init", path_str(&busy)]).fails(2, "not empty");
    let (_d, pool) = plain_pool();
    subvol(&pool, &["pool", "init", path_str(&pool)]).fails(4, "already a subvol pool");
    subvol(&pool, &["pool", "init", path_str(&dir.path().join("b")), "--backing-image", "1M"])
        .fails(if unsafe_is_root() { 2 } else { 9 }, if unsafe_is_root() { "at least 300M" } else { "needs root" });
}

fn unsafe_is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn raw_subvolumes_without_root() {
    let (_dir, pool) = plain_pool();
    let out = subvol(&pool, &["create", "vm1", "--size", "64M", "--fs", "raw", "--json"]).json();
    assert_eq!(out["name"], "vm1");
    assert_eq!(out["fs"], "raw");
    assert_eq!(out["virtual_size_bytes"], 64 << 20);
    // Only metadata blocks (an ext4 host may put the xattr in its own block).
    assert!(out["allocated_bytes"].as_u64().unwrap() <= 64 << 10, "a new raw image must be sparse: {out}");
    let image = std::path::PathBuf::from(out["image"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&image).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&pool).unwrap().permissions().mode() & 0o777, 0o700);
    // The metadata is inspectable with standard tools.
    let raw = std::fs::read(&image).unwrap();
    assert_eq!(raw.len(), 64 << 20);
    subvol(&pool, &["resize", "vm1", "128M"]).ok();
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 128 << 20);
    subvol(&pool, &["rename", "vm1", "vm2"]).ok();
    let list = subvol(&pool, &["list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "vm2");
    subvol(&pool, &["mount", "vm2"])
        .fails(if unsafe_is_root() { 2 } else { 9 }, if unsafe_is_root() { "raw image" } else { "root" });
    subvol(&pool, &["delete", "vm2"]).ok();
    assert!(subvol(&pool, &["list", "--json"]).json().as_array().unwrap().is_empty());
}

#[test]
fn unsupported_host_filesystem() {
    require_privileges!("unsupported_host_filesystem");
    let dir = tempdir();
    let t = dir.path().join("tmpfs");
    std::fs::create_dir(&t).unwrap();
    sh("mount", &["-t", "tmpfs", "-o", "size=16m", "tmpfs", path_str(&t)]);
    let r = subvol(&t, &["pool", "init", path_str(&t)]);
    teardown(dir.path());
    r.fails(7, "--backing-image");
}

#[test]
fn not_root_is_told_so() {
    require_privileges!("not_root_is_told_so");
    if !have("setpriv") {
        panic!("setpriv (util-linux) is needed for this test");
    }
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "300M"]).ok();
    // The pool is 0700; give the unprivileged user a way in so that the
    // root check itself is what refuses.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "--pool", path_str(&host.pool), "mount", "a"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(9), "{err}");
    assert!(err.contains("root"), "{err}");
}

#[test]
fn busy_subvolumes_are_refused() {
    require_privileges!("busy_subvolumes_are_refused");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "300M"]).ok();
    let mp = host.run(&["mount", "a", "--json"]).json()["mount_point"].as_str().unwrap().to_string();
    let before = tree_state(&host.pool);
    host.run(&["delete", "a"]).fails(5, "umount it first or use --force");
    host.run(&["rename", "a", "b"]).fails(5, "umount it before renaming");
    let f = std::fs::File::create(format!("{mp}/open")).unwrap();
    host.run(&["umount", "a"]).fails(5, "busy");
    drop(f);
    assert_eq!(tree_state(&host.pool), before);
    host.run(&["umount", "a"]).ok();
    host.run(&["umount", "a"]).fails(2, "not mounted");
}

#[test]
fn planted_symlinks_and_hard_links_are_refused() {
    let (dir, pool) = plain_pool();
    subvol(&pool, &["create", "v", "--size", "1M", "--fs", "raw"]).ok();
    let outside = dir.path().join("outside.img");
    std::fs::write(&outside, b"not yours").unwrap();
    // A symlink in place of an image is not followed.
    std::os::unix::fs::symlink(&outside, pool.join("subvolumes/evil.img")).unwrap();
    subvol(&pool, &["resize", "evil", "2M"]).fails(8, "not a regular file");
    subvol(&pool, &["delete", "evil"]).fails(8, "not a regular file");
    assert_eq!(std::fs::read(&outside).unwrap(), b"not yours");
    // A hard link to an image would let writes reach a file outside the pool.
    std::fs::hard_link(pool.join("subvolumes/v.img"), dir.path().join("link.img")).unwrap();
    subvol(&pool, &["resize", "v", "2M"]).fails(1, "hard links");
    std::fs::remove_file(dir.path().join("link.img")).unwrap();
    subvol(&pool, &["resize", "v", "2M"]).ok();
    // A planted directory symlink makes the pool refuse to work at all.
    std::fs::remove_file(pool.join("subvolumes/evil.img")).unwrap();
    std::fs::rename(pool.join("snapshots"), dir.path().join("snaps")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("snaps"), pool.join("snapshots")).unwrap();
    subvol(&pool, &["list"]).fails(8, "not a directory");
}

/// mkfs running out of host space is a full host (exit 6, naming what
/// frees space), not an I/O error, and leaves nothing behind.
#[test]
fn mkfs_on_a_full_host_is_no_space() {
    require_privileges!("mkfs_on_a_full_host_is_no_space");
    let host = TestHost::new(HostKind::Xfs, "1G");
    let free = host.run(&["pool", "status", "--json"]).json()["free_bytes"].as_u64().unwrap();
    let fill = host.mnt.join("fill");
    sh("fallocate", &["-l", &(free - (16 << 20)).to_string(), path_str(&fill)]);
    let before = tree_state(&host.pool);
    host.run(&["create", "a", "--size", "2G"]).fails(6, "No space left on device; free space on the host");
    assert_eq!(tree_state(&host.pool), before);
    let other = host.mnt.join("other");
    subvol(&other, &["pool", "init", path_str(&other), "--backing-image", "2G"])
        .fails(6, "No space left on device; free space on the host");
    assert!(!host.mnt.join("other.img").exists(), "the half-made backing image stayed");
}
