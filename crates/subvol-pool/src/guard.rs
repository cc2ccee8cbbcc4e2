//! The ENOSPC guard: watches the host's free space and stops writers
//! (FIFREEZE) before a filesystem inside an image could see an I/O error
//! from a full host. Writers block, nothing fails; when space is back the
//! filesystems thaw and the writers carry on.
//!
//! Before freezing it tries reclaim: FITRIM on mounted subvolumes (freed
//! blocks inside become holes in the images) and, when allowed, pruning of
//! snapshots their retention policy would drop anyway (never held ones).
//! Guaranteed subvolumes are never frozen: their space is reserved.

use crate::error::{Error, Result};
use crate::kernel::KernelView;
use crate::pool::Pool;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use subvol_core::space::{guard_decision, Frozen, GuardAction, GuardPolicy};
use subvol_core::{format_size, HostFs};

#[derive(Debug, Clone)]
pub struct GuardOptions {
    pub interval: Duration,
    /// Defaults to the pool's safety margin.
    pub low_watermark_bytes: Option<u64>,
    /// Defaults to the low watermark plus 5% of the capacity (at least 128M).
    pub high_watermark_bytes: Option<u64>,
    /// Freeze early if the low watermark would be crossed within this.
    pub horizon: Duration,
    /// Run one check and return.
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
        self.layout.frozen_dir().join(format!("guard.{name}"))
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
        let before = subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("statfs", e))?;
        let mut out = Vec::new();
        for s in self.list()? {
            if !names.is_empty() && !names.contains(&s.name) {
                continue;
            }
            match &s.mount_point {
                Some(mp) => {
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
        let after = subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("statfs", e))?.free_bytes;
        Ok((out, after as i64 - before.free_bytes as i64))
    }

    /// Runs the guard until `stop()` says so (or once). `log` receives one
    /// line per event, with the numbers.
    pub fn guard(&self, opts: &GuardOptions, stop: &dyn Fn() -> bool, log: &mut dyn FnMut(String)) -> Result<()> {
        crate::error::require_root("guard")?;
        let st = subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("statfs", e))?;
        let mut outstanding = self.space()?.outstanding_bytes;
        let mut outstanding_at = Instant::now();
        let mut last: Option<(Instant, u64)> = None;
        let mut rate = 0.0f64;
        let mut warned_unfreezable = false;
        let mut soft_since: Option<Instant> = None;
        let mut last_reclaim: Option<Instant> = None;
        let mut subs: Vec<crate::SubvolumeInfo> = Vec::new();
        let mut subs_at: Option<Instant> = None;
        log(format!(
            "guard: watching {} (capacity {}, free {}, guaranteed outstanding {})",
            self.root().display(),
            format_size(st.total_bytes),
            format_size(st.free_bytes),
            format_size(outstanding)
        ));
        loop {
            let now = Instant::now();
            // Listing and the space sweep cost more than a statfs: refresh them
            // every second / five seconds, and skip the sweep entirely when no
            // subvolume is guaranteed (then nothing is outstanding).
            if subs_at.is_none_or(|t: Instant| now.duration_since(t) > Duration::from_secs(1)) {
                subs = self.list()?;
                subs_at = Some(now);
            }
            if now.duration_since(outstanding_at) > Duration::from_secs(5) {
                outstanding = if subs.iter().any(|s| s.guarantee) { self.space()?.outstanding_bytes } else { 0 };
                outstanding_at = now;
            }
            let st = subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("statfs", e))?;
            if let Some((t, free)) = last {
                let dt = now.duration_since(t).as_secs_f64();
                if dt > 0.0 {
                    let r = (free as f64 - st.free_bytes as f64) / dt;
                    rate = if rate == 0.0 { r } else { 0.5 * rate + 0.5 * r };
                }
            }
            last = Some((now, st.free_bytes));
            let mounted_thin = subs.iter().filter(|s| s.mount_point.is_some() && !s.guarantee).count() as u64;
            let low = opts.low_watermark_bytes.unwrap_or_else(|| {
                subvol_core::space::margin(st.total_bytes, mounted_thin, crate::space::DIRTY_LIMIT_BYTES)
            });
            let high = opts.high_watermark_bytes.unwrap_or(low + (st.total_bytes / 20).max(128 << 20)).max(low + 1);
            let policy = GuardPolicy {
                low_watermark_bytes: low,
                high_watermark_bytes: high,
                horizon_secs: opts.horizon.as_secs_f64(),
            };
            let frozen = self.guard_frozen();
            let state = if frozen.is_empty() {
                Frozen::No
            } else if frozen.iter().any(|f| f.hard) {
                Frozen::Hard
            } else {
                Frozen::Soft { for_secs: soft_since.map(|t: Instant| t.elapsed().as_secs_f64()).unwrap_or(f64::MAX) }
            };
            let headroom = st.free_bytes.saturating_sub(outstanding);
            let numbers = || {
                format!(
                    "host free {} - guaranteed {} = {} (low {}, high {}), filling at {}/s",
                    format_size(st.free_bytes),
                    format_size(outstanding),
                    format_size(headroom),
                    format_size(low),
                    format_size(high),
                    format_size(rate.max(0.0) as u64)
                )
            };
            match guard_decision(&policy, state, headroom, rate) {
                GuardAction::Nothing => {}
                action @ (GuardAction::FreezeHard | GuardAction::FreezeSoft) => {
                    let hard = action == GuardAction::FreezeHard;
                    let reason = numbers();
                    log(format!(
                        "guard: {}: {reason}; reclaiming",
                        if hard { "at the low watermark" } else { "approaching the low watermark" }
                    ));
                    self.reclaim(opts.prune, &mut last_reclaim, log);
                    let st2 = subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("statfs", e))?;
                    let headroom2 = st2.free_bytes.saturating_sub(outstanding);
                    if guard_decision(&policy, Frozen::No, headroom2, rate) == GuardAction::Nothing {
                        log(format!(
                            "guard: reclaim made enough room (headroom {}), not freezing",
                            format_size(headroom2)
                        ));
                    } else {
                        self.freeze_thin(&subs, &reason, hard, log, &mut warned_unfreezable)?;
                        soft_since = Some(Instant::now());
                    }
                }
                GuardAction::Harden => {
                    log(format!(
                        "guard: the low watermark was crossed while paused, holding until the high watermark: {}",
                        numbers()
                    ));
                    for mut f in frozen {
                        f.hard = true;
                        let _ = std::fs::write(self.guard_marker(&f.name), subvol_core::meta::encode("guard", 1, &f));
                    }
                }
                GuardAction::Thaw => {
                    for f in frozen {
                        match subvol_os::freeze::fithaw(&f.mount_point) {
                            Ok(()) => {
                                log(format!("guard: thawed {} at {}: {}", f.name, f.mount_point.display(), numbers()))
                            }
                            Err(e) => log(format!("guard: thaw of {} reported: {e}", f.name)),
                        }
                        let _ = std::fs::remove_file(self.guard_marker(&f.name));
                    }
                    soft_since = None;
                    // The rate measured while frozen means nothing now.
                    last = None;
                    rate = 0.0;
                }
            }
            if opts.once || stop() {
                return Ok(());
            }
            std::thread::sleep(opts.interval);
        }
    }

    /// Trims mounted subvolumes and, if allowed, prunes by policy. Returns
    /// whether anything was reclaimed.
    fn reclaim(&self, prune: bool, last: &mut Option<Instant>, log: &mut dyn FnMut(String)) -> bool {
        // Reclaiming is worth it once per burst, not on every pause.
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return false;
        }
        *last = Some(Instant::now());
        let mut any = false;
        if let Ok((trimmed, freed)) = self.trim(&[]) {
            let total: u64 = trimmed.iter().map(|t| t.1).sum();
            log(format!("guard: trim released {} inside, host free changed by {}", format_size(total), freed));
            any |= freed > 0;
        }
        if prune {
            if let Ok(Some(_lock)) = crate::lock::PoolLock::try_acquire(&self.layout.lock_file()) {
                if let Ok(subs) = self.list() {
                    for s in subs.into_iter().filter(|s| s.properties.contains_key(crate::snapops::POLICY_PROPERTY)) {
                        if let Ok(r) = self.prune_locked(&s.name, None, None, false, chrono::Utc::now()) {
                            if !r.deleted.is_empty() {
                                log(format!("guard: pruned {} by its policy: {}", s.name, r.deleted.join(", ")));
                                any = true;
                            }
                        }
                    }
                }
            }
        }
        any
    }

    fn freeze_thin(
        &self,
        subs: &[crate::SubvolumeInfo],
        reason: &str,
        hard: bool,
        log: &mut dyn FnMut(String),
        warned: &mut bool,
    ) -> Result<()> {
        let kernel = KernelView::read()?;
        for s in subs {
            if s.guarantee {
                continue;
            }
            let Some(mp) = &s.mount_point else {
                if !s.attachments.is_empty() && !*warned {
                    log(format!(
                        "guard: WARNING {} is attached to {} without a mount and cannot be frozen; its writer may hit ENOSPC",
                        s.name,
                        s.attachments[0].loop_device.display()
                    ));
                }
                continue;
            };
            let _ = &kernel;
            let marker = GuardFreeze {
                name: s.name.clone(),
                mount_point: mp.clone(),
                reason: reason.to_string(),
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                hard,
            };
            let path = self.guard_marker(&s.name);
            if path.exists() {
                continue;
            }
            std::fs::create_dir_all(self.layout.frozen_dir()).map_err(|e| Error::io("mkdir", e))?;
            std::fs::write(&path, subvol_core::meta::encode("guard", 1, &marker))
                .map_err(|e| Error::io("cannot write the freeze record", e))?;
            let t = Instant::now();
            match subvol_os::freeze::fifreeze(mp) {
                Ok(()) => log(format!(
                    "guard: froze {} at {} in {:.1} ms ({}): {reason}",
                    s.name,
                    mp.display(),
                    t.elapsed().as_secs_f64() * 1000.0,
                    if hard { "until the high watermark" } else { "pause" }
                )),
                Err(e) if e.errno() == Some(16) => {
                    log(format!("guard: {} was already frozen (by a snapshot?)", s.name))
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    log(format!("guard: could not freeze {}: {e}", s.name));
                }
            }
        }
        *warned = true;
        Ok(())
    }
}
