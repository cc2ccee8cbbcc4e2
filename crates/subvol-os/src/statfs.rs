//! statfs(2): which filesystem a path is on and how much space it has.

use crate::error::{Context, OsResult};
use std::path::Path;
use subvol_core::HostFs;

/// Space figures of a mounted filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub fs: HostFs,
    pub block_size: u64,
    pub total_bytes: u64,
    /// Free for root (f_bfree).
    pub free_bytes: u64,
    /// Free for unprivileged users (f_bavail).
    pub avail_bytes: u64,
    /// Inodes in all (f_files) and free (f_ffree); 0 on filesystems that
    /// allocate them on demand and do not count.
    pub files: u64,
    pub files_free: u64,
}

/// `statfs(path)`.
pub fn statfs(path: &Path) -> OsResult<FsStats> {
    let st = rustix::fs::statfs(path).ctx("statfs", path)?;
    #[allow(clippy::unnecessary_cast)]
    let bsize = st.f_bsize as u64;
    #[allow(clippy::unnecessary_cast)]
    let frsize = if st.f_frsize as u64 > 0 { st.f_frsize as u64 } else { bsize };
    #[allow(clippy::unnecessary_cast)]
    Ok(FsStats {
        fs: HostFs::from_magic(st.f_type as u64),
        block_size: bsize,
        total_bytes: (st.f_blocks as u64).saturating_mul(frsize),
        free_bytes: (st.f_bfree as u64).saturating_mul(frsize),
        avail_bytes: (st.f_bavail as u64).saturating_mul(frsize),
        files: st.f_files as u64,
        files_free: st.f_ffree as u64,
    })
}
