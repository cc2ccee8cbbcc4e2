//! Issue 15: what an increment costs must follow the change, not the
//! image's history. These tests pin the shortcuts that make a chained
//! increment cheaper (maps from the extent cache, the follow record) to
//! the cases where they would be wrong: then the full comparison runs.

use crate::harness::*;
use crate::require_privileges;
use std::path::{Path, PathBuf};

fn image(host: &TestHost, name: &str) -> PathBuf {
    PathBuf::from(host.info(name)["image"].as_str().unwrap())
}

/// `dd` of `kib` KiB from `src` into `img` at `at_kib`, in place.
fn dd(src: &str, img: &Path, at_kib: u64, kib: u64) {
    sh(
        "dd",
        &[
            &format!("if={src}"),
            &format!("of={}", img.display()),
            "bs=64k",
            &format!("seek={}", at_kib / 64),
            &format!("count={}", kib / 64),
            "conv=notrunc,fsync",
            "status=none",
        ],
    );
}

fn receive(pool: &Path, file: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["receive", "v", "--input", path_str(file)];
    args.extend_from_slice(extra);
    subvol_env(pool, &args, &[("SUBVOL_TRACE", "1")])
}

const BY_RECORD: &str = "target unchanged by its follow record";

/// Three snapshots of a raw subvolume `v`, each 1 MiB different, and
/// their streams (full s1, s2 from s1, s3 from s2) in `dir`.
fn three_streams(a: &TestHost, dir: &Path) -> [PathBuf; 3] {
    a.run(&["create", "v", "--size", "32M", "--fs", "raw"]).ok();
    let img = image(a, "v");
    dd("/dev/urandom", &img, 0, 16 << 10);
    let files = [dir.join("s1"), dir.join("s2"), dir.join("s3")];
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            dd("/dev/urandom", &img, (i as u64) << 12, 1024);
        }
        let snap = format!("v@s{}", i + 1);
        a.run(&["snapshot", &snap]).ok();
        let mut args = vec!["send".to_string(), snap];
        if i > 0 {
            args.extend(["--from".to_string(), format!("v@s{i}")]);
        }
        args.extend(["-o".to_string(), path_str(f).to_string()]);
        a.run(&args.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    }
    files
}

/// A subvolume that followed a received snapshot is known unchanged by its
/// follow record (no maps or contents compared), and a write to its image
/// since, even one byte-range on the host, is still noticed.
fn followed_subvolume(kind: HostKind) {
    let a = TestHost::new(kind, "2G");
    let dir = tempdir();
    let [s1, s2, s3] = three_streams(&a, dir.path());
    let b = TestHost::new(kind, "2G");
    receive(&b.pool, &s1, &[]).ok();
    let r = receive(&b.pool, &s2, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(BY_RECORD), "the full receive left no follow record: {}", r.stderr);
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&image(&a, "v@s2")));
    // The image written on the host, as a mounted subvolume would write it.
    dd("/dev/zero", &image(&b, "v"), 8 << 10, 64);
    let r = receive(&b.pool, &s3, &[]).fails(5, "v differs from the stream's base v@s2");
    assert!(!r.stderr.contains(BY_RECORD), "{}", r.stderr);
    receive(&b.pool, &s3, &["--force"]).ok();
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&image(&a, "v@s3")));
    b.run(&["pool", "check"]).ok();
}

#[test]
fn a_followed_subvolume_is_known_by_its_record_and_a_later_write_is_noticed_on_xfs() {
    require_privileges!("a_followed_subvolume_is_known_by_its_record_and_a_later_write_is_noticed_on_xfs");
    followed_subvolume(HostKind::Xfs);
}

/// On ext4 the fallback compares contents (no reflinks): the record saves
/// reading both images whole.
#[test]
fn a_followed_subvolume_is_known_by_its_record_and_a_later_write_is_noticed_on_ext4() {
    require_privileges!("a_followed_subvolume_is_known_by_its_record_and_a_later_write_is_noticed_on_ext4");
    followed_subvolume(HostKind::Ext4);
}

/// The manifest builder caches a new snapshot's extent map, and sends take
/// maps from the cache; a snapshot written after its immutable flag was
/// lifted no longer matches its content stamp, so it is mapped afresh and
/// the stream carries what was written (a stale map would leave it out).
#[test]
fn a_snapshot_written_behind_the_pools_back_is_sent_from_a_fresh_map() {
    require_privileges!("a_snapshot_written_behind_the_pools_back_is_sent_from_a_fresh_map");
    let a = TestHost::new(HostKind::Xfs, "2G");
    let dir = tempdir();
    let [s1, _, _] = three_streams(&a, dir.path());
    wait_for_builders(&a.pool);
    let cache = a.pool.join(".subvol/cache");
    let cached = |name: &str| {
        let guid = a.info(name)["guid"].as_str().unwrap().replace('-', "");
        std::fs::read_dir(&cache).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(&guid) && e.file_name().to_string_lossy().ends_with(".extents")
        })
    };
    for s in ["v@s1", "v@s2", "v@s3"] {
        assert!(cached(s), "no cached map of {s} after the manifest builder ran");
    }
    let b = TestHost::new(HostKind::Xfs, "2G");
    receive(&b.pool, &s1, &[]).ok();
    // 64 KiB at 20 MiB: a hole in s1 and in s2 as taken.
    let s2 = image(&a, "v@s2");
    sh("chattr", &["-i", path_str(&s2)]);
    dd("/dev/urandom", &s2, 20 << 10, 64);
    sh("chattr", &["+i", path_str(&s2)]);
    let (s, r) = pipe(&a.pool, &["v@s2", "--from", "v@s1"], &b.pool, &["v"]);
    assert_eq!((s.code, r.code), (0, 0), "{s:?} {r:?}");
    assert_eq!(hash_file(&image(&b, "v@s2")), hash_file(&s2), "the stream left out what was written to v@s2");
    // Its manifest says what it held when taken: no root travels.
    assert!(s.stderr.contains("v@s2 was written to after it was taken"), "{}", s.stderr);
}

const ADOPTED: &str = "applying to the subvolume's own image";

/// An increment into a subvolume that equals its base and is not mounted
/// is applied to the subvolume's own image (one whole-image clone per
/// receive, not two). A stream that breaks off half way puts the
/// subvolume back exactly as it was, with no hold left on the base; a
/// mounted subvolume is never adopted.
#[test]
fn an_increment_is_applied_to_the_subvolume_itself_and_a_broken_one_puts_it_back() {
    require_privileges!("an_increment_is_applied_to_the_subvolume_itself_and_a_broken_one_puts_it_back");
    let a = TestHost::new(HostKind::Xfs, "2G");
    let dir = tempdir();
    let [s1, s2, s3] = three_streams(&a, dir.path());
    let b = TestHost::new(HostKind::Xfs, "2G");
    receive(&b.pool, &s1, &[]).ok();
    let before = hash_file(&image(&b, "v"));
    let guid = b.info("v")["guid"].clone();
    // s2 cut in half: the receive fails, v is what it was.
    let bytes = std::fs::read(&s2).unwrap();
    let half = dir.path().join("half");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let r = receive(&b.pool, &half, &[]);
    assert_ne!(r.code, 0, "a truncated stream was accepted");
    assert!(r.stderr.contains(ADOPTED), "{}", r.stderr);
    assert_eq!(hash_file(&image(&b, "v")), before, "a broken receive changed v");
    assert_eq!(b.info("v")["guid"], guid, "v lost its identity");
    let holds = b.info("v@s1")["holds"].as_array().cloned().unwrap_or_default();
    assert!(holds.is_empty(), "the base is still held: {holds:?}");
    b.run(&["pool", "check"]).ok();
    // Whole, it lands in v's own image; v keeps its guid.
    let r = receive(&b.pool, &s2, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(ADOPTED), "{}", r.stderr);
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&image(&a, "v@s2")));
    assert_eq!(hash_file(&image(&b, "v@s2")), hash_file(&image(&a, "v@s2")));
    assert_eq!(b.info("v")["guid"], guid);
    // Attached (a loop device has it, as a VM's disk would), and by
    // another path (through a bind mount of the pool, as a container may
    // see it): received beside it, v untouched. The host's teardown
    // unmounts and detaches both on failure.
    let alias = b.mnt.join("alias");
    std::fs::create_dir(&alias).unwrap();
    sh("mount", &["--bind", path_str(&b.pool), path_str(&alias)]);
    let dev = sh("losetup", &["-f", "--show", path_str(&alias.join("subvolumes/v.img"))]);
    let r = receive(&b.pool, &s3, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains(ADOPTED), "an attached subvolume was adopted: {}", r.stderr);
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&image(&a, "v@s2")));
    assert_eq!(hash_file(&image(&b, "v@s3")), hash_file(&image(&a, "v@s3")));
    sh("losetup", &["-d", dev.trim()]);
    sh("umount", &[path_str(&alias)]);
    b.run(&["pool", "check"]).ok();
}

/// While an increment is applied to NAME's own image, NAME is absent from
/// its place: commands naming it are refused (exit 5) saying a receive
/// holds it, and the base it may be rebuilt from cannot be deleted. When
/// the stream ends, all is as after any receive.
#[test]
fn a_subvolume_held_by_a_receive_is_refused_and_its_base_kept() {
    require_privileges!("a_subvolume_held_by_a_receive_is_refused_and_its_base_kept");
    use std::process::{Command, Stdio};
    let a = TestHost::new(HostKind::Xfs, "2G");
    let dir = tempdir();
    let [s1, s2, _] = three_streams(&a, dir.path());
    let b = TestHost::new(HostKind::Xfs, "2G");
    receive(&b.pool, &s1, &[]).ok();
    // An admin's own hold named like the receive's survives it.
    b.run(&["hold", "v@s1", "receive"]).ok();
    let bytes = std::fs::read(&s2).unwrap();
    let mut child = Command::new(BIN)
        .args(["--pool", path_str(&b.pool), "receive", "v"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &bytes[..bytes.len() / 2]).unwrap();
    let intent = b.pool.join(".subvol/intent/adopt.v");
    let t0 = std::time::Instant::now();
    while !intent.exists() && t0.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let held = intent.exists();
    let refusals = held.then(|| {
        (
            b.run(&["info", "v"]),
            b.run(&["snapshot", "v@meanwhile"]),
            b.run(&["delete", "v@s1"]),
            b.run(&["delete", "v"]),
            b.run(&["create", "v", "--size", "32M", "--fs", "raw"]),
            b.run(&["rollback", "v@s1"]),
            // A retry of the stream v already has would let v follow it.
            receive(&b.pool, &s1, &[]),
            b.run(&["release", "v@s1", ".receive"]),
        )
    });
    // The stream ends whatever the checks found, so the child never hangs.
    std::io::Write::write_all(&mut stdin, &bytes[bytes.len() / 2..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(held, "the receive never took v's image");
    let (info, snap, del_base, del, create, rollback, retry, release) = refusals.unwrap();
    info.fails(5, "a receive is applying a stream to v");
    snap.fails(5, "a receive is applying a stream to v");
    del_base.fails(5, "receive");
    del.fails(5, "a receive is applying a stream to v");
    create.fails(5, "a receive is applying a stream to v");
    rollback.fails(5, "a receive is applying a stream to v");
    retry.fails(5, "a receive is applying a stream to v");
    release.fails(2, "bad hold tag");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&image(&a, "v@s2")));
    assert!(!intent.exists());
    assert_eq!(b.info("v@s1")["holds"], serde_json::json!(["receive"]), "the receive took the admin's hold");
    b.run(&["pool", "check"]).ok();
}

/// A receive killed while it held v's image, whose base was then removed
/// by hand (behind subvol's back): nothing can rebuild v, so its image is
/// kept, not cleaned up as debris, and `pool check` says so (exit 8).
#[test]
fn an_adopted_image_that_cannot_be_put_back_is_kept_and_reported() {
    require_privileges!("an_adopted_image_that_cannot_be_put_back_is_kept_and_reported");
    let a = TestHost::new(HostKind::Xfs, "2G");
    let dir = tempdir();
    let [s1, s2, _] = three_streams(&a, dir.path());
    let b = TestHost::new(HostKind::Xfs, "2G");
    receive(&b.pool, &s1, &[]).ok();
    let base = image(&b, "v@s1");
    let r =
        subvol_env(&b.pool, &["receive", "v", "--input", path_str(&s2)], &[("SUBVOL_CRASH_AT", "receive-mid-stream")]);
    assert_eq!(r.code, -1, "the receive was not killed: {r:?}");
    sh("chattr", &["-i", path_str(&base)]);
    std::fs::remove_file(&base).unwrap();
    let kept = b.pool.join(".subvol/receive/v.img");
    assert!(kept.exists());
    let r = b.run(&["pool", "check"]).fails(8, "");
    assert!(r.stdout.contains("cannot be put back") && r.stdout.contains(".subvol/receive"), "{r:?}");
    assert!(kept.exists(), "the only copy of v's data was removed");
}
