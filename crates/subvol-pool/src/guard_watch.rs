//! Whether a guard is watching the pool: a running `subvol guard` holds an
//! flock on `.subvol/guard.lock` (with its pid in the file). The kernel drops
//! the lock when the guard dies, so "watching" can never be stale. Mount and
//! `pool status` use it to tell the user when an overcommitted pool has no
//! guard.

use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;

/// Held by the running guard; released on drop or death.
#[derive(Debug)]
pub struct GuardWatch {
    file: File,
    last_mark: Option<std::time::Instant>,
}

impl GuardWatch {
    /// Records that the guard just sampled the host, as the lock file's
    /// modification time (at most once a second: an inode update, no data),
    /// so metrics can tell a guard that hangs from one that watches.
    pub(crate) fn polled(&mut self) {
        if self.last_mark.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return;
        }
        self.last_mark = Some(std::time::Instant::now());
        let _ = self.file.set_modified(std::time::SystemTime::now());
    }
}

impl Pool {
    /// Claims the pool for this guard; refuses a second guard.
    pub(crate) fn take_guard_watch(&self) -> Result<GuardWatch> {
        let path = self.layout.guard_lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        // A `pool status` may hold a shared lock for an instant: retry briefly.
        for _ in 0..20 {
            match file.try_lock() {
                Ok(()) => {
                    let pid = std::process::id().to_string();
                    let _ = file.set_len(0);
                    let _ = file.rewind();
                    let _ = file.write_all(pid.as_bytes());
                    return Ok(GuardWatch { file, last_mark: None });
                }
                Err(TryLockError::WouldBlock) => std::thread::sleep(std::time::Duration::from_millis(50)),
                Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock the guard record", e)),
            }
        }
        let pid = self.guard_watching().map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        Err(Error::new(
            ErrorKind::Busy,
            format!("a guard (pid {pid}) already watches {}; one guard per pool", self.root().display()),
        ))
    }

    /// When the running guard last sampled the host (see `GuardWatch::polled`).
    pub fn guard_last_poll(&self) -> Option<std::time::SystemTime> {
        self.guard_watching()?;
        std::fs::symlink_metadata(self.layout.guard_lock_file()).and_then(|m| m.modified()).ok()
    }

    /// The pid of the guard watching this pool, if one is running.
    pub fn guard_watching(&self) -> Option<u32> {
        crate::worker::holder(&self.layout.guard_lock_file())
    }
}

impl Pool {
    /// Thin subvolumes may promise more than the host has; that is only safe
    /// while a guard watches. Says so when the pool is overcommitted (the
    /// thin subvolumes in `subs` may grow by more than the host's `free`
    /// bytes) and nothing watches.
    pub fn unguarded_overcommit_warning(&self, subs: &[crate::SubvolumeInfo], free: u64) -> Option<String> {
        let growth = crate::space::thin_growth_bytes(subs);
        if growth <= free || self.guard_watching().is_some() {
            return None;
        }
        Some(format!(
            "no guard watches {}: its thin subvolumes may still grow by {} but the host has {} free; \
             run `subvol guard` (contrib/subvol-guard.service) so they are frozen, not failed, when it fills",
            self.root().display(),
            subvol_core::format_size(growth),
            subvol_core::format_size(free)
        ))
    }
}
