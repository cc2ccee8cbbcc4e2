//! Renaming a subvolume together with its snapshots: two renames (the
//! snapshot directory, then the image), made crash-safe by an intent record
//! that recovery rolls forward.

use crate::error::{Error, Result};
use crate::layout::Layout;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Serialize, Deserialize)]
struct RenameIntent {
    old: String,
    new: String,
}

fn move_if_needed(src: &Path, dst: &Path) -> Result<()> {
    if src.exists() && !dst.exists() {
        subvol_os::fsync::rename_noreplace(src, dst).map_err(|e| Error::os("cannot rename", e))?;
    }
    Ok(())
}

fn apply(layout: &Layout, i: &RenameIntent) -> Result<()> {
    move_if_needed(&layout.snapshot_dir(&i.old), &layout.snapshot_dir(&i.new))?;
    subvol_os::fsync::fsync_dir(&layout.snapshots_dir()).map_err(|e| Error::os("cannot make the change durable", e))?;
    subvol_os::crash::point("rename-between-moves");
    move_if_needed(&layout.subvolume_image(&i.old), &layout.subvolume_image(&i.new))?;
    subvol_os::fsync::fsync_dir(&layout.subvolumes_dir())
        .map_err(|e| Error::os("cannot make the change durable", e))?;
    Ok(())
}

/// Renames `old` (image and snapshots) to `new`. The caller holds the lock
/// and has checked that `new` is free and nothing is mounted.
pub fn rename(layout: &Layout, old: &str, new: &str) -> Result<()> {
    let intent = RenameIntent { old: old.into(), new: new.into() };
    let path = layout.rename_intent();
    std::fs::create_dir_all(layout.intent_dir()).map_err(|e| Error::io("cannot create the intent dir", e))?;
    let bytes = subvol_core::meta::encode("intent", 1, &intent);
    subvol_os::fsync::write_atomic(&path, &bytes).map_err(|e| Error::os("cannot record the rename", e))?;
    subvol_os::crash::point("rename-after-intent");
    apply(layout, &intent)?;
    std::fs::remove_file(&path).map_err(|e| Error::io("cannot clear the rename record", e))?;
    Ok(())
}

/// Finishes a rename that a crash interrupted.
pub fn replay(layout: &Layout) -> Result<Vec<String>> {
    let path = layout.rename_intent();
    let Ok(bytes) = std::fs::read(&path) else { return Ok(Vec::new()) };
    let done = match subvol_core::meta::decode::<RenameIntent>("intent", 1, &bytes) {
        Ok(i) => {
            apply(layout, &i)?;
            vec![format!("{} -> {}", i.old, i.new)]
        }
        // A torn record means the rename had not started: nothing to do.
        Err(_) => Vec::new(),
    };
    let _ = std::fs::remove_file(&path);
    Ok(done)
}
