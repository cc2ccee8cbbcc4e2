//! Scheduling priority: the guard must get the CPU when the machine is busy
//! (its reaction time is part of the space margin), so it runs at a higher
//! priority than the writers it watches.

use crate::error::{OsError, OsResult};

/// Sets this process's nice value (negative = higher priority; needs
/// CAP_SYS_NICE below 0).
pub fn set_nice(nice: i32) -> OsResult<()> {
    rustix::process::setpriority_process(None, nice)
        .map_err(|e| OsError::sys("setpriority", None, std::io::Error::from_raw_os_error(e.raw_os_error())))
}
