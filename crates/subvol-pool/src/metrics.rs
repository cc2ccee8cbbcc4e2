//! `subvol metrics`: the pool as Prometheus metrics, for the node_exporter
//! textfile collector. One listing and one space sweep, as `list
//! --snapshots` does, so it costs what a listing costs.
//!
//! Cardinality is bounded by the number of subvolumes, not snapshots:
//! pool families have one sample per pool; subvolume families one per
//! subvolume; snapshots appear only as per-subvolume aggregates (count,
//! exclusive bytes, newest and oldest age); sync targets one sample each
//! per family. A pool of S subvolumes and T sync targets yields at most
//! 15 + 14 x S + 4 x T samples, whatever the number of snapshots.

use crate::error::Result;
use crate::pool::Pool;
use crate::{State, SubvolumeInfo};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use subvol_core::exposition::Family;

/// Per-subvolume aggregates of its snapshots.
#[derive(Default)]
struct SnapshotAggregate {
    count: u64,
    exclusive_bytes: u64,
    newest: Option<DateTime<Utc>>,
    oldest: Option<DateTime<Utc>>,
}

impl Pool {
    /// The metric families of this pool, measured now.
    pub fn metrics(&self) -> Result<Vec<Family>> {
        let now = Utc::now();
        let mut subs = self.list()?;
        let mut snaps = self.list_snapshots(None)?;
        let space = self.space()?;
        space.apply(&mut subs);
        space.apply(&mut snaps);
        let st = self.status_of(&subs, &snaps, &space)?;
        let pool = self.root().display().to_string();
        let p = [("pool", pool.as_str())];

        let mut out = Vec::new();
        let mut one = |name, help, v: f64| {
            let mut f = Family::gauge(name, help);
            f.push(&p, v);
            out.push(f);
        };
        one("subvol_pool_capacity_bytes", "Size of the host filesystem holding the pool.", st.capacity_bytes as f64);
        one("subvol_pool_free_bytes", "Free bytes on the host filesystem (available to subvol).", st.free_bytes as f64);
        one("subvol_pool_allocated_bytes", "Host bytes held by all images of the pool.", st.allocated_bytes as f64);
        one("subvol_pool_virtual_bytes", "Sum of the subvolumes' virtual sizes.", st.virtual_bytes as f64);
        one("subvol_pool_overcommit_ratio", "Virtual bytes over host capacity.", st.overcommit_ratio);
        one(
            "subvol_pool_outstanding_guarantees_bytes",
            "What guaranteed subvolumes may still need.",
            st.outstanding_guarantees_bytes as f64,
        );
        one(
            "subvol_pool_margin_bytes",
            "Free space kept back by admission control and the guard.",
            st.margin_bytes as f64,
        );
        one("subvol_pool_available_bytes", "What can still be guaranteed.", st.available_bytes as f64);
        one(
            "subvol_pool_guard_up",
            "1 if a subvol guard watches the pool.",
            f64::from(u8::from(st.guard_pid.is_some())),
        );
        if let Some(t) = self.guard_last_poll() {
            let age = std::time::SystemTime::now().duration_since(t).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            one("subvol_pool_guard_last_poll_age_seconds", "Seconds since the guard last sampled the host.", age);
        }
        one("subvol_pool_frozen_subvolumes", "Subvolumes the guard holds frozen.", st.frozen.len() as f64);
        one("subvol_pool_subvolumes", "Subvolumes in the pool.", st.subvolumes as f64);
        one("subvol_pool_snapshots", "Snapshots in the pool.", st.snapshots as f64);
        one("subvol_pool_orphans", "Images deleted while attached, still holding host space.", st.orphans.len() as f64);
        one(
            "subvol_pool_orphans_held_bytes",
            "Host bytes those images hold (where the host can tell).",
            st.orphans.iter().filter_map(|o| o.held_bytes).sum::<u64>() as f64,
        );
        one("subvol_pool_warnings", "Warnings `subvol pool status` shows.", st.warnings.len() as f64);

        let mut per: BTreeMap<&str, SnapshotAggregate> = BTreeMap::new();
        for s in &snaps {
            let owner = s.name.split_once('@').map_or(s.name.as_str(), |(n, _)| n);
            let a = per.entry(owner).or_default();
            a.count += 1;
            a.exclusive_bytes += s.exclusive_bytes.unwrap_or(0);
            if let Ok(t) = DateTime::parse_from_rfc3339(&s.created).map(|t| t.with_timezone(&Utc)) {
                a.newest = a.newest.max(Some(t));
                a.oldest = Some(a.oldest.map_or(t, |o| o.min(t)));
            }
        }
        let frozen: BTreeMap<&str, bool> = st.frozen.iter().map(|f| (f.name.as_str(), f.hard)).collect();
        out.extend(subvolume_families(&pool, &subs, &per, &frozen, now));
        out.extend(sync_families(&pool, &self.sync_targets(None)?));
        Ok(out)
    }
}

/// Per recorded sync target (subvolume x destination, as `sync` keeps
/// them): when the last success was, what it sent, how far behind the
/// destination is, and whether the last attempt failed.
fn sync_families(pool: &str, targets: &[crate::sync::TargetStatus]) -> Vec<Family> {
    let mut success = Family::gauge(
        "subvol_sync_last_success_timestamp_seconds",
        "When the last successful sync finished (Unix time).",
    );
    let mut bytes = Family::gauge("subvol_sync_last_stream_bytes", "Stream bytes the last successful sync sent.");
    let mut lag = Family::gauge("subvol_sync_lag_seconds", "Age of the newest snapshot both sides hold.");
    let mut failing = Family::gauge("subvol_sync_failing", "1 if the last attempt failed after the last success.");
    for t in targets {
        let l = [("pool", pool), ("subvolume", t.target.name.as_str()), ("target", t.target.destination.as_str())];
        if let Some(s) = &t.target.last_success {
            success.push(&l, s.at.timestamp_millis() as f64 / 1000.0);
            bytes.push(&l, s.stream_bytes as f64);
        }
        if let Some(secs) = t.lag_seconds {
            lag.push(&l, secs as f64);
        }
        failing.push(&l, f64::from(u8::from(t.target.last_error.is_some())));
    }
    vec![success, bytes, lag, failing]
}

fn subvolume_families(
    pool: &str,
    subs: &[SubvolumeInfo],
    per: &BTreeMap<&str, SnapshotAggregate>,
    frozen: &BTreeMap<&str, bool>,
    now: DateTime<Utc>,
) -> Vec<Family> {
    let defs: [(&'static str, &'static str); 14] = [
        ("subvol_subvolume_size_bytes", "Virtual size of the subvolume."),
        ("subvol_subvolume_allocated_bytes", "Host bytes its image holds."),
        ("subvol_subvolume_exclusive_bytes", "Host bytes only its image holds."),
        ("subvol_subvolume_written_bytes", "Bytes changed since its newest snapshot."),
        ("subvol_subvolume_mounted", "1 if mounted."),
        ("subvol_subvolume_guaranteed", "1 if its whole size is guaranteed."),
        ("subvol_subvolume_frozen", "1 if the guard holds it frozen."),
        ("subvol_subvolume_frozen_hard", "1 if frozen at the low watermark (held until the high one)."),
        ("subvol_subvolume_filesystem_failed", "1 if the kernel shut its filesystem down or made it read-only."),
        ("subvol_subvolume_snapshots", "Snapshots of the subvolume."),
        (
            "subvol_subvolume_snapshots_exclusive_bytes",
            "Host bytes only its snapshots hold (what deleting them all frees, at least).",
        ),
        ("subvol_subvolume_newest_snapshot_age_seconds", "Age of its newest snapshot."),
        ("subvol_subvolume_oldest_snapshot_age_seconds", "Age of its oldest snapshot."),
        ("subvol_subvolume_info", "Always 1; labels: filesystem."),
    ];
    let mut fams: Vec<Family> = defs.iter().map(|(n, h)| Family::gauge(n, h)).collect();
    let bit = |b: bool| f64::from(u8::from(b));
    let age = |t: Option<DateTime<Utc>>| t.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
    for s in subs {
        let l = [("pool", pool), ("subvolume", s.name.as_str())];
        let agg = per.get(s.name.as_str());
        let values: [Option<f64>; 13] = [
            Some(s.virtual_size_bytes as f64),
            Some(s.allocated_bytes as f64),
            s.exclusive_bytes.map(|b| b as f64),
            s.written_bytes.map(|b| b as f64),
            Some(bit(s.mount_point.is_some())),
            Some(bit(s.guarantee)),
            Some(bit(frozen.contains_key(s.name.as_str()))),
            Some(bit(frozen.get(s.name.as_str()).copied().unwrap_or(false))),
            Some(bit(matches!(s.state, State::Shutdown | State::Error))),
            Some(agg.map_or(0, |a| a.count) as f64),
            Some(agg.map_or(0, |a| a.exclusive_bytes) as f64),
            age(agg.and_then(|a| a.newest)),
            age(agg.and_then(|a| a.oldest)),
        ];
        for (f, v) in fams.iter_mut().zip(values) {
            if let Some(v) = v {
                f.push(&l, v);
            }
        }
        let fs = s.fs.to_string();
        fams[13].push(&[("pool", pool), ("subvolume", s.name.as_str()), ("filesystem", fs.as_str())], 1.0);
    }
    fams
}
