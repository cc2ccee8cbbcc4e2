//! The OS layer's error: which operation failed on which path, and the errno.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OsError {
    /// A system call failed.
    #[error("{op}{}: {}", fmt_path(path), describe(source))]
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

/// The kernel's words for an I/O error with its errno's name, e.g. "No
/// space left on device (ENOSPC)": the name is what people search for and
/// what docs cite; Rust's own "(os error 28)" says neither.
pub fn describe(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else { return e.to_string() };
    let text = e.to_string();
    let text = text.strip_suffix(&format!(" (os error {n})")).unwrap_or(&text).to_string();
    match errno_name(n) {
        Some(name) => format!("{text} ({name})"),
        None => format!("{text} (errno {n})"),
    }
}

/// The symbolic name of the errno values subvol meets.
pub fn errno_name(n: i32) -> Option<&'static str> {
    const NAMES: &[(i32, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EINTR, "EINTR"),
        (libc::EIO, "EIO"),
        (libc::ENXIO, "ENXIO"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EBUSY, "EBUSY"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENODEV, "ENODEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::ENFILE, "ENFILE"),
        (libc::EMFILE, "EMFILE"),
        (libc::ENOTTY, "ENOTTY"),
        (libc::EFBIG, "EFBIG"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::EROFS, "EROFS"),
        (libc::EPIPE, "EPIPE"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENODATA, "ENODATA"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ETIMEDOUT, "ETIMEDOUT"),
        (libc::ECONNREFUSED, "ECONNREFUSED"),
        (libc::ESTALE, "ESTALE"),
        (libc::EDQUOT, "EDQUOT"),
        (libc::ENOKEY, "ENOKEY"),
        (libc::EUCLEAN, "EUCLEAN"),
        (libc::ERANGE, "ERANGE"),
        (libc::E2BIG, "E2BIG"),
        (libc::ENOSYS, "ENOSYS"),
    ];
    NAMES.iter().find(|(v, _)| *v == n).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_with_their_errno_name() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(describe(&e), "No space left on device (ENOSPC)");
        let e = OsError::sys("FIFREEZE", Some(Path::new("/mnt/a")), io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(e.to_string(), "FIFREEZE /mnt/a: Device or resource busy (EBUSY)");
        assert_eq!(describe(&io::Error::from_raw_os_error(4000)), "Unknown error 4000 (errno 4000)");
        assert_eq!(describe(&io::Error::other("plain")), "plain");
    }
}
