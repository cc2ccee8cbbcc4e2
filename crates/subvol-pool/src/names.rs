//! The names of everything in a pool, read from its directories alone: for
//! shell completion, where a keystroke must not wait for metadata, extent
//! maps or the pool lock. Only names that pass the name rules are returned,
//! so nothing planted in the directories reaches a shell.

use crate::error::Result;
use crate::layout;
use crate::pool::Pool;
use std::path::Path;

impl Pool {
    /// Subvolume names (`NAME`) and, with `snapshots`, `NAME@SNAP`, sorted.
    pub fn object_names(&self, snapshots: bool) -> Result<Vec<String>> {
        let images_in = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| layout::name_of_image(Path::new(&e.file_name())))
                .collect()
        };
        let mut out = images_in(&self.layout.subvolumes_dir());
        if snapshots {
            let owners = std::fs::read_dir(self.layout.snapshots_dir()).into_iter().flatten().flatten();
            for owner in owners.filter_map(|e| e.file_name().to_str().map(str::to_string)) {
                if subvol_core::name::validate_part(&owner).is_ok() {
                    out.extend(
                        images_in(&self.layout.snapshot_dir(&owner)).into_iter().map(|s| format!("{owner}@{s}")),
                    );
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
