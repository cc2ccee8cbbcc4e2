//! The extent-map cache of snapshot images (`.subvol/cache/`, docs/FORMAT.md).
//!
//! An entry belongs to one image file, not to a guid. A guid names a
//! snapshot's content and travels with it between pools; entries keyed by
//! guid alone (cache naming 1) let two images with one guid (the same
//! stream received under two names) share an entry, and `list` gave one
//! image the other's extents. The key adds the inode number and
//! generation, which no other file on the host has or will have: an entry
//! never serves another file, nor a file that later took the same inode
//! number.
//!
//! An entry is only read or written for a *sealed* image: a snapshot whose
//! size and modification time still equal the content stamp recorded when
//! it was taken or received. Snapshots are immutable, but root can lift the
//! flag and write; such an image has moved blocks, and a stale map would
//! make a send leave out what changed. A stamp that no longer matches (or
//! an image from before stamps) is mapped afresh every time.

use crate::error::{Error, Result};
use crate::pool::Pool;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::PathBuf;
use subvol_core::{ExtentMap, ObjectKind, SubvolumeMeta};

/// What names the cache entry of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    guid: uuid::Uuid,
    ino: u64,
    generation: u32,
}

impl CacheKey {
    /// The key of an open image. `None` on a host without inode
    /// generations (not XFS, btrfs or ext4): its images are mapped each time.
    pub(crate) fn of(file: &File, guid: uuid::Uuid) -> Option<CacheKey> {
        let ino = file.metadata().ok()?.ino();
        let generation = subvol_os::inode::generation(file).ok()?;
        Some(CacheKey { guid, ino, generation })
    }

    /// `GUID-INO-GEN`: the guid as 32 lowercase hex digits, the inode
    /// number and generation in decimal. Manifests use it too.
    pub(crate) fn stem(&self) -> String {
        format!("{}-{}-{}", self.guid.simple(), self.ino, self.generation)
    }

    /// `GUID-INO-GEN.extents`.
    pub(crate) fn file_name(&self) -> String {
        format!("{}.extents", self.stem())
    }
}

/// The cache directory of one pool.
pub(crate) struct ExtentCache {
    dir: PathBuf,
}

impl ExtentCache {
    pub(crate) fn new(dir: PathBuf) -> ExtentCache {
        ExtentCache { dir }
    }

    /// The cached map, if there is one and it passes its checksum.
    pub(crate) fn read(&self, key: &CacheKey) -> Option<ExtentMap> {
        ExtentMap::from_bytes(&std::fs::read(self.dir.join(key.file_name())).ok()?)
    }

    /// Forgets an image's map (its blocks moved: a repair wrote into it).
    pub(crate) fn remove(&self, key: &CacheKey) {
        let _ = std::fs::remove_file(self.dir.join(key.file_name()));
    }

    /// Stores a map, best effort: a missing or damaged entry is only
    /// mapped again. No fsync: the entry checks its own checksum.
    pub(crate) fn write(&self, key: &CacheKey, map: &ExtentMap) {
        let _ = std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&self.dir);
        let _ = subvol_os::fsync::write_replace_unsynced(&self.dir.join(key.file_name()), &map.to_bytes());
    }
}

/// Whether `file` is a snapshot image unchanged since its content stamp
/// was recorded (see the module doc).
pub(crate) fn sealed(file: &File, meta: &SubvolumeMeta) -> bool {
    meta.kind == ObjectKind::Snapshot
        && meta.content.is_some_and(|c| crate::snapshot::content_stamp(file).is_ok_and(|now| now == c))
}

impl Pool {
    /// The extent map of a snapshot image for a send or a receive's check:
    /// the cached one while the image is sealed and the host is XFS, else
    /// from FIEMAP now (cached when sealed). A snapshot is then mapped once
    /// in its life however often it is sent. Only on XFS: no tool moves an
    /// immutable file's extents there (xfs_fsr skips it, extent swaps
    /// refuse it), while on btrfs `filesystem defragment` rewrites an
    /// immutable file's extents without touching its stamp, and a stale
    /// map could make a send leave out a change.
    pub(crate) fn snapshot_map(&self, file: &File, meta: &SubvolumeMeta) -> Result<ExtentMap> {
        let map_now = |f: &File| subvol_os::fiemap::fiemap(f, true).map_err(|e| Error::os("cannot map an image", e));
        if self.host_fs().ok() != Some(subvol_core::HostFs::Xfs) {
            return map_now(file);
        }
        self.snapshot_map_with(file, meta, &map_now)
    }

    /// The extent map of a snapshot image for the space figures: from the
    /// cache while the image is sealed, on any host (a stale map there
    /// only skews figures), else with `map_now` (then cached).
    pub(crate) fn snapshot_map_with(
        &self,
        file: &File,
        meta: &SubvolumeMeta,
        map_now: &dyn Fn(&File) -> Result<ExtentMap>,
    ) -> Result<ExtentMap> {
        let key = if sealed(file, meta) { CacheKey::of(file, meta.guid) } else { None };
        let cache = ExtentCache::new(self.layout.cache_dir());
        if let Some(m) = key.as_ref().and_then(|k| cache.read(k)) {
            return Ok(m);
        }
        let m = map_now(file)?;
        self.remember_map(file, meta, &m);
        Ok(m)
    }

    /// Caches `map`, just taken of `file` by FIEMAP, if the image is (still)
    /// sealed. For callers that must map afresh anyway (the manifest
    /// builder) so that a later send finds the map.
    pub(crate) fn remember_map(&self, file: &File, meta: &SubvolumeMeta, map: &ExtentMap) {
        if !sealed(file, meta) {
            return;
        }
        if let Some(key) = CacheKey::of(file, meta.guid) {
            ExtentCache::new(self.layout.cache_dir()).write(&key, map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subvol_core::extent::{Extent, ExtentFlags};

    fn key_of(p: &std::path::Path, guid: uuid::Uuid) -> CacheKey {
        CacheKey::of(&File::open(p).unwrap(), guid).expect("the test dir's filesystem has inode generations")
    }

    #[test]
    fn two_files_with_one_guid_have_two_keys() {
        let dir = tempfile::tempdir().unwrap();
        let guid = uuid::Uuid::new_v4();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"a").unwrap();
        assert_ne!(key_of(&a, guid), key_of(&b, guid));
        assert_ne!(key_of(&a, guid).file_name(), key_of(&b, guid).file_name());
    }

    #[test]
    fn a_key_follows_its_file_through_renames_and_metadata_updates() {
        let dir = tempfile::tempdir().unwrap();
        let guid = uuid::Uuid::new_v4();
        let p = dir.path().join("s.img");
        std::fs::write(&p, b"x").unwrap();
        let before = key_of(&p, guid);
        let q = dir.path().join("t.img");
        std::fs::rename(&p, &q).unwrap();
        // What a hold or release does to a snapshot image.
        let meta = subvol_core::SubvolumeMeta::new_subvolume(subvol_core::FsKind::Raw, chrono::Utc::now());
        crate::snapshot::write_meta(&File::options().write(true).open(&q).unwrap(), &meta).unwrap();
        assert_eq!(key_of(&q, guid), before);
        assert_ne!(key_of(&q, uuid::Uuid::new_v4()), before, "the guid is part of the key");
    }

    #[test]
    fn a_replaced_file_never_gets_the_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let guid = uuid::Uuid::new_v4();
        let p = dir.path().join("s.img");
        let mut seen = std::collections::HashSet::new();
        // Delete and recreate: the inode number is often reused at once,
        // the generation is not.
        for _ in 0..20 {
            std::fs::write(&p, b"x").unwrap();
            assert!(seen.insert(key_of(&p, guid)), "a new file got a key already used");
            std::fs::remove_file(&p).unwrap();
        }
    }

    #[test]
    fn names_are_versioned_apart_from_guid_only_names() {
        let k = CacheKey { guid: uuid::Uuid::from_u128(0xab), ino: 131, generation: 7 };
        assert_eq!(k.file_name(), "000000000000000000000000000000ab-131-7.extents");
        assert_ne!(k.file_name(), format!("{}.extents", k.guid.simple()));
    }

    #[test]
    fn entries_round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ExtentCache::new(dir.path().join("cache"));
        let k = CacheKey { guid: uuid::Uuid::new_v4(), ino: 5, generation: 9 };
        assert_eq!(cache.read(&k), None);
        let extent = Extent { logical: 0, physical: 4096, length: 8192, flags: ExtentFlags::default() };
        let map = ExtentMap::new(vec![extent]).unwrap();
        cache.write(&k, &map);
        assert_eq!(cache.read(&k), Some(map));
        let other = CacheKey { ino: 6, ..k };
        assert_eq!(cache.read(&other), None, "another inode must not see the entry");
        let path = dir.path().join("cache").join(k.file_name());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(cache.read(&k), None);
    }
}
