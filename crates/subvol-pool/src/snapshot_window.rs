//! The frozen window of a snapshot, kept apart from the system calls it
//! makes.
//!
//! A snapshot is only correct if its steps come in the right order on every
//! path: termination signals are blocked before anything freezes and stay
//! blocked while anything is frozen; each filesystem's frozen-marker is
//! written before it freezes and removed only after it thaws (so a crash in
//! between leaves the next command a record to thaw from); nothing is
//! frozen after a failed freeze and nothing is copied after any failure;
//! every filesystem frozen is thawed exactly once, errors and panics
//! included; and the first error is the one reported. That order is the
//! whole of `run`, written against `WindowOps`, so it is unit-tested without
//! root by a recording fake that can fail any step (`snapshot_window_tests`).
//! `snapshot.rs` implements `WindowOps` with the real calls.

use crate::error::{Error, Result};
use crate::frozen_state::snapshot_freeze_error;
use std::path::{Path, PathBuf};
use std::time::Instant;
use subvol_os::OsResult;

/// The privileged steps of the window, and nothing else: the real ones make
/// the system calls, the fake in the tests records them and fails on demand.
pub(crate) trait WindowOps {
    /// Defers termination signals until `unblock_signals`: a Ctrl-C must not
    /// kill the command while writers are blocked.
    fn block_signals(&mut self) -> OsResult<()>;
    fn unblock_signals(&mut self);
    /// Records that `name`, mounted at `mount_point`, is about to be frozen,
    /// so that recovery thaws it if this command dies while it is.
    fn write_marker(&mut self, name: &str, mount_point: &Path) -> Result<()>;
    /// Drops that record. Also called after a failed write, which may have
    /// left part of one.
    fn remove_marker(&mut self, name: &str);
    /// FIFREEZE.
    fn freeze(&mut self, mount_point: &Path) -> OsResult<()>;
    /// FITHAW of a filesystem that `freeze` froze.
    fn thaw(&mut self, mount_point: &Path) -> OsResult<()>;
    /// Brings the clone of target `index` up to the frozen state.
    fn update_clone(&mut self, index: usize) -> Result<()>;
}

/// One subvolume in the window: a mounted one is frozen around its copy, an
/// unmounted one is only copied.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub name: String,
    pub mount_point: Option<PathBuf>,
}

/// How long the window held writers, for the snapshot's report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowTimes {
    /// From the start of the first FIFREEZE (which flushes first) to the
    /// end of the last FITHAW; 0 when nothing was mounted.
    pub frozen_us: u64,
    /// Of that, the time spent bringing the clones up to date.
    pub copy_us: u64,
}

/// Freezes every mounted target, brings every clone up to date, thaws.
pub(crate) fn run<O: WindowOps>(ops: &mut O, targets: &[Target]) -> Result<WindowTimes> {
    ops.block_signals().map_err(|e| Error::os("cannot block signals", e))?;
    let mut held = Held { ops, marked: Vec::new(), frozen: Vec::new() };
    // Writers block from the moment FIFREEZE starts (it flushes the
    // filesystem first) until FITHAW returns: that is the window.
    let freeze_started = Instant::now();
    for t in targets {
        if let Some(mp) = &t.mount_point {
            held.marked.push(&t.name);
            held.ops.write_marker(&t.name, mp)?;
            held.ops.freeze(mp).map_err(|e| snapshot_freeze_error(&t.name, mp, e))?;
            held.frozen.push(mp);
        }
    }
    let frozen_at = Instant::now();
    subvol_os::crash::point("snapshot-frozen");
    for i in 0..targets.len() {
        held.ops.update_clone(i)?;
    }
    let copy_us = frozen_at.elapsed().as_micros() as u64;
    let any_frozen = !held.frozen.is_empty();
    held.thaw_in_order()?;
    let frozen_us = if any_frozen { freeze_started.elapsed().as_micros() as u64 } else { 0 };
    drop(held);
    Ok(WindowTimes { frozen_us, copy_us })
}

/// What the window holds: frozen filesystems, markers, blocked signals.
/// Dropping it (an error, a panic, or the end of `run`) releases them in
/// that order, so a marker outlives its freeze and signals stay blocked
/// until nothing is frozen.
struct Held<'o, 't, O: WindowOps> {
    ops: &'o mut O,
    marked: Vec<&'t str>,
    frozen: Vec<&'t Path>,
}

impl<O: WindowOps> Held<'_, '_, O> {
    /// Thaws in the order of freezing and stops at the first failure (its
    /// error is the one reported); the drop thaws the rest. A failed thaw is
    /// not retried: it is still the one thaw of that filesystem.
    fn thaw_in_order(&mut self) -> Result<()> {
        while !self.frozen.is_empty() {
            let mp = self.frozen.remove(0);
            self.ops.thaw(mp).map_err(|e| Error::os("cannot thaw", e))?;
        }
        Ok(())
    }
}

impl<O: WindowOps> Drop for Held<'_, '_, O> {
    fn drop(&mut self) {
        for mp in self.frozen.drain(..) {
            let _ = self.ops.thaw(mp);
        }
        for name in self.marked.drain(..) {
            self.ops.remove_marker(name);
        }
        self.ops.unblock_signals();
    }
}

#[cfg(test)]
#[path = "snapshot_window_tests.rs"]
mod tests;
