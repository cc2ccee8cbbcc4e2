//! Loop devices: attach an image file as a block device (LOOP_CONFIGURE, with
//! direct I/O and autoclear), detach it, grow it, and find which loop device
//! backs which file through sysfs, the kernel's own record (and, for a file
//! that no longer has a name, which inode it is: LOOP_GET_STATUS64).

use crate::error::{Context, OsError, OsResult};
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

const LOOP_CLR_FD: libc::c_ulong = 0x4c01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4c05;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4c07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4c0a;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4c82;

const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    const ZERO: LoopInfo64 = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: 0,
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; LO_KEY_SIZE],
        lo_init: [0; 2],
    };
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// How to attach an image.
#[derive(Debug, Clone, Copy)]
pub struct LoopOptions {
    pub read_only: bool,
    /// Bypass the host page cache (no double caching; the inner filesystem
    /// has its own).
    pub direct_io: bool,
    /// Detach automatically when the last user (the mount) goes away.
    pub autoclear: bool,
    /// Logical block size of the loop device; 0 lets the kernel choose.
    /// subvol uses 4096: the kernel picks the backing file's direct-I/O
    /// alignment, which on XFS becomes the filesystem block size as soon as
    /// a file shares blocks (after a snapshot), so a fixed 4096 keeps the
    /// device geometry the same before and after.
    pub block_size: u32,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions { read_only: false, direct_io: true, autoclear: true, block_size: 4096 }
    }
}

/// An attached loop device. Dropping it closes our handle only; with
/// autoclear the kernel detaches once nothing else (e.g. a mount) holds it.
#[derive(Debug)]
pub struct LoopDevice {
    pub number: u32,
    pub path: PathBuf,
    dev: File,
}

impl LoopDevice {
    pub fn as_file(&self) -> &File {
        &self.dev
    }

    /// The device's (major, minor), from the open device itself: names its
    /// BDI (/sys/class/bdi/MAJ:MIN) without scanning sysfs.
    pub fn dev_numbers(&self) -> OsResult<(u32, u32)> {
        let st = rustix::fs::fstat(&self.dev).map_err(|e| OsError::sys("fstat", Some(&self.path), e))?;
        Ok((rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)))
    }

    /// LOOP_SET_CAPACITY: re-reads the backing file's size after a grow.
    pub fn set_capacity(&self) -> OsResult<()> {
        ioctl_noarg(&self.dev, LOOP_SET_CAPACITY, "LOOP_SET_CAPACITY", &self.path)
    }

    /// LOOP_CLR_FD: detaches now (or, while still in use, as soon as the last
    /// user closes it).
    pub fn detach(self) -> OsResult<()> {
        ioctl_noarg(&self.dev, LOOP_CLR_FD, "LOOP_CLR_FD", &self.path)
    }

    /// LOOP_GET_STATUS64: the inode this device reads and writes. Unlike the
    /// sysfs path, it still identifies a backing file that was unlinked, and
    /// it cannot be confused by a file whose name merely ends in
    /// " (deleted)". ENXIO: nothing is attached.
    pub fn backing_inode(&self) -> OsResult<BackingInode> {
        let mut info = LoopInfo64::ZERO;
        // SAFETY: LOOP_GET_STATUS64 writes one `struct loop_info64`, mirrored
        // exactly by the repr(C) `LoopInfo64` (232 bytes, asserted above);
        // the pointer is valid and exclusive for the duration of the call.
        let rc = unsafe { libc::ioctl(self.dev.as_raw_fd(), LOOP_GET_STATUS64, &mut info as *mut LoopInfo64) };
        if rc < 0 {
            return Err(OsError::sys("LOOP_GET_STATUS64", Some(&self.path), std::io::Error::last_os_error()));
        }
        Ok(BackingInode { dev: st_dev_of_kernel_dev(info.lo_device), ino: info.lo_inode })
    }
}

/// The inode behind a loop device: what identifies a backing file whatever
/// its name (or lack of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingInode {
    /// The device of the filesystem holding the file, encoded as `stat(2)`
    /// reports `st_dev` (so it compares with `MetadataExt::dev`).
    pub dev: u64,
    pub ino: u64,
}

/// `lo_device` is the kernel's `huge_encode_dev` (12-bit major above an
/// 8 + 12-bit split minor); `stat(2)` encodes with `makedev`. They agree only
/// for small numbers, so decode and re-encode.
fn st_dev_of_kernel_dev(encoded: u64) -> u64 {
    let major = ((encoded & 0xf_ff00) >> 8) as u32;
    let minor = ((encoded & 0xff) | ((encoded >> 12) & 0xf_ff00)) as u32;
    rustix::fs::makedev(major, minor)
}

fn ioctl_noarg(fd: impl AsFd, op: libc::c_ulong, name: &'static str, path: &Path) -> OsResult<()> {
    // SAFETY: these loop ioctls take no pointer argument (the value 0 is
    // passed and ignored).
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), op, 0 as libc::c_ulong) };
    if rc < 0 {
        return Err(OsError::sys(name, Some(path), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// LOOP_CTL_GET_FREE: the number of a free loop device (created if needed).
fn get_free() -> OsResult<u32> {
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = OpenOptions::new().read(true).write(true).open(ctl_path).ctx("open", ctl_path)?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
    let rc = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if rc < 0 {
        return Err(OsError::sys("LOOP_CTL_GET_FREE", Some(ctl_path), std::io::Error::last_os_error()));
    }
    u32::try_from(rc).map_err(|_| OsError::Unexpected(format!("LOOP_CTL_GET_FREE returned {rc}")))
}

/// Attaches `image` to a free loop device with one LOOP_CONFIGURE call.
/// Retries when another process takes the same free device first (EBUSY).
pub fn loop_configure(image: &Path, opts: LoopOptions) -> OsResult<LoopDevice> {
    let backing = OpenOptions::new().read(true).write(!opts.read_only).open(image).ctx("open", image)?;
    let mut flags = 0;
    if opts.read_only {
        flags |= LO_FLAGS_READ_ONLY;
    }
    if opts.autoclear {
        flags |= LO_FLAGS_AUTOCLEAR;
    }
    if opts.direct_io {
        flags |= LO_FLAGS_DIRECT_IO;
    }
    let mut name = [0u8; LO_NAME_SIZE];
    let img = image.as_os_str().as_encoded_bytes();
    let n = img.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&img[..n]);
    let mut last_err = None;
    for _ in 0..16 {
        let number = get_free()?;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let dev = match OpenOptions::new().read(true).write(!opts.read_only).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last_err = Some(OsError::sys("open", Some(&path), e));
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(OsError::sys("open", Some(&path), e)),
        };
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: opts.block_size,
            info: LoopInfo64 { lo_flags: flags, lo_file_name: name, ..LoopInfo64::ZERO },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, mirrored
        // exactly by the repr(C) `LoopConfig` (304 bytes); the pointer is
        // valid for the call and the kernel copies the struct.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if rc == 0 {
            return Ok(LoopDevice { number, path, dev });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EBUSY) {
            last_err = Some(OsError::sys("LOOP_CONFIGURE", Some(&path), err));
            continue;
        }
        return Err(OsError::sys("LOOP_CONFIGURE", Some(&path), err));
    }
    Err(last_err.unwrap_or_else(|| OsError::Unexpected("no free loop device".into())))
}

/// Opens an attached loop device by number (to grow or detach it).
pub fn open(number: u32) -> OsResult<LoopDevice> {
    let path = PathBuf::from(format!("/dev/loop{number}"));
    let dev = OpenOptions::new().read(true).open(&path).ctx("open", &path)?;
    Ok(LoopDevice { number, path, dev })
}

/// What sysfs says about one attached loop device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopStatus {
    pub number: u32,
    pub path: PathBuf,
    pub major: u32,
    pub minor: u32,
    /// The backing file as the kernel names it now (follows renames).
    pub backing_file: PathBuf,
    /// The backing file was unlinked while attached.
    pub backing_deleted: bool,
    pub direct_io: bool,
    pub autoclear: bool,
    pub read_only: bool,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim_end_matches('\n').to_string())
}

/// Every attached loop device, from /sys/block/loop*/loop/.
pub fn list() -> Vec<LoopStatus> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(num) = name.strip_prefix("loop").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let base = entry.path();
        let Some(mut backing) = read_trim(&base.join("loop/backing_file")) else {
            continue;
        };
        let deleted = backing.ends_with(" (deleted)");
        if deleted {
            backing.truncate(backing.len() - " (deleted)".len());
        }
        let Some((major, minor)) = read_trim(&base.join("dev")).and_then(|d| {
            let (a, b) = d.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) else {
            continue;
        };
        let flag = |f: &str| read_trim(&base.join(f)).as_deref() == Some("1");
        out.push(LoopStatus {
            number: num,
            path: PathBuf::from(format!("/dev/loop{num}")),
            major,
            minor,
            backing_file: PathBuf::from(backing),
            backing_deleted: deleted,
            direct_io: flag("loop/dio"),
            autoclear: flag("loop/autoclear"),
            read_only: flag("ro"),
        });
    }
    out.sort_by_key(|l| l.number);
    out
}

/// The loop devices whose backing file is `image` (compared by path after
/// canonicalisation; the kernel reports the current path).
pub fn find_by_backing_file(image: &Path) -> Vec<LoopStatus> {
    let want = std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf());
    list().into_iter().filter(|l| !l.backing_deleted && l.backing_file == want).collect()
}

/// Caps the dirty page cache of a block device's writeback (BDI) at
/// `max_bytes`: `max_bytes` under /sys/class/bdi/MAJ:MIN, then
/// `strict_limit`, which makes the kernel throttle writers at that cap even
/// while the system-wide dirty limits are far away. `max_bytes` first, so
/// there is no moment with strict throttling against the default cap.
pub fn set_bdi_max_bytes(major: u32, minor: u32, max_bytes: u64) -> OsResult<()> {
    let base = PathBuf::from(format!("/sys/class/bdi/{major}:{minor}"));
    let max = base.join("max_bytes");
    std::fs::write(&max, max_bytes.to_string()).ctx("write", &max)?;
    let strict = base.join("strict_limit");
    std::fs::write(&strict, "1").ctx("write", &strict)
}

/// Lifts the cap again: `strict_limit` off and the device's share of the
/// kernel's dirty limit back to the default (`max_ratio` 100, which also
/// resets `max_bytes`).
pub fn clear_bdi_strict_limit(major: u32, minor: u32) -> OsResult<()> {
    let base = PathBuf::from(format!("/sys/class/bdi/{major}:{minor}"));
    let strict = base.join("strict_limit");
    std::fs::write(&strict, "0").ctx("write", &strict)?;
    let ratio = base.join("max_ratio");
    std::fs::write(&ratio, "100").ctx("write", &ratio)
}

/// The dirty cap in force on a block device's BDI: `Some(max_bytes)` when
/// `strict_limit` is set, `None` when the device follows the kernel's shared
/// limits (or the BDI is gone).
pub fn bdi_strict_max_bytes(major: u32, minor: u32) -> Option<u64> {
    let base = PathBuf::from(format!("/sys/class/bdi/{major}:{minor}"));
    if read_trim(&base.join("strict_limit")).as_deref() != Some("1") {
        return None;
    }
    read_trim(&base.join("max_bytes"))?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::st_dev_of_kernel_dev;

    #[test]
    fn kernel_device_numbers_decode_to_stat_encoding() {
        // loop2 (7:2) encodes the same either way.
        assert_eq!(st_dev_of_kernel_dev(0x702), rustix::fs::makedev(7, 2));
        // nvme 259:300: the minor's high bits sit above the major.
        let encoded = (300 & 0xff) | (259 << 8) | ((300 & !0xff) << 12);
        assert_eq!(st_dev_of_kernel_dev(encoded), rustix::fs::makedev(259, 300));
    }
}
