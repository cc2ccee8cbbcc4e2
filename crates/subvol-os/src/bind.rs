//! Bind mounts: one filesystem (or one device node) shown at a second
//! place, as a CSI node publishes a staged volume into a pod.

use crate::error::{Context, OsResult};
use rustix::mount::{MountFlags, UnmountFlags};
use std::path::Path;

/// `mount(source, target, MS_BIND)`, then, for `read_only`, a remount of
/// the bind alone with `MS_RDONLY` (a bind takes the source's flags; only a
/// remount of the new mount makes it read-only, leaving the source as it
/// is). A failed remount takes the bind away again.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> OsResult<()> {
    rustix::mount::mount_bind(source, target).ctx("mount --bind", target)?;
    if read_only {
        if let Err(e) = rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "") {
            let _ = rustix::mount::unmount(target, UnmountFlags::NOFOLLOW);
            return Err(e).ctx("mount -o remount,bind,ro", target);
        }
    }
    Ok(())
}
