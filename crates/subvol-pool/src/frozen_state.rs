//! Commands meet a subvolume the guard holds frozen, or a host too full to
//! freeze safely, before they change anything: a resize or snapshot would
//! otherwise block in the kernel behind the freeze (and half-apply), or make
//! the inner filesystem write its log into a full host and shut down.

use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use subvol_core::format_size;

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
