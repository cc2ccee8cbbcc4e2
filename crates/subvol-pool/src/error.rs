//! Errors of the pool layer: a stable kind with its exit code, and a
//! one-line message that says what to do.

use std::fmt;
use subvol_os::OsError;

/// What went wrong, stable for scripts (README.md, "Exit codes").
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

/// Every kind with the exit code `subvol` ends with: a contract scripts rely
/// on, and what a `subvol` run on another host (sync over ssh) is read back
/// by. One table serves both directions, so they cannot disagree.
const EXIT_CODES: [(ErrorKind, u8); 11] = [
    (ErrorKind::Io, 1),
    (ErrorKind::InvalidArgument, 2),
    (ErrorKind::NotFound, 3),
    (ErrorKind::AlreadyExists, 4),
    (ErrorKind::Busy, 5),
    (ErrorKind::NoSpace, 6),
    (ErrorKind::Unsupported, 7),
    (ErrorKind::Corrupt, 8),
    (ErrorKind::PermissionDenied, 9),
    (ErrorKind::MissingTool, 10),
    (ErrorKind::NotInitialised, 11),
];

impl ErrorKind {
    /// The exit code of this kind.
    pub fn exit_code(self) -> u8 {
        EXIT_CODES.iter().find(|(k, _)| *k == self).map_or(1, |(_, c)| *c)
    }

    /// The kind a `subvol` exit code stands for; `None` for success and for
    /// codes subvol never uses (a signal, ssh's 255, a shell's 127).
    pub fn from_exit_code(code: i32) -> Option<ErrorKind> {
        EXIT_CODES.iter().find(|(_, c)| i32::from(*c) == code).map(|(k, _)| *k)
    }
}

/// An error: its kind (the exit code), the one line people read, and the
/// OS error it came from, kept for `std::error::Error::source` (callers that
/// log chains, a CSI status, a debugger) without being spelled twice in the
/// message.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl PartialEq for Error {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl Eq for Error {}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
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
            OsError::Sys { .. } => kind_of_errno(e.errno()),
        };
        let message = format!("{what}: {e}{}", hint(kind));
        Error { kind, message, source: Some(std::sync::Arc::new(e)) }
    }

    /// Wraps an I/O error with what we were doing (which should name the
    /// file): "cannot open /p/x: No such file or directory (ENOENT)".
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Self {
        let kind = if e.raw_os_error().is_some_and(|n| n == libc::ENOSPC || n == libc::EDQUOT) {
            ErrorKind::NoSpace
        } else {
            kind_of_errno(e.raw_os_error())
        };
        let message = format!("{what}: {}{}", subvol_os::error::describe(&e), hint(kind));
        Error { kind, message, source: Some(std::sync::Arc::new(e)) }
    }
}

/// The kind an errno stands for: the one place errno values are read.
fn kind_of_errno(errno: Option<i32>) -> ErrorKind {
    match errno {
        Some(libc::ENOENT) => ErrorKind::NotFound,
        Some(libc::EEXIST) => ErrorKind::AlreadyExists,
        Some(libc::EBUSY) => ErrorKind::Busy,
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
        Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::PermissionDenied,
        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EXDEV) => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    }
}

/// What to do, added to the message for the kinds where it is always the same.
fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NoSpace => "; free space on the host (delete snapshots or grow the pool)",
        ErrorKind::PermissionDenied if !subvol_os::is_root() => "; run as root",
        _ => "",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Naming every variant here makes a new kind fail to compile until it
    /// is given a place in the table.
    fn every_kind() -> Vec<ErrorKind> {
        use ErrorKind::*;
        let all = vec![
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
        ];
        for k in &all {
            match k {
                InvalidArgument | NotFound | AlreadyExists | Busy | NoSpace | Unsupported | Corrupt
                | PermissionDenied | MissingTool | NotInitialised | Io => {}
            }
        }
        all
    }

    #[test]
    fn exit_codes_map_both_ways() {
        let kinds = every_kind();
        assert_eq!(kinds.len(), EXIT_CODES.len(), "a kind without an exit code, or one listed twice");
        let mut codes: Vec<u8> = kinds.iter().map(|k| k.exit_code()).collect();
        for k in &kinds {
            assert!(EXIT_CODES.iter().any(|(t, _)| t == k), "{k:?} is not in the table");
            assert_eq!(ErrorKind::from_exit_code(k.exit_code().into()), Some(*k));
        }
        codes.sort();
        assert_eq!(codes, (1..=11).collect::<Vec<u8>>(), "codes are the documented 1-11");
        for other in [0, 12, 127, 255, -1] {
            assert_eq!(ErrorKind::from_exit_code(other), None, "{other}");
        }
    }
}
