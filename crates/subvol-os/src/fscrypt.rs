//! fscrypt, the kernel's file encryption (ext4 here): setting a v2 policy on
//! an empty directory, reading it back, and adding, removing and asking
//! about master keys in a mounted filesystem's keyring. Struct layouts and
//! ioctl numbers are those of linux/fscrypt.h.

use crate::error::{Context, OsError, OsResult};
use rustix::fs::{Mode, OFlags};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use subvol_core::encryption::{KeyIdentifier, MasterKey, KEY_BYTES};
use zeroize::Zeroize;

const FS_IOC_SET_ENCRYPTION_POLICY: libc::c_ulong = 0x800c_6613;
const FS_IOC_GET_ENCRYPTION_POLICY_EX: libc::c_ulong = 0xc009_6616;
const FS_IOC_ADD_ENCRYPTION_KEY: libc::c_ulong = 0xc050_6617;
const FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS: libc::c_ulong = 0xc040_6619;
const FS_IOC_GET_ENCRYPTION_KEY_STATUS: libc::c_ulong = 0xc080_661a;

const FSCRYPT_POLICY_V2: u8 = 2;
const FSCRYPT_MODE_AES_256_XTS: u8 = 1;
const FSCRYPT_MODE_AES_256_CTS: u8 = 4;
const FSCRYPT_POLICY_FLAGS_PAD_32: u8 = 0x03;
const FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY: u32 = 0x1;
const FSCRYPT_KEY_STATUS_ABSENT: u32 = 1;
const FSCRYPT_KEY_STATUS_PRESENT: u32 = 2;
const FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED: u32 = 3;

/// `struct fscrypt_policy_v2` (24 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PolicyV2 {
    version: u8,
    contents_encryption_mode: u8,
    filenames_encryption_mode: u8,
    flags: u8,
    reserved: [u8; 4],
    master_key_identifier: [u8; 16],
}

/// `struct fscrypt_get_policy_ex_arg` with room for a v2 policy (32 bytes).
#[repr(C)]
#[derive(Default)]
struct GetPolicyExArg {
    policy_size: u64,
    policy: PolicyV2,
}

/// `struct fscrypt_key_specifier` (40 bytes).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct KeySpecifier {
    kind: u32,
    reserved: u32,
    u: [u8; 32],
}

impl KeySpecifier {
    fn identifier(id: &KeyIdentifier) -> KeySpecifier {
        let mut u = [0u8; 32];
        u[..16].copy_from_slice(&id.0);
        KeySpecifier { kind: FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, reserved: 0, u }
    }
}

/// `struct fscrypt_add_key_arg` (80 bytes) followed by the raw key, which
/// is wiped when this goes out of scope, whatever path leaves it.
#[repr(C)]
struct AddKeyArg {
    key_spec: KeySpecifier,
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; KEY_BYTES],
}

impl Drop for AddKeyArg {
    fn drop(&mut self) {
        self.raw.zeroize();
    }
}

/// `struct fscrypt_remove_key_arg` (64 bytes).
#[repr(C)]
#[derive(Default)]
struct RemoveKeyArg {
    key_spec: KeySpecifier,
    removal_status_flags: u32,
    reserved: [u32; 5],
}

/// `struct fscrypt_get_key_status_arg` (128 bytes).
#[repr(C)]
#[derive(Default)]
struct KeyStatusArg {
    key_spec: KeySpecifier,
    reserved: [u32; 6],
    status: u32,
    status_flags: u32,
    user_count: u32,
    out_reserved: [u32; 13],
}

/// Where a master key stands in a filesystem's keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Absent,
    Present,
    /// Removed, but files opened while it was present are still in use and
    /// keep their plaintext until closed (removing it again finishes).
    IncompletelyRemoved,
}

/// What removing a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// Files using the key are still open: the key is gone for new opens,
    /// and those files keep their cached plaintext until closed.
    pub files_busy: bool,
}

fn ioctl<T>(fd: impl AsFd, op: &'static str, request: libc::c_ulong, arg: &mut T) -> OsResult<()> {
    // SAFETY: every caller passes the repr(C) struct that `request` is
    // defined with in linux/fscrypt.h (sizes checked by the tests below),
    // borrowed mutably for the duration of the call; the kernel reads and
    // writes only within it.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), request, arg as *mut T) };
    if rc < 0 {
        return Err(OsError::sys(op, None, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Sets the v2 policy subvol uses (AES-256-XTS contents, AES-256-CTS names
/// padded to 32 bytes) on an empty directory, for the key `id`. Root may
/// set it without the key in the keyring (CAP_FOWNER).
pub fn set_policy(dir: impl AsFd, id: &KeyIdentifier) -> OsResult<()> {
    let mut p = PolicyV2 {
        version: FSCRYPT_POLICY_V2,
        contents_encryption_mode: FSCRYPT_MODE_AES_256_XTS,
        filenames_encryption_mode: FSCRYPT_MODE_AES_256_CTS,
        flags: FSCRYPT_POLICY_FLAGS_PAD_32,
        master_key_identifier: id.0,
        ..PolicyV2::default()
    };
    ioctl(dir, "FS_IOC_SET_ENCRYPTION_POLICY", FS_IOC_SET_ENCRYPTION_POLICY, &mut p)
}

/// The key identifier of a directory's v2 policy, `None` if it is not
/// encrypted. A policy other than subvol's (v1, other modes or flags) is an
/// error: subvol never sets one.
pub fn policy_key(dir: impl AsFd) -> OsResult<Option<KeyIdentifier>> {
    let mut arg = GetPolicyExArg { policy_size: std::mem::size_of::<PolicyV2>() as u64, ..Default::default() };
    match ioctl(dir, "FS_IOC_GET_ENCRYPTION_POLICY_EX", FS_IOC_GET_ENCRYPTION_POLICY_EX, &mut arg) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(libc::ENODATA) => return Ok(None),
        Err(e) => return Err(e),
    }
    let p = arg.policy;
    let ours = p.version == FSCRYPT_POLICY_V2
        && p.contents_encryption_mode == FSCRYPT_MODE_AES_256_XTS
        && p.filenames_encryption_mode == FSCRYPT_MODE_AES_256_CTS
        && p.flags == FSCRYPT_POLICY_FLAGS_PAD_32;
    if !ours {
        return Err(OsError::Unexpected(format!(
            "the directory has an fscrypt policy subvol does not set (version {}, modes {}/{}, flags {:#x})",
            p.version, p.contents_encryption_mode, p.filenames_encryption_mode, p.flags
        )));
    }
    Ok(Some(KeyIdentifier(p.master_key_identifier)))
}

/// Adds a master key to the keyring of the filesystem `fs` is on and
/// returns the identifier the kernel derived for it.
pub fn add_key(fs: impl AsFd, key: &MasterKey) -> OsResult<KeyIdentifier> {
    let mut arg = AddKeyArg {
        key_spec: KeySpecifier { kind: FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, ..KeySpecifier::default() },
        raw_size: KEY_BYTES as u32,
        key_id: 0,
        reserved: [0; 8],
        raw: [0; KEY_BYTES],
    };
    arg.raw.copy_from_slice(key.bytes());
    ioctl(fs, "FS_IOC_ADD_ENCRYPTION_KEY", FS_IOC_ADD_ENCRYPTION_KEY, &mut arg)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&arg.key_spec.u[..16]);
    Ok(KeyIdentifier(id))
}

/// Removes a master key for every user who added it (root's
/// FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS): the kernel wipes the key,
/// syncs the filesystem and evicts the cached inodes, names and pages that
/// used it, except those of files still open.
pub fn remove_key(fs: impl AsFd, id: &KeyIdentifier) -> OsResult<Removal> {
    let mut arg = RemoveKeyArg { key_spec: KeySpecifier::identifier(id), ..Default::default() };
    ioctl(fs, "FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS", FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS, &mut arg)?;
    Ok(Removal { files_busy: arg.removal_status_flags & FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY != 0 })
}

/// Whether the key `id` is in the keyring of the filesystem `fs` is on.
pub fn key_status(fs: impl AsFd, id: &KeyIdentifier) -> OsResult<KeyStatus> {
    let mut arg = KeyStatusArg { key_spec: KeySpecifier::identifier(id), ..Default::default() };
    ioctl(fs, "FS_IOC_GET_ENCRYPTION_KEY_STATUS", FS_IOC_GET_ENCRYPTION_KEY_STATUS, &mut arg)?;
    match arg.status {
        FSCRYPT_KEY_STATUS_ABSENT => Ok(KeyStatus::Absent),
        FSCRYPT_KEY_STATUS_PRESENT => Ok(KeyStatus::Present),
        FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED => Ok(KeyStatus::IncompletelyRemoved),
        other => Err(OsError::Unexpected(format!("the kernel reports key status {other}"))),
    }
}

/// Opens the root of the mount at `mount_point` for the keyring ioctls:
/// never through a symlink there, and only if it is on the block device
/// `major:minor` (the subvolume's loop device), so a key never goes to
/// another filesystem.
pub fn open_mount_root(mount_point: &Path, major: u32, minor: u32) -> OsResult<File> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(rustix::fs::CWD, mount_point, flags, Mode::empty()).ctx("open", mount_point)?;
    let st = rustix::fs::fstat(&fd).ctx("stat", mount_point)?;
    let dev = (rustix::fs::major(st.st_dev), rustix::fs::minor(st.st_dev));
    if dev != (major, minor) {
        return Err(OsError::Unexpected(format!(
            "{} is on device {}:{}, not the subvolume's {major}:{minor}",
            mount_point.display(),
            dev.0,
            dev.1
        )));
    }
    Ok(File::from(fd))
}

/// Whether this kernel can encrypt ext4 (`/sys/fs/ext4/features/encryption`).
pub fn ext4_supported() -> bool {
    std::path::Path::new("/sys/fs/ext4/features/encryption").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn structs_have_the_kernels_sizes() {
        // The sizes encoded in the ioctl numbers (bits 16..30) and those of
        // linux/fscrypt.h.
        let size = |req: libc::c_ulong| ((req >> 16) & 0x3fff) as usize;
        assert_eq!(size_of::<PolicyV2>(), 24);
        assert_eq!(size_of::<KeySpecifier>(), 40);
        assert_eq!(size_of::<AddKeyArg>() - KEY_BYTES, size(FS_IOC_ADD_ENCRYPTION_KEY));
        assert_eq!(size_of::<RemoveKeyArg>(), size(FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS));
        assert_eq!(size_of::<KeyStatusArg>(), size(FS_IOC_GET_ENCRYPTION_KEY_STATUS));
        assert_eq!(size_of::<GetPolicyExArg>(), 32);
        // SET_ENCRYPTION_POLICY is declared with the v1 struct; the kernel
        // reads the version byte, then the whole v2 policy.
        assert_eq!(size(FS_IOC_SET_ENCRYPTION_POLICY), 12);
        assert_eq!(size(FS_IOC_GET_ENCRYPTION_POLICY_EX), 9);
    }

    #[test]
    fn an_unencrypted_directory_has_no_policy() {
        let t = tempfile::tempdir().unwrap();
        let dir = std::fs::File::open(t.path()).unwrap();
        // tmpfs and most test hosts answer "not supported"; ext4 says ENODATA.
        match policy_key(&dir) {
            Ok(None) => {}
            Err(e) => assert!(matches!(e.errno(), Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP)), "{e}"),
            Ok(Some(id)) => panic!("a fresh temp dir has key {id}"),
        }
    }
}
