//! The kernel's view of which images are attached to loop devices and where
//! those are mounted. Read fresh for every command: there is no state file
//! that could go stale after a crash or a manual umount.

use crate::error::{Error, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use subvol_core::mountinfo::{FsFailure, MountEntry};
use subvol_os::loopdev::{self, LoopStatus};

/// One loop device backed by an image, and its mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub loop_device: PathBuf,
    #[serde(skip)]
    pub loop_number: u32,
    #[serde(skip)]
    pub major: u32,
    #[serde(skip)]
    pub minor: u32,
    pub direct_io: bool,
    pub read_only: bool,
    /// The loop device's dirty page cache cap (BDI `max_bytes` with
    /// `strict_limit`), or `None` when it follows the kernel's shared limits.
    pub writeback_cap_bytes: Option<u64>,
    pub mount_points: Vec<PathBuf>,
    /// Set when the kernel shut the mounted filesystem down or made it
    /// read-only after an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fs_failure: Option<FsFailure>,
}

/// The failure the kernel shows for the filesystem on any of `attachments`.
pub(crate) fn fs_failure(attachments: &[Attachment]) -> Option<FsFailure> {
    attachments.iter().find_map(|a| a.fs_failure)
}

/// A snapshot of the loop and mount tables.
pub struct KernelView {
    loops: Vec<LoopStatus>,
    mounts: Vec<MountEntry>,
}

impl KernelView {
    pub fn read() -> Result<Self> {
        let mounts = subvol_os::mount::mountinfo().map_err(|e| Error::os("cannot read the mount table", e))?;
        Ok(KernelView { loops: loopdev::list(), mounts })
    }

    /// Whether any loop device reads and writes the very inode of `image`,
    /// whatever path it was attached by (a bind mount of the pool, another
    /// mount namespace such as a container's): the check that guards
    /// writing into or replacing an image, where a missed attachment would
    /// write under a mounted filesystem.
    pub fn attached_by_inode(&self, image: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(image) else { return false };
        self.loops.iter().any(|l| {
            loopdev::open(l.number).and_then(|d| d.backing_inode()).is_ok_and(|b| b.dev == m.dev() && b.ino == m.ino())
        })
    }

    /// Loop devices backed by `image` (a canonical path) and their mounts.
    pub fn attachments(&self, image: &Path) -> Vec<Attachment> {
        self.loops
            .iter()
            .filter(|l| !l.backing_deleted && l.backing_file == image)
            .map(|l| {
                let mounts = self.mounts_of(l.major, l.minor);
                Attachment {
                    loop_device: l.path.clone(),
                    loop_number: l.number,
                    major: l.major,
                    minor: l.minor,
                    direct_io: l.direct_io,
                    read_only: l.read_only,
                    writeback_cap_bytes: loopdev::bdi_strict_max_bytes(l.major, l.minor),
                    mount_points: mounts.iter().map(|m| m.mount_point.clone()).collect(),
                    fs_failure: mounts.iter().find_map(|m| subvol_os::health::probe(m)),
                }
            })
            .collect()
    }

    /// Loop devices whose backing file was unlinked while attached.
    pub fn deleted_loops(&self) -> impl Iterator<Item = &LoopStatus> {
        self.loops.iter().filter(|l| l.backing_deleted)
    }

    /// The mounts of the block device `major:minor`.
    pub fn mounts_of(&self, major: u32, minor: u32) -> Vec<&MountEntry> {
        self.mounts.iter().filter(|m| m.major == major && m.minor == minor).collect()
    }

    /// The mounts strictly below `path`.
    pub fn mounts_below(&self, path: &Path) -> Vec<&MountEntry> {
        self.mounts.iter().filter(|m| m.mount_point != path && m.mount_point.starts_with(path)).collect()
    }

    /// The mount entry at exactly `path`, if any.
    pub fn mount_at(&self, path: &Path) -> Option<&MountEntry> {
        self.mounts.iter().rev().find(|m| m.mount_point == path)
    }
}
