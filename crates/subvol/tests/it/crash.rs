//! Crash injection: every mutating command is killed with SIGKILL at every
//! named crash point (SUBVOL_CRASH_AT), and at random moments. After each
//! kill, one ordinary command runs, then `pool check` must find the pool
//! clean, every object that existed before must be intact, no filesystem may
//! stay frozen and no loop device or mount may leak. Then the command is
//! retried and must finish.
//!
//! `SUBVOL_CRASH_ROUNDS=N` sets the number of random-time kills (default 6;
//! the long mode documented in docs/TESTING.md uses 200).

use crate::harness::*;
use crate::require_privileges;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The pool every scenario starts from, and what must survive.
struct World {
    host: TestHost,
    other: PathBuf,
    /// Object name -> content hash (snapshots: image; `a`: its file).
    expect: BTreeMap<String, String>,
    a_mount: PathBuf,
    a_file_hash: String,
}

fn world() -> World {
    let host = TestHost::new(HostKind::Xfs, "4G");
    let other = host.mnt.join("pool-b");
    subvol(&other, &["pool", "init", path_str(&other)]).ok();
    host.run(&["create", "a", "--size", "320M"]).ok();
    let a_mount = mount(&host, "a");
    let a_file_hash = write_data(&a_mount.join("data"), 1, 4 << 20);
    host.run(&["snapshot", "a@s1"]).ok();
    host.run(&["create", "r", "--size", "64M", "--fs", "raw"]).ok();
    let img = PathBuf::from(host.info("r")["image"].as_str().unwrap());
    sh("dd", &["if=/dev/urandom", &format!("of={}", img.display()), "bs=1M", "count=8", "conv=notrunc", "status=none"]);
    for s in ["base", "s2", "s3"] {
        host.run(&["snapshot", &format!("r@{s}")]).ok();
        sh(
            "dd",
            &[
                "if=/dev/urandom",
                &format!("of={}", img.display()),
                "bs=64k",
                "count=16",
                "seek=300",
                "conv=notrunc",
                "status=none",
            ],
        );
    }
    host.run(&["create", "x", "--size", "16M", "--fs", "raw"]).ok();
    let (s, r) = pipe_send(&host.pool, &["r@base"], &other, &["r"]);
    assert_eq!((s, r), (0, 0));
    let mut expect = BTreeMap::new();
    for n in ["a@s1", "r@base", "r@s2", "r@s3"] {
        expect.insert(n.to_string(), hash_file(Path::new(host.info(n)["image"].as_str().unwrap())));
    }
    World { host, other, expect, a_mount, a_file_hash }
}

fn pipe_send(src: &Path, send: &[&str], dst: &Path, recv: &[&str]) -> (i32, i32) {
    pipe_send_env(src, send, dst, recv, &[])
}

fn pipe_send_env(src: &Path, send: &[&str], dst: &Path, recv: &[&str], env: &[(&str, &str)]) -> (i32, i32) {
    let (s, r) = pipe_env(src, send, dst, recv, env);
    (s.code, r.code)
}

/// The command that reaches each crash point, in a fresh world.
fn command_for(point: &str) -> Vec<&'static str> {
    match point.split('-').next().unwrap() {
        "create" => vec!["create", "n", "--size", "300M"],
        "resize" => vec!["resize", "a", "400M"],
        "rename" => vec!["rename", "r", "r2"],
        "delete" if point.contains("snapshot") => vec!["delete", "r@s2"],
        "delete" => vec!["delete", "x"],
        "hold" => vec!["hold", "a@s1", "keep"],
        "snapshot" => vec!["snapshot", "a@new"],
        "clone" => vec!["clone", "a@s1", "c"],
        "rollback" => vec!["rollback", "r@s2"],
        "prune" => vec!["prune", "r", "--keep-last", "1"],
        "receive" => vec![],
        other => panic!("no scenario for crash point family {other}"),
    }
}

/// After a kill: one ordinary command, then everything must be in order.
fn verify(w: &World, context: &str) {
    // Any command recovers what a crash left behind.
    w.host.run(&["list"]).ok();
    subvol(&w.other, &["list"]).ok();
    for pool in [&w.host.pool, &w.other] {
        let r = subvol(pool, &["pool", "check", "--json"]);
        let rep = r.json();
        let errors: Vec<&serde_json::Value> =
            rep["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "error").collect();
        assert!(
            errors.is_empty() && r.code == 0,
            "{context}: pool check of {} is not clean: {errors:?}",
            pool.display()
        );
    }
    // Whatever was acknowledged before is intact (renamed objects count).
    for (name, hash) in &w.expect {
        let candidates = [name.clone(), name.replacen("r@", "r2@", 1)];
        let found = candidates.iter().find_map(|n| {
            let i = w.host.run(&["info", n, "--json"]);
            (i.code == 0).then(|| i.json()["image"].as_str().unwrap().to_string())
        });
        match found {
            Some(img) => assert_eq!(&hash_file(Path::new(&img)), hash, "{context}: {name} changed"),
            // Deleting r@s2 / pruning are what those commands do.
            None => {
                assert!(context.contains("delete-snapshot") || context.contains("prune"), "{context}: {name} vanished")
            }
        }
    }
    // The mounted subvolume is neither frozen nor damaged.
    let f = w.a_mount.join("data");
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = w.a_mount.join("probe");
    std::thread::spawn(move || {
        let ok = std::fs::write(&probe, b"x").is_ok();
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(true) => {}
        Ok(false) => panic!("{context}: write to the mounted subvolume failed"),
        Err(_) => {
            let _ = Command::new("fsfreeze").args(["--unfreeze", path_str(&w.a_mount)]).output();
            panic!("{context}: the mounted subvolume stayed frozen");
        }
    }
    assert_eq!(hash_file(&f), w.a_file_hash, "{context}: data in a changed");
    // No loop device without a mount.
    let mounts = mounts_under(&w.host.pool);
    let loops = loops_under(&w.host.pool);
    assert_eq!(loops.len(), mounts.len(), "{context}: loops {loops:?} vs mounts {mounts:?}");
}

/// The receiving pool's `r`, which the increment is applied to in place
/// (it equals r@base and is not mounted), is r@base or r@s3 after a crash,
/// never half-applied, and the base carries no hold of the dead receive.
fn receiver_intact(w: &World, context: &str) {
    let r = subvol(&w.other, &["info", "r", "--json"]).json();
    let got = hash_file(Path::new(r["image"].as_str().unwrap()));
    assert!(
        got == w.expect["r@base"] || got == w.expect["r@s3"],
        "{context}: the receiver's r is neither r@base nor r@s3"
    );
    let base = subvol(&w.other, &["info", "r@base", "--json"]).json();
    let holds = base["holds"].as_array().cloned().unwrap_or_default();
    assert!(!holds.iter().any(|h| h == ".receive"), "{context}: r@base still held by the dead receive: {holds:?}");
}

#[test]
fn kill_at_every_crash_point() {
    require_privileges!("kill_at_every_crash_point");
    let mut exercised = 0;
    // Destroying ends the pool this harness checks; its crash point is
    // tested in pools::destroy_refuses_then_removes_everything. Unlock and
    // lock need an encrypted subvolume: encryption::kill_during_unlock_and_lock_leaves_what_pool_check_reports.
    // Repair needs damage and a replica: scrub::a_repair_killed_mid_write_is_finished_by_the_next_command.
    let elsewhere = ["destroy", "unlock", "lock", "repair"];
    for point in subvol_os::crash::POINTS.iter().filter(|p| !elsewhere.iter().any(|e| p.starts_with(&format!("{e}-"))))
    {
        let w = world();
        let env = [("SUBVOL_CRASH_AT", *point)];
        if point.starts_with("receive") {
            let (_, rc) = pipe_send_env(&w.host.pool, &["r@s3", "--from", "r@base"], &w.other, &["r"], &env);
            assert_eq!(rc, -1, "{point}: the receiver was not killed");
        } else {
            let args = command_for(point);
            let r = subvol_env(&w.host.pool, &args, &env);
            assert_eq!(r.code, -1, "{point}: `subvol {}` was not killed at its crash point: {r:?}", args.join(" "));
        }
        exercised += 1;
        verify(&w, point);
        if point.starts_with("receive") {
            receiver_intact(&w, point);
        }
        // The command can be run again and finishes.
        if point.starts_with("receive") {
            let (_, rc) = pipe_send(&w.host.pool, &["r@s3", "--from", "r@base"], &w.other, &["r"]);
            assert_eq!(rc, 0, "{point}: receive did not succeed after the crash");
            let got = subvol(&w.other, &["info", "r@s3", "--json"]).json();
            assert_eq!(hash_file(Path::new(got["image"].as_str().unwrap())), w.expect["r@s3"]);
        } else {
            let args = command_for(point);
            let r = w.host.run(&args);
            assert_eq!(r.code, 0, "{point}: retry of `subvol {}` failed: {r:?}", args.join(" "));
        }
        verify(&w, &format!("{point} (after retry)"));
    }
    eprintln!("crash points exercised: {exercised}");
}

#[test]
fn kill_at_random_moments() {
    require_privileges!("kill_at_random_moments");
    let rounds: u64 = std::env::var("SUBVOL_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let w = world();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut killed = 0;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 150_000);
        let cmd: Vec<String> = match round % 4 {
            0 => vec!["snapshot".into(), format!("a@k{round}")],
            1 => vec!["clone".into(), "a@s1".into(), format!("c{round}")],
            2 => vec!["create".into(), format!("n{round}"), "--size".into(), "300M".into()],
            _ => vec!["rollback".into(), "r@s2".into()],
        };
        let mut child = Command::new(BIN)
            .arg("--pool")
            .arg(&w.host.pool)
            .args(&cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.code().is_none() {
            killed += 1;
        }
        verify(&w, &format!("random kill {round} of `{}` after {delay:?}", cmd.join(" ")));
    }
    eprintln!("random kills: {killed} of {rounds} commands killed mid-way");
}
