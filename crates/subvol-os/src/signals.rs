//! Deferring termination signals across a critical section (a frozen
//! filesystem): SIGINT, SIGTERM, SIGHUP and SIGQUIT stay pending while the
//! guard lives and are delivered, with their usual effect, once it drops.

use crate::error::{OsError, OsResult};
use std::mem::MaybeUninit;

/// Blocks the termination signals for this thread until dropped.
pub struct SignalBlock {
    old: libc::sigset_t,
}

impl SignalBlock {
    pub fn new() -> OsResult<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises `set`; sigaddset only writes into
        // it; pthread_sigmask reads `set` and fills `old`, both valid
        // pointers to sigset_t for the duration of the calls.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), old.as_mut_ptr());
            if rc != 0 {
                return Err(OsError::sys("pthread_sigmask", None, std::io::Error::from_raw_os_error(rc)));
            }
            Ok(SignalBlock { old: old.assume_init() })
        }
    }
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`; `self.old` is a valid,
        // initialised sigset_t.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// Sends SIGTERM to a process (a background worker of the pool that must
/// stop before the pool is unmounted). ESRCH, a process already gone, is
/// success.
pub fn terminate(pid: u32) -> OsResult<()> {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return Err(OsError::Unexpected(format!("{pid} is not a process id")));
    };
    match rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(OsError::sys("kill", None, std::io::Error::from_raw_os_error(e.raw_os_error()))),
    }
}
