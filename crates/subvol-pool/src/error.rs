//! Errors of the pool layer: a stable kind that the CLI maps to an exit code,
//! and a one-line message that says what to do.

use std::fmt;
use subvol_os::OsError;

/// What went wrong, stable for scripts (see docs/CLI exit codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Busy,
    NoSpace,
    Unsupported,
    Corrupt,
    PermissionDenied,
    MissingTool,
    NotInitialised,
    Io,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// Wraps an OS error with what we were doing, choosing the kind from
    /// the errno.
    pub fn os(what: impl fmt::Display, e: OsError) -> Self {
        let kind = match &e {
            _ if e.is_no_space() => ErrorKind::NoSpace,
            OsError::MissingTool { .. } => ErrorKind::MissingTool,
            OsError::ToolFailed { .. } | OsError::Unexpected(_) => ErrorKind::Io,
            OsError::Sys { .. } => match e.errno() {
                Some(libc::ENOENT) => ErrorKind::NotFound,
                Some(libc::EEXIST) => ErrorKind::AlreadyExists,
                Some(libc::EBUSY) => ErrorKind::Busy,
                Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
                Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EXDEV) => ErrorKind::Unsupported,
                _ => ErrorKind::Io,
            },
        };
        let hint = match kind {
            ErrorKind::NoSpace => "; free space on the host (delete snapshots or grow the pool)",
            ErrorKind::PermissionDenied if !subvol_os::is_root() => "; run as root",
            _ => "",
        };
        Error { kind, message: format!("{what}: {e}{hint}") }
    }

    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Self {
        Self::os(what, OsError::Sys { op: "io", path: None, source: e })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<subvol_core::NameError> for Error {
    fn from(e: subvol_core::NameError) -> Self {
        Error::invalid(e.to_string())
    }
}

impl From<subvol_core::SizeError> for Error {
    fn from(e: subvol_core::SizeError) -> Self {
        Error::invalid(e.to_string())
    }
}

/// Refuses with a clear error unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if subvol_os::is_root() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("{what} needs root (loop devices and mounts); run it with sudo"),
        ))
    }
}
