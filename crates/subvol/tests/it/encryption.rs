//! Encrypted subvolumes (issue 18): ext4 with fscrypt v2 inside the image,
//! so images, snapshots, streams and replicas hold ciphertext only; keys
//! from a key file or a passphrase; lock and unlock; bad keys refused with
//! nothing changed; clones and rollbacks stay encrypted; kills during
//! unlock and lock leave what `pool check` reports.

use crate::harness::*;
use crate::require_privileges;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Written into file names and contents; must never appear in an image or
/// a stream of an encrypted subvolume.
const MARKER: &[u8] = b"subvol-plaintext-marker-7f3a9c";
const MARKER_NAME: &str = "subvol-plaintext-marker-7f3a9c.txt";

/// True when this kernel can encrypt ext4; otherwise skips (fails under
/// CI=true, like every privileged test).
fn fscrypt(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    if Path::new("/sys/fs/ext4/features/encryption").exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} would be SKIPPED (no ext4 encryption in this kernel), but CI=true forbids skipping");
    }
    eprintln!("SKIPPED {test}: no ext4 encryption in this kernel");
    false
}

/// A private file with `bytes` in the host's temp dir.
fn secret_file(host: &TestHost, name: &str, bytes: &[u8]) -> PathBuf {
    let p = host.dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn random_key(host: &TestHost, name: &str) -> PathBuf {
    let mut key = [0u8; 64];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut key).unwrap();
    secret_file(host, name, &key)
}

fn create_encrypted(host: &TestHost, name: &str, key: &Path) {
    host.run(&["create", name, "--size", "64M", "--fs", "ext4", "--encrypt", "--key-file", path_str(key)]).ok();
}

/// A host with an encrypted subvolume `e`, unlocked and mounted: its key
/// file and mount point; `None` where fscrypt is not there (skipped).
fn unlocked_host(test: &str) -> Option<(TestHost, PathBuf, PathBuf)> {
    if !fscrypt(test) {
        return None;
    }
    let host = TestHost::new(HostKind::Xfs, "2G");
    let key = random_key(&host, "key");
    create_encrypted(&host, "e", &key);
    let mp = PathBuf::from(unlock(&host, "e", &key)["mount_point"].as_str().unwrap());
    Some((host, key, mp))
}

fn unlock(host: &TestHost, name: &str, key: &Path) -> serde_json::Value {
    host.run(&["unlock", name, "--key-file", path_str(key), "--json"]).json()
}

fn mount_point(host: &TestHost, name: &str) -> PathBuf {
    PathBuf::from(host.info(name)["mount_point"].as_str().unwrap())
}

/// Files holding the marker (in their names and contents), with their hashes.
fn write_marked_files(dir: &Path, seed: u64) -> Vec<(PathBuf, String)> {
    let sub = dir.join(format!("dir-{seed}-{}", MARKER_NAME));
    std::fs::create_dir_all(&sub).unwrap();
    let mut out = Vec::new();
    for (i, path) in [dir.join(format!("{seed}-{MARKER_NAME}")), sub.join("inner.txt")].into_iter().enumerate() {
        let mut data = Vec::new();
        for _ in 0..(2000 + i) {
            data.extend_from_slice(MARKER);
            data.push(b'\n');
        }
        std::fs::write(&path, &data).unwrap();
        out.push((path.strip_prefix(dir).unwrap().to_path_buf(), blake3::hash(&data).to_hex().to_string()));
    }
    sh("sync", &[]);
    out
}

fn verify_files(dir: &Path, files: &[(PathBuf, String)]) {
    for (rel, hash) in files {
        assert_eq!(&hash_file(&dir.join(rel)), hash, "{} differs", rel.display());
    }
}

/// Whether `needle` occurs anywhere in the raw bytes of `file`.
fn contains(file: &Path, needle: &[u8]) -> bool {
    let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let first = needle[0];
    data.iter().enumerate().filter(|(_, b)| **b == first).any(|(i, _)| data.get(i..i + needle.len()) == Some(needle))
}

/// Every image file (subvolumes and snapshots) of a pool.
fn images_of(pool: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in [pool.join("subvolumes")]
        .into_iter()
        .chain(std::fs::read_dir(pool.join("snapshots")).into_iter().flatten().flatten().map(|e| e.path()))
    {
        out.extend(std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()));
    }
    out.sort();
    out
}

fn receive_file(pool: &Path, name: &str, stream: &Path) {
    let out = Command::new(BIN)
        .arg("--pool")
        .arg(pool)
        .args(["receive", name])
        .stdin(std::fs::File::open(stream).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "receive: {}", String::from_utf8_lossy(&out.stderr));
}

fn assert_no_key_error(e: std::io::Error, what: &Path) {
    assert_eq!(e.raw_os_error(), Some(libc::ENOKEY), "{}: expected ENOKEY, got {e}", what.display());
}

/// The names in a directory.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn images_snapshots_streams_and_replicas_hold_only_ciphertext() {
    require_privileges!("images_snapshots_streams_and_replicas_hold_only_ciphertext");
    if !fscrypt("images_snapshots_streams_and_replicas_hold_only_ciphertext") {
        return;
    }
    let host = TestHost::new(HostKind::Xfs, "3G");
    let key = random_key(&host, "key");
    // The search finds the marker where it is in plaintext.
    host.run(&["create", "plain", "--size", "64M", "--fs", "ext4"]).ok();
    write_marked_files(&mount(&host, "plain"), 0);
    host.run(&["umount", "plain"]).ok();
    assert!(contains(Path::new(host.info("plain")["image"].as_str().unwrap()), MARKER));
    host.run(&["delete", "plain"]).ok();

    create_encrypted(&host, "e", &key);
    let mp = PathBuf::from(unlock(&host, "e", &key)["mount_point"].as_str().unwrap());
    let mut files = write_marked_files(&mp, 1);
    host.run(&["snapshot", "e@s1"]).ok();
    files.extend(write_marked_files(&mp, 2));
    host.run(&["snapshot", "e@s2"]).ok();
    host.run(&["umount", "e"]).ok();
    let full = host.dir.path().join("full.stream");
    let incr = host.dir.path().join("incr.stream");
    host.run(&["send", "e@s1", "-o", path_str(&full)]).ok();
    host.run(&["send", "e@s2", "--from", "e@s1", "-o", path_str(&incr)]).ok();
    let images = images_of(&host.pool);
    assert_eq!(images.len(), 3, "{images:?}");
    for f in images.iter().chain([&full, &incr]) {
        assert!(!contains(f, MARKER), "the marker is in {}", f.display());
    }

    // A second pool receives both streams without the key, then unlocks
    // with the same key.
    let other = host.mnt.join("pool-b");
    subvol(&other, &["pool", "init", path_str(&other)]).ok();
    receive_file(&other, "e", &full);
    receive_file(&other, "e", &incr);
    let replicas = images_of(&other);
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    for f in &replicas {
        assert!(!contains(f, MARKER), "the marker is in the replica {}", f.display());
    }
    for n in ["e", "e@s1", "e@s2"] {
        let info = subvol(&other, &["info", n, "--json"]).json();
        assert_eq!((info["encrypted"].as_bool(), info["unlocked"].as_bool()), (Some(true), Some(false)), "{n}");
    }
    let r = subvol(&other, &["unlock", "e", "--key-file", path_str(&key), "--json"]).json();
    assert_eq!(r["mounted"], true);
    verify_files(Path::new(r["mount_point"].as_str().unwrap()), &files);
    assert_eq!(subvol(&other, &["info", "e", "--json"]).json()["unlocked"], true);
    subvol(&other, &["pool", "check"]).ok();
    host.run(&["pool", "check"]).ok();
}

#[test]
fn lock_hides_names_and_contents_until_unlock() {
    require_privileges!("lock_hides_names_and_contents_until_unlock");
    if !fscrypt("lock_hides_names_and_contents_until_unlock") {
        return;
    }
    let host = TestHost::new(HostKind::Xfs, "2G");
    let key = random_key(&host, "key");
    create_encrypted(&host, "e", &key);
    // Mounted locked, it shows no names to write under.
    let mp = mount(&host, "e");
    assert_eq!(host.info("e")["unlocked"], false);
    let r = unlock(&host, "e", &key);
    assert_eq!((r["outcome"].as_str(), r["mounted"].as_bool()), (Some("done"), Some(false)));
    let files = write_marked_files(&mp, 1);
    assert_eq!(unlock(&host, "e", &key)["outcome"], "already_done");

    let r = host.run(&["lock", "e", "--json"]).json();
    assert_eq!((r["outcome"].as_str(), r["mount_point"].as_str()), (Some("done"), mp.to_str()));
    let info = host.info("e");
    assert_eq!((info["state"].as_str(), info["unlocked"].as_bool()), (Some("mounted"), Some(false)));
    let shown = names(&mp);
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown.iter().all(|n| !n.contains("marker")), "names shown in plaintext: {shown:?}");
    for n in &shown {
        let p = mp.join(n);
        if p.is_dir() {
            let inner = names(&p);
            assert!(inner.iter().all(|n| n != "inner.txt"), "{inner:?}");
            assert_no_key_error(std::fs::read(p.join(&inner[0])).unwrap_err(), &p);
        } else {
            assert_no_key_error(std::fs::read(&p).unwrap_err(), &p);
        }
    }
    assert_no_key_error(std::fs::write(mp.join("new.txt"), b"x").unwrap_err(), &mp);
    assert_eq!(host.run(&["lock", "e", "--json"]).json()["outcome"], "already_done");

    assert_eq!(unlock(&host, "e", &key)["outcome"], "done");
    verify_files(&mp, &files);

    // A file held open keeps the lock from finishing: the key goes for new
    // opens, the unmount is refused, `pool check` names the way out.
    let held = std::fs::File::open(mp.join(&files[0].0)).unwrap();
    host.run(&["lock", "e"]).fails(5, "still open");
    let check = host.run(&["pool", "check"]).fails(8, "problems");
    assert!(check.stdout.contains("half removed") && check.stdout.contains("subvol lock e"), "{}", check.stdout);
    assert!(std::fs::read(mp.join(&files[1].0)).is_err(), "a file not held open is still readable");
    drop(held);
    host.run(&["lock", "e"]).ok();
    host.run(&["pool", "check"]).ok();

    host.run(&["umount", "e"]).ok();
    let r = host.run(&["lock", "e", "--json"]).json();
    assert_eq!((r["outcome"].as_str(), r["mount_point"].is_null()), (Some("already_done"), true));
    let r = unlock(&host, "e", &key);
    assert_eq!((r["outcome"].as_str(), r["mounted"].as_bool()), (Some("done"), Some(true)));
    verify_files(&mount_point(&host, "e"), &files);
}

#[test]
fn bad_keys_are_refused_and_change_nothing() {
    require_privileges!("bad_keys_are_refused_and_change_nothing");
    if !fscrypt("bad_keys_are_refused_and_change_nothing") {
        return;
    }
    let host = TestHost::new(HostKind::Xfs, "2G");
    let key = random_key(&host, "key");
    let wrong = random_key(&host, "wrong");
    let short = secret_file(&host, "short", &[7; 63]);
    let open = random_key(&host, "open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let empty = secret_file(&host, "empty", b"");
    let tiny = secret_file(&host, "tiny", b"abc\n");
    let pass = secret_file(&host, "pass", b"correct horse battery staple\n");
    let wrong_pass = secret_file(&host, "wrong-pass", b"incorrect horse battery staple\n");
    let missing = host.dir.path().join("missing");
    let create = |name: &str, fs: &str, flag: &str, file: &Path| {
        host.run(&["create", name, "--size", "300M", "--fs", fs, "--encrypt", flag, path_str(file)])
    };

    let before = tree_state(&host.pool);
    create("x", "xfs", "--key-file", &key).fails(7, "add --fs ext4");
    create("x", "raw", "--key-file", &key).fails(7, "a raw image has no files");
    create("x", "ext4", "--key-file", &open).fails(2, "`chmod 600`");
    create("x", "ext4", "--key-file", &short).fails(2, "exactly 64 random bytes");
    create("x", "ext4", "--passphrase-file", &empty).fails(2, "holds no passphrase");
    create("x", "ext4", "--passphrase-file", &tiny).fails(2, "8 to 512");
    create("x", "ext4", "--key-file", &missing).fails(3, "does not exist");
    host.run(&["create", "x", "--size", "64M", "--fs", "ext4", "--encrypt"]).fails(2, "--key-file");
    host.run(&["create", "x", "--size", "64M", "--fs", "ext4", "--mkfs-opt=-O", "--mkfs-opt=encrypt"])
        .fails(2, "--encrypt");
    assert_eq!(tree_state(&host.pool), before, "a refused create left something");

    create_encrypted(&host, "e", &key);
    host.run(&["create", "p", "--size", "64M", "--fs", "ext4", "--encrypt", "--passphrase-file", path_str(&pass)]).ok();
    let refuse = |name: &str, flag: &str, file: &Path, code: i32, needle: &str| {
        let before = tree_state(&host.pool);
        let mounted = mounts_under(&host.pool);
        host.run(&["unlock", name, flag, path_str(file)]).fails(code, needle);
        assert_eq!(tree_state(&host.pool), before, "unlock {name} {flag} {}", file.display());
        assert_eq!(mounts_under(&host.pool), mounted, "unlock {name} {flag} {} (un)mounted", file.display());
        assert_eq!(host.info(name)["unlocked"], false);
    };
    for mounted in [false, true] {
        if mounted {
            mount(&host, "e");
            mount(&host, "p");
        }
        refuse("e", "--key-file", &wrong, 9, "wrong key for e");
        refuse("e", "--key-file", &missing, 3, "does not exist");
        refuse("e", "--key-file", &open, 2, "`chmod 600`");
        refuse("e", "--key-file", &short, 2, "exactly 64 random bytes");
        refuse("e", "--passphrase-file", &pass, 2, "give --key-file");
        refuse("p", "--passphrase-file", &empty, 2, "holds no passphrase");
        refuse("p", "--passphrase-file", &wrong_pass, 9, "wrong key for p");
        refuse("p", "--key-file", &key, 9, "made with a passphrase");
    }
    host.run(&["unlock", "x", "--key-file", path_str(&key)]).fails(3, "no subvolume");
    host.run(&["create", "plain", "--size", "64M", "--fs", "ext4"]).ok();
    host.run(&["unlock", "plain", "--key-file", path_str(&key)]).fails(2, "not encrypted");
    host.run(&["lock", "plain"]).fails(2, "not encrypted");
    assert_eq!(host.info("plain")["encrypted"], false);

    let mp = PathBuf::from(
        host.run(&["unlock", "p", "--passphrase-file", path_str(&pass), "--json"]).json()["mount_point"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    std::fs::write(mp.join("f"), b"with a passphrase").unwrap();
    host.run(&["lock", "p"]).ok();
    host.run(&["unlock", "p", "--passphrase-file", path_str(&pass)]).ok();
    assert_eq!(std::fs::read(mp.join("f")).unwrap(), b"with a passphrase");
    // A retried create with the same settings succeeds; without --encrypt
    // it is refused, naming the difference.
    let again = host.run(&[
        "create",
        "p",
        "--size",
        "64M",
        "--fs",
        "ext4",
        "--encrypt",
        "--passphrase-file",
        path_str(&pass),
        "--json",
    ]);
    assert_eq!(again.json()["outcome"], "already_done");
    host.run(&["create", "p", "--size", "64M", "--fs", "ext4"]).fails(4, "encrypted");
    host.run(&["pool", "check"]).ok();
}

#[test]
fn clones_and_rollbacks_stay_encrypted() {
    require_privileges!("clones_and_rollbacks_stay_encrypted");
    let Some((host, key, mp)) = unlocked_host("clones_and_rollbacks_stay_encrypted") else { return };
    let files = write_marked_files(&mp, 1);
    host.run(&["snapshot", "e@s1"]).ok();
    let later = write_marked_files(&mp, 2);

    host.run(&["clone", "e@s1", "c"]).ok();
    assert_eq!(host.info("c")["encrypted"], true);
    let cmp = mount(&host, "c");
    let shown = names(&cmp);
    assert!(shown.iter().all(|n| !n.contains("marker")), "{shown:?}");
    let r = unlock(&host, "c", &key);
    assert_eq!(r["mounted"], false);
    verify_files(&cmp, &files);

    // A snapshot mounts read-only, locked, and unlocks with the same key.
    let smp = mount(&host, "e@s1");
    assert!(names(&smp).iter().all(|n| !n.contains("marker")));
    unlock(&host, "e@s1", &key);
    verify_files(&smp, &files);
    host.run(&["lock", "e@s1"]).ok();
    // Locked, a plaintext name finds nothing.
    assert_eq!(std::fs::read(smp.join(&files[0].0)).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    assert!(names(&smp).iter().all(|n| !n.contains("marker")));
    host.run(&["umount", "e@s1"]).ok();

    host.run(&["umount", "e"]).ok();
    host.run(&["rollback", "e@s1"]).ok();
    assert_eq!(host.info("e")["encrypted"], true);
    let mp = PathBuf::from(unlock(&host, "e", &key)["mount_point"].as_str().unwrap());
    verify_files(&mp, &files);
    assert!(!mp.join(&later[0].0).exists(), "rollback kept a later file");
    host.run(&["umount", "e"]).ok();
    host.run(&["umount", "c"]).ok();
    for f in images_of(&host.pool) {
        assert!(!contains(&f, MARKER), "the marker is in {}", f.display());
    }
    host.run(&["pool", "check"]).ok();
}

#[test]
fn kill_during_unlock_and_lock_leaves_what_pool_check_reports() {
    require_privileges!("kill_during_unlock_and_lock_leaves_what_pool_check_reports");
    let Some((host, key, mp)) = unlocked_host("kill_during_unlock_and_lock_leaves_what_pool_check_reports") else {
        return;
    };
    let files = write_marked_files(&mp, 1);
    host.run(&["umount", "e"]).ok();
    let points: Vec<&str> = subvol_os::crash::POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with("unlock-") || p.starts_with("lock-"))
        .collect();
    assert_eq!(points.len(), 4, "{points:?}");
    for point in points {
        let (args, unlocking) = if point.starts_with("unlock") {
            if host.info("e")["state"] == "mounted" {
                host.run(&["umount", "e"]).ok();
            }
            (vec!["unlock", "e", "--key-file", path_str(&key)], true)
        } else {
            unlock(&host, "e", &key);
            (vec!["lock", "e"], false)
        };
        let r = subvol_env(&host.pool, &args, &[("SUBVOL_CRASH_AT", point)]);
        assert_eq!(r.code, -1, "{point}: not killed: {r:?}");
        let check = host.run(&["pool", "check", "--json"]);
        let errors: Vec<String> = check.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "error")
            .map(|f| f["what"].as_str().unwrap().to_string())
            .collect();
        if point == "lock-after-remove-key" {
            assert!(errors.len() == 1 && errors[0].contains("subvol lock e"), "{point}: {errors:?}");
        } else {
            assert!(errors.is_empty(), "{point}: {errors:?}");
        }
        assert_eq!(loops_under(&host.pool).len(), mounts_under(&host.pool).len(), "{point}: a loop device leaked");
        host.run(&args).ok();
        host.run(&["pool", "check"]).ok();
        let info = host.info("e");
        assert_eq!(info["unlocked"], unlocking, "{point}: {info}");
        if unlocking {
            verify_files(&mount_point(&host, "e"), &files);
        }
    }
}
