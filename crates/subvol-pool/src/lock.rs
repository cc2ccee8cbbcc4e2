//! The pool lock: an flock on `.subvol/lock` serialises mutating commands.
//! The kernel drops it when the holder dies, so a crash never leaves the pool
//! locked.

use crate::error::{Error, ErrorKind, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Held for the lifetime of a mutating command; unlocks on drop.
#[derive(Debug)]
pub struct PoolLock {
    _file: File,
}

impl PoolLock {
    /// Takes the lock if it is free right now.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open pool lock {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(PoolLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io("cannot lock the pool", e)),
        }
    }

    /// Takes the lock, waiting up to `timeout`. `on_wait` is called once if
    /// the lock is not free at once, so the CLI can say why it waits.
    pub fn acquire(path: &Path, timeout: Duration, on_wait: &dyn Fn()) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open pool lock {}", path.display()), e))?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(PoolLock { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock the pool", e)),
            }
            if !told {
                on_wait();
                told = true;
            }
            if start.elapsed() >= timeout {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "another subvol command has held the pool lock for {}s; wait for it or raise --lock-timeout",
                        timeout.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
