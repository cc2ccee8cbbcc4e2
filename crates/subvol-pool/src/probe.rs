//! Probing what the pool's host filesystem can do, with real operations
//! rather than guesses from its type.

use crate::error::{Error, Result};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Whether FICLONE works in `dir`: clones a 64 KiB file and removes both.
pub fn reflink_works(dir: &Path) -> Result<bool> {
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let a = dir.join(format!("probe.{}.a", &nonce[..12]));
    let b = dir.join(format!("probe.{}.b", &nonce[..12]));
    let failed = |e| Error::io(format!("cannot probe reflinks in {}", dir.display()), e);
    let result = (|| -> Result<bool> {
        let mut fa = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&a).map_err(failed)?;
        fa.write_all(&[0x5a; 65536]).map_err(failed)?;
        fa.sync_all().map_err(failed)?;
        let fb = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&b).map_err(failed)?;
        Ok(subvol_os::reflink::ficlone(&fb, &fa).is_ok())
    })();
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
    result
}
