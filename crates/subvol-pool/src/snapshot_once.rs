//! Snapshots whose name is unique in the whole pool. A front end that names
//! snapshots itself (the CSI driver, from its caller's names) must find a
//! name again whichever subvolume it was taken of: a second request for the
//! same name from another subvolume is a different snapshot, and refused.

use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use crate::snapshot::{Progress, SnapshotReport};
use subvol_core::ObjectName;

impl Pool {
    /// Snapshots subvolume `name` as `name@snap` unless `snap` names a
    /// snapshot of another subvolume (AlreadyExists). A retry that finds
    /// `name@snap` taken from this subvolume succeeds without change.
    pub fn snapshot_unique(&self, name: &str, snap: &str, progress: Progress<'_>) -> Result<SnapshotReport> {
        let obj = ObjectName::parse_snapshot(&format!("{name}@{snap}"))?;
        let (name, snap) = (obj.subvolume, obj.snapshot.unwrap_or_default());
        let _lock = self.lock()?;
        let owners = std::fs::read_dir(self.layout.snapshots_dir())
            .map_err(|e| Error::io("cannot read the snapshots dir", e))?
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|sub| *sub != name && std::fs::symlink_metadata(self.layout.snapshot_image(sub, &snap)).is_ok());
        if let Some(other) = owners.into_iter().next() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot name {snap} is taken by {other}@{snap}; choose another name"),
            ));
        }
        if let Some(report) = self.taken_before(&name, &snap)? {
            return Ok(report);
        }
        let mut reports = self.snapshot_locked(&[(name, snap)], &[], progress)?;
        reports.pop().ok_or_else(|| Error::new(ErrorKind::Io, "the snapshot reported nothing"))
    }
}
