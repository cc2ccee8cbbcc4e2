//! Locks of the pool's long-running readers (a scrub, a manifest builder):
//! an flock on a file holding the holder's pid. They do not take the pool
//! lock, which would stop every other command for hours; this lock only
//! keeps two of a kind apart, says who runs, and lets `pool umount` and
//! `pool destroy` stop them. The kernel drops it when the holder dies.

use crate::error::{Error, ErrorKind, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Held while the worker runs; released on drop or death.
#[derive(Debug)]
pub(crate) struct WorkerLock {
    _file: File,
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

fn claim(mut file: File) -> WorkerLock {
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = file.write_all(std::process::id().to_string().as_bytes());
    WorkerLock { _file: file }
}

impl WorkerLock {
    /// Takes the lock if it is free now.
    pub(crate) fn try_take(path: &Path) -> Result<Option<WorkerLock>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(claim(file))),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(Error::io(format!("cannot lock {}", path.display()), e)),
        }
    }

    /// Takes the lock, waiting for the holder to finish; `on_wait` is called
    /// once if it has to wait.
    pub(crate) fn take(path: &Path, on_wait: &dyn Fn(u32)) -> Result<WorkerLock> {
        if let Some(l) = Self::try_take(path)? {
            return Ok(l);
        }
        on_wait(holder(path).unwrap_or(0));
        let file = open(path)?;
        file.lock().map_err(|e| Error::io(format!("cannot lock {}", path.display()), e))?;
        Ok(claim(file))
    }
}

/// The pid of the process holding the lock at `path`, if one does.
pub(crate) fn holder(path: &Path) -> Option<u32> {
    let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            Some(s.trim().parse().unwrap_or(0))
        }
        Err(TryLockError::Error(_)) => None,
    }
}

/// Stops the holder of the lock at `path` (SIGTERM) and waits until it is
/// gone, at most `timeout`. Returns the pid it stopped.
pub(crate) fn stop(path: &Path, timeout: Duration) -> Result<Option<u32>> {
    let Some(pid) = holder(path) else { return Ok(None) };
    if pid != 0 {
        subvol_os::signals::terminate(pid).map_err(|e| Error::os(format!("cannot stop process {pid}"), e))?;
    }
    let start = Instant::now();
    while holder(path).is_some() {
        if start.elapsed() >= timeout {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("process {pid} (holding {}) did not stop within {}s", path.display(), timeout.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(pid))
}

impl crate::pool::Pool {
    /// Before the pool goes away (`pool umount`, `pool destroy`): a manifest
    /// builder is stopped (the next scrub does its work); a running scrub is
    /// refused unless `force`, which stops it too (the next scrub resumes
    /// where it last recorded its place).
    pub(crate) fn stop_readers(&self, force: bool) -> Result<()> {
        let wait = Duration::from_secs(30);
        let scrub = self.layout.scrub_lock();
        if let Some(pid) = crate::worker::holder(&scrub) {
            if !force {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("a scrub (pid {pid}) is running on this pool; wait for it, or use --force to stop it (the next scrub resumes where it stopped)"),
                ));
            }
            crate::worker::stop(&scrub, wait)?;
        }
        crate::worker::stop(&self.layout.build_lock(), wait)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_named_by_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/lock");
        assert_eq!(holder(&p), None);
        let l = WorkerLock::try_take(&p).unwrap().expect("free");
        assert_eq!(holder(&p), Some(std::process::id()));
        assert!(WorkerLock::try_take(&p).unwrap().is_none(), "taken twice");
        drop(l);
        assert_eq!(holder(&p), None);
        assert!(WorkerLock::take(&p, &|_| panic!("waited for nobody")).is_ok());
    }
}
