//! Recovery that every command runs before it starts, so a crash never needs
//! a human: thaw filesystems a dead snapshot left frozen, remove debris of
//! interrupted commands, finish interrupted multi-step renames, and re-protect
//! snapshots whose immutable flag was cleared by an interrupted update.
//!
//! It runs only while holding the pool lock: the lock proves that no live
//! command owns the markers and temp files it finds.

use crate::error::{Error, Result};
use crate::layout::Layout;
use std::path::{Path, PathBuf};

/// What recovery did, for `pool check` to report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Recovered {
    pub thawed: Vec<String>,
    pub removed_tmp: Vec<String>,
    pub finished_renames: Vec<String>,
    pub protected: Vec<String>,
    /// Subvolumes a receive was applying a stream to when it died, put
    /// back (see `replication/receive/adopt.rs`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub finished_receives: Vec<String>,
    /// Such subvolumes that could not be put back, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsettled_receives: Vec<String>,
}

/// Runs every recovery step.
pub fn recover(layout: &Layout) -> Result<Recovered> {
    let thawed = thaw_frozen(layout);
    let mut removed_tmp = clean_tmp(layout)?;
    // Before stale receive images go: an adoption's image is one.
    let settled = crate::replication::finish_adoptions(layout);
    removed_tmp.extend(clean_receives(layout));
    Ok(Recovered {
        thawed,
        removed_tmp,
        finished_receives: settled.done,
        unsettled_receives: settled.failed,
        finished_renames: crate::rename::replay(layout)?,
        protected: {
            // Only after an interrupted metadata update or delete: the
            // marker says a snapshot may have been left without its flag.
            let marker = layout.unprotected_intent();
            // A repair killed half way: its snapshots' times and flags.
            let mut v = crate::scrub_repair::finish_interrupted(layout);
            if marker.exists() {
                v.extend(protect_snapshots(layout));
                let _ = std::fs::remove_file(marker);
            }
            v
        },
    })
}

/// Records that a snapshot is about to lose its immutable flag for a
/// moment, so recovery re-protects snapshots if we die before restoring it.
pub fn mark_unprotected(layout: &Layout) -> Result<()> {
    std::fs::write(layout.unprotected_intent(), b"").map_err(|e| Error::io("cannot record the snapshot update", e))
}

/// The snapshot is protected again (or gone): drop the record.
pub fn clear_unprotected(layout: &Layout) {
    let _ = std::fs::remove_file(layout.unprotected_intent());
}

/// Whether anything is left for recovery to do (cheap: a few directory
/// reads), so read-only commands can recover without taking the lock for
/// nothing.
pub fn needed(layout: &Layout) -> bool {
    let nonempty = |p: std::path::PathBuf| std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(false);
    let snapshot_frozen = std::fs::read_dir(layout.frozen_dir())
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("snapshot.")))
        .unwrap_or(false);
    let stale_receive = std::fs::read_dir(layout.receive_dir())
        .map(|d| {
            d.flatten().any(|e| {
                let p = e.path();
                p.extension().and_then(|x| x.to_str()) == Some("img") && !p.with_extension("state").exists()
            })
        })
        .unwrap_or(false);
    let repairing = layout.scrub_dir().join("repairing").exists();
    nonempty(layout.tmp_dir()) || snapshot_frozen || nonempty(layout.intent_dir()) || stale_receive || repairing
}

/// Thaws filesystems listed in frozen markers of dead snapshot commands.
pub fn thaw_frozen(layout: &Layout) -> Vec<String> {
    let mut thawed = Vec::new();
    let Ok(entries) = std::fs::read_dir(layout.frozen_dir()) else { return thawed };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("snapshot.") {
            continue;
        }
        if let Ok(bytes) = std::fs::read(entry.path()) {
            // SAFETY-free: the marker holds the mount point's bytes.
            let mp = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
            if subvol_os::freeze::fithaw(&mp).is_ok() {
                thawed.push(mp.display().to_string());
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    thawed
}

/// Removes debris of interrupted commands; returns what was removed.
pub fn clean_tmp(layout: &Layout) -> Result<Vec<String>> {
    let dir = layout.tmp_dir();
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let res = if is_dir {
            // Temporary mount points: only ever empty directories.
            let _ = subvol_os::mount::umount_lazy(&path);
            std::fs::remove_dir(&path)
        } else {
            if let Ok(f) = std::fs::File::open(&path) {
                if subvol_os::flags::is_immutable(&f).unwrap_or(false) {
                    let _ = subvol_os::flags::set_immutable(&f, false);
                }
            }
            std::fs::remove_file(&path)
        };
        if res.is_ok() {
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    if !removed.is_empty() {
        let _ = subvol_os::fsync::fsync_dir(&dir);
    }
    Ok(removed)
}

/// Sets the immutable flag on every snapshot image that lacks it.
pub fn protect_snapshots(layout: &Layout) -> Vec<String> {
    let mut fixed = Vec::new();
    let Ok(subs) = std::fs::read_dir(layout.snapshots_dir()) else { return fixed };
    for sub in subs.flatten() {
        let Ok(snaps) = std::fs::read_dir(sub.path()) else { continue };
        for snap in snaps.flatten() {
            let Ok(f) = crate::subvolume::open_image(&snap.path(), false) else { continue };
            if !subvol_os::flags::is_immutable(&f).unwrap_or(true) && subvol_os::flags::set_immutable(&f, true).is_ok()
            {
                fixed.push(snap.path().display().to_string());
            }
        }
    }
    fixed
}

/// The name of a subvolume a receive is running into (its partial image is
/// locked by the receiving process), if any.
pub fn running_receive(layout: &Layout) -> Option<String> {
    let entries = std::fs::read_dir(layout.receive_dir()).ok()?;
    entries.flatten().find_map(|entry| {
        let path = entry.path();
        let name = crate::layout::name_of_image(Path::new(&entry.file_name()))?;
        let f = std::fs::File::open(&path).ok()?;
        f.try_lock().is_err().then_some(name)
    })
}

/// Removes partial receives that are neither running (their image is not
/// locked) nor resumable (no state record).
pub fn clean_receives(layout: &Layout) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(layout.receive_dir()) else { return removed };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("img") || path.with_extension("state").exists() {
            continue;
        }
        // NAME's own image under a receive that recovery could not settle:
        // it may be all that is left of NAME; `pool check` reports it.
        if path.file_stem().is_some_and(|n| layout.adopt_intent(&n.to_string_lossy()).exists()) {
            continue;
        }
        let Ok(f) = std::fs::File::open(&path) else { continue };
        if f.try_lock().is_ok() && std::fs::remove_file(&path).is_ok() {
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    removed
}
