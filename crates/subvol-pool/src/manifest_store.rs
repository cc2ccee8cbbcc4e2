//! Where manifests live: `.subvol/manifests/GUID-INO-GEN.manifest`, one per
//! snapshot image, named by the same key as its extent-map cache entry
//! (docs/FORMAT.md, "Manifests").
//!
//! Not in the image's xattrs: a 4 GiB image's manifest is 512 KiB, past
//! what an xattr holds (64 KiB on XFS, a block on ext4), and writing one
//! would lift the snapshot's immutable flag; a pool file is written beside
//! the snapshot, in the background, without touching it. Unlike a cache
//! entry, a manifest is the only record of what the snapshot held, so it
//! is written durably (temp file, fsync, rename, directory fsync): a crash
//! leaves no manifest or a whole one, never a torn one.

use crate::error::{Error, Result};
use crate::extent_cache::CacheKey;
use std::path::PathBuf;
use subvol_core::manifest::Manifest;

/// What the store holds for one image.
#[derive(Debug)]
pub(crate) enum Stored {
    Missing,
    /// A file that fails its checks, and why.
    Damaged(String),
    /// A sound manifest of this snapshot for an image of another size: the
    /// image changed size after its manifest was built.
    OtherSize(Manifest),
    Found(Manifest),
}

/// The manifests directory of one pool.
pub(crate) struct ManifestStore {
    dir: PathBuf,
}

/// File name of the manifest of the image with `key`.
pub(crate) fn file_name(key: &CacheKey) -> String {
    format!("{}.manifest", key.stem())
}

impl ManifestStore {
    pub(crate) fn new(dir: PathBuf) -> ManifestStore {
        ManifestStore { dir }
    }

    pub(crate) fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(file_name(key))
    }

    /// The manifest of an image whose record has `guid` and whose size is
    /// `size`; one that decodes but describes another snapshot is damaged.
    pub(crate) fn read(&self, key: &CacheKey, guid: uuid::Uuid, size: u64) -> Stored {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Stored::Missing,
            Err(e) => return Stored::Damaged(format!("cannot read {}: {e}", path.display())),
        };
        match Manifest::from_bytes(&bytes) {
            Err(e) => Stored::Damaged(format!("{}: {e}", path.display())),
            Ok(m) if m.guid != guid => {
                Stored::Damaged(format!("{} describes snapshot {}, not {guid}", path.display(), m.guid))
            }
            Ok(m) if m.geometry().image_size() != size => Stored::OtherSize(m),
            Ok(m) => Stored::Found(m),
        }
    }

    /// Stores a manifest durably, replacing any earlier one.
    pub(crate) fn write(&self, key: &CacheKey, manifest: &Manifest) -> Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        // Not recursive: a builder still running while `pool destroy`
        // removes the pool must not bring its metadata directory back.
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("cannot create {}", self.dir.display()), e)),
        }
        subvol_os::fsync::write_atomic(&self.path(key), &manifest.to_bytes())
            .map_err(|e| Error::os("cannot write the manifest", e))
    }

    /// Removes the manifest of a deleted snapshot (best effort: a leftover
    /// is reported by `pool check`).
    pub(crate) fn remove(&self, key: &CacheKey) {
        let _ = std::fs::remove_file(self.path(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subvol_core::manifest::{BuiltBy, Entry, Geometry, Provenance};

    #[test]
    fn a_manifest_is_found_only_for_its_snapshot_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = ManifestStore::new(dir.path().join("m"));
        let img = dir.path().join("s.img");
        std::fs::write(&img, vec![7u8; 8192]).unwrap();
        let guid = uuid::Uuid::new_v4();
        let key = CacheKey::of(&std::fs::File::open(&img).unwrap(), guid).expect("inode generations");
        assert!(matches!(store.read(&key, guid, 8192), Stored::Missing));
        let prov = Provenance {
            built_by: BuiltBy::Snapshot,
            base: None,
            built_at: 0,
            bytes_read: 8192,
            chunks_hashed: 2,
            chunks_copied: 0,
            build_us: 1,
        };
        let m = Manifest::from_entries(
            Geometry::new(4096, 8192).unwrap(),
            guid,
            prov,
            [Entry::of(&[7; 4096]), Entry::of(&[7; 4096])],
        );
        store.write(&key, &m).unwrap();
        assert!(matches!(store.read(&key, guid, 8192), Stored::Found(f) if f == m));
        assert!(matches!(store.read(&key, uuid::Uuid::new_v4(), 8192), Stored::Damaged(_)));
        assert!(matches!(store.read(&key, guid, 4096), Stored::OtherSize(_)));
        let mut bytes = std::fs::read(store.path(&key)).unwrap();
        bytes[50] ^= 4;
        std::fs::write(store.path(&key), bytes).unwrap();
        assert!(matches!(store.read(&key, guid, 8192), Stored::Damaged(w) if w.contains("checksum")));
        store.remove(&key);
        assert!(matches!(store.read(&key, guid, 8192), Stored::Missing));
    }
}
