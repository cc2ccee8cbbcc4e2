//! Several subvol commands on one pool at once, from several processes:
//! they are serialised by the pool lock (or safely concurrent), and the pool
//! is consistent afterwards. `SUBVOL_CONCURRENCY_SECS` sets the duration
//! (default 15).

use crate::harness::*;
use crate::require_privileges;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn random_mixes_from_several_processes() {
    require_privileges!("random_mixes_from_several_processes");
    let host = TestHost::new(HostKind::Xfs, "6G");
    let other = host.mnt.join("pool-b");
    subvol(&other, &["pool", "init", path_str(&other)]).ok();
    host.run(&["create", "a", "--size", "320M"]).ok();
    let mp = mount(&host, "a");
    write_data(&mp.join("data"), 3, 2 << 20);
    host.run(&["create", "r", "--size", "32M", "--fs", "raw"]).ok();
    host.run(&["snapshot", "r@base"]).ok();
    let secs: u64 = std::env::var("SUBVOL_CONCURRENCY_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(15);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let pool = host.pool.clone();
    let mut workers = Vec::new();
    for w in 0..4u64 {
        let pool = pool.clone();
        let other = other.clone();
        workers.push(std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
            let mut ran = 0u64;
            let mut codes = std::collections::BTreeMap::new();
            while Instant::now() < deadline {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = seed % 1000;
                let name = format!("w{w}n{}", seed % 5);
                let args: Vec<String> = match seed % 11 {
                    0 => vec!["create".into(), name, "--size".into(), "16M".into(), "--fs".into(), "raw".into()],
                    1 => vec!["delete".into(), name, "--recursive".into()],
                    2 => vec!["snapshot".into(), format!("a@w{w}s{i}")],
                    3 => vec!["snapshot".into(), format!("r@w{w}s{i}")],
                    4 => vec!["prune".into(), "a".into(), "--keep-last".into(), "3".into()],
                    5 => vec!["list".into(), "--snapshots".into(), "--json".into()],
                    6 => vec!["clone".into(), "r@base".into(), name],
                    7 => vec!["guard".into(), "--once".into()],
                    8 => vec!["rename".into(), name, format!("w{w}m{i}")],
                    9 => vec!["pool".into(), "status".into(), "--json".into()],
                    _ => {
                        // A receive into the other pool, racing with the rest.
                        let target = format!("w{w}r{i}");
                        let (_, r) = pipe(&pool, &["r@base"], &other, &[&target, "--json"]);
                        let code = r.code;
                        *codes.entry(code).or_insert(0) += 1;
                        ran += 1;
                        continue;
                    }
                };
                let r = subvol(&pool, &args.iter().map(String::as_str).collect::<Vec<_>>());
                // Refusals (exists, not found, busy...) are fine; crashes,
                // corruption and I/O errors are not.
                assert!(
                    [0, 2, 3, 4, 5].contains(&r.code),
                    "`subvol {}` exited {}: {}",
                    args.join(" "),
                    r.code,
                    r.stderr
                );
                *codes.entry(r.code).or_insert(0) += 1;
                ran += 1;
            }
            (ran, codes)
        }));
    }
    let mut total = 0;
    for w in workers {
        let (ran, codes) = w.join().unwrap();
        total += ran;
        eprintln!("worker: {ran} commands, exit codes {codes:?}");
    }
    eprintln!("concurrency: {total} commands in {secs}s from 4 processes");
    assert!(total > 20, "too few commands ran");
    for p in [&pool, &other] {
        let r = subvol(p, &["pool", "check", "--json"]);
        assert_eq!(r.code, 0, "pool check after the mix: {}", r.stdout);
    }
    assert!(Path::new(&mp.join("data")).exists());
    assert_eq!(loops_under(&pool).len(), mounts_under(&pool).len(), "loop devices leaked");
}
