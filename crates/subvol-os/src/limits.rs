//! Resource limits. A scrub keeps every snapshot it verifies open (reads of
//! shared blocks go through whichever image maps them), which can be more
//! files than the usual soft limit of 1024.

use crate::error::{OsError, OsResult};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Raises the soft limit of open files to the hard limit.
pub fn raise_open_files() -> OsResult<()> {
    let lim = getrlimit(Resource::Nofile);
    let want = Rlimit { current: lim.maximum, maximum: lim.maximum };
    setrlimit(Resource::Nofile, want)
        .map_err(|e| OsError::sys("setrlimit", None, std::io::Error::from_raw_os_error(e.raw_os_error())))
}
