//! What a receive leaves in `.subvol/receive/` (docs/FORMAT.md): the
//! private image `NAME.img` it writes (flock held while it runs) and, for a
//! resumable receive, `NAME.state`: the stream's header and the offset
//! below which the image is durably applied. The resume token a user sees
//! is made from that state.

use super::Receive;
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use subvol_core::stream::StreamHeader;
use subvol_core::token::ResumeToken;
use subvol_core::ObjectName;

/// Where the partial receive into one subvolume lives.
pub(super) struct PartialPaths {
    pub(super) image: PathBuf,
    pub(super) state: PathBuf,
}

/// A resumable partial receive (`NAME.state`, record type `receive`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PartialState {
    pub(super) header: StreamHeader,
    pub(super) offset: u64,
}

impl PartialState {
    /// The token a sender resumes from.
    pub(super) fn token(&self) -> ResumeToken {
        ResumeToken {
            target: self.header.snapshot.guid,
            base: self.header.base.as_ref().map(|b| b.guid),
            offset: self.offset,
        }
    }
}

/// Reads a state file; None if there is none.
pub(super) fn read_state(path: &Path) -> Result<Option<PartialState>> {
    match std::fs::read(path) {
        Ok(b) => subvol_core::meta::decode::<PartialState>("receive", 1, &b)
            .map(Some)
            .map_err(|e| Error::new(ErrorKind::Corrupt, format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
    }
}

/// Where a resumable receive records its checkpoints: its state file, with
/// the header of the stream it applies.
pub(super) struct ResumeRecord {
    path: PathBuf,
    header: StreamHeader,
}

impl ResumeRecord {
    pub(super) fn new(path: PathBuf, header: StreamHeader) -> Self {
        ResumeRecord { path, header }
    }

    /// Records that everything below `offset` is durably applied
    /// (atomically: a crash leaves the old record or the new one).
    pub(super) fn save(&self, offset: u64) -> Result<()> {
        let st = PartialState { header: self.header.clone(), offset };
        subvol_os::fsync::write_atomic(&self.path, &subvol_core::meta::encode("receive", 1, &st))
            .map_err(|e| Error::os("cannot record the receive's progress", e))
    }
}

impl Receive<'_> {
    /// `e`, with the commands that resume this receive from `offset`.
    pub(super) fn resumable(&self, e: Error, offset: u64) -> Error {
        let h = &self.header;
        let st = PartialState { header: h.clone(), offset };
        Error::new(
            e.kind,
            format!(
                "{}; the receive can resume: `subvol send --resume {} {}{} | subvol receive {} --resume`",
                e.message,
                st.token(),
                h.snapshot.name,
                h.base.as_ref().map(|b| format!(" --from {}", b.name)).unwrap_or_default(),
                self.name
            ),
        )
    }
}

impl Pool {
    pub(super) fn partial_paths(&self, name: &str) -> PartialPaths {
        let (image, state) = self.layout.partial_receive(name);
        PartialPaths { image, state }
    }

    /// The resume token of a partial receive into `name`, if there is one.
    pub fn receive_token(&self, name: &str) -> Result<Option<ResumeToken>> {
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        Ok(read_state(&self.partial_paths(&n).state)?.map(|st| st.token()))
    }

    /// Drops a partial receive into `name`.
    pub fn receive_abort(&self, name: &str) -> Result<bool> {
        let n = ObjectName::parse_subvolume(name)?.subvolume;
        let _lock = self.lock()?;
        let paths = self.partial_paths(&n);
        if let Ok(f) = File::open(&paths.image) {
            if f.try_lock().is_err() {
                return Err(Error::new(ErrorKind::Busy, format!("a receive into {n} is running; stop it first")));
            }
        }
        let a = std::fs::remove_file(&paths.image).is_ok();
        let b = std::fs::remove_file(&paths.state).is_ok();
        Ok(a || b)
    }
}
