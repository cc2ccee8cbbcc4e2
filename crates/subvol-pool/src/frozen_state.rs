//! Commands meet a subvolume the guard holds frozen, a host too full to
//! freeze safely, or a filesystem the kernel shut down, before they change
//! anything: a resize or snapshot would otherwise block in the kernel behind
//! the freeze (and half-apply), make the inner filesystem write its log into
//! a full host and shut down, or fail on a shut-down one with a bare EIO.

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::Attachment;
use crate::pool::Pool;
use std::path::Path;
use subvol_core::format_size;
use subvol_core::mountinfo::FsFailure;
use subvol_os::OsError;

/// What one mounted subvolume may write to the host when it is frozen or
/// grown: its dirty page cache cap, one extent-hint rounding and its
/// metadata flush (docs/SPACE.md).
pub(crate) fn flush_reserve(mounted: u64) -> u64 {
    mounted.saturating_mul(subvol_core::space::freeze_flush_bytes(
        crate::space::DIRTY_LIMIT_BYTES,
        u64::from(crate::subvolume::DEFAULT_EXTENT_HINT_BYTES),
        subvol_core::space::METADATA_FLUSH_BYTES,
    ))
}

impl Pool {
    /// Refuses (exit 5) when the guard holds `name` frozen.
    pub(crate) fn refuse_guard_frozen(&self, name: &str, what: &str) -> Result<()> {
        if let Some(f) = self.guard_frozen().into_iter().find(|f| f.name == name) {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "cannot {what} {name}: the guard froze it at {} because the host is nearly full ({}); \
                     free space on the host (delete snapshots, `subvol trim --all`) and retry once the guard thaws it",
                    f.at, f.reason
                ),
            ));
        }
        Ok(())
    }

    /// Refuses (exit 6, with the numbers) when the host has less free space
    /// than `mounted` subvolumes may flush when frozen, so the inner
    /// filesystems never write their logs into a full host.
    pub(crate) fn refuse_without_flush_room(&self, what: &str, mounted: u64) -> Result<()> {
        if mounted == 0 {
            return Ok(());
        }
        let st = subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("cannot stat the host", e))?;
        let need = flush_reserve(mounted);
        if st.free_bytes < need {
            return Err(Error::new(
                ErrorKind::NoSpace,
                format!(
                    "cannot {what}: the host has {} free but freezing {mounted} mounted subvolume(s) may write up to {} \
                     (dirty data and metadata); free space on the host (delete snapshots, `subvol trim --all`) and retry",
                    format_size(st.free_bytes),
                    format_size(need)
                ),
            ));
        }
        Ok(())
    }
}

/// What the kernel did to the filesystem inside `name`, in words.
pub(crate) fn failure_cause(name: &str, failure: FsFailure) -> String {
    match failure {
        FsFailure::Shutdown => {
            format!("the filesystem inside {name} was shut down by the kernel (I/O error or full host)")
        }
        FsFailure::Error => format!("the kernel made the filesystem inside {name} read-only after an error"),
    }
}

/// The way back from a failure: unmount it (if still mounted), mount it
/// again, which replays its log (the kernel refuses a shut-down filesystem
/// anything else), then check the pool the failure may have caught mid-way.
pub(crate) fn recovery_steps(name: &str, mounted: bool) -> String {
    let umount = if mounted { format!("`subvol umount {name}`, then ") } else { String::new() };
    format!("run {umount}`subvol mount {name}` to replay its log, then `subvol pool check`")
}

/// The cause and the way back, for a filesystem still mounted.
pub(crate) fn failure_advice(name: &str, failure: FsFailure) -> String {
    format!("{}; {}", failure_cause(name, failure), recovery_steps(name, true))
}

/// Refuses to `what` a subvolume whose filesystem failed. Exit 1 (I/O), the
/// code the freeze or grow would have met as EIO, so a script sees the same
/// code whether the failure is found first or hit under the freeze; not 8,
/// which says subvol's own records are damaged (they are not).
pub(crate) fn refuse_failed_fs(name: &str, attachments: &[Attachment], what: &str) -> Result<()> {
    match crate::kernel::fs_failure(attachments) {
        Some(f) => Err(Error::new(ErrorKind::Io, format!("cannot {what} {name}: {}", failure_advice(name, f)))),
        None => Ok(()),
    }
}

/// A snapshot's failed FIFREEZE of `name` at `mount_point`. EIO means the
/// filesystem shut down (before or during the freeze: a log it could not
/// write into a full host) and EROFS that an error made it read-only: named
/// as such, with the way back, instead of a bare errno.
pub(crate) fn snapshot_freeze_error(name: &str, mount_point: &Path, e: OsError) -> Error {
    let failure = match e.errno() {
        Some(libc::EIO) => Some(FsFailure::Shutdown),
        Some(libc::EROFS) => Some(FsFailure::Error),
        _ => None,
    };
    match failure {
        Some(f) => Error::new(
            ErrorKind::Io,
            format!("cannot snapshot {name}: {}; nothing was changed", failure_advice(name, f)),
        ),
        None => {
            let base = Error::os(format!("cannot freeze {name} at {}", mount_point.display()), e);
            Error::new(base.kind, format!("{}; nothing was changed, retry when the filesystem is idle", base.message))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(n: i32) -> OsError {
        OsError::sys("FIFREEZE", Some(Path::new("/p/mnt/a")), std::io::Error::from_raw_os_error(n))
    }

    #[test]
    fn a_freeze_that_meets_a_failed_filesystem_says_what_to_do() {
        let e = snapshot_freeze_error("a", Path::new("/p/mnt/a"), errno(libc::EIO));
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.message.contains("inside a was shut down by the kernel"), "{}", e.message);
        assert!(e.message.contains("`subvol umount a`, then `subvol mount a`"), "{}", e.message);
        assert!(!e.message.contains("os error"), "a bare errno: {}", e.message);
        let e = snapshot_freeze_error("a", Path::new("/p/mnt/a"), errno(libc::EROFS));
        assert!(e.message.contains("read-only after an error"), "{}", e.message);
        let e = snapshot_freeze_error("a", Path::new("/p/mnt/a"), errno(libc::EBUSY));
        assert_eq!(e.kind, ErrorKind::Busy);
        assert!(e.message.contains("retry when the filesystem is idle"), "{}", e.message);
    }
}
