//! The ENOSPC guard: watches the host's free space and stops writers
//! (FIFREEZE) before a filesystem inside an image could see an I/O error
//! from a full host. Writers block, nothing fails; when space is back the
//! filesystems thaw and the writers carry on.
//!
//! It freezes first and reclaims while writers are stopped: FITRIM on
//! mounted subvolumes (freed blocks inside become holes in the images) and,
//! when allowed, pruning of snapshots their retention policy would drop
//! anyway (never held ones); if that made room it thaws at once.
//! Guaranteed subvolumes are never frozen: their space is reserved.
//! docs/SPACE.md derives the margin it keeps.

use crate::error::{Error, Result};
use crate::event::Event;
use crate::guard_hold::{Candidate, GuardOps, Hold, Numbers};
use crate::pool::Pool;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subvol_core::space::{
    guard_decision, guard_horizon_secs, guard_low_watermark, guard_thaw_gap, Frozen, GuardAction, GuardInputs,
    GuardPolicy,
};
use subvol_core::{format_size, HostFs};
use subvol_os::OsResult;

#[derive(Debug, Clone)]
pub struct GuardOptions {
    pub interval: Duration,
    /// Defaults to the pool's safety margin.
    pub low_watermark_bytes: Option<u64>,
    /// Defaults to the low watermark plus 5% of the capacity (at least 128M).
    pub high_watermark_bytes: Option<u64>,
    /// Freeze early if the low watermark would be crossed within this.
    pub horizon: Duration,
    /// Run one check and return, leaving what it froze frozen: its records
    /// tell the next check (and every command) what to thaw.
    pub once: bool,
    /// May prune snapshots by their policies to reclaim space.
    pub prune: bool,
}

impl Default for GuardOptions {
    fn default() -> Self {
        GuardOptions {
            interval: Duration::from_millis(100),
            low_watermark_bytes: None,
            high_watermark_bytes: None,
            horizon: Duration::from_millis(500),
            once: false,
            prune: false,
        }
    }
}

/// Why a subvolume is frozen by the guard (`.subvol/frozen/guard.NAME`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardFreeze {
    pub name: String,
    pub mount_point: PathBuf,
    pub reason: String,
    pub at: String,
    /// Hard: at or below the low watermark, held until the high one. Soft:
    /// a pause ahead of a fast writer.
    pub hard: bool,
}

impl Pool {
    fn guard_marker(&self, name: &str) -> PathBuf {
        self.layout.guard_frozen_marker(name)
    }

    /// Subvolumes the guard has frozen, with why.
    pub fn guard_frozen(&self) -> Vec<GuardFreeze> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.layout.frozen_dir()) else { return out };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("guard.") {
                continue;
            }
            if let Ok(b) = std::fs::read(e.path()) {
                if let Ok(f) = subvol_core::meta::decode::<GuardFreeze>("guard", 1, &b) {
                    out.push(f);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// FITRIM on mounted subvolumes (all, or `names`): returns
    /// `(name, trimmed bytes)` and the host bytes freed meanwhile.
    pub fn trim(&self, names: &[String]) -> Result<(Vec<(String, u64)>, i64)> {
        crate::error::require_root("trim")?;
        let before =
            subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("cannot read the host's free space", e))?;
        let mut out = Vec::new();
        for s in self.list()? {
            if !names.is_empty() && !names.contains(&s.name) {
                continue;
            }
            match &s.mount_point {
                Some(mp) => {
                    crate::frozen_state::refuse_failed_fs(&s.name, &s.attachments, "trim")?;
                    let n = subvol_os::trim::fitrim(mp).map_err(|e| Error::os(format!("cannot trim {}", s.name), e))?;
                    out.push((s.name.clone(), n));
                }
                None if !names.is_empty() => {
                    return Err(Error::invalid(format!("{} is not mounted; trim works on mounted subvolumes", s.name)));
                }
                None => {}
            }
        }
        for n in names {
            if !out.iter().any(|(x, _)| x == n) {
                self.existing_image(n)?;
            }
        }
        // XFS keeps the unused rest of each CoW extent reserved for minutes
        // after writes to shared blocks (up to 25x the bytes written for
        // random 4 KiB writes to a 1 MiB-hinted image): give it back now.
        // Other hosts refuse the ioctl, which is fine.
        if before.fs == HostFs::Xfs {
            let _ = subvol_os::prealloc::free_preallocations(self.root());
        }
        // Punched blocks are released asynchronously on some hosts.
        let _ = subvol_os::fsync::fsync_dir(&self.layout.subvolumes_dir());
        let after = subvol_os::statfs::statfs(self.root())
            .map_err(|e| Error::os("cannot read the host's free space", e))?
            .free_bytes;
        Ok((out, after as i64 - before.free_bytes as i64))
    }

    /// Runs the guard until `stop()` says so (or once). `log` receives one
    /// line per event, with the numbers.
    ///
    /// Each sample: statfs of the host, the fill rate since the last sample,
    /// and a decision (`guard_decision`) against a low watermark derived
    /// from what can still land after a decision (`guard_low_watermark`:
    /// every thin subvolume's dirty cap, its flush, the fastest fill seen
    /// times the sample gap and the freeze time, all measured here). When it
    /// must act, it freezes every mounted thin subvolume at once, then
    /// reclaims (trim, prune) while they are frozen, then thaws them if that
    /// made room. When `stop()` says so, it thaws everything it holds
    /// first, since nothing watches the host after it (a panic
    /// thaws too); `--once` keeps its recorded freezes. `guard_hold` keeps
    /// that order.
    pub fn guard(&self, opts: &GuardOptions, stop: &dyn Fn() -> bool, log: &mut dyn FnMut(Event)) -> Result<()> {
        crate::error::require_root("guard")?;
        let mut watch = self.take_guard_watch()?;
        // Its reaction time is part of the margin: run ahead of busy writers.
        if let Err(e) = subvol_os::priority::set_nice(GUARD_NICE) {
            log(Event::new("warning", format!("guard: could not raise its priority ({e}); a busy CPU delays it")));
        }
        let st =
            subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("cannot read the host's free space", e))?;
        let mut outstanding = self.space()?.outstanding_bytes;
        let mut outstanding_at = Instant::now();
        let mut last: Option<(Instant, u64)> = None;
        let mut rate = 0.0f64;
        let mut reaction = Reaction::new(opts.interval);
        let mut warned_unfreezable = false;
        let mut soft_since: Option<Instant> = None;
        // From here on every way out (a stop, a panic) thaws what
        // the guard holds, except a `--once` check's recorded freezes.
        let mut hold = Hold::new(RealGuardOps { pool: self, prune: opts.prune, last_reclaim: None }, opts.once);
        let mut subs: Vec<crate::SubvolumeInfo> = Vec::new();
        let mut subs_at: Option<Instant> = None;
        let msg = format!(
            "guard: watching {} (capacity {}, free {}, guaranteed outstanding {})",
            self.root().display(),
            format_size(st.total_bytes),
            format_size(st.free_bytes),
            format_size(outstanding)
        );
        log(Event::new("start", msg)
            .text("pool", self.root().display().to_string())
            .int("capacity_bytes", st.total_bytes)
            .int("free_bytes", st.free_bytes)
            .int("outstanding_bytes", outstanding));
        loop {
            watch.polled();
            let now = Instant::now();
            // Listing and the space sweep cost more than a statfs: refresh them
            // every second / five seconds, and skip the sweep entirely when no
            // subvolume is guaranteed (then nothing is outstanding). A failed
            // refresh (an image deleted mid-listing) keeps the last one.
            if subs_at.is_none_or(|t: Instant| now.duration_since(t) > Duration::from_secs(1)) {
                let fresh = match self.list() {
                    Ok(l) => {
                        subs = l;
                        true
                    }
                    Err(e) => {
                        log(Event::new("error", format!("guard: listing failed ({e}); using the previous listing")));
                        false
                    }
                };
                subs_at = Some(now);
                // Only from a fresh listing: a stale one may name a loop
                // device that now belongs to someone else.
                let restored = if fresh { self.restore_dirty_caps(&subs) } else { Vec::new() };
                for (name, r) in restored {
                    match r {
                        Ok(()) => log(Event::new(
                            "cap_restored",
                            format!(
                                "guard: WARNING {name} was mounted without its dirty page cache cap; restored it ({})",
                                format_size(crate::space::DIRTY_LIMIT_BYTES)
                            ),
                        )
                        .on(&name)
                        .int("cap_bytes", crate::space::DIRTY_LIMIT_BYTES)),
                        Err(e) => log(Event::new(
                            "warning",
                            format!("guard: WARNING {name} has no dirty page cache cap: {e}"),
                        )
                        .on(&name)),
                    }
                }
            }
            if now.duration_since(outstanding_at) > Duration::from_secs(5) {
                if subs.iter().any(|s| s.guarantee) {
                    match self.space() {
                        Ok(sp) => outstanding = sp.outstanding_bytes,
                        Err(e) => log(Event::new(
                            "error",
                            format!("guard: space sweep failed ({e}); keeping the last figure"),
                        )),
                    }
                } else {
                    outstanding = 0;
                }
                outstanding_at = now;
            }
            let st = match subvol_os::statfs::statfs(self.root()) {
                Ok(st) => st,
                Err(e) => {
                    log(Event::new("error", format!("guard: statfs of the host failed ({e}); retrying")));
                    std::thread::sleep(opts.interval);
                    continue;
                }
            };
            // The rate the decision uses: the last gap's own rate, or the
            // smoothed one if higher (a writer slowing for an instant does not
            // make the guard complacent).
            let mut decision_rate = rate;
            if let Some((t, free)) = last {
                let dt = now.duration_since(t).as_secs_f64();
                reaction.sampled(dt);
                if dt > 0.0 {
                    let r = (free as f64 - st.free_bytes as f64) / dt;
                    rate = if rate == 0.0 { r } else { 0.5 * rate + 0.5 * r };
                    decision_rate = r.max(rate);
                    reaction.filled_at(r);
                }
            }
            last = Some((now, st.free_bytes));
            let mounted_thin = subs.iter().filter(|s| s.mount_point.is_some() && !s.guarantee).count() as u64;
            let inputs = GuardInputs {
                capacity_bytes: st.total_bytes,
                thin_mounted: mounted_thin,
                dirty_cap_bytes: crate::space::DIRTY_LIMIT_BYTES,
                extent_hint_bytes: u64::from(crate::subvolume::DEFAULT_EXTENT_HINT_BYTES),
                peak_fill_rate: reaction.peak_rate(),
                sample_gap_secs: reaction.gap_secs(),
                freeze_secs: reaction.freeze_secs(),
                ..GuardInputs::default()
            };
            let low = opts.low_watermark_bytes.unwrap_or_else(|| guard_low_watermark(&inputs));
            let high = opts
                .high_watermark_bytes
                .unwrap_or(low.saturating_add(guard_thaw_gap(st.total_bytes)))
                .max(low.saturating_add(1));
            let policy = GuardPolicy {
                low_watermark_bytes: low,
                high_watermark_bytes: high,
                horizon_secs: guard_horizon_secs(
                    opts.horizon.as_secs_f64(),
                    reaction.gap_secs(),
                    reaction.freeze_secs(),
                ),
            };
            let frozen = hold.frozen();
            let state = if frozen.is_empty() {
                Frozen::No
            } else if frozen.iter().any(|f| f.hard) {
                Frozen::Hard
            } else {
                Frozen::Soft { for_secs: soft_since.map(|t: Instant| t.elapsed().as_secs_f64()).unwrap_or(f64::MAX) }
            };
            let headroom = st.free_bytes.saturating_sub(outstanding);
            let numbers = Numbers {
                free_bytes: st.free_bytes,
                outstanding_bytes: outstanding,
                low_bytes: low,
                high_bytes: high,
                fill_rate: decision_rate,
                note: None,
            };
            match guard_decision(&policy, state, headroom, decision_rate) {
                GuardAction::Nothing => {}
                action @ (GuardAction::FreezeHard | GuardAction::FreezeSoft) => {
                    let hard = action == GuardAction::FreezeHard;
                    let candidates = self.freeze_candidates(&subs, log, &mut warned_unfreezable);
                    let r = hold.react(&candidates, &numbers, hard, outstanding, high, log);
                    if !r.froze.is_empty() {
                        reaction.froze_in(r.freeze_secs);
                    }
                    soft_since = (!r.thawed).then_some(r.frozen_at);
                    // The rate measured across a freeze means nothing.
                    last = None;
                    rate = 0.0;
                }
                GuardAction::Harden => {
                    let msg = format!(
                        "guard: the low watermark was crossed while paused, holding until the high watermark: {numbers}"
                    );
                    log(numbers.on(Event::new("harden", msg)));
                    hold.harden();
                }
                GuardAction::Thaw => {
                    hold.thaw_all(&numbers, log);
                    soft_since = None;
                    // The rate measured while frozen means nothing now.
                    last = None;
                    rate = 0.0;
                }
            }
            if opts.once || stop() {
                hold.stop(log);
                return Ok(());
            }
            std::thread::sleep(opts.interval);
        }
    }

    /// Trims mounted subvolumes and, if allowed, prunes by policy. Returns
    /// whether anything was reclaimed.
    fn reclaim(&self, prune: bool, last: &mut Option<Instant>, log: &mut dyn FnMut(Event)) -> bool {
        // Reclaiming is worth it once per burst, not on every pause.
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return false;
        }
        *last = Some(Instant::now());
        let mut any = false;
        if let Ok((trimmed, freed)) = self.trim(&[]) {
            let total: u64 = trimmed.iter().map(|t| t.1).sum();
            let msg = format!(
                "guard: trim released {} inside, host free {} by {}",
                format_size(total),
                if freed >= 0 { "grew" } else { "fell" },
                format_size(freed.unsigned_abs())
            );
            log(Event::new("trim", msg).int("trimmed_bytes", total).float("host_freed_bytes", freed as f64));
            any |= freed > 0;
        }
        if prune {
            if let Ok(Some(_lock)) = crate::lock::PoolLock::try_acquire(&self.layout.lock_file()) {
                if let Ok(subs) = self.list() {
                    for s in subs.into_iter().filter(|s| s.properties.contains_key(crate::snapops::POLICY_PROPERTY)) {
                        if let Ok(r) = self.prune_locked(&s.name, None, None, false, chrono::Utc::now()) {
                            if !r.deleted.is_empty() {
                                let msg = format!("guard: pruned {} by its policy: {}", s.name, r.deleted.join(", "));
                                log(Event::new("prune", msg).on(&s.name).int("deleted", r.deleted.len() as u64));
                                any = true;
                            }
                        }
                    }
                }
            }
        }
        any
    }

    /// The mounted thin subvolumes the guard may freeze. Guaranteed ones
    /// own their space; one attached without a mount, or whose filesystem
    /// failed, cannot be frozen: said once (`warned`).
    fn freeze_candidates(
        &self,
        subs: &[crate::SubvolumeInfo],
        log: &mut dyn FnMut(Event),
        warned: &mut bool,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        for s in subs.iter().filter(|s| !s.guarantee) {
            let Some(mp) = &s.mount_point else {
                if !s.attachments.is_empty() && !*warned {
                    let msg = format!(
                        "guard: WARNING {} is attached to {} without a mount and cannot be frozen; its writer may hit ENOSPC",
                        s.name,
                        s.attachments[0].loop_device.display()
                    );
                    log(Event::new("warning", msg).on(&s.name));
                }
                continue;
            };
            if let Some(advice) = s.failure_advice() {
                // It takes no writes to stop, and would refuse the freeze.
                if !*warned {
                    log(Event::new("warning", format!("guard: WARNING not freezing {}: {advice}", s.name)).on(&s.name));
                }
                continue;
            }
            out.push(Candidate { name: s.name.clone(), mount_point: mp.clone() });
        }
        *warned = true;
        out
    }
}

/// The guard's steps on the real system (`guard_hold` orders them).
struct RealGuardOps<'a> {
    pool: &'a Pool,
    prune: bool,
    last_reclaim: Option<Instant>,
}

impl GuardOps for RealGuardOps<'_> {
    fn records(&self) -> Vec<GuardFreeze> {
        self.pool.guard_frozen()
    }

    fn write_record(&self, record: &GuardFreeze) -> std::io::Result<()> {
        std::fs::create_dir_all(self.pool.layout.frozen_dir())?;
        std::fs::write(self.pool.guard_marker(&record.name), subvol_core::meta::encode("guard", 1, record))
    }

    fn remove_record(&self, name: &str) {
        let _ = std::fs::remove_file(self.pool.guard_marker(name));
    }

    fn freeze(&self, mount_point: &Path) -> OsResult<()> {
        subvol_os::freeze::fifreeze(mount_point)
    }

    fn thaw(&self, mount_point: &Path) -> OsResult<()> {
        subvol_os::freeze::fithaw(mount_point)
    }

    fn reclaim(&mut self, log: &mut dyn FnMut(Event)) -> bool {
        self.pool.reclaim(self.prune, &mut self.last_reclaim, log)
    }

    fn free_bytes(&self) -> Option<u64> {
        subvol_os::statfs::statfs(self.pool.root()).ok().map(|st| st.free_bytes)
    }
}

/// The guard's nice value: ahead of ordinary writers on a busy CPU.
const GUARD_NICE: i32 = -10;

/// What the guard measures about its own reaction, for the margin: the gap
/// between samples (interval plus lateness on a busy CPU), how long freezing
/// took, and the fastest fill rate seen. Peaks decay (half-life one minute)
/// so one spike does not hold the watermark up for ever.
struct Reaction {
    interval: f64,
    gap: f64,
    freeze: f64,
    peak_rate: f64,
    decayed_at: Instant,
}

impl Reaction {
    fn new(interval: Duration) -> Self {
        Reaction {
            interval: interval.as_secs_f64(),
            gap: interval.as_secs_f64(),
            // Until measured: what freezing one busy XFS took in
            // docs/BENCHMARKS.md, rounded up.
            freeze: 0.2,
            peak_rate: 0.0,
            decayed_at: Instant::now(),
        }
    }

    fn decay(&mut self) {
        let secs = self.decayed_at.elapsed().as_secs_f64();
        if secs >= 1.0 {
            let f = 0.5f64.powf(secs / 60.0);
            self.peak_rate *= f;
            self.gap = self.interval.max(self.gap * f);
            self.decayed_at = Instant::now();
        }
    }

    fn sampled(&mut self, gap_secs: f64) {
        self.decay();
        self.gap = self.gap.max(gap_secs);
    }

    fn filled_at(&mut self, rate: f64) {
        self.peak_rate = self.peak_rate.max(rate);
    }

    fn froze_in(&mut self, secs: f64) {
        // Remember the slowest recent freeze, drifting down slowly.
        self.freeze = secs.max(0.8 * self.freeze + 0.2 * secs);
    }

    fn gap_secs(&self) -> f64 {
        self.gap
    }
    fn freeze_secs(&self) -> f64 {
        self.freeze
    }
    fn peak_rate(&self) -> f64 {
        self.peak_rate
    }
}
