//! The thin OS layer of subvol. Every `unsafe` block of the project lives in
//! this crate, one file per kernel facility, each behind a safe function named
//! after the kernel operation it wraps. Guards undo themselves on drop: a
//! frozen filesystem thaws, a loop device detaches.

pub mod alloc;
pub mod bind;
pub mod bulkstat;
pub mod cmd;
pub mod copy;
pub mod crash;
pub mod dirfd;
pub mod error;
pub mod fiemap;
pub mod flags;
pub mod freeze;
pub mod fscrypt;
pub mod fsmount;
pub mod fsync;
pub mod health;
pub mod hints;
pub mod inode;
pub mod limits;
pub mod loopdev;
pub mod mount;
pub mod pagecache;
pub mod prealloc;
pub mod priority;
pub mod random;
pub mod reflink;
pub mod signals;
pub mod statfs;
pub mod tmpfile;
pub mod trim;
pub mod xattr;

pub use error::{OsError, OsResult};

/// Whether this process runs with root's privileges (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether this process has an effective capability (by number, see
/// capabilities(7)), read from /proc/self/status. Containers and sandboxes
/// often run root without some capabilities (e.g. CAP_SYS_RESOURCE).
pub fn has_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| cap < 64 && mask & (1u64 << cap) != 0)
}

/// CAP_SYS_RESOURCE: needed by ext4's online resize ioctl.
pub const CAP_SYS_RESOURCE: u32 = 24;
