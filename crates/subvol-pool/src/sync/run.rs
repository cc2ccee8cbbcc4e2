//! `sync SRC DST` as a front end asks for it: the endpoints a user wrote
//! become sides (a pool opened in this process, or a host over ssh), and a
//! sync from a pool of this host is recorded in that pool.

use super::local::LocalSide;
use super::protocol::{replicate, SyncOptions, SyncReport};
use super::remote::RemoteSide;
use super::side::SyncSide;
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::snapshot::Progress;
use std::path::PathBuf;
use std::time::Duration;
use subvol_core::Endpoint;

/// Everything a sync needs besides its two endpoints.
#[derive(Debug, Clone)]
pub struct SyncContext {
    /// The pool of a local endpoint that names none (`--pool`).
    pub default_pool: PathBuf,
    /// How long a pool opened for the sync waits for its lock.
    pub lock_timeout: Duration,
    /// Extra ssh options (`-p 2222`), for every remote side.
    pub ssh_options: Vec<String>,
    /// The `subvol` command on remote hosts.
    pub remote_bin: String,
    pub options: SyncOptions,
}

impl SyncContext {
    fn open(&self, ep: &Endpoint) -> Result<Pool> {
        let mut pool = Pool::open(ep.pool.as_deref().unwrap_or(&self.default_pool))
            .map_err(|e| Error::new(e.kind, format!("{ep}: {}", e.message)))?;
        pool.set_lock_wait(self.lock_timeout, Box::new(|| {}));
        Ok(pool)
    }

    fn remote(&self, ep: &Endpoint) -> RemoteSide<super::remote::Ssh> {
        RemoteSide::ssh(ep, &self.ssh_options, &self.remote_bin)
    }
}

/// `sync SRC DST`: replicates, and records the outcome when SRC is in a
/// pool of this host.
pub fn sync(src: &Endpoint, dst: &Endpoint, ctx: &SyncContext, progress: Progress<'_>) -> Result<SyncReport> {
    ctx.options.check()?;
    let src_pool = (!src.is_remote()).then(|| ctx.open(src)).transpose()?;
    let dst_pool = (!dst.is_remote()).then(|| ctx.open(dst)).transpose()?;
    let dst_side: Box<dyn SyncSide + '_> = match &dst_pool {
        Some(p) => Box::new(LocalSide::new(p, &dst.name, &dst.to_string())),
        None => Box::new(ctx.remote(dst)),
    };
    let Some(src_pool) = src_pool else {
        return replicate(&ctx.remote(src), &*dst_side, &ctx.options, progress);
    };
    // A local destination is recorded with its pool, so that the record
    // means the same place whatever `--pool` a later `sync NAME` runs with.
    let recorded = match &dst_pool {
        Some(p) => Endpoint { pool: Some(p.root().to_path_buf()), ..dst.clone() },
        None => dst.clone(),
    };
    src_pool.sync_to(&src.name, &src.to_string(), &recorded, &*dst_side, &ctx.options, progress)
}

/// The destinations `sync SRC` (without DST) repeats: those recorded in
/// SRC's pool, which must be on this host.
pub fn recorded_destinations(src: &Endpoint, ctx: &SyncContext) -> Result<Vec<Endpoint>> {
    if src.is_remote() {
        return Err(Error::invalid(format!(
            "{src} is on another host, and only a pool on this host remembers where it synced; give a destination"
        )));
    }
    ctx.open(src)?.recorded_destinations(&src.name)
}

/// Syncs SRC to each destination in turn, going on after a failure (one
/// unreachable host must not starve the others); `each` hears how each
/// ended. Fails with the first failure's kind when any failed.
pub fn sync_each(
    src: &Endpoint,
    destinations: &[Endpoint],
    ctx: &SyncContext,
    progress: Progress<'_>,
    each: &mut dyn FnMut(&Endpoint, &Result<SyncReport>),
) -> Result<()> {
    let mut failed: Vec<Error> = Vec::new();
    for d in destinations {
        let r = sync(src, d, ctx, progress);
        each(d, &r);
        failed.extend(r.err());
    }
    match &failed[..] {
        [] => Ok(()),
        [only] if destinations.len() == 1 => Err(only.clone()),
        [first, ..] => Err(Error::new(
            first.kind,
            format!(
                "{} of {} sync targets of {} failed; `subvol sync --list {}` shows each one's last error",
                failed.len(),
                destinations.len(),
                src.name,
                src.name
            ),
        )),
    }
}

impl SyncOptions {
    /// Options that no side could carry out are refused before anything
    /// changes, and before anything is recorded.
    pub fn check(&self) -> Result<()> {
        self.zstd_level.map(crate::option_rules::check_zstd_level).transpose()?;
        if self.bwlimit == Some(0) {
            return Err(Error::invalid("--bwlimit must be more than 0 bytes per second"));
        }
        Ok(())
    }
}

impl Pool {
    /// Syncs subvolume `name` of this pool (called `label` in messages) to
    /// `dst`, and records how it ended under `destination`. Snapshots that
    /// other recorded destinations have as their base keep their hold here.
    pub fn sync_to(
        &self,
        name: &str,
        label: &str,
        destination: &Endpoint,
        dst: &dyn SyncSide,
        opts: &SyncOptions,
        progress: Progress<'_>,
    ) -> Result<SyncReport> {
        opts.check()?;
        // A name that is not here gets no record (a typo is no target).
        self.info(name).map_err(|e| Error::new(e.kind, format!("{label}: {}", e.message)))?;
        let src = LocalSide::new(self, name, label);
        let opts = SyncOptions { keep_on_source: self.bases_of_other_targets(name, destination), ..opts.clone() };
        let mut result = replicate(&src, dst, &opts, progress);
        let recorded = self.record_sync(name, destination, &result, chrono::Utc::now());
        // A failed sync's own error is the one to report.
        if let (Err(e), Ok(r)) = (recorded, &mut result) {
            r.warnings
                .push(format!("this sync is not recorded ({}); `subvol sync --list` shows the one before", e.message));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn ctx() -> SyncContext {
        SyncContext {
            default_pool: "/nonexistent/pool".into(),
            lock_timeout: Duration::from_secs(1),
            ssh_options: Vec::new(),
            remote_bin: "subvol".into(),
            options: SyncOptions::default(),
        }
    }

    #[test]
    fn only_a_local_source_has_recorded_destinations() {
        let e = recorded_destinations(&Endpoint::parse("backup:db").unwrap(), &ctx()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("give a destination"), "{}", e.message);
        let e = recorded_destinations(&Endpoint::parse("db").unwrap(), &ctx()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotInitialised);
        assert!(e.message.starts_with("db: no pool at /nonexistent/pool"), "{}", e.message);
    }

    #[test]
    fn one_failed_target_fails_the_run_but_not_the_others() {
        let dests: Vec<Endpoint> =
            ["/nonexistent/a:db", "/nonexistent/b:db"].map(|d| Endpoint::parse(d).unwrap()).to_vec();
        let mut seen = Vec::new();
        let e = sync_each(&Endpoint::parse("/nonexistent/src:db").unwrap(), &dests, &ctx(), &|_, _| {}, &mut |d, r| {
            seen.push((d.to_string(), r.is_ok()))
        })
        .unwrap_err();
        assert_eq!(seen, [("/nonexistent/a:db".to_string(), false), ("/nonexistent/b:db".to_string(), false)]);
        assert_eq!(e.kind, ErrorKind::NotInitialised);
        assert!(e.message.starts_with("2 of 2 sync targets of db failed"), "{}", e.message);
        let e = sync_each(
            &Endpoint::parse("/nonexistent/src:db").unwrap(),
            &dests[..1],
            &ctx(),
            &|_, _| {},
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(e.message.starts_with("/nonexistent/src:db: no pool at"), "one target: its own error, {}", e.message);
    }
}
