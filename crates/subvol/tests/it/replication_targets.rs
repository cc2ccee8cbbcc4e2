//! `sync` remembers its targets (issue 17): each sync from a pool records
//! the destination, the base both sides hold, time, size and the last
//! error; `sync NAME` repeats the recorded destinations, `sync --list`
//! shows them without contacting anything.

use crate::harness::*;
use crate::require_privileges;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// False (after saying why, or failing under CI=true) without ssh.
fn ssh_available(test: &str) -> bool {
    if have("sshd") && have("ssh") {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs openssh-server and openssh-client");
    }
    eprintln!("SKIPPED {test}: needs sshd");
    false
}

fn image(pool: &Path, name: &str) -> PathBuf {
    PathBuf::from(subvol(pool, &["info", name, "--json"]).json()["image"].as_str().unwrap())
}

/// Writes 1 MiB seeded by `seed` at `seed` MiB into a raw image.
fn write_mib(img: &Path, seed: u64) {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let buf: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    OpenOptions::new().write(true).open(img).unwrap().write_all_at(&buf, (seed % 32) << 20).unwrap();
}

/// `subvol sync ARGS --remote-bin BIN` plus the options reaching `sshd`.
fn sync_args(args: &[&str], sshd: &Sshd) -> Vec<String> {
    let mut v: Vec<String> = vec!["sync".into()];
    v.extend(args.iter().map(|a| a.to_string()));
    v.extend(["--remote-bin".to_string(), BIN.to_string()]);
    v.extend(sshd.opts());
    v
}

fn run_sync(pool: &Path, args: &[&str], sshd: &Sshd) -> Run {
    let v = sync_args(args, sshd);
    subvol(pool, &v.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The snapshots of `name` holding a `sync` hold.
fn held(pool: &Path, name: &str) -> Vec<String> {
    let list = subvol(pool, &["list", "-s", name, "--json"]).json();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["holds"].as_array().is_some_and(|h| h.iter().any(|t| t == "sync")))
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn targets(pool: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["sync", "--list", "--json"];
    all.extend_from_slice(args);
    subvol(pool, &all).json().as_array().unwrap().clone()
}

#[test]
fn sync_records_its_targets_lists_and_repeats_them() {
    require_privileges!("sync_records_its_targets_lists_and_repeats_them");
    if !ssh_available("sync_records_its_targets_lists_and_repeats_them") {
        return;
    }
    let a = TestHost::xfs();
    let (b, c) = (a.mnt.join("pool-b"), a.mnt.join("pool-c"));
    for p in [&b, &c] {
        subvol(p, &["pool", "init", path_str(p)]).ok();
    }
    let sshd = Sshd::start(a.dir.path());
    a.run(&["create", "v", "--size", "64M", "--fs", "raw"]).ok();
    a.run(&["create", "w", "--size", "64M", "--fs", "raw"]).ok();
    let img = image(&a.pool, "v");
    write_mib(&img, 1);
    assert!(a.run(&["sync", "--list"]).ok().starts_with("no sync target is recorded; `subvol sync NAME "));

    // Over ssh, and to a pool of this host.
    let remote = format!("root@127.0.0.1:{}:v", b.display());
    let first: serde_json::Value =
        serde_json::from_str(&run_sync(&a.pool, &["v", &remote, "--json"], &sshd).ok()).unwrap();
    let local = format!("{}:copy", c.display());
    a.run(&["sync", "v", &local]).ok();

    let listed = targets(&a.pool, &[]);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let canonical_c = format!("{}:copy", c.canonicalize().unwrap().display());
    let dests: Vec<&str> = listed.iter().map(|t| t["destination"].as_str().unwrap()).collect();
    assert!(dests.contains(&remote.as_str()) && dests.contains(&canonical_c.as_str()), "{dests:?}");
    let t = listed.iter().find(|t| t["destination"] == remote.as_str()).unwrap();
    assert_eq!(t["name"], "v");
    let base = &t["base"];
    assert_eq!(base["destination"], first["snapshot"]);
    assert_eq!(
        base["source"].as_str().unwrap().split('@').nth(1),
        first["snapshot"].as_str().unwrap().split('@').nth(1)
    );
    assert_eq!(base["guid"], a.info(base["source"].as_str().unwrap())["guid"], "not the source's guid");
    assert_eq!(base["guid"], subvol(&b, &["info", base["destination"].as_str().unwrap(), "--json"]).json()["guid"]);
    assert_eq!(t["last_success"]["stream_bytes"], first["stream_bytes"]);
    assert_eq!(t["last_success"]["incremental"], false);
    assert!(t.get("last_error").is_none(), "{t}");
    assert!(t["lag_seconds"].as_u64().unwrap() < 600, "{t}");
    assert_eq!(targets(&a.pool, &["v"]).len(), 2);
    assert!(targets(&a.pool, &["w"]).is_empty());
    let table = a.run(&["sync", "--list", "v"]).ok();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].split_whitespace().eq(["NAME", "DESTINATION", "SYNCED", "SIZE", "LAG", "ERROR"]), "{table}");
    let row = lines.iter().find(|l| l.contains(&remote)).unwrap();
    assert!(row.starts_with("v ") && row.trim_end().ends_with(" -"), "{row}");
    assert!(a.run(&["sync", "--list", "w"]).ok().starts_with("w has no recorded sync target"));

    // `sync v` repeats both, one line each; the first is now incremental.
    write_mib(&img, 2);
    let out = run_sync(&a.pool, &["v"], &sshd).ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for dest in [&remote, &canonical_c] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{dest}: synced v@sync-")))
            .unwrap_or_else(|| panic!("{dest}: {out}"));
        assert!(line.contains("(incremental, "), "{line}");
    }
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&img));
    assert_eq!(hash_file(&image(&c, "copy")), hash_file(&img));
    let reports = serde_json::from_str::<serde_json::Value>(&run_sync(&a.pool, &["v", "--json"], &sshd).ok()).unwrap();
    assert_eq!(reports.as_array().map(Vec::len), Some(2), "{reports}");
    // Each destination's base is held here, and nothing else.
    let mut bases: Vec<String> =
        targets(&a.pool, &["v"]).iter().map(|t| t["base"]["source"].as_str().unwrap().to_string()).collect();
    bases.sort();
    let mut here = held(&a.pool, "v");
    here.sort();
    assert_eq!(here, bases);
    assert_eq!(held(&b, "v").len(), 1);
    assert_eq!(held(&c, "copy").len(), 1);

    // Nothing recorded: one line naming the fix.
    a.run(&["sync", "w"])
        .fails(2, "w has no recorded sync target; give one: `subvol sync w [user@]host:[/POOLDIR:]NAME`");
    // Forgetting a target: `sync v` no longer goes there.
    assert!(a.run(&["sync", "v", &canonical_c, "--forget"]).ok().starts_with("forgot"));
    assert!(a.run(&["sync", "v", &canonical_c, "--forget"]).ok().contains("nothing forgotten"));
    assert_eq!(run_sync(&a.pool, &["v"], &sshd).ok().lines().count(), 1);
    a.run(&["pool", "check"]).ok();
}

#[test]
fn a_failed_sync_records_its_error_and_keeps_the_last_success() {
    require_privileges!("a_failed_sync_records_its_error_and_keeps_the_last_success");
    if !ssh_available("a_failed_sync_records_its_error_and_keeps_the_last_success") {
        return;
    }
    let a = TestHost::xfs();
    let b = a.mnt.join("pool-b");
    subvol(&b, &["pool", "init", path_str(&b)]).ok();
    let sshd = Sshd::start(a.dir.path());
    a.run(&["create", "v", "--size", "64M", "--fs", "raw"]).ok();
    let img = image(&a.pool, "v");
    write_mib(&img, 1);
    let remote = format!("root@127.0.0.1:{}:v", b.display());
    run_sync(&a.pool, &["v", &remote], &sshd).ok();
    let before = targets(&a.pool, &["v"]).remove(0);
    let base = before["base"]["source"].as_str().unwrap().to_string();

    // The copy was written to since the base: the destination refuses the
    // increment. The snapshot taken for it goes, the base stays held.
    write_mib(&image(&b, "v"), 7);
    write_mib(&img, 2);
    let r = run_sync(&a.pool, &["v", &remote], &sshd).fails(5, &format!("{remote}: v differs from the stream's base"));
    let after = targets(&a.pool, &["v"]).remove(0);
    assert_eq!(after["last_error"]["exit_code"], 5, "{after}");
    let message = after["last_error"]["message"].as_str().unwrap();
    assert!(r.stderr.contains(message), "recorded {message:?}, printed {}", r.stderr);
    assert_eq!(after["last_success"], before["last_success"], "the last success was not kept");
    assert_eq!(after["base"], before["base"]);
    let snaps = subvol(&a.pool, &["list", "-s", "v", "--json"]).json();
    assert_eq!(snaps.as_array().unwrap().len(), 2, "the unsent snapshot stayed: {snaps}");
    assert_eq!(held(&a.pool, "v"), [base.as_str()]);
    assert_eq!(held(&b, "v").len(), 1);
    let table = a.run(&["sync", "--list"]).ok();
    assert!(table.contains("differs from the stream's base"), "{table}");

    // Unreachable: recorded too, over the previous error.
    let mut wrong = sync_args(&["v"], &sshd);
    let port = wrong.iter().position(|o| o == "-p").unwrap() + 2;
    wrong[port] = "1".into();
    subvol(&a.pool, &wrong.iter().map(String::as_str).collect::<Vec<_>>()).fails(1, "ssh failed");
    let after = targets(&a.pool, &["v"]).remove(0);
    assert!(after["last_error"]["message"].as_str().unwrap().contains("ssh failed"), "{after}");
    assert_eq!(after["last_error"]["exit_code"], 1);
    assert_eq!(after["last_success"], before["last_success"]);
    // Monitoring reads the records without contacting the destination.
    let h = subvol(&a.pool, &["health"]);
    assert_eq!(h.code, 1, "{h:?}");
    assert!(h.stdout.contains("v: the last sync to ") && h.stdout.contains("ssh failed"), "{}", h.stdout);
    let h = subvol(&a.pool, &["health", "--warn-age", "1000d", "--crit-age", "0"]);
    assert_eq!(h.code, 2, "a destination any age behind is critical with --crit-age 0: {h:?}");
    let m = subvol(&a.pool, &["metrics"]).ok();
    assert!(
        m.lines().any(|l| l.starts_with("subvol_sync_failing{") && l.contains("subvolume=\"v\"") && l.ends_with(" 1")),
        "{m}"
    );
    assert!(m.lines().any(|l| l.starts_with("subvol_sync_lag_seconds{")), "{m}");
    assert!(m.lines().any(|l| l.starts_with("subvol_sync_last_stream_bytes{")), "{m}");

    // Back to the base on the destination: the next `sync v` succeeds and
    // clears the error; only the new base is held on either side.
    let there = before["base"]["destination"].as_str().unwrap();
    let undo = subvol(&b, &["rollback", there, "--json"]).json();
    subvol(&b, &["delete", undo["pre_rollback"].as_str().unwrap()]).ok();
    let out = run_sync(&a.pool, &["v"], &sshd).ok();
    assert!(out.starts_with(&format!("{remote}: synced v@sync-")) && out.contains("(incremental, "), "{out}");
    let fixed = targets(&a.pool, &["v"]).remove(0);
    assert!(fixed.get("last_error").is_none(), "{fixed}");
    assert_ne!(fixed["last_success"], before["last_success"]);
    assert_eq!(held(&a.pool, "v"), [fixed["base"]["source"].as_str().unwrap()]);
    assert_eq!(held(&b, "v"), [fixed["base"]["destination"].as_str().unwrap()]);
    assert_eq!(hash_file(&image(&b, "v")), hash_file(&img));
    for p in [&a.pool, &b] {
        subvol(p, &["pool", "check"]).ok();
    }
}
