//! Scheduling priority: the guard must get the CPU when the machine is busy
//! (its reaction time is part of the space margin), so it runs at a higher
//! priority than the writers it watches; a scrub, which reads everything,
//! must not slow down the subvolumes it runs beside, so its reads take the
//! idle I/O class.

use crate::error::{OsError, OsResult};

/// Sets this process's nice value (negative = higher priority; needs
/// CAP_SYS_NICE below 0).
pub fn set_nice(nice: i32) -> OsResult<()> {
    rustix::process::setpriority_process(None, nice)
        .map_err(|e| OsError::sys("setpriority", None, std::io::Error::from_raw_os_error(e.raw_os_error())))
}

/// `IOPRIO_CLASS_IDLE`: served only when no other I/O waits (linux/ioprio.h).
const IOPRIO_CLASS_IDLE: libc::c_int = 3;
const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// ioprio_set(IOPRIO_WHO_PROCESS, 0, IDLE): this thread's I/O, and that of
/// threads it starts afterwards (they inherit it), goes in the idle class.
/// Schedulers that know classes (BFQ; mq-deadline serves idle last) honour
/// it; with `none` it changes nothing.
pub fn set_io_idle() -> OsResult<()> {
    // SAFETY: ioprio_set takes three integers and touches no memory of ours.
    let rc =
        unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT) };
    if rc < 0 {
        return Err(OsError::sys("ioprio_set", None, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's I/O class as ioprio_get reports it (3: idle).
    fn io_class() -> libc::c_long {
        // SAFETY: ioprio_get takes two integers and touches no memory of ours.
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
        assert!(rc >= 0, "ioprio_get: {}", std::io::Error::last_os_error());
        rc >> IOPRIO_CLASS_SHIFT
    }

    #[test]
    fn idle_class_sticks_and_is_inherited_by_new_threads() {
        set_io_idle().unwrap();
        assert_eq!(io_class(), 3);
        assert_eq!(std::thread::spawn(io_class).join().unwrap(), 3);
    }
}
