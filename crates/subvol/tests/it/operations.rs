//! Operations: metrics for Prometheus, health checks for Nagios-style
//! monitoring, on real pools.

use crate::harness::*;
use crate::require_privileges;
use std::io::Write;
use std::process::{Command, Stdio};

/// The metrics parsed by the Prometheus project's Python client
/// (prometheus_client's text parser): `{sample name: [[labels, value]]}`.
fn parse_metrics(text: &str) -> serde_json::Value {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {"families": []}
for fam in text_string_to_metric_families(sys.stdin.read()):
    out["families"].append([fam.name, fam.type, fam.documentation])
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn parser_present(test: &str) -> bool {
    let ok =
        Command::new("python3").args(["-c", "import prometheus_client"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{test}: prometheus_client missing, but CI=true forbids skipping"
        );
        eprintln!("SKIPPED {test}: needs python3 -m pip install prometheus-client");
    }
    ok
}

/// The value of `name` for the sample whose labels include `want`.
fn value(m: &serde_json::Value, name: &str, want: &[(&str, &str)]) -> f64 {
    m[name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name}"))
        .iter()
        .find(|s| want.iter().all(|(k, v)| s[0][k] == *v))
        .unwrap_or_else(|| panic!("no {name} with {want:?}"))[1]
        .as_f64()
        .unwrap()
}

fn samples(text: &str) -> usize {
    text.lines().filter(|l| !l.starts_with('#')).count()
}

#[test]
fn metrics_parse_and_match_the_pool() {
    require_privileges!("metrics_parse_and_match_the_pool");
    if !parser_present("metrics_parse_and_match_the_pool") {
        return;
    }
    let host = TestHost::new(HostKind::Xfs, "3G");
    host.run(&["create", "a", "--size", "300M"]).ok();
    host.run(&["create", "b", "--size", "8M", "--fs", "raw", "--guarantee"]).ok();
    let mp = mount(&host, "a");
    write_data(&mp.join("f"), 3, 4 << 20);
    host.run(&["snapshot", "a@1"]).ok();
    host.run(&["snapshot", "a@2"]).ok();
    let text = host.run(&["metrics"]).ok();
    let m = parse_metrics(&text);
    let st = host.run(&["pool", "status", "--json"]).json();
    let pool = path_str(&host.pool);
    let p = [("pool", pool)];
    for fam in m["families"].as_array().unwrap() {
        assert_eq!(fam[1], "gauge", "{fam}");
        assert!(!fam[2].as_str().unwrap().is_empty(), "no help: {fam}");
    }
    assert_eq!(value(&m, "subvol_pool_capacity_bytes", &p), st["capacity_bytes"].as_f64().unwrap());
    assert_eq!(
        value(&m, "subvol_pool_outstanding_guarantees_bytes", &p),
        st["outstanding_guarantees_bytes"].as_f64().unwrap()
    );
    assert_eq!(value(&m, "subvol_pool_subvolumes", &p), 2.0);
    assert_eq!(value(&m, "subvol_pool_snapshots", &p), 2.0);
    assert_eq!(value(&m, "subvol_pool_guard_up", &p), 0.0);
    let a = [("pool", pool), ("subvolume", "a")];
    let b = [("pool", pool), ("subvolume", "b")];
    assert_eq!(value(&m, "subvol_subvolume_size_bytes", &a), (300u64 << 20) as f64);
    assert_eq!(value(&m, "subvol_subvolume_mounted", &a), 1.0);
    assert_eq!(value(&m, "subvol_subvolume_mounted", &b), 0.0);
    assert_eq!(value(&m, "subvol_subvolume_guaranteed", &b), 1.0);
    assert_eq!(value(&m, "subvol_subvolume_snapshots", &a), 2.0);
    assert_eq!(value(&m, "subvol_subvolume_snapshots", &b), 0.0);
    let age = value(&m, "subvol_subvolume_newest_snapshot_age_seconds", &a);
    assert!((0.0..600.0).contains(&age), "{age}");
    assert!(
        m.get("subvol_subvolume_newest_snapshot_age_seconds").unwrap().as_array().unwrap().len() == 1,
        "b has none"
    );
    assert_eq!(value(&m, "subvol_subvolume_info", &[("subvolume", "a"), ("filesystem", "xfs")]), 1.0);

    // A running guard shows up, with how long ago it sampled the host.
    let mut guard = Command::new(BIN).args(["--pool", pool, "guard"]).stderr(Stdio::null()).spawn().unwrap();
    let seen = (0..100).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let m = parse_metrics(&host.run(&["metrics"]).ok());
        (value(&m, "subvol_pool_guard_up", &p) == 1.0).then(|| value(&m, "subvol_pool_guard_last_poll_age_seconds", &p))
    });
    guard.kill().unwrap();
    guard.wait().unwrap();
    let poll_age = seen.expect("the guard never showed in the metrics");
    assert!(poll_age < 5.0, "{poll_age}");

    // -o: written whole, readable by the collector, nothing left beside it.
    let dir = tempdir();
    let file = dir.path().join("subvol.prom");
    host.run(&["metrics", "-o", path_str(&file)]).ok();
    host.run(&["metrics", "-o", path_str(&file)]).ok();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
    parse_metrics(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// Samples grow with subvolumes, never with snapshots: 150 snapshots add
/// none beyond the two snapshot-age samples of their subvolume.
#[test]
fn metrics_cardinality_does_not_grow_with_snapshots() {
    require_privileges!("metrics_cardinality_does_not_grow_with_snapshots");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "a", "--size", "4M", "--fs", "raw"]).ok();
    host.run(&["create", "b", "--size", "4M", "--fs", "raw"]).ok();
    host.run(&["snapshot", "a@0"]).ok();
    let before = samples(&host.run(&["metrics"]).ok());
    for i in 1..150 {
        host.run(&["snapshot", &format!("a@{i}")]).ok();
    }
    let text = host.run(&["metrics"]).ok();
    assert_eq!(samples(&text), before);
    // The documented bound: 15 + 14 x subvolumes (+1 with a guard).
    assert!(samples(&text) <= 15 + 14 * 2 + 1, "{}", samples(&text));
}

fn health(host: &TestHost, args: &[&str]) -> (i32, String) {
    let mut all = vec!["health"];
    all.extend_from_slice(args);
    let r = host.run(&all);
    (r.code, r.stdout)
}

/// Each finding, provoked on a real pool, with the monitoring-plugin exit
/// status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
#[test]
fn health_names_each_finding_with_its_status() {
    require_privileges!("health_names_each_finding_with_its_status");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "a", "--size", "300M"]).ok();
    let (code, out) = health(&host, &[]);
    assert_eq!((code, out.starts_with("SUBVOL OK")), (0, true), "{out}");

    // A late snapshot, by explicit ages (policy intervals: unit tests).
    host.run(&["snapshot", "a@1"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out) = health(&host, &["--warn-age", "1s"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("WARNING: a: its newest snapshot is"), "{out}");
    assert_eq!(health(&host, &["--warn-age", "1s", "--crit-age", "1s"]).0, 2);
    let j = host.run(&["health", "--warn-age", "1s", "--json"]).json();
    assert_eq!(j["status"], "WARNING");

    // An overcommitted pool with no guard: warning.
    host.run(&["create", "big", "--size", "20G"]).ok();
    let (code, out) = health(&host, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("WARNING: no guard watches"), "{out}");

    // Writers frozen by the guard: critical.
    mount(&host, "a");
    let g = host.run(&["guard", "--once", "--low-watermark", "100T"]);
    assert_eq!(g.code, 0, "{g:?}");
    let (code, out) = health(&host, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("CRITICAL: a: writers are frozen by the guard"), "{out}");
    host.run(&["guard", "--once"]).ok();

    // A pool check problem: critical.
    let img = host.info("big")["image"].as_str().unwrap().to_string();
    sh("chmod", &["0644", &img]);
    let (code, out) = health(&host, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("has mode 644"), "{out}");
    sh("chmod", &["0600", &img]);
    host.run(&["delete", "big"]).ok();

    // Free space under the margin: critical.
    let free = host.run(&["pool", "status", "--json"]).json()["free_bytes"].as_u64().unwrap();
    sh("fallocate", &["-l", &(free - (32 << 20)).to_string(), path_str(&host.mnt.join("fill"))]);
    let (code, out) = health(&host, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("below the safety margin"), "{out}");
    std::fs::remove_file(host.mnt.join("fill")).unwrap();

    // No pool: unknown.
    let r = subvol(&host.mnt.join("nothing"), &["health"]);
    assert_eq!(r.code, 3, "{r:?}");
    assert!(r.stdout.starts_with("SUBVOL UNKNOWN - no pool at"), "{r:?}");
}

/// A receive left unfinished (resumable) is a warning until resumed or
/// aborted.
#[test]
fn health_warns_of_an_unfinished_receive() {
    require_privileges!("health_warns_of_an_unfinished_receive");
    let a = TestHost::new(HostKind::Xfs, "2G");
    a.run(&["create", "v", "--size", "64M", "--fs", "raw"]).ok();
    let img = a.info("v")["image"].as_str().unwrap().to_string();
    sh("dd", &["if=/dev/urandom", &format!("of={img}"), "bs=1M", "count=16", "conv=notrunc", "status=none"]);
    a.run(&["snapshot", "v@s1"]).ok();
    let dir = tempdir();
    let stream = dir.path().join("s");
    a.run(&["send", "v@s1", "-o", path_str(&stream)]).ok();
    let bytes = std::fs::read(&stream).unwrap();
    let cut = dir.path().join("cut");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let b = TestHost::new(HostKind::Xfs, "2G");
    subvol(&b.pool, &["receive", "v", "--resume", "--input", path_str(&cut)]).fails(8, "");
    let (code, out) = health(&b, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("WARNING: v: a resumable receive was left unfinished"), "{out}");
    b.run(&["receive", "v", "--abort"]).ok();
    assert_eq!(health(&b, &[]).0, 0);
}

/// The guard logs one line per event with its numbers, as key=value or
/// JSON; autosnap too.
#[test]
fn guard_and_autosnap_log_structured_lines() {
    require_privileges!("guard_and_autosnap_log_structured_lines");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "a", "--size", "300M"]).ok();
    mount(&host, "a");
    let r = host.run(&["guard", "--once", "--low-watermark", "100T", "--log-format", "json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let events: Vec<serde_json::Value> =
        r.stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let start = events.iter().find(|e| e["event"] == "start").expect("a start event");
    assert!(start["capacity_bytes"].as_u64().unwrap() > 1 << 30, "{start}");
    let freeze = events.iter().find(|e| e["event"] == "freeze").expect("a freeze event");
    assert_eq!(freeze["subvolume"], "a");
    assert!(freeze["freeze_ms"].as_f64().is_some() && freeze["ts"].is_string(), "{freeze}");
    let react = events.iter().find(|e| e["event"] == "react").expect("a react event");
    assert_eq!(react["low_watermark_bytes"].as_u64(), Some(100u64 << 40), "{react}");
    let r = host.run(&["guard", "--once", "--log-format", "kv"]);
    assert_eq!(r.code, 0, "{r:?}");
    for l in r.stderr.lines() {
        assert!(l.starts_with("ts=") && l.contains(" event=") && l.contains(" msg="), "{l}");
    }
    assert!(r.stderr.lines().any(|l| l.contains("event=thaw subvolume=a ")), "{}", r.stderr);

    host.run(&["set", "a", "snapshot.policy=hourly=2"]).ok();
    let out = host.run(&["autosnap", "--log-format", "kv"]).ok();
    assert!(out.starts_with("ts=") && out.contains("event=snapshot subvolume=a snapshot=a@"), "{out}");
}

/// A guard whose log pipe closes keeps guarding: its lines go on into the
/// kernel log, it thaws on SIGTERM and exits cleanly (no panic).
#[test]
fn a_guard_outlives_its_closed_log_pipe() {
    require_privileges!("a_guard_outlives_its_closed_log_pipe");
    let host = TestHost::new(HostKind::Xfs, "2G");
    host.run(&["create", "a", "--size", "300M"]).ok();
    let mp = mount(&host, "a");
    let klog = KernelLog::mark();
    let mut guard = Command::new(BIN)
        .args(["--pool", path_str(&host.pool), "guard", "--low-watermark", "100T", "--log-format", "kv"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read the first line, then close the pipe.
    let mut err = std::io::BufReader::new(guard.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    assert!(first.contains("event=start"), "{first}");
    drop(err);
    let frozen = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        !host.run(&["pool", "status", "--json"]).json()["frozen"].as_array().unwrap().is_empty()
    });
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(guard.id() as i32, libc::SIGTERM) }, 0);
    let status = guard.wait().unwrap();
    let _ = Command::new("fsfreeze").args(["--unfreeze", path_str(&mp)]).output();
    assert!(frozen, "the guard never froze a");
    assert!(status.success(), "the guard died with its log pipe: {status:?}");
    std::fs::write(mp.join("after"), b"thawed").unwrap();
    let kernel = klog.text_since();
    assert!(kernel.contains("event=freeze subvolume=a"), "the freeze line was lost:\n{kernel}");
    assert!(kernel.contains("event=thaw subvolume=a"), "the thaw line was lost:\n{kernel}");
}
