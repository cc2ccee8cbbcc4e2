//! Splitting `-o` mount options into the generic flags mount(2) takes as
//! bits (ro, noatime, nosuid...) and the filesystem-specific rest, which it
//! takes as a string. mount(8) does the same split.

/// MS_* flag values from linux/mount.h.
pub mod ms {
    pub const RDONLY: u64 = 1;
    pub const NOSUID: u64 = 2;
    pub const NODEV: u64 = 4;
    pub const NOEXEC: u64 = 8;
    pub const SYNCHRONOUS: u64 = 16;
    pub const DIRSYNC: u64 = 128;
    pub const NOATIME: u64 = 1024;
    pub const NODIRATIME: u64 = 2048;
    pub const RELATIME: u64 = 1 << 21;
    pub const STRICTATIME: u64 = 1 << 24;
    pub const LAZYTIME: u64 = 1 << 25;
}

/// Options ready for mount(2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MountOpts {
    pub flags: u64,
    /// Filesystem-specific options, comma-separated.
    pub data: String,
}

impl MountOpts {
    pub fn read_only(&self) -> bool {
        self.flags & ms::RDONLY != 0
    }
}

/// Parses `opts` (as given to `-o`), starting from `read_only`.
pub fn parse_mount_options(opts: &str, read_only: bool) -> MountOpts {
    let mut flags = if read_only { ms::RDONLY } else { 0 };
    let mut data: Vec<&str> = Vec::new();
    for o in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (set, clear) = match o {
            "ro" => (ms::RDONLY, 0),
            "rw" => (0, ms::RDONLY),
            "nosuid" => (ms::NOSUID, 0),
            "suid" => (0, ms::NOSUID),
            "nodev" => (ms::NODEV, 0),
            "dev" => (0, ms::NODEV),
            "noexec" => (ms::NOEXEC, 0),
            "exec" => (0, ms::NOEXEC),
            "sync" => (ms::SYNCHRONOUS, 0),
            "async" => (0, ms::SYNCHRONOUS),
            "dirsync" => (ms::DIRSYNC, 0),
            "noatime" => (ms::NOATIME, 0),
            "atime" => (0, ms::NOATIME),
            "nodiratime" => (ms::NODIRATIME, 0),
            "diratime" => (0, ms::NODIRATIME),
            "relatime" => (ms::RELATIME, 0),
            "norelatime" => (0, ms::RELATIME),
            "strictatime" => (ms::STRICTATIME, 0),
            "lazytime" => (ms::LAZYTIME, 0),
            "nolazytime" => (0, ms::LAZYTIME),
            "defaults" => (0, 0),
            other => {
                data.push(other);
                (0, 0)
            }
        };
        flags = (flags | set) & !clear;
    }
    MountOpts { flags, data: data.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_generic_and_specific() {
        let m = parse_mount_options("noatime,discard,ro,,nouuid", false);
        assert_eq!(m.flags, ms::NOATIME | ms::RDONLY);
        assert_eq!(m.data, "discard,nouuid");
        assert!(parse_mount_options("", true).read_only());
        assert!(!parse_mount_options("rw", true).read_only());
        assert_eq!(parse_mount_options("defaults", false), MountOpts::default());
    }
}
