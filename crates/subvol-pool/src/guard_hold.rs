//! What the guard holds frozen, and the order it freezes, reclaims and
//! thaws in, kept apart from the system calls it makes.
//!
//! The guard is only safe if that order holds on every path: a freeze is
//! recorded before it happens (the record is what tells other commands, and
//! a later guard, that the filesystem is frozen and by whom); every thin
//! subvolume freezes at once; reclaiming happens while they are frozen; a
//! failed freeze leaves no record behind; a thaw comes before its record
//! goes; and when the guard stops (SIGINT, SIGTERM, a panic) it
//! thaws everything it holds, since nothing watches the host after it. That
//! order is `Hold`, written against `GuardOps`, so it is unit-tested without
//! root by a recording fake that can fail any step (`guard_hold_tests`).
//! `guard.rs` implements `GuardOps` with the real calls and decides *when* to
//! act (`subvol_core::space::guard_decision`).

use crate::event::Event;
use crate::guard::GuardFreeze;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use subvol_os::OsResult;

/// The privileged steps of the guard's reaction, and nothing else. `Sync`:
/// the freezes run on one thread each.
pub(crate) trait GuardOps: Sync {
    /// The freeze records on disk (`.subvol/frozen/guard.NAME`).
    fn records(&self) -> Vec<GuardFreeze>;
    fn write_record(&self, record: &GuardFreeze) -> std::io::Result<()>;
    fn remove_record(&self, name: &str);
    /// FIFREEZE.
    fn freeze(&self, mount_point: &Path) -> OsResult<()>;
    /// FITHAW.
    fn thaw(&self, mount_point: &Path) -> OsResult<()>;
    /// Gives host space back while writers are stopped (trim, prune);
    /// whether anything came back.
    fn reclaim(&mut self, log: &mut dyn FnMut(Event)) -> bool;
    /// The host's free bytes now, if it can be read.
    fn free_bytes(&self) -> Option<u64>;
}

/// Why the guard acts: the figures of the sample it decided on, or just a
/// note (a stop). Printed in its log lines and records, and attached to its
/// events as numbers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Numbers {
    pub free_bytes: u64,
    pub outstanding_bytes: u64,
    pub low_bytes: u64,
    pub high_bytes: u64,
    pub fill_rate: f64,
    pub note: Option<&'static str>,
}

impl Numbers {
    pub(crate) fn note(note: &'static str) -> Numbers {
        Numbers { note: Some(note), ..Numbers::default() }
    }

    /// `event` with these figures as fields (none for a note).
    pub(crate) fn on(&self, event: Event) -> Event {
        if self.note.is_some() {
            return event;
        }
        event
            .int("free_bytes", self.free_bytes)
            .int("outstanding_bytes", self.outstanding_bytes)
            .int("headroom_bytes", self.free_bytes.saturating_sub(self.outstanding_bytes))
            .int("low_watermark_bytes", self.low_bytes)
            .int("high_watermark_bytes", self.high_bytes)
            .float("fill_rate_bytes_per_second", self.fill_rate.max(0.0))
    }
}

impl std::fmt::Display for Numbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use subvol_core::format_size;
        if let Some(n) = self.note {
            return f.write_str(n);
        }
        write!(
            f,
            "host free {} - guaranteed {} = {} (low {}, high {}), filling at {}/s",
            format_size(self.free_bytes),
            format_size(self.outstanding_bytes),
            format_size(self.free_bytes.saturating_sub(self.outstanding_bytes)),
            format_size(self.low_bytes),
            format_size(self.high_bytes),
            format_size(self.fill_rate.max(0.0) as u64)
        )
    }
}

/// A mounted thin subvolume the guard may freeze.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub name: String,
    pub mount_point: PathBuf,
}

/// What one reaction did.
#[derive(Debug)]
pub(crate) struct Reacted {
    /// The subvolumes frozen by it (not those already frozen before).
    pub froze: Vec<String>,
    /// How long freezing them took.
    pub freeze_secs: f64,
    /// When the freezes were done: a pause is timed from there.
    pub frozen_at: Instant,
    /// Whether reclaiming made enough room to thaw at once.
    pub thawed: bool,
}

/// The filesystems the guard holds frozen. Thaws all of them when it stops
/// or is dropped, unless told to keep them (`guard --once`, whose records
/// tell the next check what to thaw).
pub(crate) struct Hold<O: GuardOps> {
    ops: O,
    /// Frozen (or being frozen) without a record, because the host was too
    /// full to write one: no other command knows of them, so this guard
    /// must thaw them whatever happens.
    unrecorded: Vec<GuardFreeze>,
    keep_recorded_on_exit: bool,
    stopped: bool,
}

impl<O: GuardOps> Hold<O> {
    pub(crate) fn new(ops: O, keep_recorded_on_exit: bool) -> Self {
        Hold { ops, unrecorded: Vec::new(), keep_recorded_on_exit, stopped: false }
    }

    /// Everything frozen by a guard: its records (an earlier guard's too,
    /// which this one takes over) and the freezes it could not record.
    pub(crate) fn frozen(&self) -> Vec<GuardFreeze> {
        let mut all = self.ops.records();
        for f in &self.unrecorded {
            if !all.iter().any(|r| r.name == f.name) {
                all.push(f.clone());
            }
        }
        all
    }

    /// Freezes every candidate not frozen yet, reclaims while they are
    /// frozen (reclaiming takes time a fast writer would spend filling the
    /// host), and thaws everything if that brought the headroom (free bytes
    /// less `outstanding`) back to `high`. `numbers` says why, for the logs
    /// and the records.
    pub(crate) fn react(
        &mut self,
        candidates: &[Candidate],
        numbers: &Numbers,
        hard: bool,
        outstanding: u64,
        high: u64,
        log: &mut dyn FnMut(Event),
    ) -> Reacted {
        let t = Instant::now();
        let froze = self.freeze(candidates, numbers, hard, log);
        let freeze_secs = t.elapsed().as_secs_f64();
        let frozen_at = Instant::now();
        let msg = format!(
            "guard: {}: froze {} in {:.1} ms: {numbers}; reclaiming",
            if hard { "at the low watermark" } else { "approaching the low watermark" },
            if froze.is_empty() { "nothing".to_string() } else { froze.join(", ") },
            freeze_secs * 1000.0
        );
        log(numbers.on(Event::new("react", msg)
            .text("watermark", if hard { "low" } else { "approaching" })
            .int("frozen", froze.len() as u64)
            .float("freeze_ms", freeze_secs * 1000.0)));
        let mut thawed = false;
        if self.ops.reclaim(log) {
            let headroom = self.ops.free_bytes().map(|f| f.saturating_sub(outstanding)).unwrap_or(0);
            if headroom >= high {
                let msg = format!(
                    "guard: reclaim made room (headroom {}, high {}), thawing",
                    subvol_core::format_size(headroom),
                    subvol_core::format_size(high)
                );
                log(Event::new("room", msg).int("headroom_bytes", headroom).int("high_watermark_bytes", high));
                self.thaw_all(numbers, log);
                thawed = true;
            }
        }
        Reacted { froze, freeze_secs, frozen_at, thawed }
    }

    /// Records, then freezes at once (one thread each: a FIFREEZE first
    /// writes back that filesystem's dirty data, so one after another would
    /// let the last ones write for the sum of all flushes), every candidate
    /// not frozen yet. Returns the names frozen now.
    fn freeze(
        &mut self,
        candidates: &[Candidate],
        reason: &Numbers,
        hard: bool,
        log: &mut dyn FnMut(Event),
    ) -> Vec<String> {
        let held: BTreeSet<String> = self.frozen().into_iter().map(|f| f.name).collect();
        let mut todo = Vec::new();
        for c in candidates.iter().filter(|c| !held.contains(&c.name)) {
            let record = GuardFreeze {
                name: c.name.clone(),
                mount_point: c.mount_point.clone(),
                reason: reason.to_string(),
                at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                hard,
            };
            // The record goes first, so a crash between the two never leaves
            // a frozen filesystem nobody knows about (the next guard, or
            // `umount`, thaws it). On a nearly full host it may fail to
            // write: freeze anyway (stopping writers is what matters), and
            // remember it here instead.
            if let Err(e) = self.ops.write_record(&record) {
                let msg = format!("guard: cannot write the freeze record of {} ({e}); freezing it anyway", c.name);
                log(Event::new("warning", msg).on(&c.name));
                self.unrecorded.push(record.clone());
            }
            todo.push(record);
        }
        let ops = &self.ops;
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = todo
                .iter()
                .map(|r| {
                    scope.spawn(move || {
                        let t = Instant::now();
                        let res = ops.freeze(&r.mount_point);
                        (t.elapsed().as_secs_f64(), res)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut froze = Vec::new();
        for (r, result) in todo.iter().zip(results) {
            let name = &r.name;
            match result {
                Ok((secs, Ok(()))) => {
                    let msg = format!(
                        "guard: froze {name} at {} in {:.1} ms ({})",
                        r.mount_point.display(),
                        secs * 1000.0,
                        if hard { "until the high watermark" } else { "pause" }
                    );
                    log(Event::new("freeze", msg)
                        .on(name)
                        .float("freeze_ms", secs * 1000.0)
                        .text("until", if hard { "high_watermark" } else { "pause" }));
                    froze.push(name.clone());
                }
                // Whether it froze is unknown: keep holding it, so that the
                // thaw comes (FITHAW of a filesystem that is not frozen only
                // fails).
                Err(_) => {
                    log(Event::new("error", format!("guard: freezing {name} panicked; holding it as frozen")).on(name))
                }
                Ok((_, Err(e))) => {
                    self.forget(name);
                    if e.errno() == Some(libc::EBUSY) {
                        // Someone else (a snapshot) holds it frozen and will
                        // thaw it: without our record the next sample freezes
                        // it again, and our thaw never cuts into their window.
                        let msg = format!(
                            "guard: {name} is frozen by someone else (a snapshot?); freezing it once they thaw"
                        );
                        log(Event::new("busy", msg).on(name))
                    } else {
                        log(Event::new("error", format!("guard: could not freeze {name}: {e}")).on(name));
                    }
                }
            }
        }
        froze
    }

    /// Drops what says `name` is frozen by the guard.
    fn forget(&mut self, name: &str) {
        self.ops.remove_record(name);
        self.unrecorded.retain(|f| f.name != name);
    }

    /// Holds every freeze until the high watermark (the low one was crossed
    /// during a pause), recording any freeze that could not be recorded yet.
    pub(crate) fn harden(&mut self) {
        for mut f in self.frozen() {
            f.hard = true;
            let recorded = self.ops.write_record(&f).is_ok();
            if let Some(u) = self.unrecorded.iter_mut().find(|u| u.name == f.name) {
                u.hard = true;
            }
            if recorded {
                self.unrecorded.retain(|u| u.name != f.name);
            }
        }
    }

    /// Thaws every subvolume the guard froze, then drops its record. A
    /// failed thaw is logged and not retried (FITHAW fails when the
    /// filesystem is no longer frozen or no longer there).
    pub(crate) fn thaw_all(&mut self, numbers: &Numbers, log: &mut dyn FnMut(Event)) {
        for f in self.frozen() {
            match self.ops.thaw(&f.mount_point) {
                Ok(()) => log(numbers.on(Event::new(
                    "thaw",
                    format!("guard: thawed {} at {}: {numbers}", f.name, f.mount_point.display()),
                )
                .on(&f.name))),
                Err(e) => log(Event::new("error", format!("guard: thaw of {} reported: {e}", f.name)).on(&f.name)),
            }
            self.forget(&f.name);
        }
    }

    /// The guard stops watching: nothing would thaw what it holds, so it
    /// thaws it all, except what `--once` keeps (recorded freezes, for the
    /// next check); a freeze it could not record is thawed even then, since
    /// no later check would find it.
    pub(crate) fn stop(&mut self, log: &mut dyn FnMut(Event)) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        if self.keep_recorded_on_exit {
            for f in std::mem::take(&mut self.unrecorded) {
                match self.ops.thaw(&f.mount_point) {
                    Ok(()) => log(Event::new(
                        "thaw",
                        format!("guard: WARNING thawed {}: its freeze could not be recorded", f.name),
                    )
                    .on(&f.name)),
                    Err(e) => log(Event::new("error", format!("guard: thaw of {} reported: {e}", f.name)).on(&f.name)),
                }
            }
        } else {
            self.thaw_all(&Numbers::note("the guard stopped; nothing watches the host now"), log);
        }
    }
}

impl<O: GuardOps> Drop for Hold<O> {
    /// An error or a panic in the guard's loop: thaw on the way out too.
    fn drop(&mut self) {
        self.stop(&mut |_| {});
    }
}

#[cfg(test)]
#[path = "guard_hold_tests.rs"]
mod tests;
