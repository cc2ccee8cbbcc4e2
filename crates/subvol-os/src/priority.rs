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

/// The I/O class of this thread, as ioprio_get reports it (0 none, 1
/// realtime, 2 best effort, 3 idle), for tests and reports.
pub fn io_class() -> OsResult<u32> {
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
    if rc < 0 {
        return Err(OsError::sys("ioprio_get", None, std::io::Error::last_os_error()));
    }
    Ok((rc >> IOPRIO_CLASS_SHIFT) as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn idle_class_sticks_and_is_inherited_by_new_threads() {
        super::set_io_idle().unwrap();
        assert_eq!(super::io_class().unwrap(), 3);
        let child = std::thread::spawn(|| super::io_class().unwrap()).join().unwrap();
        assert_eq!(child, 3);
    }
}
