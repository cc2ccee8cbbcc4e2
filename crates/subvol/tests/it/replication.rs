//! Replication: byte-exact incremental send/receive between two pools,
//! interrupted and corrupt streams, encryption, and sync over ssh.

use crate::harness::*;
use crate::require_privileges;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn send_to_file(pool: &Path, args: &[&str], file: &Path) {
    let mut all = vec!["send"];
    all.extend_from_slice(args);
    all.push("-o");
    all.push(path_str(file));
    subvol(pool, &all).ok();
}

fn receive_file(pool: &Path, name: &str, file: &Path, extra: &[&str]) -> Run {
    let mut all = vec!["receive", name, "--input", path_str(file)];
    all.extend_from_slice(extra);
    subvol(pool, &all)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn image(host: &TestHost, name: &str) -> PathBuf {
    PathBuf::from(host.info(name)["image"].as_str().unwrap())
}

/// Random writes (4 KiB and 1 MiB), hole punches, preallocation and growth.
fn churn(img: &Path, rng: &mut Rng) {
    let f = OpenOptions::new().write(true).open(img).unwrap();
    let size = f.metadata().unwrap().len();
    for _ in 0..(5 + rng.below(30)) {
        let off = rng.below(size >> 12) << 12;
        let op = rng.below(8);
        let len: u64 = match op {
            0..=3 => 4096,
            4 | 5 => 1 << 20,
            _ => 4096 * (1 + rng.below(64)),
        };
        let len = len.min(size - off);
        match op {
            0..=5 => {
                let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                f.write_all_at(&buf, off).unwrap();
            }
            6 => {
                sh("fallocate", &["-p", "-o", &off.to_string(), "-l", &len.to_string(), path_str(img)]);
            }
            _ => {
                sh("fallocate", &["-n", "-o", &off.to_string(), "-l", &len.to_string(), path_str(img)]);
            }
        }
    }
}

fn rounds_between_pools(kind: HostKind) {
    let a = TestHost::new(kind, "4G");
    let b_pool = a.mnt.join("pool-b");
    subvol(&b_pool, &["pool", "init", path_str(&b_pool)]).ok();
    a.run(&["create", "v", "--size", "64M", "--fs", "raw"]).ok();
    let img = image(&a, "v");
    let mut rng = Rng(0x1234_5678_9abc_def1 + kind as u64);
    churn(&img, &mut rng);
    a.run(&["snapshot", "v@r0"]).ok();
    let (s, r) = pipe(&a.pool, &["v@r0"], &b_pool, &["v"]);
    assert_eq!((s.code, r.code), (0, 0), "{s:?} {r:?}");
    for round in 1..=8 {
        churn(&img, &mut rng);
        if round % 3 == 0 {
            let size = std::fs::metadata(&img).unwrap().len();
            a.run(&["resize", "v", &(size + (4 << 20)).to_string()]).ok();
        }
        a.run(&["snapshot", &format!("v@r{round}")]).ok();
        let est = a
            .run(&["send", "--estimate", &format!("v@r{round}"), "--from", &format!("v@r{}", round - 1), "--json"])
            .json();
        let compress = if round % 2 == 0 { vec!["--compress"] } else { vec![] };
        let snap = format!("v@r{round}");
        let base = format!("v@r{}", round - 1);
        let mut args = vec![snap.as_str(), "--from", base.as_str()];
        args.extend(compress.iter().copied());
        let (s, r) = pipe(&a.pool, &args, &b_pool, &["v", "--json"]);
        assert_eq!((s.code, r.code), (0, 0), "round {round}: {s:?} {r:?}");
        let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert!(rep["data_bytes"].as_u64().unwrap() <= est["data_bytes"].as_u64().unwrap());
        let sent = a.info(&snap)["image"].as_str().unwrap().to_string();
        let got = subvol(&b_pool, &["info", &snap, "--json"]).json();
        assert_eq!(got["guid"], a.info(&snap)["guid"], "received snapshot must keep the sender's guid");
        assert_eq!(
            hash_file(Path::new(&sent)),
            hash_file(Path::new(got["image"].as_str().unwrap())),
            "{kind:?} round {round}: images differ"
        );
        assert_eq!(rep["followed"], true);
        let follower = subvol(&b_pool, &["info", "v", "--json"]).json();
        assert_eq!(hash_file(Path::new(follower["image"].as_str().unwrap())), hash_file(Path::new(&sent)));
        if kind == HostKind::Xfs {
            // The receive's one-block CoW hint must not reach the subvolume
            // (a whole-file clone copies it); the extent hint must.
            let hints = sh("xfs_io", &["-r", "-c", "extsize", "-c", "cowextsize", follower["image"].as_str().unwrap()]);
            assert!(hints.starts_with("[1048576]") && hints.contains("\n[0]"), "round {round}: hints {hints:?}");
        }
    }
}

#[test]
fn incremental_rounds_are_byte_exact_on_xfs() {
    require_privileges!("incremental_rounds_are_byte_exact_on_xfs");
    rounds_between_pools(HostKind::Xfs);
}

#[test]
fn incremental_rounds_are_byte_exact_on_btrfs() {
    require_privileges!("incremental_rounds_are_byte_exact_on_btrfs");
    rounds_between_pools(HostKind::Btrfs);
}

#[test]
fn incremental_rounds_are_byte_exact_on_ext4() {
    require_privileges!("incremental_rounds_are_byte_exact_on_ext4");
    rounds_between_pools(HostKind::Ext4);
}

#[test]
fn xfs_subvolume_files_arrive_intact() {
    require_privileges!("xfs_subvolume_files_arrive_intact");
    let a = TestHost::xfs();
    let b = a.mnt.join("pool-b");
    subvol(&b, &["pool", "init", path_str(&b)]).ok();
    a.run(&["create", "fs", "--size", "512M"]).ok();
    let mp = mount(&a, "fs");
    let mut want = Vec::new();
    for round in 0..3u64 {
        for i in 0..20u64 {
            let p = mp.join(format!("d{}/f{i}", i % 4));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            if (i + round) % 3 == 0 {
                let _ = std::fs::remove_file(&p);
            } else {
                write_data(&p, round * 100 + i, (4096 * (1 + (i * 7 + round) % 50)) as usize);
            }
        }
        a.run(&["snapshot", &format!("fs@t{round}")]).ok();
        let snap = format!("fs@t{round}");
        let base = format!("fs@t{}", round.saturating_sub(1));
        let args: Vec<&str> = if round == 0 { vec![&snap] } else { vec![&snap, "--from", &base] };
        let (s, r) = pipe(&a.pool, &args, &b, &["fs"]);
        assert_eq!((s.code, r.code), (0, 0), "{s:?} {r:?}");
        // Compare the received snapshot file by file.
        let mut got = Vec::new();
        let rm = PathBuf::from(subvol(&b, &["mount", &snap, "--json"]).json()["mount_point"].as_str().unwrap());
        want.clear();
        for d in 0..4 {
            for e in std::fs::read_dir(mp.join(format!("d{d}"))).unwrap().flatten() {
                want.push((format!("d{d}/{}", e.file_name().to_string_lossy()), hash_file(&e.path())));
            }
            for e in std::fs::read_dir(rm.join(format!("d{d}"))).unwrap().flatten() {
                got.push((format!("d{d}/{}", e.file_name().to_string_lossy()), hash_file(&e.path())));
            }
        }
        want.sort();
        got.sort();
        assert_eq!(got, want, "round {round}");
        subvol(&b, &["umount", &snap]).ok();
    }
}

#[test]
fn broken_and_corrupt_streams_leave_the_pool_alone_and_resume() {
    require_privileges!("broken_and_corrupt_streams_leave_the_pool_alone_and_resume");
    let a = TestHost::xfs();
    let b = a.mnt.join("pool-b");
    subvol(&b, &["pool", "init", path_str(&b)]).ok();
    a.run(&["create", "v", "--size", "96M", "--fs", "raw"]).ok();
    let img = image(&a, "v");
    let mut rng = Rng(77);
    churn(&img, &mut rng);
    a.run(&["snapshot", "v@s1"]).ok();
    let stream = a.dir.path().join("s1.stream");
    send_to_file(&a.pool, &["v@s1"], &stream);
    let bytes = std::fs::read(&stream).unwrap();
    let before = tree_state(&b);
    // Truncations and flipped bytes are refused and change nothing.
    let cut = a.dir.path().join("cut.stream");
    for i in 0..12u64 {
        let n = (rng.below(bytes.len() as u64 - 1)) as usize;
        std::fs::write(&cut, &bytes[..n]).unwrap();
        let r = receive_file(&b, "v", &cut, &[]);
        assert_eq!(r.code, 8, "truncated at {n}: {r:?}");
        let mut bad = bytes.clone();
        let pos = rng.below(bytes.len() as u64) as usize;
        bad[pos] ^= 1 << (i % 8);
        std::fs::write(&cut, &bad).unwrap();
        let r = receive_file(&b, "v", &cut, &[]);
        assert!(r.code != 0, "corrupt byte {pos} accepted");
        assert_eq!(tree_state(&b), before, "a failed receive changed the pool");
    }
    // A resumable receive keeps its progress and resumes to the same result.
    let n = bytes.len() * 2 / 3;
    std::fs::write(&cut, &bytes[..n]).unwrap();
    let r = receive_file(&b, "v", &cut, &["--resume"]);
    assert_eq!(r.code, 8, "{r:?}");
    assert!(r.stderr.contains("subvol send --resume"), "{}", r.stderr);
    let token = subvol(&b, &["receive", "v", "--token"]).ok().trim().to_string();
    // A plain receive does not trample the partial one.
    receive_file(&b, "v", &stream, &[]).fails(5, "partial receive");
    // The sender checks the token against its snapshots.
    subvol(&a.pool, &["send", "v@s1", "--from", "v@s1", "--resume", &token, "-o", "/dev/null"]).fails(2, "");
    let rest = a.dir.path().join("rest.stream");
    send_to_file(&a.pool, &["v@s1", "--resume", &token], &rest);
    assert!(std::fs::metadata(&rest).unwrap().len() < bytes.len() as u64, "resume sent everything again");
    receive_file(&b, "v", &rest, &["--resume"]).ok();
    let got = subvol(&b, &["info", "v@s1", "--json"]).json();
    assert_eq!(
        hash_file(Path::new(got["image"].as_str().unwrap())),
        hash_file(Path::new(a.info("v@s1")["image"].as_str().unwrap()))
    );
    // Abort drops a partial receive.
    churn(&img, &mut rng);
    a.run(&["snapshot", "v@s2"]).ok();
    let inc = a.dir.path().join("s2.stream");
    send_to_file(&a.pool, &["v@s2", "--from", "v@s1"], &inc);
    let ib = std::fs::read(&inc).unwrap();
    std::fs::write(&cut, &ib[..ib.len() / 2]).unwrap();
    receive_file(&b, "v", &cut, &["--resume"]);
    subvol(&b, &["receive", "v", "--abort"]).ok();
    subvol(&b, &["receive", "v", "--token"]).fails(3, "no partial receive");
    // A receive that breaks before any record arrived leaves a token of
    // offset 0; resuming from it works like from any other.
    let header_len = 20 + u32::from_le_bytes(ib[16..20].try_into().unwrap()) as usize + 32;
    std::fs::write(&cut, &ib[..header_len]).unwrap();
    receive_file(&b, "v", &cut, &["--resume"]);
    let token0 = subvol(&b, &["receive", "v", "--token"]).ok().trim().to_string();
    assert!(token0.contains("-0-"), "{token0}");
    let rest0 = a.dir.path().join("rest0.stream");
    send_to_file(&a.pool, &["v@s2", "--from", "v@s1", "--resume", &token0], &rest0);
    receive_file(&b, "v", &rest0, &["--resume"]).ok();
    subvol(&b, &["receive", "v", "--token"]).fails(3, "no partial receive");
    // Receiving the same snapshot again changes nothing and succeeds; under
    // another name it is refused, as is a stream whose base is missing.
    let again = receive_file(&b, "v", &inc, &[]).ok();
    assert!(again.contains("already received; nothing changed"), "{again}");
    receive_file(&b, "other", &inc, &[]).fails(4, "already here as v@s2");
    a.run(&["snapshot", "v@s3"]).ok();
    let inc3 = a.dir.path().join("s3.stream");
    send_to_file(&a.pool, &["v@s3", "--from", "v@s2"], &inc3);
    receive_file(&b, "other", &inc3, &[]).fails(3, "no snapshot with guid");
    // A stream of another format version is refused with a clear message.
    let mut v2 = std::fs::read(&stream).unwrap();
    v2[8] = 2;
    std::fs::write(&cut, &v2).unwrap();
    receive_file(&b, "w", &cut, &[]).fails(8, "upgrade subvol");
}

#[test]
fn encrypted_streams() {
    require_privileges!("encrypted_streams");
    use age::secrecy::ExposeSecret;
    let a = TestHost::xfs();
    let b = a.mnt.join("pool-b");
    subvol(&b, &["pool", "init", path_str(&b)]).ok();
    a.run(&["create", "v", "--size", "32M", "--fs", "raw"]).ok();
    churn(&image(&a, "v"), &mut Rng(5));
    a.run(&["snapshot", "v@s"]).ok();
    let key = age::x25519::Identity::generate();
    let key_file = a.dir.path().join("key.txt");
    std::fs::write(&key_file, format!("{}\n", key.to_string().expose_secret())).unwrap();
    let recipient = key.to_public().to_string();
    let enc = a.dir.path().join("enc.stream");
    send_to_file(&a.pool, &["v@s", "--encrypt-to", &recipient, "--compress=5"], &enc);
    let raw = std::fs::read(&enc).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/"));
    receive_file(&b, "v", &enc, &[]).fails(2, "--identity");
    let wrong = a.dir.path().join("wrong.txt");
    std::fs::write(&wrong, format!("{}\n", age::x25519::Identity::generate().to_string().expose_secret())).unwrap();
    receive_file(&b, "v", &enc, &["--identity", path_str(&wrong)]).fails(9, "decrypt");
    receive_file(&b, "v", &enc, &["--identity", path_str(&key_file)]).ok();
    let got = subvol(&b, &["info", "v@s", "--json"]).json();
    assert_eq!(
        hash_file(Path::new(got["image"].as_str().unwrap())),
        hash_file(Path::new(a.info("v@s")["image"].as_str().unwrap()))
    );
    // Passphrase.
    let pass = a.dir.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    let c = a.dir.path().join("pass.stream");
    send_to_file(&a.pool, &["v@s", "--passphrase-file", path_str(&pass)], &c);
    // One snapshot per guid in a pool: the first copy goes first.
    subvol(&b, &["delete", "v", "--recursive"]).ok();
    receive_file(&b, "w", &c, &["--passphrase-file", path_str(&pass)]).ok();
    assert_eq!(
        hash_file(Path::new(subvol(&b, &["info", "w@s", "--json"]).json()["image"].as_str().unwrap())),
        hash_file(Path::new(a.info("v@s")["image"].as_str().unwrap()))
    );
}

#[test]
fn sync_over_ssh_push_and_pull() {
    require_privileges!("sync_over_ssh_push_and_pull");
    if !have("sshd") || !have("ssh") {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("sync_over_ssh_push_and_pull needs openssh-server and openssh-client");
        }
        eprintln!("SKIPPED sync_over_ssh_push_and_pull: needs sshd");
        return;
    }
    let a = TestHost::xfs();
    let b = a.mnt.join("pool-b");
    subvol(&b, &["pool", "init", path_str(&b)]).ok();
    let sshd = Sshd::start(a.dir.path());
    a.run(&["create", "v", "--size", "64M", "--fs", "raw"]).ok();
    let img = image(&a, "v");
    let mut rng = Rng(99);
    let remote = format!("root@127.0.0.1:{}:v", b.display());
    let mut args: Vec<String> =
        vec!["sync".into(), "v".into(), remote.clone(), "--remote-bin".into(), BIN.into(), "--json".into()];
    args.extend(sshd.opts());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    // Push: full, then two increments.
    for round in 0..3 {
        churn(&img, &mut rng);
        let out = a.run(&argv).ok();
        let rep: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(rep["base"].is_null(), round == 0, "{rep}");
        let snap = rep["snapshot"].as_str().unwrap().to_string();
        let here = hash_file(Path::new(a.info(&snap)["image"].as_str().unwrap()));
        let there = subvol(&b, &["info", &snap, "--json"]).json();
        assert_eq!(hash_file(Path::new(there["image"].as_str().unwrap())), here, "round {round}");
        assert_eq!(there["holds"][0], "sync", "the new common base is held on the receiver");
    }
    // Only the newest common base stays held on the sender.
    let held: Vec<serde_json::Value> = a
        .run(&["list", "-s", "v", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["holds"].is_array())
        .cloned()
        .collect();
    assert_eq!(held.len(), 1, "{held:?}");
    // Pull back into a third pool over ssh, rate-limited.
    let c = a.mnt.join("pool-c");
    subvol(&c, &["pool", "init", path_str(&c)]).ok();
    let mut pull: Vec<String> =
        vec!["sync".into(), remote, "v".into(), "--bwlimit".into(), "50M".into(), "--remote-bin".into(), BIN.into()];
    pull.extend(sshd.opts());
    let argv: Vec<&str> = pull.iter().map(String::as_str).collect();
    subvol(&c, &argv).ok();
    assert_eq!(
        hash_file(Path::new(subvol(&c, &["info", "v", "--json"]).json()["image"].as_str().unwrap())),
        hash_file(Path::new(subvol(&b, &["info", "v", "--json"]).json()["image"].as_str().unwrap()))
    );
}

/// A stream with valid checksums whose header JSON is `base` edited by
/// `edit`: what a hostile sender can produce. Carries one 4 KiB DATA record
/// when the declared size allows.
/// A named change to a stream header, for the hostile-header cases.
type HeaderEdit = Box<dyn Fn(&mut serde_json::Value)>;

fn crafted_stream(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    use subvol_core::stream::{StreamHeader, StreamWriter};
    let mut h = serde_json::json!({
        "stream_guid": "00000000-0000-0000-0000-0000000000a1",
        "source_name": "web",
        "source_guid": "00000000-0000-0000-0000-0000000000a2",
        "snapshot": {"name": "web@s1", "guid": "00000000-0000-0000-0000-0000000000a3"},
        "created": "2026-01-01T00:00:00Z",
        "fs": "raw",
        "tags": ["ok"],
        "virtual_size": 1u64 << 20,
        "block_size": 4096
    });
    edit(&mut h);
    let header: StreamHeader = serde_json::from_value(h).expect("header JSON");
    let (size, start) = (header.virtual_size, header.resume_offset);
    let mut w = StreamWriter::new(Vec::new(), header, None).expect("writer");
    if size >= start + 4096 {
        w.data(start, &[7u8; 4096]).expect("data");
    }
    w.finish().expect("finish").0
}

/// issue 12 item 4: strings in a stream header (and a user's property
/// values) are validated like names; nothing with a control character or
/// of absurd length is stored, and the pool stays untouched.
#[test]
fn hostile_header_strings_are_refused() {
    require_privileges!("hostile_header_strings_are_refused");
    let host = TestHost::xfs();
    let file = host.dir.path().join("s.stream");
    let before = tree_state(&host.pool);
    let cases: Vec<(&str, HeaderEdit)> = vec![
        ("source_name", Box::new(|h| h["source_name"] = "web\u{1b}[2J\nfake 1G".into())),
        ("source_name", Box::new(|h| h["source_name"] = "w".repeat(60 << 10).into())),
        ("tags", Box::new(|h| h["tags"] = serde_json::json!(["ok", "x\ny  raw  1G"]))),
        ("tags", Box::new(|h| h["tags"] = serde_json::json!(["t".repeat(60 << 10)]))),
        ("tags", Box::new(|h| h["tags"] = serde_json::json!(["\u{202e}evil"]))),
        ("created", Box::new(|h| h["created"] = "2026\u{7}".into())),
    ];
    for (field, edit) in cases {
        std::fs::write(&file, crafted_stream(edit)).unwrap();
        let r = receive_file(&host.pool, "web", &file, &[]).fails(8, field);
        assert!(!r.stderr.contains('\u{1b}') && !r.stderr.contains('\u{7}'), "error echoes a control: {:?}", r.stderr);
        assert_eq!(tree_state(&host.pool), before, "a refused stream ({field}) changed the pool");
    }
    // The same crafted stream with honest strings is received.
    std::fs::write(&file, crafted_stream(|_| {})).unwrap();
    receive_file(&host.pool, "web", &file, &[]).ok();
    assert_eq!(host.info("web@s1")["tags"], serde_json::json!(["ok"]));
    // A user's property value gets the same rule.
    host.run(&["set", "web", "org.example:note=two\nlines"]).fails(2, "control character");
    host.run(&["set", "web", &format!("org.example:note={}", "n".repeat(5000))]).fails(2, "limit");
    host.run(&["set", "web", "org.example:note=fine, Zoë"]).ok();
    assert_eq!(host.info("web")["properties"]["org.example:note"], "fine, Zoë");
}

/// issue 12 item 7: `send -o FILE` creates FILE 0600 whatever the umask,
/// never replaces an existing FILE (or what a symlink there points to)
/// without --force, and a stream that fails part-way never appears at FILE.
#[test]
fn send_to_file_is_private_exclusive_and_atomic() {
    require_privileges!("send_to_file_is_private_exclusive_and_atomic");
    use std::os::unix::fs::PermissionsExt;
    let host = TestHost::xfs();
    host.run(&["create", "web", "--size", "512M"]).ok();
    let mp = mount(&host, "web");
    write_data(&mp.join("blob"), 7, 4 << 20);
    host.run(&["umount", "web"]).ok();
    host.run(&["snapshot", "web@s1"]).ok();
    let dir = host.dir.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let leftovers = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    let umask022 = |args: &[&str]| -> Run {
        // The old code created FILE 0644 under the usual umask 022.
        let script = format!("umask 022; exec \"$0\" --pool {} \"$@\"", path_str(&host.pool));
        let out = Command::new("sh").arg("-c").arg(script).arg(BIN).args(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let file = dir.join("web.stream");
    umask022(&["send", "web@s1", "-o", path_str(&file)]).ok();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the stream (a whole image) is readable by others");
    assert!(std::fs::read(&file).unwrap().starts_with(b"SVSTREAM"));
    assert_eq!(leftovers(&dir), vec!["web.stream".to_string()]);

    // An existing file is kept unless --force.
    let keep = dir.join("keep");
    std::fs::write(&keep, b"precious").unwrap();
    umask022(&["send", "web@s1", "-o", path_str(&keep)]).fails(4, "--force");
    assert_eq!(std::fs::read(&keep).unwrap(), b"precious");
    // A symlink at FILE: neither followed nor replaced without --force.
    let victim = host.dir.path().join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("link")).unwrap();
    umask022(&["send", "web@s1", "-o", path_str(&dir.join("link"))]).fails(4, "already exists");
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    // A character device (or a FIFO) is written directly: nothing to clobber.
    umask022(&["send", "web@s1", "-o", "/dev/null"]).ok();
    // --force replaces the file once the new stream is complete.
    umask022(&["send", "web@s1", "-o", path_str(&keep), "--force"]).ok();
    assert!(std::fs::read(&keep).unwrap().starts_with(b"SVSTREAM"));
    assert_eq!(std::fs::metadata(&keep).unwrap().permissions().mode() & 0o777, 0o600);
    let dst = TestHost::xfs();
    receive_file(&dst.pool, "web", &keep, &[]).ok();

    // A send that fails part-way (the output filesystem fills up) leaves
    // neither FILE nor a temporary file behind.
    let small = host.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    sh("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", path_str(&small)]);
    let r = umask022(&["send", "web@s1", "-o", path_str(&small.join("web.stream"))]);
    let left = leftovers(&small);
    sh("umount", &[path_str(&small)]);
    assert_ne!(r.code, 0, "a 4 MiB stream fit in 1 MiB?");
    assert!(left.is_empty(), "a failed send left {left:?}");
}

/// issue 12 item 5: a stream's geometry gets the format's fixed values and
/// the limits `create` applies: block size 4096, at least the smallest
/// image of its filesystem, at most what the host can hold as a file.
#[test]
fn implausible_stream_geometry_is_refused() {
    require_privileges!("implausible_stream_geometry_is_refused");
    let host = TestHost::xfs();
    let file = host.dir.path().join("g.stream");
    let before = tree_state(&host.pool);
    let cases: Vec<(&str, HeaderEdit)> = vec![
        ("block_size", Box::new(|h| h["block_size"] = 512.into())),
        (
            "virtual_size",
            Box::new(|h| {
                h["fs"] = "xfs".into();
                h["virtual_size"] = 0.into();
            }),
        ),
        (
            "virtual_size",
            Box::new(|h| {
                h["fs"] = "xfs".into();
                h["virtual_size"] = (64u64 << 20).into();
            }),
        ),
        ("virtual_size", Box::new(|h| h["virtual_size"] = ((1u64 << 62) + 4096).into())),
        ("resume_offset", Box::new(|h| h["resume_offset"] = 100.into())),
    ];
    for (field, edit) in cases {
        std::fs::write(&file, crafted_stream(edit)).unwrap();
        receive_file(&host.pool, "web", &file, &[]).fails(8, field);
        assert_eq!(tree_state(&host.pool), before, "a refused stream ({field}) changed the pool");
    }
    // 4 EiB on a host whose filesystem holds 16 TiB files: refused like
    // `create --size 4E` there, before anything is written.
    let ext4 = TestHost::new(HostKind::Ext4, "2G");
    let before = tree_state(&ext4.pool);
    std::fs::write(&file, crafted_stream(|h| h["virtual_size"] = (1u64 << 62).into())).unwrap();
    receive_file(&ext4.pool, "web", &file, &[]).fails(7, "holds files up to");
    ext4.run(&["create", "big", "--size", "4E", "--fs", "raw"]).fails(7, "holds files up to");
    assert_eq!(tree_state(&ext4.pool), before);
}

fn status(host: &TestHost) -> serde_json::Value {
    host.run(&["pool", "status", "--json"]).json()
}

/// A stream of `mib` MiB of random data, as NAME@s1, written to `file`.
fn random_stream(src: &TestHost, name: &str, mib: u32, file: &Path) {
    src.run(&["create", name, "--size", &format!("{}M", mib + 64), "--fs", "raw"]).ok();
    let img = image(src, name);
    sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", img.display()),
            "bs=1M",
            &format!("count={mib}"),
            "conv=notrunc,fsync",
            "status=none",
        ],
    );
    src.run(&["snapshot", &format!("{name}@s1")]).ok();
    send_to_file(&src.pool, &[&format!("{name}@s1")], file);
}

/// A receive writes to the host directly, where the guard cannot freeze
/// it, so it must stop itself before it takes what guaranteed subvolumes
/// were promised (and refuse at once when the host is already there).
#[test]
fn receive_never_takes_guaranteed_space() {
    require_privileges!("receive_never_takes_guaranteed_space");
    let a = TestHost::new(HostKind::Xfs, "3G");
    let dir = tempdir();
    let (big, small) = (dir.path().join("big"), dir.path().join("small"));
    random_stream(&a, "v", 900, &big);
    random_stream(&a, "w", 8, &small);

    let b = TestHost::new(HostKind::Xfs, "2G");
    b.run(&["create", "g", "--size", "1G", "--fs", "raw", "--guarantee"]).ok();
    let before = tree_state(&b.pool);
    // 900 MiB do not fit above 1 GiB promised + margin on a 2 GiB host.
    receive_file(&b.pool, "v", &big, &[]).fails(6, "receive into v stopped: host free");
    assert_eq!(tree_state(&b.pool), before, "a stopped receive left something behind");
    let st = status(&b);
    let (free, owed, margin) = (
        st["free_bytes"].as_u64().unwrap(),
        st["outstanding_guarantees_bytes"].as_u64().unwrap(),
        st["margin_bytes"].as_u64().unwrap(),
    );
    assert!(owed >= 1 << 30, "{st}");
    assert!(free >= owed + margin, "the receive took promised space: free {free}, owed {owed}, margin {margin}");

    // With the promise gone, the same stream arrives intact.
    b.run(&["delete", "g"]).ok();
    receive_file(&b.pool, "v", &big, &[]).ok();
    assert_eq!(hash_file(&image(&b, "v@s1")), hash_file(&image(&a, "v@s1")));

    // Promise all but 64 MiB: less than the guard's thaw gap is left, so a
    // receive is refused before it creates anything.
    let available = status(&b)["available_bytes"].as_u64().unwrap();
    let size = format!("{}M", (available >> 20) - 64);
    b.run(&["create", "g2", "--size", &size, "--fs", "raw", "--guarantee"]).ok();
    let before = tree_state(&b.pool);
    receive_file(&b.pool, "w", &small, &[]).fails(6, "receive into w refused: host free");
    assert_eq!(tree_state(&b.pool), before);
}

/// Ctrl-C stops a receive that waits on a stalled sender, whether it waits
/// for the header or in the middle of the data; the next command clears
/// the partial image, and the pool is as before.
#[test]
fn interrupt_stops_a_stalled_receive() {
    require_privileges!("interrupt_stops_a_stalled_receive");
    let a = TestHost::new(HostKind::Xfs, "2G");
    let dir = tempdir();
    let stream = dir.path().join("s");
    random_stream(&a, "v", 64, &stream);
    let bytes = std::fs::read(&stream).unwrap();
    let b = TestHost::new(HostKind::Xfs, "2G");
    let before = tree_state(&b.pool);
    for sent in [0, bytes.len() / 2] {
        let mut child = Command::new(BIN)
            .args(["--pool", path_str(&b.pool), "receive", "v"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, &bytes[..sent]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > std::time::Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        drop(stdin);
        let status = status.unwrap_or_else(|| panic!("SIGINT did not stop a receive stalled after {sent} bytes"));
        assert!(!status.success(), "{status:?}");
        b.run(&["pool", "check"]).ok();
        assert_eq!(tree_state(&b.pool), before, "stalled after {sent} bytes");
    }
}

/// A subvolume that follows a received snapshot deleted since is not
/// "modified": the refusal says both possibilities and the way out.
#[test]
fn incremental_on_an_older_base_names_both_causes() {
    require_privileges!("incremental_on_an_older_base_names_both_causes");
    let a = TestHost::new(HostKind::Xfs, "2G");
    let dir = tempdir();
    let (s1, s2, s3) = (dir.path().join("1"), dir.path().join("2"), dir.path().join("3"));
    random_stream(&a, "v", 8, &s1);
    let img = image(&a, "v");
    for snap in ["v@s2", "v@s3"] {
        sh(
            "dd",
            &[
                "if=/dev/urandom",
                &format!("of={}", img.display()),
                "bs=1M",
                "count=1",
                "seek=4",
                "conv=notrunc",
                "status=none",
            ],
        );
        a.run(&["snapshot", snap]).ok();
    }
    send_to_file(&a.pool, &["v@s2", "--from", "v@s1"], &s2);
    send_to_file(&a.pool, &["v@s3", "--from", "v@s1"], &s3);
    let b = TestHost::new(HostKind::Xfs, "2G");
    receive_file(&b.pool, "v", &s1, &[]).ok();
    receive_file(&b.pool, "v", &s2, &[]).ok();
    b.run(&["delete", "v@s2"]).ok();
    let r = receive_file(&b.pool, "v", &s3, &[]).fails(5, "v differs from the stream's base v@s1");
    assert!(
        r.stderr.contains("followed a later snapshot that is gone") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    receive_file(&b.pool, "v", &s3, &["--force"]).ok();
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&image(&a, "v@s3")));
    // Received snapshots carry their content record too.
    b.run(&["pool", "check"]).ok();
    let got = image(&b, "v@s3");
    sh("chattr", &["-i", path_str(&got)]);
    sh("dd", &["if=/dev/zero", &format!("of={}", got.display()), "bs=4k", "count=1", "conv=notrunc", "status=none"]);
    sh("chattr", &["+i", path_str(&got)]);
    b.run(&["pool", "check"]).fails(8, "");
}

/// Writes `len` bytes of data seeded by `seed` at the start of a raw image.
fn fill(img: &Path, seed: u64, len: usize) {
    let mut rng = Rng(seed);
    let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    OpenOptions::new().write(true).open(img).unwrap().write_all_at(&buf, 0).unwrap();
}

/// issue 12 item 6: a guid names one snapshot in a pool. The same stream
/// received under a second name is refused before anything is written,
/// naming the snapshot that has the guid; received again under its own
/// name it is a retry that changes nothing; a crafted stream carrying the
/// guid of an unrelated local snapshot is refused the same way.
#[test]
fn a_snapshot_guid_is_received_once_per_pool() {
    require_privileges!("a_snapshot_guid_is_received_once_per_pool");
    let a = TestHost::xfs();
    let b = a.mnt.join("pool-b");
    subvol(&b, &["pool", "init", path_str(&b)]).ok();
    a.run(&["create", "v", "--size", "64M", "--fs", "raw"]).ok();
    fill(&image(&a, "v"), 1, 8 << 20);
    a.run(&["snapshot", "v@s1"]).ok();
    let full = a.dir.path().join("s1.stream");
    send_to_file(&a.pool, &["v@s1"], &full);
    receive_file(&b, "x", &full, &[]).ok();

    let before = tree_state(&b);
    receive_file(&b, "y", &full, &[]).fails(4, "already here as x@s1; receive into x, or delete x@s1 first");
    assert_eq!(tree_state(&b), before, "a refused receive changed the pool");
    let retry = receive_file(&b, "x", &full, &["--json"]).ok();
    let rep: serde_json::Value = serde_json::from_str(&retry).unwrap();
    assert_eq!((rep["name"].as_str(), rep["data_bytes"].as_u64()), (Some("x@s1"), Some(0)), "{rep}");
    assert_eq!(rep["followed"], true, "{rep}");
    assert_eq!(rep["note"], "already received; nothing changed", "{rep}");
    assert_eq!(tree_state(&b), before, "a retried receive changed the pool");

    // Increments: the same rule for the new snapshot's guid.
    fill(&image(&a, "v"), 2, 1 << 20);
    a.run(&["snapshot", "v@s2"]).ok();
    let inc = a.dir.path().join("s2.stream");
    send_to_file(&a.pool, &["v@s2", "--from", "v@s1"], &inc);
    receive_file(&b, "x", &inc, &[]).ok();
    let before = tree_state(&b);
    receive_file(&b, "y", &inc, &[]).fails(4, "already here as x@s2");
    receive_file(&b, "x", &inc, &[]).ok();
    assert_eq!(tree_state(&b), before);

    // A stream may claim the guid of an unrelated local snapshot.
    subvol(&b, &["create", "w", "--size", "1M", "--fs", "raw"]).ok();
    subvol(&b, &["snapshot", "w@mine"]).ok();
    let guid = subvol(&b, &["info", "w@mine", "--json"]).json()["guid"].as_str().unwrap().to_string();
    let forged = a.dir.path().join("forged.stream");
    std::fs::write(&forged, crafted_stream(|h| h["snapshot"]["guid"] = guid.clone().into())).unwrap();
    let before = tree_state(&b);
    receive_file(&b, "web", &forged, &[]).fails(4, "already here as w@mine");
    assert_eq!(tree_state(&b), before);
    subvol(&b, &["pool", "check"]).ok();
}

/// issue 12 item 6: two snapshot images with one guid, as older subvol
/// made them (one stream received as x and as y), keep their own
/// extent-map cache entries and space figures; entries named by guid alone
/// are never read and `pool check --repair` removes them; `pool check`
/// reports the shared guid; an increment whose base guid two snapshots of
/// the target have is refused rather than applied to either.
#[test]
fn snapshots_sharing_a_guid_keep_their_own_space_figures() {
    require_privileges!("snapshots_sharing_a_guid_keep_their_own_space_figures");
    let a = TestHost::xfs();
    let (b, c) = (a.mnt.join("pool-b"), a.mnt.join("pool-c"));
    for p in [&b, &c] {
        subvol(p, &["pool", "init", path_str(p)]).ok();
    }
    a.run(&["create", "v", "--size", "64M", "--fs", "raw"]).ok();
    fill(&image(&a, "v"), 3, 8 << 20);
    a.run(&["snapshot", "v@s1"]).ok();
    let full = a.dir.path().join("s1.stream");
    send_to_file(&a.pool, &["v@s1"], &full);
    receive_file(&b, "x", &full, &[]).ok();
    // What older subvol allowed: the same stream as y in the same pool.
    // Received in another pool on the same host and moved over, y has
    // blocks of its own and the guid of x@s1.
    receive_file(&c, "y", &full, &[]).ok();
    std::fs::rename(c.join("snapshots/y"), b.join("snapshots/y")).unwrap();
    std::fs::rename(c.join("subvolumes/y.img"), b.join("subvolumes/y.img")).unwrap();
    let guid = subvol(&b, &["info", "x@s1", "--json"]).json()["guid"].as_str().unwrap().to_string();
    assert_eq!(subvol(&b, &["info", "y@s1", "--json"]).json()["guid"], guid.as_str());
    // An entry named by guid alone (cache naming 1), claiming no extents.
    let cache = b.join(".subvol/cache");
    std::fs::create_dir_all(&cache).unwrap();
    let old = cache.join(format!("{}.extents", guid.replace('-', "")));
    std::fs::write(&old, subvol_core::ExtentMap::default().to_bytes()).unwrap();

    // Each subvolume is a reflink clone of its own snapshot: all 8 MiB
    // shared, nothing exclusive, nothing written since. Twice: mapped,
    // then from the cache.
    for round in 0..2 {
        let listed = subvol(&b, &["list", "--snapshots", "--json"]).json();
        for o in listed.as_array().unwrap() {
            let name = o["name"].as_str().unwrap();
            assert_eq!(o["exclusive_bytes"], 0, "round {round}: {name}: {o}");
            assert_eq!(o["shared_bytes"], 8 << 20, "round {round}: {name}: {o}");
            if !name.contains('@') {
                assert_eq!(o["written_bytes"], 0, "round {round}: {name}: {o}");
            }
        }
    }
    let entries = || -> Vec<String> {
        std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    assert_eq!(entries().len(), 3, "one entry per snapshot image, besides the old one: {:?}", entries());

    let r = subvol(&b, &["pool", "check"]).fails(8, "each with what to do");
    assert!(
        r.stdout.contains(&format!("snapshots x@s1, y@s1 share the guid {guid}"))
            && r.stdout.contains("keep x@s1 and `subvol delete` y@s1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(&format!("stale extent-map cache {}", old.display())), "{}", r.stdout);
    subvol(&b, &["pool", "check", "--repair"]).fails(8, "");
    assert!(!old.exists(), "--repair kept the entry named by guid alone");
    assert_eq!(entries().len(), 2, "--repair removed a live entry: {:?}", entries());

    // Two snapshots of x with the stream's base guid: refused, not guessed.
    let moved = b.join("snapshots/x/s1b.img");
    let y_snap = b.join("snapshots/y/s1.img");
    sh("chattr", &["-i", path_str(&y_snap)]);
    std::fs::rename(&y_snap, &moved).unwrap();
    sh("chattr", &["+i", path_str(&moved)]);
    fill(&image(&a, "v"), 4, 1 << 20);
    a.run(&["snapshot", "v@s2"]).ok();
    let inc = a.dir.path().join("s2.stream");
    send_to_file(&a.pool, &["v@s2", "--from", "v@s1"], &inc);
    let before = tree_state(&b);
    receive_file(&b, "x", &inc, &[]).fails(8, "x@s1, x@s1b all have the guid");
    assert_eq!(tree_state(&b), before);
    subvol(&b, &["delete", "x@s1b"]).ok();
    receive_file(&b, "x", &inc, &[]).ok();
    assert_eq!(
        hash_file(Path::new(subvol(&b, &["info", "x@s2", "--json"]).json()["image"].as_str().unwrap())),
        hash_file(Path::new(a.info("v@s2")["image"].as_str().unwrap()))
    );
    subvol(&b, &["pool", "check"]).ok();
}
