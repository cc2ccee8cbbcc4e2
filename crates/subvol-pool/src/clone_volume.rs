//! A writable copy of a subvolume as it is now (CSI's "volume from a
//! volume"): a snapshot (so a mounted origin is copied at one frozen
//! instant), a clone of it, and the snapshot removed again, all under one
//! hold of the pool lock.
//!
//! The snapshot is `SRC@clone-NEW`: named after the copy, so a retry after
//! a crash knows it. A crash before the clone leaves it behind; the retry
//! takes it anew (the copy is of SRC at the retry). A crash after the clone
//! leaves NEW, whose origin names that snapshot: the retry removes the
//! snapshot and reports the copy as already made.

use crate::error::{Error, ErrorKind, Result};
use crate::outcome::Outcome;
use crate::pool::Pool;
use crate::snapshot::Progress;
use crate::subvolume::SubvolumeInfo;
use subvol_core::ObjectName;

/// The snapshot a copy into `new` passes through.
fn passage(src: &str, new: &str) -> Result<ObjectName> {
    let snap = format!("clone-{new}");
    subvol_core::name::validate_part(&snap)
        .map_err(|e| Error::invalid(format!("{new} is too long a name for a copy of {src} ({e})")))?;
    Ok(ObjectName { subvolume: src.to_string(), snapshot: Some(snap) })
}

impl Pool {
    /// Makes subvolume `new` a copy of subvolume `src` as it is now. A
    /// retry that finds `new` made this way succeeds without change; a
    /// `new` made otherwise is refused (AlreadyExists).
    pub fn clone_subvolume(&self, src: &str, new: &str, progress: Progress<'_>) -> Result<(SubvolumeInfo, Outcome)> {
        let src = ObjectName::parse_subvolume(src)?.subvolume;
        let new = ObjectName::parse_subvolume(new)?.subvolume;
        let via = passage(&src, &new)?;
        let _lock = self.lock()?;
        let via_image = self.layout.snapshot_image(&src, via.snapshot.as_deref().unwrap_or_default());
        if std::fs::symlink_metadata(self.layout.subvolume_image(&new)).is_ok() {
            let have = self.info(&new)?;
            if have.origin.as_ref().map(|o| o.name.as_str()) != Some(&via.to_string()) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("subvolume {new:?} already exists (not a copy of {src}); pick another name"),
                ));
            }
            if std::fs::symlink_metadata(&via_image).is_ok() {
                self.delete_snapshot_locked(&via, false)?;
            }
            return Ok((have, Outcome::AlreadyDone));
        }
        self.existing_image(&src)?;
        if std::fs::symlink_metadata(&via_image).is_ok() {
            self.delete_snapshot_locked(&via, false)?;
        }
        let snap = via.snapshot.clone().unwrap_or_default();
        self.snapshot_locked(&[(src.clone(), snap)], &[], progress)?;
        let cloned = self.clone_snapshot_locked(&via, &new, progress);
        let removed = self.delete_snapshot_locked(&via, false);
        let (info, _) = cloned?;
        removed?;
        Ok((info, Outcome::Done))
    }
}
