//! `subvol sync`: reads the arguments, calls `subvol_pool::sync`, prints.
//! The protocol, the records and every rule are the library's.

use crate::output::{emit, format_age, json, Table};
use crate::progress::Bar;
use std::path::PathBuf;
use std::time::Duration;
use subvol_core::{format_size, parse_size, Endpoint};
use subvol_pool::sync::{self, SyncContext, SyncOptions, SyncReport, TargetStatus};
use subvol_pool::{Error, Pool, Result, DEFAULT_ZSTD_LEVEL};

pub struct SyncArgs {
    pub src: Option<String>,
    pub dst: Option<String>,
    pub list: bool,
    pub forget: bool,
    pub bwlimit: Option<String>,
    pub compress: bool,
    pub ssh_opt: Vec<String>,
    pub remote_bin: String,
    pub json: bool,
}

fn endpoint(s: &str) -> Result<Endpoint> {
    Endpoint::parse(s).map_err(|e| Error::invalid(e.to_string()))
}

pub fn run(pool: &std::path::Path, lock_timeout: Duration, open: &dyn Fn() -> Result<Pool>, a: SyncArgs) -> Result<()> {
    if a.list {
        return list(&open()?, a.src.as_deref(), a.json);
    }
    let src = a.src.as_deref().unwrap_or_default();
    if a.forget {
        let dst = a.dst.as_deref().unwrap_or_default();
        let outcome = open()?.forget_sync_target(src, dst)?;
        emit(&if outcome.changed() {
            format!("forgot {dst} as a sync target of {src}\n")
        } else {
            format!("{src} has no recorded sync target {dst}; nothing forgotten\n")
        });
        return Ok(());
    }
    let ctx = SyncContext {
        default_pool: PathBuf::from(pool),
        lock_timeout,
        ssh_options: a.ssh_opt,
        remote_bin: a.remote_bin,
        options: SyncOptions {
            zstd_level: a.compress.then_some(DEFAULT_ZSTD_LEVEL),
            bwlimit: a.bwlimit.as_deref().map(parse_size).transpose()?,
            ..SyncOptions::default()
        },
    };
    let src = endpoint(src)?;
    let bar = Bar::new("syncing");
    let progress = |d, t| bar.update(d, t);
    let Some(dst) = &a.dst else {
        return repeat(&src, &ctx, &progress, &bar, a.json);
    };
    let r = sync::sync(&src, &endpoint(dst)?, &ctx, &progress);
    bar.finish();
    let r = r?;
    warn(&r);
    if a.json {
        json(&r);
    } else {
        emit(&format!("{}\n", synced(&r)));
    }
    Ok(())
}

/// `sync SRC`: one line per recorded destination.
fn repeat(src: &Endpoint, ctx: &SyncContext, progress: &dyn Fn(u64, u64), bar: &Bar, as_json: bool) -> Result<()> {
    let destinations = sync::recorded_destinations(src, ctx)?;
    let mut done: Vec<SyncReport> = Vec::new();
    let result = sync::sync_each(src, &destinations, ctx, progress, &mut |dst, r| {
        bar.finish();
        match r {
            Ok(r) => {
                warn(r);
                if !as_json {
                    emit(&format!("{dst}: {}\n", synced(r)));
                }
                done.push(r.clone());
            }
            // With one destination its error is the one error line.
            Err(e) if destinations.len() > 1 => {
                let why = e.message.strip_prefix(&format!("{dst}: ")).unwrap_or(&e.message);
                eprintln!("subvol: sync to {dst} failed: {why}");
            }
            Err(_) => {}
        }
    });
    if as_json {
        json(&done);
    }
    result
}

fn synced(r: &SyncReport) -> String {
    let kind = if r.base.is_some() { "incremental" } else { "full" };
    format!("synced {} to {} ({kind}, {} in {:.1}s)", r.sent.name, r.snapshot, format_size(r.stream_bytes), r.seconds)
}

fn warn(r: &SyncReport) {
    for w in &r.warnings {
        eprintln!("subvol: warning: {w}");
    }
}

/// `sync --list [NAME]`.
fn list(pool: &Pool, name: Option<&str>, as_json: bool) -> Result<()> {
    let targets = pool.sync_targets(name)?;
    if as_json {
        json(&targets);
        return Ok(());
    }
    if targets.is_empty() {
        emit(&match name {
            Some(n) => {
                format!("{n} has no recorded sync target; `subvol sync {n} [user@]host:[/POOLDIR:]NAME` records one\n")
            }
            None => "no sync target is recorded; `subvol sync NAME [user@]host:[/POOLDIR:]NAME` records one\n".into(),
        });
        return Ok(());
    }
    emit(&render_targets(&targets));
    Ok(())
}

fn render_targets(targets: &[TargetStatus]) -> String {
    let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut t = Table::new(&["NAME", "DESTINATION", "SYNCED", "SIZE", "LAG", "ERROR"]);
    for s in targets {
        let ok = s.target.last_success.as_ref();
        t.row(vec![
            s.target.name.clone(),
            s.target.destination.clone(),
            ok.map_or_else(|| "never".into(), |o| time(&o.at)),
            ok.map_or_else(|| "-".into(), |o| format_size(o.stream_bytes)),
            s.lag_seconds.map_or_else(|| "-".into(), format_age),
            s.target.last_error.as_ref().map_or_else(|| "-".into(), |e| format!("{}: {}", time(&e.at), e.message)),
        ]);
    }
    t.render()
}
