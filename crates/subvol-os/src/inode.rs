//! FS_IOC_GETVERSION: an inode's generation number. Inode numbers are
//! reused once a file is deleted; the generation changes with each reuse
//! (XFS and ext4 draw it at random and bump it when the number comes back,
//! btrfs records the transaction that made the inode), so the pair
//! (number, generation) names one file for the filesystem's lifetime. NFS
//! file handles rely on the same pair.

use crate::error::{OsError, OsResult};
use std::os::fd::{AsFd, AsRawFd};

/// The inode's generation. ENOTTY on filesystems without one (tmpfs).
pub fn generation(fd: impl AsFd) -> OsResult<u32> {
    // The ioctl number says `long`, but filesystems store an `int` at the
    // pointer; room for a `long` keeps one that stores more in bounds, and
    // the `int` sits first whatever the byte order.
    let mut out: [libc::c_int; 2] = [0; 2];
    // SAFETY: FS_IOC_GETVERSION writes at most a `long` (8 bytes) at the
    // pointer, which points to 8 writable bytes for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::FS_IOC_GETVERSION, out.as_mut_ptr()) };
    if rc < 0 {
        return Err(OsError::sys("FS_IOC_GETVERSION", None, std::io::Error::last_os_error()));
    }
    Ok(out[0] as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_stable_for_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let Ok(g) = generation(std::fs::File::open(&p).unwrap()) else {
            eprintln!("SKIPPED: {} has no inode generations", dir.path().display());
            return;
        };
        assert_eq!(generation(std::fs::File::open(&p).unwrap()).unwrap(), g);
    }
}
