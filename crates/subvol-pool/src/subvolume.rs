//! Subvolumes: sparse image files with a filesystem inside, and their
//! lifecycle (create, list, info, resize, rename, delete).

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::{Attachment, KernelView};
use crate::layout::{self, META_XATTR};
use crate::outcome::Outcome;
use crate::pool::Pool;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use subvol_core::meta::Origin;
use subvol_core::mountinfo::FsFailure;
use subvol_core::{format_size, FsKind, ObjectKind, ObjectName, SubvolumeMeta};

/// Options of `create`.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub size_bytes: u64,
    pub fs: FsKind,
    /// Extra mkfs arguments, passed through as given.
    pub mkfs_opts: Vec<String>,
    /// Reserve the whole virtual size (admission-checked).
    pub guarantee: bool,
    /// XFS extent size hint for the image (0: none).
    pub extent_hint_bytes: u32,
    /// Accept a thin raw image in an overcommitted pool: the guard cannot
    /// freeze what has no filesystem subvol mounts, so its user (a VM, a
    /// loop device) may see I/O errors when the host fills.
    pub thin_unsafe: bool,
    /// Encrypt its files (ext4 only) with the key from here.
    pub encryption: Option<crate::encryption::KeySource>,
}

/// Default extent size hint of new images (see `build_image`).
pub const DEFAULT_EXTENT_HINT_BYTES: u32 = 1 << 20;

/// Where a subvolume or snapshot stands with the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Unmounted,
    /// On a loop device without a mount (a VM's disk).
    Attached,
    Mounted,
    /// Mounted, and the kernel shut its filesystem down.
    Shutdown,
    /// Mounted, and the kernel made its filesystem read-only after an error.
    Error,
}

impl State {
    fn of(attachments: &[Attachment]) -> State {
        match crate::kernel::fs_failure(attachments) {
            Some(FsFailure::Shutdown) => State::Shutdown,
            Some(FsFailure::Error) => State::Error,
            None if attachments.iter().any(|a| !a.mount_points.is_empty()) => State::Mounted,
            None if attachments.is_empty() => State::Unmounted,
            None => State::Attached,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Unmounted => "unmounted",
            State::Attached => "attached",
            State::Mounted => "mounted",
            State::Shutdown => "shutdown",
            State::Error => "error",
        }
    }
}

/// Everything `list` and `info` show about one subvolume.
#[derive(Debug, Clone, Serialize)]
pub struct SubvolumeInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ObjectKind,
    pub fs: FsKind,
    pub guid: String,
    pub virtual_size_bytes: u64,
    pub allocated_bytes: u64,
    pub created: String,
    pub image: PathBuf,
    pub mount_point: Option<PathBuf>,
    pub loop_device: Option<PathBuf>,
    pub state: State,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    /// A guaranteed subvolume can always write its whole virtual size.
    pub guarantee: bool,
    /// Host blocks only this image holds: what deleting it frees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclusive_bytes: Option<u64>,
    /// Host blocks shared with other images (snapshots, clones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_bytes: Option<u64>,
    /// Subvolumes: bytes changed since the newest snapshot (what the next
    /// incremental send carries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_bytes: Option<u64>,
    /// An ext4 whose files are encrypted (`create --encrypt`); read from the
    /// image, so snapshots, clones and replicas say so too.
    pub encrypted: bool,
    /// Encrypted objects: whether the key is loaded (only while mounted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unlocked: Option<bool>,
    /// Set when the image's metadata could not be read (see `pool check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Its manifest and what scrubs found (filled by `info`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity: Option<crate::Integrity>,
}

impl SubvolumeInfo {
    /// The failure of its mounted filesystem, if the kernel shows one.
    pub fn fs_failure(&self) -> Option<FsFailure> {
        crate::kernel::fs_failure(&self.attachments)
    }

    /// What happened to its filesystem and the way back, when it failed.
    pub fn failure_advice(&self) -> Option<String> {
        self.fs_failure().map(|f| crate::frozen_state::failure_advice(&self.name, f))
    }
}

/// `n` bytes as an image size: whole blocks, so every host and loop block
/// size fits (docs/FORMAT.md).
fn whole_blocks(n: u64) -> Result<u64> {
    crate::io_sizes::align_up(n).ok_or_else(|| Error::invalid("size is too large"))
}

/// Opens an image without following symlinks and checks it is a regular file.
/// [`open_image`] with an error that names the image.
pub(crate) fn open_existing(path: &Path, write: bool) -> Result<File> {
    open_image(path, write).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

pub(crate) fn open_image(path: &Path, write: bool) -> std::io::Result<File> {
    let f = OpenOptions::new().read(true).write(write).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"));
    }
    // A hard link planted in the pool would let writes reach a file outside it.
    if m.nlink() != 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "image has extra hard links; see `subvol pool check`",
        ));
    }
    Ok(f)
}

pub(crate) fn read_meta(file: &File) -> std::result::Result<SubvolumeMeta, String> {
    match subvol_os::xattr::fget(file, META_XATTR) {
        Ok(Some(bytes)) => SubvolumeMeta::decode(&bytes).map_err(|e| e.to_string()),
        Ok(None) => Err("image has no subvol metadata".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Pool {
    /// Refuses (exit 5) while a receive applies a stream to subvolume
    /// `name`'s own image: NAME is absent from its place meanwhile, and a
    /// command that made, renamed or deleted a NAME would collide with the
    /// receive putting it back (`replication/receive/adopt.rs`). The
    /// caller holds the pool lock.
    pub(crate) fn refuse_while_received(&self, name: &str) -> Result<()> {
        if crate::replication::adopting(&self.layout, name) {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("a receive is applying a stream to {name}; retry when it has finished"),
            ));
        }
        Ok(())
    }

    fn not_found(&self, name: &str) -> Error {
        if let Err(busy) = self.refuse_while_received(name) {
            return busy;
        }
        Error::new(
            ErrorKind::NotFound,
            format!("no subvolume {name:?} in pool {}; see `subvol list`", self.root().display()),
        )
    }

    /// The image of an existing subvolume or snapshot, or NotFound.
    pub(crate) fn object_image(&self, obj: &ObjectName) -> Result<PathBuf> {
        match &obj.snapshot {
            None => self.existing_image(&obj.subvolume),
            Some(snap) => {
                let path = self.layout.snapshot_image(&obj.subvolume, snap);
                match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_file() => Ok(path),
                    Ok(_) => Err(Error::new(ErrorKind::Corrupt, format!("{} is not a regular file", path.display()))),
                    Err(_) => Err(Error::new(
                        ErrorKind::NotFound,
                        format!("no snapshot {obj}; see `subvol list --snapshots {}`", obj.subvolume),
                    )),
                }
            }
        }
    }

    /// The image path of an existing subvolume, or NotFound.
    pub(crate) fn existing_image(&self, name: &str) -> Result<PathBuf> {
        let path = self.layout.subvolume_image(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err(Error::new(
                ErrorKind::Corrupt,
                format!("{} is not a regular file; remove it (see `subvol pool check`)", path.display()),
            )),
            Err(_) => Err(self.not_found(name)),
        }
    }

    /// Refuses an image larger than the host filesystem can hold as a file
    /// (shared by `create` and `receive`).
    pub(crate) fn check_host_file_size(&self, size: u64, what: &str) -> Result<()> {
        let host = self.host_fs()?;
        let max = host.max_file_bytes();
        if size > max {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{what} would be {} but the host's {host} holds files up to {}; use a pool on xfs or btrfs",
                    format_size(size),
                    format_size(max)
                ),
            ));
        }
        Ok(())
    }

    /// Creates a subvolume: a sparse image of `size_bytes` with a fresh
    /// filesystem, built in the tmp dir and renamed into place with its
    /// metadata, so it appears whole or not at all.
    ///
    /// A retry finds the subvolume there with the size, filesystem and
    /// guarantee asked for and succeeds without change (`AlreadyDone`);
    /// one made differently is refused (exit 4), naming the difference.
    pub fn create(&self, name: &str, opts: &CreateOptions) -> Result<(SubvolumeInfo, Outcome)> {
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        crate::option_rules::check_extent_hint(opts.extent_hint_bytes.into())?;
        let size = whole_blocks(opts.size_bytes)?;
        let min = opts.fs.min_size_bytes();
        if size < min {
            return Err(Error::invalid(format!(
                "{} is too small for {}; the minimum is {}",
                format_size(size),
                opts.fs,
                format_size(min)
            )));
        }
        // The largest image a stream can carry: every subvolume can be sent.
        if size > subvol_core::stream::MAX_VIRTUAL_SIZE {
            return Err(Error::invalid(format!("{} is too large; the largest subvolume is 4E", format_size(size))));
        }
        self.check_host_file_size(size, &format!("subvolume {name}"))?;
        let key = crate::encryption::new_key(opts)?;
        if let Some((tool, package)) = opts.fs.mkfs_tool() {
            if !subvol_os::cmd::have(tool) {
                return Err(Error::new(
                    ErrorKind::MissingTool,
                    format!("{tool} not found; install the {package} package"),
                ));
            }
        }
        let _lock = self.lock()?;
        self.refuse_while_received(&name)?;
        let dst = self.layout.subvolume_image(&name);
        if std::fs::symlink_metadata(&dst).is_ok() {
            return self.created_before(&name, size, opts).map(|info| (info, Outcome::AlreadyDone));
        }
        if opts.guarantee {
            self.admit(&format!("create {name} --guarantee"), size)?;
        } else if opts.fs == FsKind::Raw && !opts.thin_unsafe {
            self.refuse_unguardable_raw(&name, size)?;
        }
        let tmp = self.layout.tmp_image("create", &name);
        let result = self.build_image(&tmp, size, opts).and_then(|meta| {
            if let Some(key) = &key {
                self.encrypt_new_image(&name, &tmp, key)?;
            }
            subvol_os::fsync::fsync_dir(&self.layout.tmp_dir())
                .map_err(|e| Error::os("cannot make the change durable", e))?;
            subvol_os::crash::point("create-before-publish");
            rename_noreplace(&tmp, &dst).map_err(|e| Error::os(format!("cannot create subvolume {name:?}"), e))?;
            subvol_os::crash::point("create-after-publish");
            subvol_os::fsync::fsync_dir(&self.layout.subvolumes_dir())
                .map_err(|e| Error::os("cannot make the change durable", e))?;
            Ok(meta)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        Ok((self.info(&name)?, Outcome::Done))
    }

    /// A thin raw image is written by a VM or through a loop device, where
    /// no freeze can stop it: when the host fills, its writer gets an I/O
    /// error (the loop device reports the host's ENOSPC as a failed write).
    /// So it is refused where the host cannot hold what the thin images may
    /// still grow by, unless the user accepts that (`--thin-unsafe`).
    fn refuse_unguardable_raw(&self, name: &str, size: u64) -> Result<()> {
        let space = self.space()?;
        let budget = self.budget(&space)?;
        let thin_growth = crate::space::thin_growth_bytes(&self.list()?).saturating_add(size);
        if thin_growth <= budget.available() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::NoSpace,
            format!(
                "a thin raw image cannot be frozen by the guard, and thin subvolumes could grow by {} where {} can be promised; \
                 create {name} with --guarantee, or --thin-unsafe to accept I/O errors in its user when the host fills",
                subvol_core::format_size(thin_growth),
                subvol_core::format_size(budget.available())
            ),
        ))
    }

    fn build_image(&self, tmp: &Path, size: u64, opts: &CreateOptions) -> Result<SubvolumeMeta> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        // An extent size hint must be set while the file is empty. It makes
        // the host allocate in whole chunks, so an image under random writes
        // keeps ~1,000 extents instead of ~70,000 (snapshots and diffs cost
        // per extent); the price is space allocated in chunks. XFS only.
        if opts.extent_hint_bytes > 0 {
            let _ = subvol_os::hints::set_extent_hints(&file, Some(opts.extent_hint_bytes), None);
        }
        file.set_len(size).map_err(|e| Error::io("cannot size the image", e))?;
        if let Some((tool, package)) = opts.fs.mkfs_tool() {
            let mut args: Vec<String> = match opts.fs {
                // 4 KiB sectors: once an image shares blocks with a snapshot,
                // the host only does direct I/O to it in whole blocks, so the
                // loop device must present 4 KiB sectors (see loopdev).
                FsKind::Xfs => vec!["-q".into(), "-s".into(), "size=4096".into()],
                FsKind::Ext4 => vec!["-q".into(), "-F".into(), "-b".into(), "4096".into()],
                FsKind::Raw => vec![],
            };
            args.extend(crate::encryption::mkfs_args(opts));
            args.extend(opts.mkfs_opts.iter().cloned());
            args.push(tmp.to_string_lossy().into_owned());
            subvol_os::cmd::run(tool, package, &args)
                .map_err(|e| Error::os(format!("cannot make {} in the image", opts.fs), e))?;
            subvol_os::crash::point("create-after-mkfs");
        } else if !opts.mkfs_opts.is_empty() {
            return Err(Error::invalid("--mkfs-opt makes no sense with --fs raw"));
        }
        let mut meta = SubvolumeMeta::new_subvolume(opts.fs, Utc::now());
        if opts.guarantee {
            meta.properties.insert(crate::space::GUARANTEE_PROPERTY.into(), "on".into());
        }
        subvol_os::xattr::fset(&file, META_XATTR, &meta.encode())
            .map_err(|e| Error::os("cannot write subvolume metadata", e))?;
        file.sync_all().map_err(|e| Error::io("cannot sync the image", e))?;
        Ok(meta)
    }

    /// The existing subvolume NAME, if it is what `create` was asked for.
    fn created_before(&self, name: &str, size: u64, opts: &CreateOptions) -> Result<SubvolumeInfo> {
        let have = self.info(name)?;
        let asked = (size, opts.fs, opts.guarantee, opts.encryption.is_some());
        if (have.virtual_size_bytes, have.fs, have.guarantee, have.encrypted) == asked {
            return Ok(have);
        }
        let show = |(size, fs, guarantee, encrypted): (u64, FsKind, bool, bool)| {
            let (g, e) = (if guarantee { " guaranteed" } else { "" }, if encrypted { " encrypted" } else { "" });
            format!("{} {fs}{g}{e}", format_size(size))
        };
        Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "subvolume {name:?} already exists as {} (asked: {}); pick another name or delete it first",
                show((have.virtual_size_bytes, have.fs, have.guarantee, have.encrypted)),
                show(asked)
            ),
        ))
    }

    /// All subvolumes, sorted by name.
    pub fn list(&self) -> Result<Vec<SubvolumeInfo>> {
        let kernel = KernelView::read()?;
        let dir = self.layout.subvolumes_dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("cannot read {}", dir.display()), e))?;
        let found: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| layout::name_of_image(Path::new(&e.file_name())).map(|n| (n, e.path())))
            .collect();
        let mut out = crate::par::map_io(&found, |(name, path)| self.describe(name, path, &kernel));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// One subvolume or snapshot.
    pub fn info(&self, name: &str) -> Result<SubvolumeInfo> {
        let obj = ObjectName::parse(name)?;
        let path = self.object_image(&obj)?;
        let kernel = KernelView::read()?;
        Ok(self.describe(&obj.to_string(), &path, &kernel))
    }

    pub(crate) fn describe(&self, name: &str, path: &Path, kernel: &KernelView) -> SubvolumeInfo {
        let attachments = kernel.attachments(path);
        let mut info = SubvolumeInfo {
            name: name.to_string(),
            kind: ObjectKind::Subvolume,
            fs: FsKind::Raw,
            guid: String::new(),
            virtual_size_bytes: 0,
            allocated_bytes: 0,
            created: String::new(),
            image: path.to_path_buf(),
            mount_point: attachments.iter().flat_map(|a| a.mount_points.first()).next().cloned(),
            loop_device: attachments.first().map(|a| a.loop_device.clone()),
            state: State::of(&attachments),
            attachments,
            origin: None,
            properties: BTreeMap::new(),
            tags: Vec::new(),
            holds: Vec::new(),
            guarantee: false,
            exclusive_bytes: None,
            shared_bytes: None,
            written_bytes: None,
            encrypted: false,
            unlocked: None,
            problem: None,
            integrity: None,
        };
        let file = match open_image(path, false) {
            Ok(f) => f,
            Err(e) => {
                info.problem = Some(format!("cannot open image: {e}"));
                return info;
            }
        };
        if let Ok(st) = file.metadata() {
            info.virtual_size_bytes = st.len();
            info.allocated_bytes = st.blocks() * 512;
        }
        match read_meta(&file) {
            Ok(meta) => {
                info.kind = meta.kind;
                info.fs = meta.fs;
                info.guid = meta.guid.to_string();
                info.created = rfc3339(meta.created);
                info.origin = meta.origin;
                info.guarantee = crate::space::is_guaranteed(&meta.properties);
                info.properties = meta.properties;
                info.tags = meta.tags;
                info.holds = meta.holds.into_iter().collect();
                (info.encrypted, info.unlocked) = crate::encryption::state(&file, meta.fs, &info.attachments);
            }
            Err(e) => info.problem = Some(e),
        }
        info
    }

    /// Grows a subvolume and its filesystem (online if mounted). Shrinking is
    /// refused. Idempotent: repeating a grow to the same size finishes a grow
    /// that was interrupted after the image was extended.
    pub fn resize(&self, name: &str, new_size: u64) -> Result<SubvolumeInfo> {
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        let new_size = whole_blocks(new_size)?;
        let _lock = self.lock()?;
        let path = self.existing_image(&name)?;
        let file = open_image(&path, true).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let meta = read_meta(&file).map_err(|e| Error::new(ErrorKind::Corrupt, format!("subvolume {name:?}: {e}")))?;
        let old = file.metadata().map_err(|e| Error::io("cannot stat the image", e))?.len();
        if new_size < old {
            return Err(Error::invalid(format!(
                "{name} is {} and cannot shrink to {} (shrinking would destroy data); give a size of at least {}",
                format_size(old),
                format_size(new_size),
                format_size(old)
            )));
        }
        if crate::space::is_guaranteed(&meta.properties) {
            self.admit(&format!("resize {name}"), new_size - old)?;
        }
        let kernel = KernelView::read()?;
        let attachments = kernel.attachments(&path);
        crate::frozen_state::refuse_failed_fs(&name, &attachments, "resize")?;
        if meta.fs != FsKind::Raw || !attachments.is_empty() {
            crate::error::require_root("resize")?;
        }
        let ext4_mounted = meta.fs == FsKind::Ext4 && attachments.iter().any(|a| !a.mount_points.is_empty());
        if ext4_mounted && !subvol_os::has_capability(subvol_os::CAP_SYS_RESOURCE) {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!("growing a mounted ext4 needs CAP_SYS_RESOURCE, which this process lacks; `subvol umount {name}` and resize it offline"),
            ));
        }
        let mounted_rw = attachments.iter().any(|a| !a.read_only && !a.mount_points.is_empty());
        if mounted_rw {
            // A frozen filesystem cannot grow: xfs_growfs would block behind
            // the freeze after the image had already grown.
            self.refuse_guard_frozen(&name, "resize")?;
        }
        if meta.fs != FsKind::Raw {
            // Growing writes new metadata into the image.
            self.refuse_without_flush_room(&format!("resize {name}"), 1)?;
        }
        file.set_len(new_size).map_err(|e| Error::io("cannot grow the image", e))?;
        subvol_os::crash::point("resize-after-truncate");
        file.sync_all().map_err(|e| Error::io("cannot sync the image", e))?;
        drop(file);
        for a in &attachments {
            let dev = subvol_os::loopdev::open(a.loop_number).map_err(|e| Error::os("cannot open loop device", e))?;
            dev.set_capacity().map_err(|e| Error::os("cannot grow the loop device", e))?;
        }
        let mounted = attachments.iter().find_map(|a| a.mount_points.first().map(|m| (a, m)));
        match (meta.fs, mounted) {
            (FsKind::Raw, _) => {}
            (FsKind::Xfs, Some((_, mp))) => {
                if let Err(e) = grow_xfs(mp) {
                    // Undo the image growth if the filesystem did not grow
                    // (xfs_growfs is transactional: it grows or it does not).
                    let fs_bytes = subvol_os::statfs::statfs(mp).map(|s| s.total_bytes).unwrap_or(u64::MAX);
                    if fs_bytes <= old {
                        if let Ok(f) = open_image(&path, true) {
                            if f.set_len(old).and_then(|()| f.sync_all()).is_ok() {
                                for a in &attachments {
                                    if let Ok(dev) = subvol_os::loopdev::open(a.loop_number) {
                                        let _ = dev.set_capacity();
                                    }
                                }
                                return Err(Error::new(
                                    e.kind,
                                    format!(
                                        "{}; the image was shrunk back to {}, nothing changed",
                                        e.message,
                                        format_size(old)
                                    ),
                                ));
                            }
                        }
                    }
                    return Err(e);
                }
            }
            (FsKind::Ext4, Some((a, _))) => grow_ext4(&a.loop_device)?,
            (fs, None) if !attachments.is_empty() => {
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{name} is attached to {} but not mounted; the image grew, grow its {fs} where it is used",
                        attachments[0].loop_device.display()
                    ),
                ));
            }
            (FsKind::Xfs, None) => self.with_temp_mount(&name, &path, FsKind::Xfs, grow_xfs)?,
            (FsKind::Ext4, None) => {
                // Offline resize2fs insists on a freshly checked filesystem.
                subvol_os::cmd::run("e2fsck", "e2fsprogs", ["-f", "-p", &path.to_string_lossy()])
                    .map_err(|e| Error::os("cannot check the ext4 before growing it", e))?;
                grow_ext4(&path)?;
            }
        }
        self.info(&name)
    }

    /// Renames a subvolume and its snapshots; refused while any is mounted.
    /// A retry that finds OLD gone (with its snapshots) and NEW there
    /// succeeds without change.
    pub fn rename(&self, old: &str, new: &str) -> Result<(SubvolumeInfo, Outcome)> {
        let old = ObjectName::parse_subvolume(old)?.subvolume;
        let new = ObjectName::parse_subvolume(new)?.subvolume;
        let _lock = self.lock()?;
        self.refuse_while_received(&old)?;
        self.refuse_while_received(&new)?;
        let gone = |p: PathBuf| std::fs::symlink_metadata(p).is_err();
        if gone(self.layout.subvolume_image(&old))
            && gone(self.layout.snapshot_dir(&old))
            && !gone(self.layout.subvolume_image(&new))
        {
            return Ok((self.info(&new)?, Outcome::AlreadyDone));
        }
        let src = self.existing_image(&old)?;
        let dst = self.layout.subvolume_image(&new);
        if std::fs::symlink_metadata(&dst).is_ok() || std::fs::symlink_metadata(self.layout.snapshot_dir(&new)).is_ok()
        {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("subvolume {new:?} (or snapshots under that name) already exists; pick another name"),
            ));
        }
        let kernel = KernelView::read()?;
        let mut images = vec![(old.clone(), src.clone())];
        images.extend(self.snapshot_images(&old)?.into_iter().map(|(snap, p)| (format!("{old}@{snap}"), p)));
        for (what, image) in &images {
            if let Some(a) = kernel.attachments(image).first() {
                return Err(Error::new(ErrorKind::Busy, format!("{what} is {}; umount it before renaming", where_(a))));
            }
        }
        crate::rename::rename(&self.layout, &old, &new)?;
        Ok((self.info(&new)?, Outcome::Done))
    }

    /// Snapshots of one subvolume as `(SNAP, image path)`, sorted by name.
    pub(crate) fn snapshot_images(&self, name: &str) -> Result<Vec<(String, PathBuf)>> {
        let dir = self.layout.snapshot_dir(name);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("cannot read {}", dir.display()), e)),
        };
        let mut out: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|e| layout::name_of_image(Path::new(&e.file_name())).map(|n| (n, e.path())))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes a subvolume. While mounted it is refused, unless `force`,
    /// which unmounts it first. A subvolume with snapshots needs
    /// `recursive` (snapshots go too) or `keep_snapshots` (they stay, and
    /// `rollback NAME@SNAP` can bring the subvolume back).
    ///
    /// Deleting what is not there succeeds without change (`AlreadyDone`),
    /// so a retry after a crash or a timeout is safe; `--recursive` then
    /// still deletes snapshots left under the name.
    pub fn delete(&self, name: &str, force: bool, recursive: bool, keep_snapshots: bool) -> Result<Outcome> {
        let obj = ObjectName::parse(name)?;
        let _lock = self.lock()?;
        let absent =
            |p: &Path| matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if let Some(snap) = &obj.snapshot {
            if absent(&self.layout.snapshot_image(&obj.subvolume, snap)) {
                return Ok(Outcome::AlreadyDone);
            }
            return self.delete_snapshot_locked(&obj, force).map(|()| Outcome::Done);
        }
        let name = obj.subvolume;
        self.refuse_while_received(&name)?;
        let snaps = self.snapshot_images(&name)?;
        if absent(&self.layout.subvolume_image(&name)) {
            if !recursive || snaps.is_empty() {
                return Ok(Outcome::AlreadyDone);
            }
            for (snap, _) in &snaps {
                self.delete_snapshot_locked(
                    &ObjectName { subvolume: name.clone(), snapshot: Some(snap.clone()) },
                    force,
                )?;
            }
            return Ok(Outcome::Done);
        }
        let path = self.existing_image(&name)?;
        if !snaps.is_empty() && !recursive && !keep_snapshots {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{name} has {} snapshot(s); add --recursive to delete them too, or --keep-snapshots to keep them",
                    snaps.len()
                ),
            ));
        }
        if recursive {
            // Refuse before changing anything if any snapshot is held.
            for (snap, image) in &snaps {
                let f = open_existing(image, false)?;
                if let Ok(m) = read_meta(&f) {
                    if !m.holds.is_empty() {
                        return Err(held_error(&format!("{name}@{snap}"), &m));
                    }
                }
            }
        }
        let kernel = KernelView::read()?;
        let mut busy: Vec<(String, PathBuf)> = vec![(name.clone(), path.clone())];
        if recursive {
            busy.extend(snaps.iter().map(|(s, p)| (format!("{name}@{s}"), p.clone())));
        }
        for (what, image) in &busy {
            if let Some(a) = kernel.attachments(image).first() {
                if !force {
                    return Err(Error::new(
                        ErrorKind::Busy,
                        format!("{what} is {}; umount it first or use --force", where_(a)),
                    ));
                }
            }
        }
        for (what, image) in &busy {
            if !kernel.attachments(image).is_empty() {
                crate::error::require_root("delete --force")?;
                self.umount_image_locked(what, image)?;
            }
        }
        if recursive {
            for (snap, _) in &snaps {
                self.delete_snapshot_locked(
                    &ObjectName { subvolume: name.clone(), snapshot: Some(snap.clone()) },
                    force,
                )?;
            }
        }
        subvol_os::crash::point("delete-before-unlink");
        std::fs::remove_file(&path).map_err(|e| Error::io(format!("cannot delete {}", path.display()), e))?;
        subvol_os::fsync::fsync_dir(&self.layout.subvolumes_dir())
            .map_err(|e| Error::os("cannot make the change durable", e))?;
        self.remove_default_mount_point(&name);
        Ok(Outcome::Done)
    }
}

/// "mounted at X" or "attached to /dev/loopN".
pub(crate) fn where_(a: &Attachment) -> String {
    a.mount_points
        .first()
        .map(|m| format!("mounted at {}", m.display()))
        .unwrap_or_else(|| format!("attached to {}", a.loop_device.display()))
}

pub(crate) fn held_error(what: &str, m: &SubvolumeMeta) -> Error {
    let tags: Vec<&str> = m.holds.iter().map(String::as_str).collect();
    Error::new(ErrorKind::Busy, format!("{what} is held ({}); `subvol release {what} TAG` first", tags.join(", ")))
}

fn grow_xfs(mount_point: &Path) -> Result<()> {
    subvol_os::cmd::run("xfs_growfs", "xfsprogs", [mount_point.as_os_str()])
        .map_err(|e| Error::os("cannot grow the xfs filesystem", e))?;
    Ok(())
}

fn grow_ext4(device_or_image: &Path) -> Result<()> {
    subvol_os::cmd::run("resize2fs", "e2fsprogs", [device_or_image.as_os_str()])
        .map_err(|e| Error::os("cannot grow the ext4 filesystem", e))?;
    Ok(())
}

/// rename(2) that fails with EEXIST instead of replacing the target.
pub(crate) fn rename_noreplace(src: &Path, dst: &Path) -> subvol_os::OsResult<()> {
    subvol_os::fsync::rename_noreplace(src, dst)
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
