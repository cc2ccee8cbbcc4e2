//! Filesystem kinds: what goes inside a subvolume image (`FsKind`) and what
//! the pool lives on (`HostFs`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The filesystem made inside a subvolume image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Xfs,
    Ext4,
    /// No filesystem: a raw block image, e.g. for a VM disk.
    Raw,
}

impl FsKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Xfs => "xfs",
            FsKind::Ext4 => "ext4",
            FsKind::Raw => "raw",
        }
    }

    /// The mkfs program and the Debian/Fedora package that ships it.
    pub fn mkfs_tool(self) -> Option<(&'static str, &'static str)> {
        match self {
            FsKind::Xfs => Some(("mkfs.xfs", "xfsprogs")),
            FsKind::Ext4 => Some(("mkfs.ext4", "e2fsprogs")),
            FsKind::Raw => None,
        }
    }

    /// Smallest image mkfs accepts for this kind (xfsprogs ≥ 5.19 refuses
    /// filesystems below 300 MiB).
    pub fn min_size_bytes(self) -> u64 {
        match self {
            FsKind::Xfs => 300 << 20,
            FsKind::Ext4 => 8 << 20,
            FsKind::Raw => 4096,
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FsKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xfs" => Ok(FsKind::Xfs),
            "ext4" => Ok(FsKind::Ext4),
            "raw" => Ok(FsKind::Raw),
            other => Err(format!("unknown filesystem {other:?}; use xfs, ext4 or raw")),
        }
    }
}

/// The filesystem a pool directory lives on, from `statfs(2)`'s `f_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostFs {
    Xfs,
    Btrfs,
    Ext4,
    Tmpfs,
    Other(u64),
}

const XFS_SUPER_MAGIC: u64 = 0x5846_5342;
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683e;
const EXT4_SUPER_MAGIC: u64 = 0xef53;
const TMPFS_MAGIC: u64 = 0x0102_1994;

impl HostFs {
    pub fn from_magic(magic: u64) -> HostFs {
        match magic {
            XFS_SUPER_MAGIC => HostFs::Xfs,
            BTRFS_SUPER_MAGIC => HostFs::Btrfs,
            EXT4_SUPER_MAGIC => HostFs::Ext4,
            TMPFS_MAGIC => HostFs::Tmpfs,
            other => HostFs::Other(other),
        }
    }

    /// Whether pools may live here: image files need a filesystem with
    /// sparse files, O_DIRECT, fallocate and (for cheap snapshots) reflinks.
    pub fn is_supported(self) -> bool {
        matches!(self, HostFs::Xfs | HostFs::Btrfs | HostFs::Ext4)
    }

    /// Largest file the host filesystem holds (ext4 with 4 KiB blocks:
    /// 16 TiB less a block; XFS and btrfs: the largest file offset Linux
    /// allows). An image larger than this cannot exist on the host.
    pub fn max_file_bytes(self) -> u64 {
        match self {
            HostFs::Ext4 => (1u64 << 44) - 4096,
            _ => i64::MAX as u64,
        }
    }

    pub fn name(self) -> String {
        match self {
            HostFs::Xfs => "xfs".into(),
            HostFs::Btrfs => "btrfs".into(),
            HostFs::Ext4 => "ext4".into(),
            HostFs::Tmpfs => "tmpfs".into(),
            HostFs::Other(m) => format!("unknown (magic {m:#x})"),
        }
    }
}

impl fmt::Display for HostFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers() {
        assert_eq!(HostFs::from_magic(0x58465342), HostFs::Xfs);
        assert_eq!(HostFs::from_magic(0x9123683e), HostFs::Btrfs);
        assert_eq!(HostFs::from_magic(0xef53), HostFs::Ext4);
        assert!(!HostFs::from_magic(0x01021994).is_supported());
        assert!(HostFs::Xfs.is_supported());
    }

    #[test]
    fn fs_kind_parse() {
        assert_eq!("xfs".parse::<FsKind>().unwrap(), FsKind::Xfs);
        assert!("zfs".parse::<FsKind>().is_err());
    }
}
