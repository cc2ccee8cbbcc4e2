//! Attaching a subvolume without mounting it: a raw image handed to its
//! user as a block device (a CSI block volume, a VM's disk). A mount's loop
//! device has autoclear, so it goes with the mount; this one has no mount to
//! hold it, so it is attached without autoclear and stays until `detach`.
//! The kernel's loop table is still the only record: `list` shows it
//! `attached`, and `pool check` knows a live image attached this way.

use crate::error::{require_root, Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::outcome::Outcome;
use crate::pool::Pool;
use crate::subvolume::{open_image, read_meta};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use subvol_core::ObjectName;
use subvol_os::loopdev::{self, LoopOptions};

/// Where the device node `loop_device` is bind-mounted (`Pool::bind`): a
/// mount of the device filesystem's `/loopN`, checked to be that device.
fn bound_at(loop_device: &Path) -> Vec<PathBuf> {
    let Some(leaf) = loop_device.file_name() else { return Vec::new() };
    let root = Path::new("/").join(leaf);
    let rdev = |p: &Path| std::fs::metadata(p).ok().filter(|m| m.file_type().is_block_device()).map(|m| m.rdev());
    let mounts = subvol_os::mount::mountinfo().unwrap_or_default();
    mounts
        .into_iter()
        .filter(|m| m.root == root && rdev(&m.mount_point).is_some() && rdev(&m.mount_point) == rdev(loop_device))
        .map(|m| m.mount_point)
        .collect()
}

impl Pool {
    /// Attaches subvolume `name` to a loop device that stays until
    /// `detach`; returns the device. Attaching an attached subvolume
    /// returns its device (`AlreadyDone`); a mounted one is refused (its
    /// filesystem is in use).
    pub fn attach(&self, name: &str) -> Result<(PathBuf, Outcome)> {
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        require_root("attach")?;
        let _lock = self.lock()?;
        let kernel = KernelView::read()?;
        if let Some(o) = self.orphans_named(&kernel, &name).first() {
            return Err(o.busy_error());
        }
        let image = self.existing_image(&name)?;
        if let Some(a) = kernel.attachments(&image).into_iter().next() {
            if let Some(mp) = a.mount_points.first() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("{name} is mounted at {}; umount it before attaching it as a device", mp.display()),
                ));
            }
            return Ok((a.loop_device, Outcome::AlreadyDone));
        }
        let file = open_image(&image, false).map_err(|e| Error::io(format!("cannot open {}", image.display()), e))?;
        let meta = read_meta(&file).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{name}: {e}")))?;
        drop(file);
        let opts = LoopOptions { autoclear: false, ..LoopOptions::default() };
        let (dev, _) = self.attach_image_with(&image, opts, crate::dirty_cap::is_thin(&meta))?;
        Ok((dev.path.clone(), Outcome::Done))
    }

    /// Detaches what `attach` attached. A subvolume that is not attached
    /// (or not there) is `AlreadyDone`; a mounted one, or one whose device
    /// is still bound somewhere (`bind`), is refused.
    pub fn detach(&self, name: &str) -> Result<Outcome> {
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        require_root("detach")?;
        let _lock = self.lock()?;
        let image = match self.existing_image(&name) {
            Ok(i) => i,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(Outcome::AlreadyDone),
            Err(e) => return Err(e),
        };
        let attachments = KernelView::read()?.attachments(&image);
        if attachments.is_empty() {
            return Ok(Outcome::AlreadyDone);
        }
        if let Some(mp) = attachments.iter().find_map(|a| a.mount_points.first()) {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("{name} is mounted at {}; `subvol umount {name}` instead", mp.display()),
            ));
        }
        for a in &attachments {
            if let Some(at) = bound_at(&a.loop_device).first() {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{name}'s device {} is bound at {}; unbind (unpublish) it first",
                        a.loop_device.display(),
                        at.display()
                    ),
                ));
            }
        }
        for a in &attachments {
            let dev = loopdev::open(a.loop_number).map_err(|e| Error::os("cannot open the loop device", e))?;
            dev.detach().map_err(|e| Error::os(format!("cannot detach {name}"), e))?;
        }
        crate::mounting::wait_detached(&image, Duration::from_secs(5));
        for a in &attachments {
            crate::dirty_cap::release(a.major, a.minor);
        }
        Ok(Outcome::Done)
    }
}
