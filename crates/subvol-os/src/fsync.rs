//! Durability helpers: fsync of files and directories, and the
//! write-temp-fsync-rename sequence every metadata file goes through.

use crate::error::{Context, OsResult};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// fsync(2) on a directory, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> OsResult<()> {
    let d = File::open(dir).ctx("open", dir)?;
    d.sync_all().ctx("fsync", dir)
}

/// Writes `bytes` to `path` atomically: a temp file beside it (mode 0600),
/// fsync, rename over `path`, fsync of the directory. A crash leaves either
/// the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> OsResult<()> {
    replace_via_temp(path, bytes, true)?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Replaces `path` with `bytes` through a temp file and a rename, without
/// fsync: for caches whose content verifies itself (a checksum) and can be
/// rebuilt, where a crash may lose the file or leave it empty, never
/// half-old and half-new.
pub fn write_replace_unsynced(path: &Path, bytes: &[u8]) -> OsResult<()> {
    replace_via_temp(path, bytes, false)
}

/// Writes a temp file beside `path` (mode 0600; fsynced if `sync`) and
/// renames it over `path`; on failure the temp file is removed.
fn replace_via_temp(path: &Path, bytes: &[u8], sync: bool) -> OsResult<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = (|| {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).ctx("create", &tmp)?;
        f.write_all(bytes).ctx("write", &tmp)?;
        if sync {
            f.sync_all().ctx("fsync", &tmp)?;
        }
        std::fs::rename(&tmp, path).ctx("rename", path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// renameat2(RENAME_NOREPLACE): moves `src` to `dst`, failing with EEXIST
/// rather than replacing an existing `dst`.
pub fn rename_noreplace(src: &Path, dst: &Path) -> OsResult<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, src, rustix::fs::CWD, dst, rustix::fs::RenameFlags::NOREPLACE)
        .ctx("rename", dst)
}
