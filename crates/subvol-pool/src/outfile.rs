//! `send -o FILE`: the stream goes to a private temporary file beside FILE
//! (mode 0600, created with O_EXCL) and is renamed to FILE only when it is
//! complete, so a partial or failed stream never appears at FILE, and an
//! existing FILE is never overwritten unless asked (`--force`). A character
//! device or FIFO (`/dev/null`, a named pipe) is written directly.

use crate::error::{Error, ErrorKind, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A stream file being written; dropped without [`StreamFile::commit`], the
/// temporary file goes and FILE is as it was.
pub struct StreamFile {
    file: Option<File>,
    /// The temporary file (`None`: writing straight to a device or FIFO).
    tmp: Option<PathBuf>,
    dest: PathBuf,
    force: bool,
}

fn exists_error(dest: &Path) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!("{} already exists; choose another file, remove it, or add --force to replace it", dest.display()),
    )
}

impl StreamFile {
    /// Starts writing a stream for `dest`; refuses an existing `dest`
    /// (a file, a symlink, anything) unless `force`.
    pub fn create(dest: &Path, force: bool) -> Result<StreamFile> {
        Self::create_with_mode(dest, force, 0o600)
    }

    /// `create` for a file others must read (`subvol metrics -o` for the
    /// node_exporter textfile collector): exactly `mode`, whatever the umask.
    pub fn create_with_mode(dest: &Path, force: bool, mode: u32) -> Result<StreamFile> {
        // A character device or a FIFO (`/dev/null`, a pipe) holds nothing
        // to clobber and cannot be replaced by rename: written directly.
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::metadata(dest) {
            if m.file_type().is_char_device() || m.file_type().is_fifo() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(dest)
                    .map_err(|e| Error::io(format!("cannot open {}", dest.display()), e))?;
                return Ok(StreamFile { file: Some(file), tmp: None, dest: dest.to_path_buf(), force });
            }
        }
        if !force && std::fs::symlink_metadata(dest).is_ok() {
            return Err(exists_error(dest));
        }
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid(format!("{} names no file; give -o FILE", dest.display())))?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let tmp = dir.join(format!(".{name}.partial.{}", &nonce[..12]));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        if mode & 0o077 != 0 {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("cannot set the mode of {}", tmp.display()), e))?;
        }
        Ok(StreamFile { file: Some(file), tmp: Some(tmp), dest: dest.to_path_buf(), force })
    }

    /// Makes the complete stream durable and puts it at FILE.
    pub fn commit(mut self) -> Result<()> {
        let mut file = self.file.take().ok_or_else(|| Error::invalid("stream file already finished"))?;
        let Some(tmp) = self.tmp.take() else {
            return file.flush().map_err(|e| Error::io(format!("cannot write {}", self.dest.display()), e));
        };
        file.sync_all().map_err(|e| Error::io(format!("cannot sync {}", tmp.display()), e))?;
        drop(file);
        let renamed = if self.force {
            std::fs::rename(&tmp, &self.dest).map_err(|e| Error::io(format!("cannot write {}", self.dest.display()), e))
        } else {
            subvol_os::fsync::rename_noreplace(&tmp, &self.dest).map_err(|e| {
                let err = Error::os(format!("cannot write {}", self.dest.display()), e);
                if err.kind == ErrorKind::AlreadyExists {
                    exists_error(&self.dest)
                } else {
                    err
                }
            })
        };
        if let Err(e) = renamed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = subvol_os::fsync::fsync_dir(dir);
        }
        Ok(())
    }
}

impl Write for StreamFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("stream file already finished")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for StreamFile {
    fn drop(&mut self) {
        if let (Some(_), Some(tmp)) = (self.file.take(), &self.tmp) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
