//! The OS layer's error: which operation failed on which path, and the errno.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OsError {
    /// A system call failed.
    #[error("{op}{}: {source}", fmt_path(path))]
    Sys {
        op: &'static str,
        path: Option<PathBuf>,
        #[source]
        source: io::Error,
    },
    /// An external program (mkfs, xfs_growfs...) is not installed.
    #[error("{tool} not found; install the {package} package")]
    MissingTool { tool: String, package: String },
    /// An external program ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed { tool: String, status: String, stderr: String },
    /// The kernel answered something this layer cannot make sense of.
    #[error("{0}")]
    Unexpected(String),
}

fn fmt_path(p: &Option<PathBuf>) -> String {
    match p {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

pub type OsResult<T> = Result<T, OsError>;

impl OsError {
    pub fn sys(op: &'static str, path: Option<&Path>, source: impl Into<io::Error>) -> Self {
        OsError::Sys { op, path: path.map(Path::to_path_buf), source: source.into() }
    }

    /// Whether the failure was a full device or quota: ENOSPC/EDQUOT from a
    /// system call, or a tool that said so (tools run with `LC_ALL=C`).
    pub fn is_no_space(&self) -> bool {
        match self {
            OsError::Sys { source, .. } => matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)),
            OsError::ToolFailed { stderr, .. } => names_full_device(stderr),
            _ => false,
        }
    }

    /// The errno of a failed system call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            OsError::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Adds an operation name and a path to an `io::Result`.
pub trait Context<T> {
    fn ctx(self, op: &'static str, path: &Path) -> OsResult<T>;
}

impl<T, E: Into<io::Error>> Context<T> for Result<T, E> {
    fn ctx(self, op: &'static str, path: &Path) -> OsResult<T> {
        self.map_err(|e| OsError::sys(op, Some(path), e))
    }
}

/// Whether a tool's message (in the C locale) reports a full device or an
/// exceeded quota, the words strerror gives ENOSPC and EDQUOT.
pub(crate) fn names_full_device(line: &str) -> bool {
    line.contains("No space left on device") || line.contains("Disk quota exceeded")
}
