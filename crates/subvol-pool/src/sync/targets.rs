//! The pool's record of where `sync` sent each subvolume: one checksummed
//! file per subvolume and destination in `.subvol/sync/` (docs/FORMAT.md,
//! "Sync targets"), replaced atomically after every sync from this pool.

use super::protocol::SyncReport;
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::Outcome;
use crate::pool::Pool;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use subvol_core::sync_target::{name_of_file, SyncBase, SyncFailure, SyncSuccess, SyncTarget};
use subvol_core::{Endpoint, ObjectName};

/// A recorded target and how far behind it is.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    #[serde(flatten)]
    pub target: SyncTarget,
    /// Age of the newest snapshot both sides hold, in seconds, as of when
    /// the records were read; `None` before the first success.
    pub lag_seconds: Option<u64>,
}

impl Pool {
    /// `.subvol/sync/`, made durable on first use (its entry in `.subvol`
    /// too, or a crash could lose every record with it).
    fn ensure_sync_dir(&self) -> Result<()> {
        let dir = self.layout.sync_dir();
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => subvol_os::fsync::fsync_dir(&self.layout.meta_dir())
                .map_err(|e| Error::os("cannot sync the pool's metadata directory", e)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io(format!("cannot create {}", dir.display()), e)),
        }
    }

    fn target_path(&self, t: &SyncTarget) -> PathBuf {
        self.layout.sync_dir().join(t.file_name())
    }

    /// Every recorded sync target of subvolume `name` (or of every
    /// subvolume), sorted by name and destination. Contacts nothing.
    pub fn sync_targets(&self, name: Option<&str>) -> Result<Vec<TargetStatus>> {
        let name = name.map(|n| ObjectName::parse_subvolume(n).map(|o| o.subvolume)).transpose()?;
        let dir = self.layout.sync_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
        };
        let now = Utc::now();
        let mut out = Vec::new();
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(of) = name_of_file(&file) else { continue };
            if name.as_deref().is_some_and(|n| n != of) {
                continue;
            }
            let path = e.path();
            let bytes =
                std::fs::read(&path).map_err(|err| Error::io(format!("cannot read {}", path.display()), err))?;
            let target = SyncTarget::decode(&bytes, Some(&file)).map_err(|err| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "sync record {} is damaged ({err}); remove it, and sync to that destination again",
                        path.display()
                    ),
                )
            })?;
            out.push(TargetStatus { lag_seconds: target.lag_seconds(now), target });
        }
        out.sort_by(|a, b| (&a.target.name, &a.target.destination).cmp(&(&b.target.name, &b.target.destination)));
        Ok(out)
    }

    /// The destinations `sync NAME` without one repeats.
    pub fn recorded_destinations(&self, name: &str) -> Result<Vec<Endpoint>> {
        let targets = self.sync_targets(Some(name))?;
        if targets.is_empty() {
            return Err(Error::invalid(format!(
                "{name} has no recorded sync target; give one: `subvol sync {name} [user@]host:[/POOLDIR:]NAME`"
            )));
        }
        targets
            .iter()
            .map(|t| Endpoint::parse(&t.target.destination).map_err(|e| Error::invalid(e.to_string())))
            .collect()
    }

    /// Removes the record of `destination` (as `sync --list` shows it).
    pub fn forget_sync_target(&self, name: &str, destination: &str) -> Result<Outcome> {
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        let dest = Endpoint::parse(destination).map_err(|e| Error::invalid(e.to_string()))?;
        let path = self.target_path(&SyncTarget::new(&name, &dest));
        let _lock = self.lock()?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Outcome::AlreadyDone),
            Err(e) => return Err(Error::io(format!("cannot remove {}", path.display()), e)),
        }
        subvol_os::fsync::fsync_dir(&self.layout.sync_dir()).map_err(|e| Error::os("cannot sync the record", e))?;
        Ok(Outcome::Done)
    }

    /// The recorded bases of `name`'s other destinations: a sync to
    /// `destination` must leave their holds on this side alone.
    pub(crate) fn bases_of_other_targets(&self, name: &str, destination: &Endpoint) -> Vec<uuid::Uuid> {
        let this = destination.to_string();
        // Unreadable records protect nothing; the sync itself still runs.
        let all = self.sync_targets(Some(name)).unwrap_or_default();
        all.into_iter().filter(|t| t.target.destination != this).filter_map(|t| t.target.base.map(|b| b.guid)).collect()
    }

    /// Records how a sync of `name` to `destination` ended: a success
    /// replaces base, time and size and clears the error; a failure sets
    /// the error and keeps the last success. A destination that never
    /// took a sync is no target yet (a mistyped host must not become one).
    pub(crate) fn record_sync(
        &self,
        name: &str,
        destination: &Endpoint,
        result: &Result<SyncReport>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let fresh = SyncTarget::new(name, destination);
        let path = self.target_path(&fresh);
        let _lock = self.lock()?;
        // A damaged record is replaced: what it held is lost either way.
        let recorded = std::fs::read(&path).ok().and_then(|b| SyncTarget::decode(&b, Some(&fresh.file_name())).ok());
        if result.is_err() && recorded.is_none() {
            return Ok(());
        }
        let mut t = recorded.unwrap_or(fresh);
        match result {
            Ok(r) => {
                t.base = Some(SyncBase {
                    guid: r.sent.guid,
                    source: r.sent.name.clone(),
                    destination: r.snapshot.clone(),
                    created: r.sent.created,
                });
                t.last_success = Some(SyncSuccess {
                    at,
                    stream_bytes: r.stream_bytes,
                    seconds: r.seconds,
                    incremental: r.base.is_some(),
                });
                t.last_error = None;
            }
            Err(e) => t.last_error = Some(SyncFailure::new(at, e.kind.exit_code(), &e.message)),
        }
        self.ensure_sync_dir()?;
        subvol_os::fsync::write_atomic(&path, &t.encode()).map_err(|e| Error::os("cannot write the sync record", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SnapshotEntry;
    use std::os::unix::fs::PermissionsExt;

    /// A pool in a temp dir on disk, or `None` (said, and failed under
    /// CI=true) where the host cannot hold one.
    fn pool(test: &str) -> Option<(tempfile::TempDir, Pool)> {
        let dir = tempfile::Builder::new().prefix("subvol-targets.").tempdir_in("/var/tmp").ok()?;
        match Pool::init(&dir.path().join("p"), &crate::InitOptions::default()) {
            Ok(p) => Some((dir, p)),
            Err(e) => {
                crate::test_support::cannot_run(test, &format!("no pool in /var/tmp: {e}"));
                None
            }
        }
    }

    fn report(snap: &str, guid: u128, bytes: u64) -> Result<SyncReport> {
        Ok(SyncReport {
            name: "b:db".into(),
            snapshot: format!("db@{snap}"),
            base: None,
            stream_bytes: bytes,
            seconds: 0.5,
            sent: SnapshotEntry {
                name: format!("db@{snap}"),
                guid: uuid::Uuid::from_u128(guid),
                created: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                holds: Vec::new(),
            },
            warnings: Vec::new(),
        })
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_failure_keeps_the_last_success_and_a_success_clears_the_error() {
        let Some((_dir, p)) = pool("a_failure_keeps_the_last_success_and_a_success_clears_the_error") else { return };
        let b = Endpoint::parse("root@b:/srv/pool:db").unwrap();
        p.record_sync("db", &b, &report("s1", 1, 4096), at(1_700_000_100)).unwrap();
        let failed = Err(Error::new(ErrorKind::Busy, "root@b:/srv/pool:db: db changed since db@s1\u{1b}[2J"));
        p.record_sync("db", &b, &failed, at(1_700_000_200)).unwrap();
        let t = p.sync_targets(Some("db")).unwrap().remove(0);
        assert_eq!(t.target.destination, "root@b:/srv/pool:db");
        let ok = t.target.last_success.as_ref().unwrap();
        assert_eq!((ok.at, ok.stream_bytes, ok.incremental), (at(1_700_000_100), 4096, false));
        let err = t.target.last_error.as_ref().unwrap();
        assert_eq!((err.at, err.exit_code), (at(1_700_000_200), 5));
        assert!(err.message.ends_with("\\u{1b}[2J"), "stored unescaped: {}", err.message);
        assert_eq!(t.target.base.as_ref().unwrap().source, "db@s1");
        assert!(t.lag_seconds.unwrap() > 0);

        p.record_sync("db", &b, &report("s2", 2, 8192), at(1_700_000_300)).unwrap();
        let t = p.sync_targets(Some("db")).unwrap().remove(0);
        assert!(t.target.last_error.is_none());
        assert_eq!(t.target.base.unwrap().guid, uuid::Uuid::from_u128(2));

        let file = p.layout.sync_dir().join(SyncTarget::new("db", &b).file_name());
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.starts_with(b"subvol-sync-target/1 blake3="));
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(p.layout.sync_dir()).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_destination_that_never_took_a_sync_is_not_recorded() {
        let Some((_dir, p)) = pool("a_destination_that_never_took_a_sync_is_not_recorded") else { return };
        let typo = Endpoint::parse("bakup:db").unwrap();
        p.record_sync("db", &typo, &Err(Error::new(ErrorKind::Io, "bakup:db: ssh failed")), at(1)).unwrap();
        assert!(p.sync_targets(None).unwrap().is_empty());
    }

    #[test]
    fn targets_are_listed_per_name_and_forgotten_once() {
        let Some((_dir, p)) = pool("targets_are_listed_per_name_and_forgotten_once") else { return };
        let e = p.recorded_destinations("db").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("`subvol sync db [user@]host:[/POOLDIR:]NAME`"), "{}", e.message);
        let (b, c) = (Endpoint::parse("b:db").unwrap(), Endpoint::parse("/srv/c:copy").unwrap());
        p.record_sync("db", &c, &report("s1", 1, 1), at(1)).unwrap();
        p.record_sync("db", &b, &report("s2", 2, 1), at(2)).unwrap();
        p.record_sync("web", &b, &report("w1", 3, 1), at(3)).unwrap();
        let listed: Vec<(String, String)> =
            p.sync_targets(None).unwrap().into_iter().map(|t| (t.target.name, t.target.destination)).collect();
        assert_eq!(
            listed,
            [("db".into(), "/srv/c:copy".into()), ("db".into(), "b:db".into()), ("web".into(), "b:db".into())]
        );
        assert_eq!(p.recorded_destinations("db").unwrap(), [c.clone(), b.clone()]);
        assert_eq!(p.bases_of_other_targets("db", &b), [uuid::Uuid::from_u128(1)]);
        assert_eq!(p.forget_sync_target("db", "/srv/c:copy").unwrap(), Outcome::Done);
        assert_eq!(p.forget_sync_target("db", "/srv/c:copy").unwrap(), Outcome::AlreadyDone);
        assert_eq!(p.recorded_destinations("db").unwrap(), [b]);
        // Temporaries of a writer that died, and strangers, are not records.
        std::fs::write(p.layout.sync_dir().join(".db.x.target.tmp.7"), b"junk").unwrap();
        std::fs::write(p.layout.sync_dir().join("notes.txt"), b"junk").unwrap();
        assert_eq!(p.sync_targets(None).unwrap().len(), 2);
    }

    #[test]
    fn a_damaged_record_is_named_and_replaced_by_the_next_sync() {
        let Some((_dir, p)) = pool("a_damaged_record_is_named_and_replaced_by_the_next_sync") else { return };
        let b = Endpoint::parse("b:db").unwrap();
        p.record_sync("db", &b, &report("s1", 1, 1), at(1)).unwrap();
        let file = p.layout.sync_dir().join(SyncTarget::new("db", &b).file_name());
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        let e = p.sync_targets(Some("db")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Corrupt);
        assert!(e.message.contains(&file.display().to_string()) && e.message.contains("remove it"), "{}", e.message);
        p.record_sync("db", &b, &report("s2", 2, 1), at(2)).unwrap();
        assert_eq!(p.sync_targets(Some("db")).unwrap().len(), 1);
    }
}
