//! Parsing of `/proc/self/mountinfo`, the kernel's own table of mounts.
//!
//! subvol keeps no state file about what is mounted: the kernel is the source
//! of truth, read through this table and the loop devices' sysfs entries.

use serde::Serialize;
use std::path::PathBuf;

/// One line of mountinfo (see proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_id: u64,
    pub parent_id: u64,
    pub major: u32,
    pub minor: u32,
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub options: String,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

/// A mounted filesystem the kernel stopped writing to after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsFailure {
    /// Shut down (XFS, ext4): every operation fails with EIO until it is
    /// unmounted; mounting it again replays its log.
    Shutdown,
    /// Turned read-only by the kernel after an error (ext4 with
    /// `errors=remount-ro`, btrfs after a transaction abort).
    Error,
}

impl MountEntry {
    pub fn is_read_only(&self) -> bool {
        has(&self.options, "ro")
    }

    /// What the mount table alone shows of a failure. ext4 lists `shutdown`
    /// among its superblock options once shut down, and `emergency_ro` once
    /// an error turned it read-only. Others (btrfs after a transaction
    /// abort, older ext4) turn the superblock `ro` under a mount that is
    /// still `rw`; `mount -o remount,ro` turns both.
    /// A shut-down XFS shows nothing here (see `subvol_os::health`).
    pub fn failure(&self) -> Option<FsFailure> {
        if has(&self.super_options, "shutdown") {
            Some(FsFailure::Shutdown)
        } else if has(&self.super_options, "emergency_ro") || (has(&self.super_options, "ro") && !self.is_read_only()) {
            Some(FsFailure::Error)
        } else {
            None
        }
    }
}

/// Whether the comma-separated `options` hold `option` (without a value).
fn has(options: &str, option: &str) -> bool {
    options.split(',').any(|o| o == option)
}

/// Undoes the octal escapes (`\040` for space etc.) the kernel uses.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses one mountinfo line; `None` for a malformed line.
pub fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let parent_id = fields.next()?.parse().ok()?;
    let (maj, min) = fields.next()?.split_once(':')?;
    let root = unescape(fields.next()?);
    let mount_point = unescape(fields.next()?);
    let options = fields.next()?.to_string();
    // Optional fields end at a lone "-".
    loop {
        if fields.next()? == "-" {
            break;
        }
    }
    let fstype = fields.next()?.to_string();
    let source = unescape(fields.next()?);
    let super_options = fields.next().unwrap_or("").to_string();
    Some(MountEntry {
        mount_id,
        parent_id,
        major: maj.parse().ok()?,
        minor: min.parse().ok()?,
        root: root.into(),
        mount_point: mount_point.into(),
        options,
        fstype,
        source,
        super_options,
    })
}

/// Parses a whole mountinfo table, skipping malformed lines.
pub fn parse(table: &str) -> Vec<MountEntry> {
    table.lines().filter_map(parse_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_lines() {
        let t = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                 100 25 7:3 / /var/lib/subvol/mnt/my\\040vol rw,relatime shared:5 - xfs /dev/loop3 rw,attr2\n\
                 garbage line\n\
                 101 25 7:4 / /x ro - xfs /dev/loop4 ro\n";
        let m = parse(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].major, 98);
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].mount_point, PathBuf::from("/var/lib/subvol/mnt/my vol"));
        assert_eq!((m[1].major, m[1].minor), (7, 3));
        assert!(!m[1].is_read_only());
        assert!(m[2].is_read_only());
        assert_eq!(m[2].source, "/dev/loop4");
    }

    /// Lines as this project's kernel (6.18) wrote them after
    /// `xfs_io -x -c shutdown` (ext4), an error under `errors=remount-ro`
    /// (ext4) and a transaction abort (btrfs); a read-only mount and a
    /// healthy one show nothing.
    #[test]
    fn failures_read_from_superblock_options() {
        let t = "43 27 7:1 / /m/e rw,relatime - ext4 /dev/loop1 rw,shutdown\n\
                 43 27 7:1 / /m/r rw,relatime - ext4 /dev/loop1 rw,errors=remount-ro,emergency_ro\n\
                 45 27 0:39 / /m/b rw,relatime - btrfs /dev/loop2 ro,discard=async,space_cache=v2,subvolid=5,subvol=/\n\
                 46 27 7:3 / /m/x ro,relatime - xfs /dev/loop3 ro,inode64\n\
                 47 27 7:4 / /m/y rw,relatime - xfs /dev/loop4 rw,inode64,noquota\n";
        let got: Vec<Option<FsFailure>> = parse(t).iter().map(MountEntry::failure).collect();
        assert_eq!(got, [Some(FsFailure::Shutdown), Some(FsFailure::Error), Some(FsFailure::Error), None, None]);
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("\\"), "\\");
        assert_eq!(unescape("\\134"), "\\");
    }
}
