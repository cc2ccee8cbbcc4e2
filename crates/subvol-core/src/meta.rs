//! Metadata records and their checksummed text encoding.
//!
//! Every metadata record is stored as one small text blob:
//!
//! ```text
//! subvol-object/1 blake3=<64 hex digits>\n
//! {"kind":"subvolume",...}
//! ```
//!
//! The first line names the record type and its format version and carries
//! the BLAKE3 hash of the JSON that follows, so a torn or edited record is
//! detected, while `getfattr`/`cat` and `jq` can still read it. The layout is a
//! public contract, documented in docs/FORMAT.md.

use crate::fstype::FsKind;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use uuid::Uuid;

/// Format version of object (image) metadata written by this build.
pub const OBJECT_FORMAT: u32 = 1;
/// Format version of pool metadata written by this build.
pub const POOL_FORMAT: u32 = 1;
/// Largest metadata blob accepted by the decoder (xattr values are limited
/// to 64 KiB by the kernel anyway).
pub const MAX_META_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("metadata is {0} bytes, more than the {1} allowed")]
    TooLarge(usize, usize),
    #[error("metadata has no header line")]
    NoHeader,
    #[error("metadata header {0:?} is not a subvol header")]
    BadHeader(String),
    #[error("metadata is of type {found:?}, expected {expected:?}")]
    WrongType { expected: String, found: String },
    #[error("metadata format version {0} is newer than this subvol understands; upgrade subvol")]
    UnknownVersion(u32),
    #[error("metadata checksum mismatch (stored {stored}, computed {computed}); the record is corrupt")]
    Checksum { stored: String, computed: String },
    #[error("metadata JSON is invalid: {0}")]
    Json(String),
}

/// Encodes `value` as a checksummed record of type `kind` at `version`.
pub fn encode<T: Serialize>(kind: &str, version: u32, value: &T) -> Vec<u8> {
    // Serializing plain structs with string keys cannot fail.
    let json = serde_json::to_vec_pretty(value).unwrap_or_default();
    let hash = blake3::hash(&json);
    let mut out = format!("subvol-{kind}/{version} blake3={}\n", hash.to_hex()).into_bytes();
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

/// Decodes a record written by [`encode`], checking type, version and hash.
pub fn decode<T: DeserializeOwned>(kind: &str, max_version: u32, bytes: &[u8]) -> Result<T, MetaError> {
    decode_at_most(kind, max_version, bytes, MAX_META_BYTES)
}

/// [`decode`] for records that may exceed an xattr's size (files of the
/// pool, such as scrub results), up to `max_bytes`.
pub fn decode_at_most<T: DeserializeOwned>(
    kind: &str,
    max_version: u32,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, MetaError> {
    if bytes.len() > max_bytes {
        return Err(MetaError::TooLarge(bytes.len(), max_bytes));
    }
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or(MetaError::NoHeader)?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| MetaError::BadHeader("<not utf-8>".into()))?;
    let body = &bytes[nl + 1..];
    let bad = || MetaError::BadHeader(header.chars().take(60).collect());
    let (tag, sum) = header.split_once(' ').ok_or_else(bad)?;
    let (ty, ver) = tag.strip_prefix("subvol-").and_then(|t| t.split_once('/')).ok_or_else(bad)?;
    if ty != kind {
        return Err(MetaError::WrongType { expected: kind.into(), found: ty.into() });
    }
    let version: u32 = ver.parse().map_err(|_| bad())?;
    if version == 0 {
        return Err(bad());
    }
    if version > max_version {
        return Err(MetaError::UnknownVersion(version));
    }
    let stored = sum.strip_prefix("blake3=").ok_or_else(bad)?;
    let json = body.strip_suffix(b"\n").unwrap_or(body);
    let computed = blake3::hash(json).to_hex().to_string();
    if stored != computed {
        return Err(MetaError::Checksum { stored: stored.chars().take(64).collect(), computed });
    }
    serde_json::from_slice(json).map_err(|e| MetaError::Json(e.to_string()))
}

/// What an image file in the pool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    Subvolume,
    Snapshot,
}

/// The object a snapshot or clone was taken from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Full name of the origin at the time (`NAME` or `NAME@SNAP`).
    pub name: String,
    pub guid: Uuid,
}

/// Metadata kept with every image (as the `user.subvol.meta` xattr).
/// The image's name is its file name and its virtual size is its file size,
/// so neither is duplicated here (a rename or a grow stays one atomic step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubvolumeMeta {
    pub kind: ObjectKind,
    pub guid: Uuid,
    pub fs: FsKind,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// User properties set with `subvol set`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Snapshot tags (`snapshot --tag`), used to select snapshots for pruning.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Hold tags: a held snapshot cannot be deleted or pruned.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub holds: BTreeSet<String>,
    /// A snapshot's image as it was published, so `pool check` can tell
    /// when it was written to afterwards (the immutable flag lifted by hand).
    /// Absent on subvolumes and on snapshots older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentStamp>,
    /// A subvolume that became a clone of a received snapshot: which one,
    /// and its image's stamp right after. While the stamp still matches,
    /// the subvolume is known to equal that snapshot without comparing
    /// their extent maps (O(1) instead of O(extents) per receive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed: Option<Followed>,
}

/// See [`SubvolumeMeta::followed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Followed {
    /// The guid of the snapshot the subvolume was made a clone of.
    pub snapshot_guid: Uuid,
    /// The subvolume image's size and modification time after the clone.
    pub stamp: ContentStamp,
}

impl Followed {
    /// Whether a subvolume with this record and the image stamp `now` still
    /// holds exactly the snapshot `guid`. Any write to the image (through
    /// its loop device, a trim, a resize) moves its modification time or
    /// size, so a match means no write since the clone.
    pub fn still_equals(&self, guid: Uuid, now: &ContentStamp) -> bool {
        self.snapshot_guid == guid && self.stamp == *now
    }
}

/// What any write to a file changes: its size or its modification time.
/// Taken after the last write to a snapshot's image and before its
/// metadata (an xattr, which changes only the inode's change time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentStamp {
    pub size_bytes: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
}

impl ContentStamp {
    /// How `now` differs from this record, in words, or `None` if it does not.
    pub fn differs(&self, now: &ContentStamp) -> Option<String> {
        if self.size_bytes != now.size_bytes {
            return Some(format!("its size changed from {} to {} bytes", self.size_bytes, now.size_bytes));
        }
        if self.mtime_ns != now.mtime_ns {
            return Some("it was written to (its modification time changed)".into());
        }
        None
    }
}

impl SubvolumeMeta {
    pub fn new_subvolume(fs: FsKind, created: DateTime<Utc>) -> Self {
        SubvolumeMeta {
            kind: ObjectKind::Subvolume,
            guid: Uuid::new_v4(),
            fs,
            created,
            origin: None,
            properties: BTreeMap::new(),
            tags: Vec::new(),
            holds: BTreeSet::new(),
            content: None,
            followed: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode("object", OBJECT_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        decode("object", OBJECT_FORMAT, bytes)
    }
}

/// Pool-wide metadata (the file `.subvol/pool.meta`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMeta {
    pub format: u32,
    pub uuid: Uuid,
    pub created: DateTime<Utc>,
    /// Whether FICLONE worked when the pool was made (re-probed by status).
    pub reflink: bool,
    /// The sparse file holding the pool's own XFS, for `--backing-image` pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_image: Option<PathBuf>,
    /// Where `mount` puts subvolumes without an explicit path
    /// (default: `<pool>/mnt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_base: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

impl PoolMeta {
    pub fn encode(&self) -> Vec<u8> {
        encode("pool", POOL_FORMAT, self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        decode("pool", POOL_FORMAT, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> SubvolumeMeta {
        let mut m = SubvolumeMeta::new_subvolume(FsKind::Xfs, DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        m.guid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        m.properties.insert("k".into(), "v".into());
        m
    }

    #[test]
    fn a_follow_record_holds_only_for_its_snapshot_and_an_unchanged_stamp() {
        let stamp = ContentStamp { size_bytes: 1 << 30, mtime_ns: 1_700_000_000_123_456_789 };
        let g = Uuid::from_u128(7);
        let f = Followed { snapshot_guid: g, stamp };
        assert!(f.still_equals(g, &stamp));
        assert!(!f.still_equals(Uuid::from_u128(8), &stamp), "another snapshot");
        assert!(!f.still_equals(g, &ContentStamp { mtime_ns: stamp.mtime_ns + 1, ..stamp }), "written since");
        assert!(!f.still_equals(g, &ContentStamp { size_bytes: stamp.size_bytes + 4096, ..stamp }), "resized");
        let mut m = sample();
        m.followed = Some(f);
        assert_eq!(SubvolumeMeta::decode(&m.encode()).unwrap(), m, "the record round-trips");
        assert!(!String::from_utf8_lossy(&sample().encode()).contains("followed"), "absent when unset");
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let bytes = m.encode();
        assert!(bytes.starts_with(b"subvol-object/1 blake3="));
        assert_eq!(SubvolumeMeta::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn refuses_other_types_and_versions() {
        let m = sample();
        let bytes = encode("object", 2, &m);
        assert_eq!(SubvolumeMeta::decode(&bytes), Err(MetaError::UnknownVersion(2)));
        let pool = encode("pool", 1, &m);
        assert!(matches!(SubvolumeMeta::decode(&pool), Err(MetaError::WrongType { .. })));
        assert!(SubvolumeMeta::decode(b"").is_err());
        assert!(SubvolumeMeta::decode(b"garbage\n{}").is_err());
    }

    proptest! {
        #[test]
        fn any_flipped_byte_is_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = sample().encode();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            // A flip in the trailing newline or whitespace-insensitive spot must
            // still never yield different metadata.
            match SubvolumeMeta::decode(&bytes) {
                Err(_) => {}
                Ok(m) => prop_assert_eq!(m, sample()),
            }
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = SubvolumeMeta::decode(&bytes);
            let _ = PoolMeta::decode(&bytes);
        }
    }
}
