//! Orphans: images deleted while a loop device still held them (an `rm` of
//! `subvolumes/NAME.img` while NAME was mounted). Such a file has no name
//! left, so nothing that reads the pool's directories sees it, yet the kernel
//! keeps its blocks, and its mounts, until the loop device lets go; and a
//! re-created NAME meets the old mount at its mount point. Orphans are found
//! the way every attachment is, from the kernel's own tables: a loop device
//! whose sysfs backing file ends in " (deleted)" and lies in this pool's
//! subvolumes or snapshots directory, confirmed by the device's inode.

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::KernelView;
use crate::pool::Pool;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subvol_core::text::escape;
use subvol_core::{format_size, ObjectName};
use subvol_os::loopdev::{self, BackingInode, LoopStatus};

/// An image deleted while attached.
#[derive(Debug, Clone, Serialize)]
pub struct Orphan {
    /// The name the image had (`NAME` or `NAME@SNAP`), from its path. It
    /// need not pass today's name rules: escape it when printing.
    pub name: String,
    /// The path the image had.
    pub image: PathBuf,
    pub loop_device: PathBuf,
    pub mount_points: Vec<PathBuf>,
    /// Host bytes allocated to the deleted image (its `st_blocks`, as
    /// `list` counts ALLOC; blocks it shares with snapshots stay with them
    /// when it goes), or `None` where the host cannot tell: only XFS reports
    /// the blocks of a file that has no name left.
    pub held_bytes: Option<u64>,
    #[serde(skip)]
    pub(crate) loop_number: u32,
    #[serde(skip)]
    major: u32,
    #[serde(skip)]
    minor: u32,
    /// The inode, so that a release acts only on a device still holding it.
    #[serde(skip)]
    backing: BackingInode,
}

/// What releasing an orphan did.
#[derive(Debug, Clone, Serialize)]
pub struct Release {
    pub name: String,
    pub loop_device: PathBuf,
    pub unmounted: Vec<PathBuf>,
    /// Mount points where files were still open (EBUSY), detached lazily
    /// instead: the filesystem lives on, out of sight, until they are closed.
    pub lazily_unmounted: Vec<PathBuf>,
    /// The loop device is gone, and the image's blocks with it. `false`
    /// while something (the writers of a lazily unmounted filesystem, a
    /// mount in another namespace) still holds the device: the kernel
    /// detaches it when the last of them lets go.
    pub detached: bool,
    pub held_bytes: Option<u64>,
}

/// How long a release waits for the kernel to let the loop device go.
const DETACH_WAIT: Duration = Duration::from_secs(5);

fn holding(bytes: Option<u64>) -> String {
    match bytes {
        Some(b) => format!("holding {} of host space", format_size(b)),
        None => "holding host space this host filesystem cannot measure".into(),
    }
}

/// A path as it may be shown on a terminal.
fn path_text(p: &Path) -> String {
    escape(&p.to_string_lossy()).into_owned()
}

fn paths_text(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| path_text(p)).collect::<Vec<_>>().join(", ")
}

impl Orphan {
    /// One phrase saying what is left of it, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "an image of {} deleted while attached is still held by {} ({})",
            escape(&self.name),
            self.loop_device.display(),
            holding(self.held_bytes)
        );
        if !self.mount_points.is_empty() {
            s.push_str(&format!(", mounted at {}", paths_text(&self.mount_points)));
        }
        s
    }

    /// The commands that release it (`umount --force` only takes a name
    /// that passes the name rules).
    pub fn fix(&self) -> String {
        if ObjectName::parse(&self.name).is_ok() {
            format!("`subvol umount --force {}` or `subvol pool check --repair`", self.name)
        } else {
            "`subvol pool check --repair`".into()
        }
    }

    /// The one error of `mount NAME` and `umount NAME` while NAME has an
    /// orphan: which of the two images the user means is not subvol's guess
    /// (the old mount may be the one their programs still write to), and
    /// releasing it destroys what it holds.
    pub(crate) fn busy_error(&self) -> Error {
        Error::new(ErrorKind::Busy, format!("{}; release it with {} and retry", self.describe(), self.fix()))
    }
}

impl Release {
    /// One line saying what happened.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.unmounted.is_empty() {
            parts.push(format!("unmounted from {}", paths_text(&self.unmounted)));
        }
        if !self.lazily_unmounted.is_empty() {
            parts.push(format!("unmounted lazily from {} (files were open there)", paths_text(&self.lazily_unmounted)));
        }
        match (self.detached, self.held_bytes) {
            (true, Some(b)) => {
                parts.push(format!("detached {}, which held {}", self.loop_device.display(), format_size(b)))
            }
            (true, None) => parts.push(format!("detached {}", self.loop_device.display())),
            (false, held) => parts.push(format!(
                "{} ({}) is still in use and detaches when its last user (a writer with files open) lets go",
                self.loop_device.display(),
                holding(held)
            )),
        }
        parts.join("; ")
    }
}

/// The warning of `pool status` and `list` while orphans exist.
pub fn orphan_warning(orphans: &[Orphan]) -> Option<String> {
    if orphans.is_empty() {
        return None;
    }
    let names: Vec<String> = orphans.iter().map(|o| escape(&o.name).into_owned()).collect();
    let (what, verb, them) = if orphans.len() == 1 { ("image", "holds", "it") } else { ("images", "hold", "them") };
    Some(format!(
        "{} {what} deleted while attached still {verb} {} ({}): release {them} with `subvol pool check --repair` (or `subvol umount --force NAME`)",
        orphans.len(),
        orphans_held(orphans),
        names.join(", ")
    ))
}

/// What the orphans hold together: a sum, "at least" a sum when some cannot
/// be measured, or "unknown".
pub fn orphans_held(orphans: &[Orphan]) -> String {
    let known: u64 = orphans.iter().filter_map(|o| o.held_bytes).sum();
    let unknown = orphans.iter().any(|o| o.held_bytes.is_none());
    match (unknown, orphans.iter().any(|o| o.held_bytes.is_some())) {
        (false, _) => format!("{} of host space", format_size(known)),
        (true, true) => format!("at least {} of host space", format_size(known)),
        (true, false) => "an amount of host space this host filesystem cannot measure".into(),
    }
}

impl Pool {
    /// Every orphan of this pool.
    pub fn orphans(&self) -> Result<Vec<Orphan>> {
        Ok(self.orphans_in(&KernelView::read()?))
    }

    /// The orphans of one subvolume (`NAME` and `NAME@SNAP`), or all.
    pub fn orphans_of(&self, subvolume: Option<&str>) -> Result<Vec<Orphan>> {
        let mut all = self.orphans()?;
        if let Some(n) = subvolume {
            all.retain(|o| o.name.split('@').next() == Some(n));
        }
        Ok(all)
    }

    pub(crate) fn orphans_in(&self, kernel: &KernelView) -> Vec<Orphan> {
        kernel.deleted_loops().filter_map(|l| self.orphan_of(l, kernel)).collect()
    }

    /// The orphans that had exactly the name `name` (`NAME` or `NAME@SNAP`).
    pub(crate) fn orphans_named(&self, kernel: &KernelView, name: &str) -> Vec<Orphan> {
        let mut v = self.orphans_in(kernel);
        v.retain(|o| o.name == name);
        v
    }

    fn orphan_of(&self, l: &LoopStatus, kernel: &KernelView) -> Option<Orphan> {
        let name = self.layout.object_of_image(&l.backing_file)?;
        // Detached since sysfs was read: nothing left to report.
        let backing = loopdev::open(l.number).and_then(|d| d.backing_inode()).ok()?;
        if still_named(&l.backing_file, backing) {
            return None;
        }
        Some(Orphan {
            name,
            image: l.backing_file.clone(),
            loop_device: l.path.clone(),
            mount_points: kernel.mounts_of(l.major, l.minor).into_iter().map(|m| m.mount_point.clone()).collect(),
            held_bytes: self.held_bytes(backing),
            loop_number: l.number,
            major: l.major,
            minor: l.minor,
            backing,
        })
    }

    /// The blocks of an inode that has no name: XFS reports them by inode
    /// number (bulkstat, root only), when the inode is on the pool's own
    /// filesystem and really unlinked. Anything else is "unknown", never a
    /// guess.
    fn held_bytes(&self, backing: BackingInode) -> Option<u64> {
        let root = std::fs::File::open(self.root()).ok()?;
        if root.metadata().ok()?.dev() != backing.dev {
            return None;
        }
        let usage = subvol_os::bulkstat::xfs_bulkstat_one(&root, backing.ino).ok()??;
        (usage.nlink == 0).then_some(usage.allocated_bytes)
    }

    /// Releases an orphan: unmounts each of its mounts (lazily where files
    /// are still open, and says so), then detaches its loop device if it
    /// still holds the orphan's inode. Refuses, before changing anything,
    /// when another filesystem is mounted below one of its mount points (a
    /// lazy unmount would take that one along). The caller holds the lock.
    pub(crate) fn release_orphan_locked(&self, o: &Orphan, kernel: &KernelView) -> Result<Release> {
        let mounts = kernel.mounts_of(o.major, o.minor);
        if !mounts.is_empty() {
            self.refuse_planted_mount_point(&o.name)?;
        }
        for m in &mounts {
            self.verify_mount_point(&escape(&o.name), m)?;
            refuse_foreign_mounts_below(kernel, &m.mount_point, (o.major, o.minor))?;
        }
        let mut r = Release {
            name: o.name.clone(),
            loop_device: o.loop_device.clone(),
            unmounted: Vec::new(),
            lazily_unmounted: Vec::new(),
            detached: false,
            held_bytes: o.held_bytes,
        };
        for m in mounts.into_iter().rev() {
            let mp = &m.mount_point;
            let lazy = unmount_thawed_or_lazily(mp).map_err(|e| {
                Error::os(format!("cannot unmount the deleted image of {} from {}", escape(&o.name), path_text(mp)), e)
            })?;
            let done = if lazy { &mut r.lazily_unmounted } else { &mut r.unmounted };
            done.push(mp.clone());
            self.remove_mount_point_if_default(mp);
        }
        r.detached = detach_orphan(o);
        crate::dirty_cap::release(o.major, o.minor);
        Ok(r)
    }
}

/// A file literally named "NAME.img (deleted)" looks like a deleted NAME.img
/// in sysfs; it is no orphan if that path is still the device's inode.
fn still_named(path: &Path, backing: BackingInode) -> bool {
    let mut literal = path.as_os_str().to_owned();
    literal.push(" (deleted)");
    std::fs::symlink_metadata(&literal).is_ok_and(|m| m.dev() == backing.dev && m.ino() == backing.ino)
}

/// Unmounts one mount of an orphan (never through a symlink), thawed first:
/// a frozen filesystem out of sight would keep its writers blocked, and
/// itself alive, for good. Lazily when files are open there (EBUSY): the
/// image is deleted already, so nothing is lost by letting its writers
/// finish. Whether it had to be lazy.
fn unmount_thawed_or_lazily(mp: &Path) -> subvol_os::OsResult<bool> {
    let _ = subvol_os::freeze::fithaw(mp);
    match subvol_os::mount::umount_nofollow(mp) {
        Ok(()) => Ok(false),
        Err(e) if e.errno() == Some(libc::EBUSY) => subvol_os::mount::umount_lazy(mp).map(|()| true),
        Err(e) => Err(e),
    }
}

/// Refuses when a filesystem of another device is mounted below `mp`.
fn refuse_foreign_mounts_below(kernel: &KernelView, mp: &Path, dev: (u32, u32)) -> Result<()> {
    let foreign: Vec<PathBuf> = kernel
        .mounts_below(mp)
        .into_iter()
        .filter(|m| (m.major, m.minor) != dev)
        .map(|m| m.mount_point.clone())
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Busy,
        format!(
            "other filesystems are mounted below {} ({}); unmount them first, then retry",
            path_text(mp),
            paths_text(&foreign)
        ),
    ))
}

/// Detaches the orphan's loop device if it still holds the orphan's inode
/// (the number may have been reused), then waits for the kernel to let it
/// go. Whether it is gone.
fn detach_orphan(o: &Orphan) -> bool {
    if let Ok(dev) = loopdev::open(o.loop_number) {
        if dev.backing_inode().ok() == Some(o.backing) {
            // With its last mount gone autoclear may be detaching it
            // already (ENXIO then); while a lazily unmounted filesystem
            // still holds it, the kernel only marks it to detach when that
            // lets go. Either way our own handle closes here.
            let _ = dev.detach();
        }
    }
    let start = Instant::now();
    loop {
        let held =
            loopdev::list().iter().any(|l| l.number == o.loop_number && l.backing_deleted && l.backing_file == o.image);
        if !held {
            return true;
        }
        if start.elapsed() >= DETACH_WAIT {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
