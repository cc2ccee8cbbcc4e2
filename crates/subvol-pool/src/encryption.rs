//! Encrypted subvolumes: ext4 images whose files are encrypted by the
//! kernel (fscrypt v2) with a key per subvolume, so the image, and every
//! snapshot, clone, stream and replica of it, holds only ciphertext.
//!
//! Layout (see subvol-core's `encryption`): the filesystem's root is plain
//! and holds `data/` under the policy; the mount point shows `data/` alone.
//! Keys live only in the kernel's keyring of a mounted filesystem, so:
//! `unlock` mounts the subvolume if it is not mounted, then adds the key;
//! `lock` removes the key, then unmounts and mounts it again. The second
//! step is what makes the lock whole: the mount pins `data/` itself, whose
//! names the kernel keeps decrypted for as long as it is in memory, and only
//! a new superblock starts with nothing decrypted in memory.

use crate::error::{require_root, Error, ErrorKind, Result};
use crate::kernel::{Attachment, KernelView};
use crate::mounting::MountOptions;
use crate::outcome::Outcome;
use crate::pool::Pool;
use crate::subvolume::{open_image, CreateOptions, SubvolumeInfo};
use serde::Serialize;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use subvol_core::encryption::{
    self, EncryptionRecord, Kdf, KeyIdentifier, MasterKey, DATA_DIR, EXT4_SUPERBLOCK_BYTES, EXT4_SUPERBLOCK_OFFSET,
    RECORD_XATTR,
};
use subvol_core::mountinfo::MountEntry;
use subvol_core::{FsKind, ObjectName};
use subvol_os::fscrypt::{self, KeyStatus};
use zeroize::Zeroizing;

/// Where the key of an encrypted subvolume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A file of exactly 64 random bytes.
    KeyFile(PathBuf),
    /// A file whose first line is a passphrase, stretched with Argon2id.
    PassphraseFile(PathBuf),
}

impl KeySource {
    fn path(&self) -> &Path {
        match self {
            KeySource::KeyFile(p) | KeySource::PassphraseFile(p) => p,
        }
    }

    fn what(&self) -> &'static str {
        match self {
            KeySource::KeyFile(_) => "key file",
            KeySource::PassphraseFile(_) => "passphrase file",
        }
    }
}

/// What `unlock` did.
#[derive(Debug, Clone, Serialize)]
pub struct UnlockReport {
    pub name: String,
    pub mount_point: PathBuf,
    /// Whether this unlock mounted it (it was not mounted).
    pub mounted: bool,
    pub key_identifier: String,
    pub outcome: Outcome,
}

/// What `lock` did.
#[derive(Debug, Clone, Serialize)]
pub struct LockReport {
    pub name: String,
    /// Where it is mounted, locked (`None`: not mounted).
    pub mount_point: Option<PathBuf>,
    pub outcome: Outcome,
}

/// A key for a new subvolume, and how a passphrase became it.
pub(crate) struct NewKey {
    key: MasterKey,
    kdf: Option<Kdf>,
}

/// The contents of a key or passphrase file, wiped when dropped. Refused
/// before anything else happens: a file that is missing, not a regular
/// file, open to group or others, or larger than any key or passphrase.
fn read_secret(source: &KeySource) -> Result<Zeroizing<Vec<u8>>> {
    const LIMIT: usize = 4096;
    let (path, what) = (source.path(), source.what());
    let mut f = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::new(ErrorKind::NotFound, format!("{what} {} does not exist", path.display()))
        }
        _ => Error::io(format!("cannot read {what} {}", path.display()), e),
    })?;
    let st = f.metadata().map_err(|e| Error::io(format!("cannot read {what} {}", path.display()), e))?;
    if !st.is_file() {
        return Err(Error::invalid(format!("{what} {} is not a regular file", path.display())));
    }
    if let Some(problem) = encryption::file_mode_problem(st.mode()) {
        return Err(Error::invalid(format!("{what} {} {problem}", path.display())));
    }
    // Room for the limit and one byte more, so reading never reallocates
    // (a reallocation would leave a copy of the secret behind).
    let mut buf = Zeroizing::new(Vec::with_capacity(LIMIT + 1));
    (&mut f)
        .take(LIMIT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("cannot read {what} {}", path.display()), e))?;
    if buf.len() > LIMIT {
        return Err(Error::invalid(format!(
            "{what} {} is larger than {LIMIT} bytes; it is not a key or passphrase file",
            path.display()
        )));
    }
    Ok(buf)
}

fn key_error(source: &KeySource, e: encryption::KeyError) -> Error {
    Error::invalid(format!("{} {} {e}", source.what(), source.path().display()))
}

/// Checks what can be checked of a key source without the subvolume's
/// record: a key file's size, a passphrase's length.
fn precheck(source: &KeySource, secret: &[u8]) -> Result<()> {
    match source {
        KeySource::KeyFile(_) => MasterKey::from_key_file(secret).map(drop),
        KeySource::PassphraseFile(_) => encryption::passphrase(secret).map(drop),
    }
    .map_err(|e| key_error(source, e))
}

/// The key for `create --encrypt`, or `None` without it; refuses what
/// cannot be encrypted before anything is made.
pub(crate) fn new_key(opts: &CreateOptions) -> Result<Option<NewKey>> {
    let Some(source) = &opts.encryption else {
        if opts.mkfs_opts.iter().any(|o| o.contains("encrypt")) {
            return Err(Error::invalid(
                "--mkfs-opt cannot turn on ext4 encryption; use --encrypt with --key-file or --passphrase-file",
            ));
        }
        return Ok(None);
    };
    match opts.fs {
        FsKind::Ext4 => {}
        FsKind::Xfs => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "xfs has no file encryption (fscrypt) in the kernel; encrypted subvolumes are ext4: add --fs ext4",
            ))
        }
        FsKind::Raw => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a raw image has no files for the kernel to encrypt; use --fs ext4, or encrypt inside the VM",
            ))
        }
    }
    if !fscrypt::ext4_supported() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this kernel cannot encrypt ext4 (no /sys/fs/ext4/features/encryption); use a kernel with CONFIG_FS_ENCRYPTION",
        ));
    }
    let secret = read_secret(source)?;
    precheck(source, &secret)?;
    let new = match source {
        KeySource::KeyFile(_) => {
            NewKey { key: MasterKey::from_key_file(&secret).map_err(|e| key_error(source, e))?, kdf: None }
        }
        KeySource::PassphraseFile(_) => {
            let salt = subvol_os::random::bytes::<16>().map_err(|e| Error::os("cannot draw a salt", e))?;
            let kdf = Kdf::new_argon2id(salt);
            let key = MasterKey::from_passphrase(&secret, &kdf).map_err(|e| key_error(source, e))?;
            NewKey { key, kdf: Some(kdf) }
        }
    };
    Ok(Some(new))
}

/// The mkfs arguments an encrypted ext4 needs.
pub(crate) fn mkfs_args(opts: &CreateOptions) -> Vec<String> {
    if opts.encryption.is_some() {
        vec!["-O".into(), "encrypt".into()]
    } else {
        Vec::new()
    }
}

/// Whether an image holds an ext4 with the `encrypt` feature (read from its
/// superblock: right for snapshots, clones and received images alike).
pub(crate) fn is_encrypted_image(file: &File, fs: FsKind) -> bool {
    if fs != FsKind::Ext4 {
        return false;
    }
    let mut sb = [0u8; EXT4_SUPERBLOCK_BYTES];
    file.read_exact_at(&mut sb, EXT4_SUPERBLOCK_OFFSET).is_ok() && encryption::ext4_encrypt_feature(&sb) == Some(true)
}

/// `(encrypted, unlocked)` for `info` and `list`: whether the image is
/// encrypted and, if so, whether its key is loaded (never, unmounted).
pub(crate) fn state(file: &File, fs: FsKind, attachments: &[Attachment]) -> (bool, Option<bool>) {
    if !is_encrypted_image(file, fs) {
        return (false, None);
    }
    let status = attachments.iter().find_map(|a| {
        let mp = a.mount_points.first()?;
        let root = fscrypt::open_mount_root(mp, a.major, a.minor).ok()?;
        let id = fscrypt::policy_key(&root).ok()??;
        fscrypt::key_status(&root, &id).ok()
    });
    (true, Some(status == Some(KeyStatus::Present)))
}

/// Encrypted objects mounted with their key half removed: files opened
/// while it was loaded are still open, or a `lock` was interrupted before
/// its unmount. Their open files and top directory's names stay readable
/// until `lock` finishes, so `pool check` reports each.
pub(crate) fn half_locked(all: &[SubvolumeInfo]) -> Vec<String> {
    let mut out = Vec::new();
    for s in all.iter().filter(|s| s.encrypted) {
        for a in &s.attachments {
            let Some(mp) = a.mount_points.first() else { continue };
            let Ok(root) = fscrypt::open_mount_root(mp, a.major, a.minor) else { continue };
            let Ok(Some(id)) = fscrypt::policy_key(&root) else { continue };
            if fscrypt::key_status(&root, &id).ok() == Some(KeyStatus::IncompletelyRemoved) {
                out.push(format!(
                    "{}'s key is half removed at {}: files opened while it was unlocked are still open, or a lock was interrupted, and they and its top directory's names stay readable; close them (`fuser -vm {}`) and run `subvol lock {}`",
                    s.name,
                    mp.display(),
                    mp.display(),
                    s.name
                ));
            }
        }
    }
    out
}

/// The mounted filesystem of an encrypted object, opened for the keyring
/// ioctls, with its record and the key identifier of its policy.
struct Mounted {
    root: File,
    entry: MountEntry,
    record: EncryptionRecord,
    id: KeyIdentifier,
}

impl Pool {
    /// Sets up encryption in a freshly made ext4 (still in the tmp dir):
    /// `data/` with the v2 policy for `new`'s key and the record. The key is
    /// added first to check that the kernel derives the identifier subvol
    /// computed, and removed again; the temporary mount goes with it.
    pub(crate) fn encrypt_new_image(&self, name: &str, image: &Path, new: &NewKey) -> Result<()> {
        let id = new.key.identifier();
        let record = EncryptionRecord::new(id, new.kdf.clone());
        self.with_temp_mount(name, image, FsKind::Ext4, |dir| {
            let fail = |what: &str, e| Error::os(format!("cannot encrypt {name}: {what}"), e);
            let root = File::open(dir).map_err(|e| Error::io(format!("cannot open {}", dir.display()), e))?;
            let kernel_id = fscrypt::add_key(&root, &new.key).map_err(|e| fail("adding the key", e))?;
            if kernel_id != id {
                let _ = fscrypt::remove_key(&root, &kernel_id);
                return Err(identifier_mismatch(kernel_id, id));
            }
            let data = dir.join(DATA_DIR);
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&data)
                .map_err(|e| Error::io(format!("cannot create {}", data.display()), e))?;
            let d = File::open(&data).map_err(|e| Error::io(format!("cannot open {}", data.display()), e))?;
            fscrypt::set_policy(&d, &id).map_err(|e| fail("setting the policy", e))?;
            subvol_os::xattr::fset(&d, RECORD_XATTR, &record.encode()).map_err(|e| fail("writing the record", e))?;
            d.sync_all().map_err(|e| Error::io("cannot sync", e))?;
            drop(d);
            fscrypt::remove_key(&root, &id).map_err(|e| fail("removing the key", e))?;
            Ok(())
        })
    }

    /// Refuses an object that is not an encrypted subvolume or snapshot.
    fn encrypted_image(&self, obj: &ObjectName) -> Result<PathBuf> {
        let image = self.object_image(obj)?;
        let file = open_image(&image, false).map_err(|e| Error::io(format!("cannot open {}", image.display()), e))?;
        let meta =
            crate::subvolume::read_meta(&file).map_err(|e| Error::new(ErrorKind::Corrupt, format!("{obj}: {e}")))?;
        if !is_encrypted_image(&file, meta.fs) {
            return Err(Error::invalid(format!(
                "{obj} is not encrypted; only subvolumes made with `subvol create --fs ext4 --encrypt` have a key"
            )));
        }
        Ok(image)
    }

    /// The mount of an encrypted object, checked (the path still leads to
    /// the mount the kernel lists, on the object's loop device), with its
    /// record; `None` if it is not mounted.
    fn mounted(&self, obj: &ObjectName, image: &Path) -> Result<Option<Mounted>> {
        let kernel = KernelView::read()?;
        let Some((a, entry)) = kernel.attachments(image).into_iter().find_map(|a| {
            let m = kernel.mounts_of(a.major, a.minor).first().map(|m| (*m).clone());
            m.map(|m| (a, m))
        }) else {
            return Ok(None);
        };
        let name = obj.to_string();
        self.verify_mount_point(&name, &entry)?;
        let mp = &entry.mount_point;
        let root = fscrypt::open_mount_root(mp, a.major, a.minor)
            .map_err(|e| Error::os(format!("cannot open {name} at {}", mp.display()), e))?;
        let remount = || format!("`subvol umount {name}` and `subvol mount {name}` to show it");
        let bytes = subvol_os::xattr::fget(&root, RECORD_XATTR)
            .map_err(|e| Error::os(format!("cannot read {name}'s encryption record"), e))?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{} does not show {name}'s encrypted directory (mounted by another tool?); {}",
                        mp.display(),
                        remount()
                    ),
                )
            })?;
        let record = EncryptionRecord::decode(&bytes)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{name}'s encryption record: {e}")))?;
        let id = fscrypt::policy_key(&root)
            .map_err(|e| Error::os(format!("cannot read {name}'s encryption policy"), e))?
            .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("{name}'s {DATA_DIR} has no encryption policy")))?;
        let recorded = record.identifier().map_err(|e| Error::new(ErrorKind::Corrupt, e.to_string()))?;
        if recorded != id {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("{name}'s record names key {recorded} but its policy uses {id}; the image was altered"),
            ));
        }
        Ok(Some(Mounted { root, entry, record, id }))
    }

    /// Loads the key of an encrypted subvolume or snapshot, mounting it
    /// first if it is not mounted (a key lives in a mounted filesystem's
    /// keyring only). The key is checked against the identifier in the
    /// policy before it is added, so a wrong key never reaches the kernel;
    /// a subvolume this call mounted is unmounted again then. Unlocking an
    /// unlocked one succeeds without change.
    pub fn unlock_encrypted(&self, name: &str, source: &KeySource) -> Result<UnlockReport> {
        let obj = ObjectName::parse(name)?;
        let name = obj.to_string();
        require_root("unlock")?;
        let secret = read_secret(source)?;
        precheck(source, &secret)?;
        let image = {
            let _lock = self.lock()?;
            self.encrypted_image(&obj)?
        };
        let mount = self.mount(&name, &MountOptions::default())?;
        let mounted_now = !mount.already_mounted;
        subvol_os::crash::point("unlock-after-mount");
        let _lock = self.lock()?;
        let m = self
            .mounted(&obj, &image)?
            .ok_or_else(|| Error::new(ErrorKind::Busy, format!("{name} was unmounted while unlocking; retry")))?;
        let key = match (source, &m.record.kdf) {
            (KeySource::KeyFile(_), _) => MasterKey::from_key_file(&secret),
            (KeySource::PassphraseFile(_), Some(kdf)) => MasterKey::from_passphrase(&secret, kdf),
            (KeySource::PassphraseFile(_), None) => {
                drop(m);
                return Err(self.undo_mount(
                    &name,
                    &image,
                    mounted_now,
                    ErrorKind::InvalidArgument,
                    format!("{name} is encrypted with a key file, not a passphrase; give --key-file FILE"),
                ));
            }
        }
        .map_err(|e| key_error(source, e))?;
        drop(secret);
        if key.identifier() != m.id {
            let hint = match (source, &m.record.kdf) {
                (KeySource::KeyFile(_), Some(_)) => " (it was made with a passphrase: give --passphrase-file)",
                _ => "",
            };
            let needed = m.id;
            // Our handle on its root would keep the mount busy.
            drop(m);
            return Err(self.undo_mount(
                &name,
                &image,
                mounted_now,
                ErrorKind::PermissionDenied,
                format!(
                    "wrong key for {name}: the {} {} holds key {}, {name} is encrypted with key {needed}{hint}; nothing was added",
                    source.what(),
                    source.path().display(),
                    key.identifier(),
                ),
            ));
        }
        let report = |outcome| UnlockReport {
            name: name.clone(),
            mount_point: m.entry.mount_point.clone(),
            mounted: mounted_now,
            key_identifier: m.id.to_string(),
            outcome,
        };
        let status =
            fscrypt::key_status(&m.root, &m.id).map_err(|e| Error::os(format!("cannot ask about {name}'s key"), e))?;
        if status == KeyStatus::Present {
            return Ok(report(Outcome::AlreadyDone));
        }
        let added = fscrypt::add_key(&m.root, &key).map_err(|e| Error::os(format!("cannot add {name}'s key"), e))?;
        subvol_os::crash::point("unlock-after-add-key");
        if added != m.id {
            let _ = fscrypt::remove_key(&m.root, &added);
            return Err(identifier_mismatch(added, m.id));
        }
        Ok(report(Outcome::Done))
    }

    /// After a refused unlock: unmounts what the unlock mounted, so a
    /// refusal changes nothing. Returns the refusal.
    fn undo_mount(&self, name: &str, image: &Path, mounted_now: bool, kind: ErrorKind, why: String) -> Error {
        if mounted_now && self.umount_image_locked(name, image).is_err() {
            return Error::new(kind, format!("{why} ({name} stays mounted, locked)"));
        }
        Error::new(kind, why)
    }

    /// Removes the key of an encrypted subvolume or snapshot, then unmounts
    /// it and mounts it again where it was, locked: nothing decrypted stays
    /// in memory. While files opened under the key are still open, the
    /// unmount is refused (exit 5) and the key stays half removed (no new
    /// file can be opened; those open keep their plaintext) until they
    /// close and `lock` runs again. Locking a locked or unmounted one
    /// succeeds without change.
    pub fn lock_encrypted(&self, name: &str) -> Result<LockReport> {
        let obj = ObjectName::parse(name)?;
        let name = obj.to_string();
        require_root("lock")?;
        let again = {
            let _lock = self.lock()?;
            let image = self.encrypted_image(&obj)?;
            let Some(m) = self.mounted(&obj, &image)? else {
                return Ok(LockReport { name, mount_point: None, outcome: Outcome::AlreadyDone });
            };
            let mp = m.entry.mount_point.clone();
            let status = fscrypt::key_status(&m.root, &m.id)
                .map_err(|e| Error::os(format!("cannot ask about {name}'s key"), e))?;
            if status == KeyStatus::Absent {
                return Ok(LockReport { name, mount_point: Some(mp), outcome: Outcome::AlreadyDone });
            }
            fscrypt::remove_key(&m.root, &m.id).map_err(|e| Error::os(format!("cannot remove {name}'s key"), e))?;
            subvol_os::crash::point("lock-after-remove-key");
            let again = self.remount_options(&name, &obj, &m.entry);
            drop(m);
            self.umount_image_locked(&name, &image).map_err(|e| match e.kind {
                ErrorKind::Busy => Error::new(
                    ErrorKind::Busy,
                    format!(
                        "{name}'s key is removed, but files opened while it was unlocked are still open at {} and stay readable until closed; close them (`fuser -vm {}`) and run `subvol lock {name}` again",
                        mp.display(),
                        mp.display()
                    ),
                ),
                _ => e,
            })?;
            again
        };
        subvol_os::crash::point("lock-after-umount");
        let mounted = self.mount(&name, &again).map_err(|e| {
            Error::new(
                e.kind,
                format!(
                    "{name} is locked and unmounted, but mounting it again failed: {}; `subvol mount {name}`",
                    e.message
                ),
            )
        })?;
        Ok(LockReport { name, mount_point: Some(mounted.mount_point), outcome: Outcome::Done })
    }

    /// How to mount `obj` again as it is mounted now: the same place (the
    /// default one, if it is there) and the same options, as mountinfo
    /// lists them (a snapshot gets its own read-only options from `mount`).
    fn remount_options(&self, name: &str, obj: &ObjectName, m: &MountEntry) -> MountOptions {
        let default = self.mount_base().join(name);
        let path = (m.mount_point != default).then(|| m.mount_point.clone());
        if obj.is_snapshot() {
            return MountOptions { path, ..MountOptions::default() };
        }
        let per_mount = m.options.split(',').filter(|o| *o != "rw" && *o != "ro");
        let per_sb = m.super_options.split(',').filter(|o| *o != "rw" && *o != "ro");
        let options: Vec<&str> = per_mount.chain(per_sb).filter(|o| !o.is_empty()).collect();
        MountOptions {
            path,
            read_only: m.options.split(',').any(|o| o == "ro"),
            options: (!options.is_empty()).then(|| options.join(",")),
        }
    }
}

fn identifier_mismatch(kernel: KeyIdentifier, ours: KeyIdentifier) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("the kernel derived key identifier {kernel} where subvol computed {ours}; the key was removed again, please report this bug"),
    )
}
