//! The dirty page cache cap of thin subvolumes.
//!
//! When the guard freezes a thin subvolume, FIFREEZE first writes back every
//! dirty page of its filesystem to the host. That flush is space the host
//! must still have after the guard decided, so it has to be bounded: every
//! loop device that carries a writable thin image gets a strict per-device
//! dirty limit (`DIRTY_LIMIT_BYTES`), set here on every attach, and checked
//! (and restored) by the guard and `pool check`. Guaranteed subvolumes own
//! their space and keep the kernel's shared limits.

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::Attachment;
use crate::pool::Pool;
use crate::space::DIRTY_LIMIT_BYTES;
use crate::subvolume::{open_image, read_meta};
use std::path::Path;
use subvol_core::ObjectKind;
use subvol_os::loopdev::{self, LoopDevice, LoopOptions};

/// Whether metadata names a thin subvolume (the ones the guard freezes,
/// whose flush its margin must cover).
pub(crate) fn is_thin(meta: &subvol_core::meta::SubvolumeMeta) -> bool {
    meta.kind == ObjectKind::Subvolume && !crate::space::is_guaranteed(&meta.properties)
}

/// Whether the image may be a thin subvolume. Fails closed: only metadata
/// that positively says "snapshot" or "guaranteed" lifts the cap.
pub(crate) fn is_thin_image(image: &Path) -> bool {
    let Ok(f) = open_image(image, false) else { return true };
    read_meta(&f).map(|m| is_thin(&m)).unwrap_or(true)
}

/// Puts the cap on a loop device (or lifts it for a guaranteed subvolume).
pub(crate) fn apply(major: u32, minor: u32, thin: bool) -> Result<()> {
    let r = if thin {
        loopdev::set_bdi_max_bytes(major, minor, DIRTY_LIMIT_BYTES)
    } else {
        loopdev::clear_bdi_strict_limit(major, minor)
    };
    r.map_err(|e| {
        Error::new(
            ErrorKind::Unsupported,
            format!(
                "cannot cap the dirty page cache of loop device {major}:{minor} ({e}); \
                 thin subvolumes need Linux 6.2 or later (bdi max_bytes), or use --guarantee"
            ),
        )
    })
}

/// A writable thin attachment whose cap is missing or larger than ours (the
/// kernel keeps `max_bytes` as a fraction of the global dirty limit, which
/// moves with free memory, so it reads back a little off what was written:
/// 5% is allowed).
pub(crate) fn is_uncapped(a: &Attachment) -> bool {
    !a.read_only && a.writeback_cap_bytes.is_none_or(|b| b > DIRTY_LIMIT_BYTES + DIRTY_LIMIT_BYTES / 20)
}

impl Pool {
    /// Attaches an image to a loop device (direct I/O, autoclear, 4 KiB
    /// sectors): the one way subvol attaches a subvolume or snapshot. `thin`
    /// (a writable thin subvolume, as its metadata says) gets the cap before
    /// anything can write to it; anything else gets the kernel's limits.
    /// Returns the device and its (major, minor).
    pub(crate) fn attach_image(&self, image: &Path, read_only: bool, thin: bool) -> Result<(LoopDevice, (u32, u32))> {
        self.attach_image_with(image, LoopOptions { read_only, ..LoopOptions::default() }, thin)
    }

    /// `attach_image` with other loop options (`attach` turns autoclear off).
    pub(crate) fn attach_image_with(
        &self,
        image: &Path,
        opts: LoopOptions,
        thin: bool,
    ) -> Result<(LoopDevice, (u32, u32))> {
        let read_only = opts.read_only;
        let dev = loopdev::loop_configure(image, opts)
            .map_err(|e| Error::os(format!("cannot attach {} to a loop device", image.display()), e))?;
        let numbers = dev.dev_numbers().map_err(|e| Error::os("cannot identify the loop device", e))?;
        // A loop device keeps its BDI settings across detach and reuse, so
        // the cap is set or cleared on every attach, never inherited.
        // Dropping `dev` on error detaches it (autoclear, no mount yet).
        apply(numbers.0, numbers.1, thin && !read_only)?;
        Ok((dev, numbers))
    }

    /// Thin subvolumes attached writable without the cap (someone lifted it
    /// by hand, or an older subvol attached them): `(name, attachment)`.
    pub fn uncapped_thin(&self, subs: &[crate::SubvolumeInfo]) -> Vec<(String, Attachment)> {
        let mut out = Vec::new();
        for s in subs.iter().filter(|s| s.kind == ObjectKind::Subvolume && !s.guarantee) {
            for a in s.attachments.iter().filter(|a| is_uncapped(a)) {
                out.push((s.name.clone(), a.clone()));
            }
        }
        out
    }

    /// Puts the cap back on every uncapped thin attachment; returns what
    /// it fixed.
    pub fn restore_dirty_caps(&self, subs: &[crate::SubvolumeInfo]) -> Vec<(String, Result<()>)> {
        self.uncapped_thin(subs).into_iter().map(|(n, a)| (n, apply(a.major, a.minor, true))).collect()
    }
}

/// After subvol detached a loop device, give it back to the kernel's shared
/// limits, so the next user of that device (subvol or not) does not inherit
/// our cap. Only while the device is still free.
pub(crate) fn release(major: u32, minor: u32) {
    let free = loopdev::list().iter().all(|l| (l.major, l.minor) != (major, minor));
    if free {
        let _ = loopdev::clear_bdi_strict_limit(major, minor);
    }
}
