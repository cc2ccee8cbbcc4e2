//! The line a receive must not cross. A receive writes its image on the
//! host directly, where the guard cannot freeze it, so it measures the host
//! itself: it is refused up front below the floor and stops, like a full
//! disk (exit 6), when its own writes bring the host down to it.

use crate::error::{Error, ErrorKind, Result};
use crate::io_sizes::SPACE_CHECK_BYTES;
use crate::pool::Pool;
use std::path::PathBuf;
use subvol_core::size::format_size;
use subvol_core::space::receive_floor;

/// The host's free space must stay above `floor_bytes` while a receive runs.
pub(super) struct SpaceFloor {
    root: PathBuf,
    floor_bytes: u64,
    outstanding_bytes: u64,
    since_check: u64,
    /// Names the receive in the error that stops it ("receive into web stopped").
    stopped: String,
}

impl Pool {
    /// Measures the floor for a receive into `n` and refuses at once if the
    /// host is already below it. What guaranteed subvolumes are owed is
    /// only computed (from extent maps) when the pool has one.
    pub(super) fn receive_space_floor(&self, n: &str) -> Result<SpaceFloor> {
        let subs = self.list()?;
        let outstanding_bytes = if subs.iter().any(|s| s.guarantee) { self.space()?.outstanding_bytes } else { 0 };
        let st =
            subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("cannot read the host's free space", e))?;
        let floor = SpaceFloor {
            root: self.root().to_path_buf(),
            floor_bytes: receive_floor(
                outstanding_bytes,
                crate::space::admission_margin(st.total_bytes, &subs),
                st.total_bytes,
            ),
            outstanding_bytes,
            since_check: 0,
            stopped: format!("receive into {n} stopped"),
        };
        floor.check_free(st.free_bytes, &format!("receive into {n} refused"))?;
        Ok(floor)
    }
}

impl SpaceFloor {
    /// A floor of nothing on the filesystem holding `root`: tests apply
    /// records without a pool.
    #[cfg(test)]
    pub(super) fn none(root: &std::path::Path) -> SpaceFloor {
        SpaceFloor {
            root: root.to_path_buf(),
            floor_bytes: 0,
            outstanding_bytes: 0,
            since_check: 0,
            stopped: "test stopped".into(),
        }
    }

    /// Counts `bytes` just written and, every SPACE_CHECK_BYTES, checks
    /// the host.
    pub(super) fn wrote(&mut self, bytes: u64) -> Result<()> {
        self.since_check += bytes;
        if self.since_check < SPACE_CHECK_BYTES {
            return Ok(());
        }
        self.since_check = 0;
        let st =
            subvol_os::statfs::statfs(&self.root).map_err(|e| Error::os("cannot read the host's free space", e))?;
        self.check_free(st.free_bytes, &self.stopped)
    }

    fn check_free(&self, free_bytes: u64, what: &str) -> Result<()> {
        if free_bytes > self.floor_bytes {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::NoSpace,
            format!(
                "{what}: host free {} is at the floor {} (guaranteed {} + margin and guard headroom {}); free space on the host (delete snapshots or grow the pool)",
                format_size(free_bytes),
                format_size(self.floor_bytes),
                format_size(self.outstanding_bytes),
                format_size(self.floor_bytes - self.outstanding_bytes)
            ),
        ))
    }
}
