//! `subvol health`: what an admin pages on, as a Nagios-style check. Each
//! finding has a severity; the worst one is the exit status (0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN, as monitoring plugins use them).
//!
//! Findings: a subvolume whose newest snapshot is older than its policy's
//! finest interval allows (warning past 1.5 intervals, critical past 3, or
//! the ages given); a sync target that far behind, or whose last attempt
//! failed (from the records `sync` keeps, without contacting it); writers frozen by the guard; free space under the
//! margin; an overcommitted pool no guard watches; a resumable receive left
//! unfinished; and every problem `pool check` reports (without repairing).

use crate::error::Result;
use crate::pool::Pool;
use crate::snapops::POLICY_PROPERTY;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use subvol_core::retention::KeepPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HealthStatus {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl HealthStatus {
    /// The monitoring-plugin exit status.
    pub fn exit_code(self) -> u8 {
        match self {
            HealthStatus::Ok => 0,
            HealthStatus::Warning => 1,
            HealthStatus::Critical => 2,
            HealthStatus::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "OK",
            HealthStatus::Warning => "WARNING",
            HealthStatus::Critical => "CRITICAL",
            HealthStatus::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthFinding {
    pub severity: HealthStatus,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    pub pool: std::path::PathBuf,
    pub status: HealthStatus,
    pub findings: Vec<HealthFinding>,
}

/// Age limits for the newest snapshot. Without them, subvolumes with a
/// `snapshot.policy` are held to 1.5x (warning) and 3x (critical) its
/// finest interval; with them, every subvolume is held to them.
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthOptions {
    pub warn_age: Option<Duration>,
    pub crit_age: Option<Duration>,
}

/// The severity of a newest snapshot `age` old, against explicit limits or
/// the policy's interval. Pure, so the thresholds are unit-tested.
pub fn snapshot_age_severity(age: Duration, opts: &HealthOptions, interval: Option<Duration>) -> HealthStatus {
    let (warn, crit) = match (opts.warn_age, opts.crit_age, interval) {
        (None, None, None) => return HealthStatus::Ok,
        (w, c, i) => {
            let i = i.unwrap_or(Duration::MAX);
            (w.unwrap_or(i.saturating_mul(3) / 2), c.unwrap_or(i.saturating_mul(3)))
        }
    };
    if age > crit {
        HealthStatus::Critical
    } else if age > warn {
        HealthStatus::Warning
    } else {
        HealthStatus::Ok
    }
}

impl Pool {
    pub fn health(&self, opts: &HealthOptions) -> Result<HealthReport> {
        let mut findings = Vec::new();
        let add = |findings: &mut Vec<HealthFinding>, severity, message: String| {
            findings.push(HealthFinding { severity, message })
        };
        let now = Utc::now();
        let subs = self.list()?;
        let snaps = self.list_snapshots(None)?;
        for s in &subs {
            let interval = s
                .properties
                .get(POLICY_PROPERTY)
                .and_then(|p| p.parse::<KeepPolicy>().ok())
                .and_then(|p| p.finest_interval_secs())
                .map(Duration::from_secs);
            let newest = snaps
                .iter()
                .filter(|n| n.name.split_once('@').is_some_and(|(o, _)| o == s.name))
                .filter_map(|n| DateTime::parse_from_rfc3339(&n.created).ok())
                .max();
            // No snapshot yet: as late as the subvolume is old.
            let since = newest
                .map(|t| t.with_timezone(&Utc))
                .or_else(|| DateTime::parse_from_rfc3339(&s.created).ok().map(|t| t.with_timezone(&Utc)));
            let Some(since) = since else { continue };
            let age = (now - since).to_std().unwrap_or_default();
            let sev = snapshot_age_severity(age, opts, interval);
            if sev != HealthStatus::Ok {
                let what = if newest.is_some() { "its newest snapshot is" } else { "it has no snapshot, and it is" };
                add(&mut findings, sev, format!("{}: {what} {} old", s.name, human_age(age)));
            }
        }
        for t in self.sync_targets(None)? {
            let interval = subs
                .iter()
                .find(|s| s.name == t.target.name)
                .and_then(|s| s.properties.get(POLICY_PROPERTY))
                .and_then(|p| p.parse::<KeepPolicy>().ok())
                .and_then(|p| p.finest_interval_secs())
                .map(Duration::from_secs);
            let (name, dest) = (&t.target.name, &t.target.destination);
            if let Some(f) = &t.target.last_error {
                let msg = format!("{name}: the last sync to {dest} failed at {}: {}", f.at.format("%F %T"), f.message);
                add(&mut findings, HealthStatus::Warning, msg);
            }
            if let Some(lag) = t.lag_seconds.map(Duration::from_secs) {
                let sev = snapshot_age_severity(lag, opts, interval);
                if sev != HealthStatus::Ok {
                    add(&mut findings, sev, format!("{name}: {dest} is {} behind", human_age(lag)));
                }
            }
        }
        let status = self.status_of(&subs, &snaps, &self.space()?)?;
        for f in &status.frozen {
            let msg = format!("{}: writers are frozen by the guard since {} ({})", f.name, f.at, f.reason);
            add(&mut findings, HealthStatus::Critical, msg);
        }
        if status.free_bytes < status.margin_bytes {
            let msg = format!(
                "host free space {} is below the safety margin {}",
                subvol_core::format_size(status.free_bytes),
                subvol_core::format_size(status.margin_bytes)
            );
            add(&mut findings, HealthStatus::Critical, msg);
        }
        if let Some(w) = self.unguarded_overcommit_warning(&subs, status.free_bytes) {
            add(&mut findings, HealthStatus::Warning, w);
        }
        for e in std::fs::read_dir(self.layout.receive_dir()).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "state") {
                let name = p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let msg = format!("{name}: a resumable receive was left unfinished (`subvol receive {name} --token`)");
                add(&mut findings, HealthStatus::Warning, msg);
            }
        }
        // Everything `pool check` finds (read only); the guard's freezes
        // and unfinished receives are reported above, as what they mean.
        for f in self.check(false)?.findings {
            if f.what.contains("is frozen by the guard since") || f.what.contains("resumable partial receive") {
                continue;
            }
            let sev = if f.severity == crate::check::Severity::Error {
                HealthStatus::Critical
            } else {
                HealthStatus::Warning
            };
            add(&mut findings, sev, f.what);
        }
        let status = findings.iter().map(|f| f.severity).max().unwrap_or(HealthStatus::Ok);
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        Ok(HealthReport { pool: self.root().to_path_buf(), status, findings })
    }
}

fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=5_999 => format!("{}m", s / 60),
        6_000..=172_799 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_age_thresholds() {
        let h = Duration::from_secs(3_600);
        let none = HealthOptions::default();
        assert_eq!(snapshot_age_severity(h * 100, &none, None), HealthStatus::Ok, "no policy, no limits: no finding");
        assert_eq!(snapshot_age_severity(h, &none, Some(h)), HealthStatus::Ok);
        assert_eq!(snapshot_age_severity(h * 2, &none, Some(h)), HealthStatus::Warning);
        assert_eq!(snapshot_age_severity(h * 4, &none, Some(h)), HealthStatus::Critical);
        let given = HealthOptions { warn_age: Some(h * 25), crit_age: Some(h * 49) };
        assert_eq!(snapshot_age_severity(h * 24, &given, None), HealthStatus::Ok);
        assert_eq!(snapshot_age_severity(h * 26, &given, None), HealthStatus::Warning);
        assert_eq!(snapshot_age_severity(h * 50, &given, Some(h)), HealthStatus::Critical);
        let warn_only = HealthOptions { warn_age: Some(h), crit_age: None };
        assert_eq!(snapshot_age_severity(h * 1000, &warn_only, None), HealthStatus::Warning);
        assert_eq!(HealthStatus::Unknown.exit_code(), 3);
    }
}
