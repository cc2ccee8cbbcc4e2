//! Publishing a staged subvolume at a second place, as a CSI node puts a
//! volume into a pod: a bind mount of its mount (onto a directory), or, for
//! a subvolume attached without a mount (`attach`), of its loop device node
//! (onto a file). Unpublishing unmounts such a bind and removes what
//! publishing created. Which binds exist is read from the kernel's mount
//! table, as everything else: nothing is recorded.

use crate::error::{require_root, Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::outcome::Outcome;
use crate::pool::{absolute, Pool};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use subvol_core::mountinfo::MountEntry;
use subvol_core::ObjectName;

/// The device number of the block device node at `path`, if it is one.
fn block_rdev(path: &Path) -> Option<u64> {
    let m = std::fs::metadata(path).ok()?;
    m.file_type().is_block_device().then(|| m.rdev())
}

impl Pool {
    /// Shows subvolume `name` at `target` too, read-only when asked: a bind
    /// of its mount onto the directory `target` (made if missing), or, when
    /// it is attached without a mount, of its loop device onto the file
    /// `target` (made if missing). Binding it again there the same way is
    /// `AlreadyDone`; bound the other way (read-only or not), or holding
    /// anything else, the target is refused (AlreadyExists).
    pub fn bind(&self, name: &str, target: &Path, read_only: bool) -> Result<Outcome> {
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        require_root("bind")?;
        let target = absolute(target)?;
        if target.starts_with(self.root()) {
            return Err(Error::invalid(format!("{} is inside the pool; bind it elsewhere", target.display())));
        }
        let _lock = self.lock()?;
        let kernel = KernelView::read()?;
        let image = self.existing_image(&name)?;
        let Some(a) = kernel.attachments(&image).into_iter().next() else {
            return Err(Error::invalid(format!("{name} is neither mounted nor attached; mount (stage) it first")));
        };
        let source = a.mount_points.first().cloned();
        if let Some(m) = kernel.mount_at(&target) {
            let same = match &source {
                Some(_) => (m.major, m.minor) == (a.major, a.minor),
                None => block_rdev(&target).is_some() && block_rdev(&target) == block_rdev(&a.loop_device),
            };
            if same && m.is_read_only() == read_only {
                return Ok(Outcome::AlreadyDone);
            }
            let how = match (same, m.is_read_only()) {
                (true, true) => format!("{name}, read-only"),
                (true, false) => format!("{name}, read-write"),
                (false, _) => m.source.clone(),
            };
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{} is already a mount point (of {how}); unbind it first", target.display()),
            ));
        }
        let made = match &source {
            Some(_) => std::fs::create_dir(&target).is_ok(),
            None => std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&target).is_ok(),
        };
        let from = source.as_deref().unwrap_or(&a.loop_device);
        if let Err(e) = subvol_os::bind::bind(from, &target, read_only) {
            if made {
                let _ = std::fs::remove_dir(&target).or_else(|_| std::fs::remove_file(&target));
            }
            return Err(Error::os(format!("cannot bind {name} at {}", target.display()), e));
        }
        Ok(Outcome::Done)
    }

    /// Whether mount `m` at `target` shows one of this pool's images: a
    /// mount of one of its loop devices, or a bind of such a device node.
    fn shows_pool_image(&self, m: &MountEntry, target: &Path) -> bool {
        let rdev = block_rdev(target);
        subvol_os::loopdev::list()
            .iter()
            .filter(|l| l.backing_file.starts_with(self.root()))
            .any(|l| (l.major, l.minor) == (m.major, m.minor) || (rdev.is_some() && rdev == block_rdev(&l.path)))
    }

    /// Undoes `bind` at `target`: unmounts it (only a mount showing one of
    /// this pool's images), then removes the directory or file there.
    /// Nothing there is `AlreadyDone`.
    pub fn unbind(&self, target: &Path) -> Result<Outcome> {
        require_root("unbind")?;
        let target = absolute(target)?;
        let _lock = self.lock()?;
        let mut changed = false;
        while let Some(m) = KernelView::read()?.mount_at(&target).cloned() {
            if !self.shows_pool_image(&m, &target) {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("{} is a mount of {}, not of this pool; not unmounting it", target.display(), m.source),
                ));
            }
            subvol_os::mount::umount_nofollow(&target).map_err(|e| {
                let e = Error::os(format!("cannot unmount {}", target.display()), e);
                match e.kind {
                    ErrorKind::Busy => Error::new(
                        ErrorKind::Busy,
                        format!("{} is busy: files are open there; close them and retry", target.display()),
                    ),
                    _ => e,
                }
            })?;
            changed = true;
        }
        let removed = match std::fs::symlink_metadata(&target) {
            Err(_) => Ok(false),
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target).map(|()| true),
            Ok(m) if m.is_file() => std::fs::remove_file(&target).map(|()| true),
            Ok(_) => Ok(false),
        };
        let removed = removed.map_err(|e| Error::io(format!("cannot remove {}", target.display()), e))?;
        Ok(if changed || removed { Outcome::Done } else { Outcome::AlreadyDone })
    }
}
