//! Snapshot retention: which snapshots a set of keep-rules keeps, and why.
//!
//! The rules follow the usual meaning (restic, borg, sanoid): `last N` keeps
//! the N newest snapshots; `hourly N` keeps the newest snapshot of each of the
//! N calendar hours counted back from now (the current hour included), and
//! likewise for days, ISO weeks, months and years. Held snapshots are always
//! kept. The clock is a parameter, so the rules are tested without waiting.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Keep-rules; zero means the rule is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeepPolicy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl KeepPolicy {
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }

    /// Seconds between the snapshots the finest calendar rule keeps (an hour
    /// for `hourly`, ... a mean Gregorian year for `yearly`): how often
    /// autosnap must run for the policy to hold, so monitoring can tell a
    /// snapshot that is late. `None` for a policy of `last` rules only.
    pub fn finest_interval_secs(&self) -> Option<u64> {
        [
            (self.hourly, 3_600),
            (self.daily, 86_400),
            (self.weekly, 604_800),
            (self.monthly, 2_629_746),
            (self.yearly, 31_556_952),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, secs)| secs)
    }

    /// Rules given for one prune: all of them 0 would keep nothing (every
    /// unheld snapshot goes), which nobody asks for on purpose.
    pub fn given(self) -> Result<KeepPolicy, NothingKept> {
        if self.is_empty() {
            return Err(NothingKept);
        }
        Ok(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("every --keep-* rule is 0, which would delete all snapshots; keep at least one")]
pub struct NothingKept;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad retention policy {0:?}: use comma-separated RULE=N with RULE in last, hourly, daily, weekly, monthly, yearly (e.g. last=5,daily=7)")]
pub struct PolicyError(pub String);

impl FromStr for KeepPolicy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let mut p = KeepPolicy::default();
        let err = || PolicyError(s.chars().take(80).collect());
        for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(err)?;
            let n: u32 = v.trim().parse().map_err(|_| err())?;
            let slot = match k.trim() {
                "last" => &mut p.last,
                "hourly" => &mut p.hourly,
                "daily" => &mut p.daily,
                "weekly" => &mut p.weekly,
                "monthly" => &mut p.monthly,
                "yearly" => &mut p.yearly,
                _ => return Err(err()),
            };
            *slot = n;
        }
        if p.is_empty() {
            return Err(err());
        }
        Ok(p)
    }
}

impl fmt::Display for KeepPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
        f.write_str(&parts.join(","))
    }
}

/// A snapshot as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub created: DateTime<Utc>,
    /// Hold tags; a held snapshot is never pruned.
    pub holds: Vec<String>,
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub name: String,
    pub keep: bool,
    /// Why it is kept (empty when it goes).
    pub reasons: Vec<String>,
}

/// Calendar bucket of `t` at each granularity, as a number that counts up by
/// one per bucket, so "N buckets back from now" is a subtraction.
fn bucket(t: DateTime<Utc>, rule: usize) -> i64 {
    let days = t.date_naive().num_days_from_ce() as i64;
    match rule {
        0 => days * 24 + t.hour() as i64,
        1 => days,
        // ISO weeks start on Monday; day 1 of the CE count was a Monday.
        2 => (days - 1).div_euclid(7),
        3 => t.year() as i64 * 12 + t.month0() as i64,
        _ => t.year() as i64,
    }
}

const RULES: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];

/// Decides for every candidate. Output is in the input order.
pub fn plan(snapshots: &[Candidate], policy: &KeepPolicy, now: DateTime<Utc>) -> Vec<Verdict> {
    // Newest first; ties broken by name for determinism.
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| {
        snapshots[b].created.cmp(&snapshots[a].created).then(snapshots[b].name.cmp(&snapshots[a].name))
    });
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snapshots.len()];
    for (rank, &i) in order.iter().enumerate() {
        let s = &snapshots[i];
        if !s.holds.is_empty() {
            reasons[i].push(format!("held ({})", s.holds.join(", ")));
        }
        if (rank as u64) < policy.last as u64 {
            reasons[i].push(format!("last {}", policy.last));
        }
        if s.created > now {
            reasons[i].push("newer than now".into());
        }
    }
    let counts = [policy.hourly, policy.daily, policy.weekly, policy.monthly, policy.yearly];
    for (rule, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let now_bucket = bucket(now, rule);
        let mut seen: BTreeMap<i64, ()> = BTreeMap::new();
        for &i in &order {
            let s = &snapshots[i];
            if s.created > now {
                continue;
            }
            let b = bucket(s.created, rule);
            let age = now_bucket - b;
            if age < 0 || age >= n as i64 || seen.contains_key(&b) {
                continue;
            }
            seen.insert(b, ());
            reasons[i].push(format!("{} {}", RULES[rule], n));
        }
    }
    snapshots
        .iter()
        .zip(reasons)
        .map(|(s, r)| Verdict { name: s.name.clone(), keep: !r.is_empty(), reasons: r })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finest_interval_is_the_finest_calendar_rule() {
        let p = |t: &str| t.parse::<KeepPolicy>().unwrap().finest_interval_secs();
        assert_eq!(p("hourly=24,daily=7"), Some(3_600));
        assert_eq!(p("daily=7,monthly=6"), Some(86_400));
        assert_eq!(p("yearly=2"), Some(31_556_952));
        assert_eq!(p("last=5"), None);
    }
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn given_rules_that_keep_nothing_are_refused() {
        assert_eq!(KeepPolicy::default().given(), Err(NothingKept));
        let p = KeepPolicy { daily: 7, ..KeepPolicy::default() };
        assert_eq!(p.given(), Ok(p));
        assert!(NothingKept.to_string().contains("keep at least one"));
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn c(name: &str, t: DateTime<Utc>) -> Candidate {
        Candidate { name: name.into(), created: t, holds: vec![] }
    }

    fn kept(v: &[Verdict]) -> Vec<&str> {
        v.iter().filter(|v| v.keep).map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn parse_and_print() {
        let p: KeepPolicy = "last=5, daily=7,weekly=4".parse().unwrap();
        assert_eq!(p, KeepPolicy { last: 5, daily: 7, weekly: 4, ..Default::default() });
        assert_eq!(p.to_string(), "last=5,daily=7,weekly=4");
        for bad in ["", "last", "last=x", "minutely=3", "last=-1", "last=0"] {
            assert!(bad.parse::<KeepPolicy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn last_n() {
        let now = at(2026, 1, 10, 12, 0);
        let s: Vec<_> = (0..5).map(|i| c(&format!("s{i}"), at(2026, 1, 10, i, 0))).collect();
        let v = plan(&s, &KeepPolicy { last: 2, ..Default::default() }, now);
        assert_eq!(kept(&v), ["s3", "s4"]);
        assert_eq!(v[4].reasons, ["last 2"]);
    }

    #[test]
    fn hourly_keeps_newest_per_hour_counted_from_now() {
        let now = at(2026, 1, 10, 12, 30);
        let s = vec![
            c("a", at(2026, 1, 10, 12, 5)),
            c("b", at(2026, 1, 10, 12, 20)),
            c("c", at(2026, 1, 10, 11, 59)),
            c("d", at(2026, 1, 10, 11, 1)),
            c("e", at(2026, 1, 10, 9, 0)),
        ];
        // 3 hours back from now: hours 12, 11, 10. Hour 10 has nothing.
        let v = plan(&s, &KeepPolicy { hourly: 3, ..Default::default() }, now);
        assert_eq!(kept(&v), ["b", "c"]);
    }

    #[test]
    fn daily_weekly_monthly_yearly() {
        let now = at(2026, 3, 4, 10, 0); // a Wednesday
        let s = vec![
            c("today", at(2026, 3, 4, 1, 0)),
            c("yesterday", at(2026, 3, 3, 23, 0)),
            c("monday", at(2026, 3, 2, 8, 0)),
            c("last-sunday", at(2026, 3, 1, 8, 0)),
            c("february", at(2026, 2, 10, 8, 0)),
            c("last-year", at(2025, 6, 1, 0, 0)),
            c("old", at(2020, 6, 1, 0, 0)),
        ];
        let v = plan(&s, &KeepPolicy { daily: 2, ..Default::default() }, now);
        assert_eq!(kept(&v), ["today", "yesterday"]);
        let v = plan(&s, &KeepPolicy { weekly: 2, ..Default::default() }, now);
        assert_eq!(kept(&v), ["today", "last-sunday"]);
        let v = plan(&s, &KeepPolicy { monthly: 2, ..Default::default() }, now);
        assert_eq!(kept(&v), ["today", "february"]);
        let v = plan(&s, &KeepPolicy { yearly: 3, ..Default::default() }, now);
        assert_eq!(kept(&v), ["today", "last-year"]);
    }

    #[test]
    fn holds_always_win() {
        let now = at(2026, 1, 1, 0, 0);
        let mut old = c("old", at(2000, 1, 1, 0, 0));
        old.holds = vec!["replication".into()];
        let v = plan(&[old, c("new", now)], &KeepPolicy { last: 1, ..Default::default() }, now);
        assert_eq!(kept(&v), ["old", "new"]);
        assert_eq!(v[0].reasons, ["held (replication)"]);
    }

    proptest! {
        #[test]
        fn rules_only_ever_keep_more(
            times in proptest::collection::vec(0i64..(400 * 24 * 3600), 0..40),
            p in (0u32..4, 0u32..4, 0u32..4, 0u32..4, 0u32..3, 0u32..3),
        ) {
            let now = at(2026, 6, 15, 12, 0);
            let s: Vec<_> = times.iter().enumerate()
                .map(|(i, t)| c(&format!("s{i}"), now - chrono::Duration::seconds(*t))).collect();
            let policy = KeepPolicy { last: p.0, hourly: p.1, daily: p.2, weekly: p.3, monthly: p.4, yearly: p.5 };
            let v = plan(&s, &policy, now);
            let n_kept = v.iter().filter(|v| v.keep).count();
            // The newest `last` are always kept; no rule keeps more than its count.
            prop_assert!(n_kept >= (policy.last as usize).min(s.len()));
            let bound = policy.last + policy.hourly + policy.daily + policy.weekly + policy.monthly + policy.yearly;
            prop_assert!(n_kept <= bound as usize);
            // Adding a rule never drops a snapshot that was kept.
            let more = KeepPolicy { daily: policy.daily + 1, ..policy };
            let v2 = plan(&s, &more, now);
            for (a, b) in v.iter().zip(&v2) {
                prop_assert!(!a.keep || b.keep);
            }
        }
    }
}
