//! Where things live inside a pool directory (docs/FORMAT.md is the public
//! description of this layout).

use std::path::{Path, PathBuf};

/// Directory of pool-private files.
pub const META_DIR: &str = ".subvol";
/// The pool metadata record.
pub const POOL_META: &str = ".subvol/pool.meta";
/// The file locked (flock) by every mutating command.
pub const LOCK_FILE: &str = ".subvol/lock";
/// In-progress images; anything here when no command runs is debris.
pub const TMP_DIR: &str = ".subvol/tmp";
/// Subvolume images, `NAME.img`.
pub const SUBVOLUMES_DIR: &str = "subvolumes";
/// Snapshot images, `NAME/SNAP.img`.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Markers of filesystems frozen by a snapshot in progress.
pub const FROZEN_DIR: &str = ".subvol/frozen";
/// Intent records of multi-step operations, replayed by recovery.
pub const INTENT_DIR: &str = ".subvol/intent";
/// Receives in progress (and resumable partial receives).
pub const RECEIVE_DIR: &str = ".subvol/receive";
/// Extent maps of snapshot images (see extent_cache).
pub const CACHE_DIR: &str = ".subvol/cache";
/// Where `sync` sent each subvolume (see sync::targets).
pub const SYNC_DIR: &str = ".subvol/sync";
/// Manifests of snapshot images (see manifest_store).
pub const MANIFESTS_DIR: &str = ".subvol/manifests";
/// What scrubs keep: their locks, an interrupted scrub's progress, results.
pub const SCRUB_DIR: &str = ".subvol/scrub";
/// Default parent of mount points.
pub const MOUNT_DIR: &str = "mnt";
/// Extension of every image file.
pub const IMAGE_EXT: &str = "img";
/// The xattr holding an image's metadata.
pub const META_XATTR: &str = "user.subvol.meta";

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Layout { root }
    }

    pub fn pool_meta(&self) -> PathBuf {
        self.root.join(POOL_META)
    }

    pub fn meta_dir(&self) -> PathBuf {
        self.root.join(META_DIR)
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// Written by `pool destroy` before it removes the pool record: a
    /// directory with it and without a record is a destroy to finish.
    pub fn destroying_marker(&self) -> PathBuf {
        self.root.join(META_DIR).join("destroying")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join(TMP_DIR)
    }

    pub fn subvolumes_dir(&self) -> PathBuf {
        self.root.join(SUBVOLUMES_DIR)
    }

    pub fn subvolume_image(&self, name: &str) -> PathBuf {
        self.subvolumes_dir().join(format!("{name}.{IMAGE_EXT}"))
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join(SNAPSHOTS_DIR)
    }

    /// The directory of one subvolume's snapshots.
    pub fn snapshot_dir(&self, name: &str) -> PathBuf {
        self.snapshots_dir().join(name)
    }

    pub fn snapshot_image(&self, name: &str, snap: &str) -> PathBuf {
        self.snapshot_dir(name).join(format!("{snap}.{IMAGE_EXT}"))
    }

    /// Held (flock) by a running guard; holds its pid.
    pub fn guard_lock_file(&self) -> PathBuf {
        self.meta_dir().join("guard.lock")
    }

    pub fn frozen_dir(&self) -> PathBuf {
        self.root.join(FROZEN_DIR)
    }

    pub fn intent_dir(&self) -> PathBuf {
        self.root.join(INTENT_DIR)
    }

    /// "This snapshot command froze NAME's filesystem" (recovery thaws it).
    pub fn snapshot_frozen_marker(&self, name: &str) -> PathBuf {
        self.frozen_dir().join(format!("snapshot.{name}"))
    }

    /// "The guard froze NAME" (a `guard` record: why, when, how hard).
    pub fn guard_frozen_marker(&self, name: &str) -> PathBuf {
        self.frozen_dir().join(format!("guard.{name}"))
    }

    /// A multi-step rename to roll forward.
    pub fn rename_intent(&self) -> PathBuf {
        self.intent_dir().join("rename")
    }

    /// "A receive applies a stream to NAME's own image" (see
    /// `replication/receive/adopt.rs`).
    pub fn adopt_intent(&self, name: &str) -> PathBuf {
        self.intent_dir().join(format!("adopt.{name}"))
    }

    /// "A snapshot may briefly lack its immutable flag" (recovery re-sets it).
    pub fn unprotected_intent(&self) -> PathBuf {
        self.intent_dir().join("unprotected")
    }

    /// A receive into NAME: its partial image and its resumable state.
    pub fn partial_receive(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.receive_dir();
        (dir.join(format!("{name}.{IMAGE_EXT}")), dir.join(format!("{name}.state")))
    }

    pub fn receive_dir(&self) -> PathBuf {
        self.root.join(RECEIVE_DIR)
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join(CACHE_DIR)
    }

    pub fn sync_dir(&self) -> PathBuf {
        self.root.join(SYNC_DIR)
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.root.join(MANIFESTS_DIR)
    }

    pub fn scrub_dir(&self) -> PathBuf {
        self.root.join(SCRUB_DIR)
    }

    /// Held (flock, with the holder's pid) by a running scrub.
    pub fn scrub_lock(&self) -> PathBuf {
        self.scrub_dir().join("lock")
    }

    /// Held by whoever builds manifests (after a snapshot, or a scrub), so
    /// two builders never hash the same snapshot at once.
    pub fn build_lock(&self) -> PathBuf {
        self.scrub_dir().join("build.lock")
    }

    /// Where an interrupted scrub stopped (a `scrub-progress` record).
    pub fn scrub_progress(&self) -> PathBuf {
        self.scrub_dir().join("progress")
    }

    /// What scrubs found (a `scrub-results` record).
    pub fn scrub_results(&self) -> PathBuf {
        self.scrub_dir().join("results")
    }

    pub fn default_mount_base(&self) -> PathBuf {
        self.root.join(MOUNT_DIR)
    }

    /// The object an image path of this layout stood for: `NAME` for
    /// `subvolumes/NAME.img`, `NAME@SNAP` for `snapshots/NAME/SNAP.img`.
    /// Used on paths the kernel reports for loop devices, whose files may be
    /// gone: any `.img` file in those places counts, whether or not its name
    /// would pass the name rules today (so callers must escape it when they
    /// print it). A path anywhere else (another pool, even one nested in a
    /// subvolume mounted under this pool) is not this pool's.
    pub fn object_of_image(&self, path: &Path) -> Option<String> {
        let stem = path.file_name()?.to_str()?.strip_suffix(&format!(".{IMAGE_EXT}"))?;
        let dir = path.parent()?;
        if stem.is_empty() {
            return None;
        }
        if dir == self.subvolumes_dir() {
            return Some(stem.to_string());
        }
        if dir.parent()? == self.snapshots_dir() {
            return Some(format!("{}@{stem}", dir.file_name()?.to_str()?));
        }
        None
    }

    /// A fresh temp path in the pool's tmp dir, for an image being built.
    pub fn tmp_image(&self, purpose: &str, name: &str) -> PathBuf {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        self.tmp_dir().join(format!("{purpose}.{name}.{}.{IMAGE_EXT}", &nonce[..12]))
    }
}

/// The subvolume name of an image file name (`NAME.img` → `NAME`).
pub fn name_of_image(file_name: &Path) -> Option<String> {
    let s = file_name.to_str()?;
    let stem = s.strip_suffix(&format!(".{IMAGE_EXT}"))?;
    subvol_core::name::validate_part(stem).ok()?;
    Some(stem.to_string())
}

#[cfg(test)]
mod tests {
    use super::Layout;
    use std::path::{Path, PathBuf};

    #[test]
    fn object_of_image_claims_only_this_layout() {
        let l = Layout::new(PathBuf::from("/p"));
        let of = |p: &str| l.object_of_image(Path::new(p));
        assert_eq!(of("/p/subvolumes/web.img").as_deref(), Some("web"));
        assert_eq!(of("/p/snapshots/web/s1.img").as_deref(), Some("web@s1"));
        assert_eq!(of("/p/subvolumes/we\nb.img").as_deref(), Some("we\nb"));
        assert_eq!(of("/p/subvolumes/web.raw"), None);
        assert_eq!(of("/p/subvolumes/.img"), None);
        assert_eq!(of("/p/subvolumes/x/web.img"), None);
        assert_eq!(of("/p/.subvol/tmp/create.web.0123.img"), None);
        assert_eq!(of("/p/mnt/web/pool/subvolumes/db.img"), None);
        assert_eq!(of("/q/subvolumes/web.img"), None);
        assert_eq!(of("/p/snapshots/s1.img"), None);
    }
}
