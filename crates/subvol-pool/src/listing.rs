//! What `list` shows: one subvolume or all, optionally with their
//! snapshots, with space figures, in the order people read them, and the
//! orphans (images deleted while attached) that go with them.

use crate::error::{ErrorKind, Result};
use crate::orphans::Orphan;
use crate::pool::Pool;
use crate::subvolume::SubvolumeInfo;
use subvol_core::ObjectKind;

/// The objects of a listing and the orphans of the same names.
#[derive(Debug, Clone)]
pub struct Listing {
    pub objects: Vec<SubvolumeInfo>,
    pub orphans: Vec<Orphan>,
}

impl Pool {
    /// `list [NAME] [--snapshots]`. A NAME that is gone still lists when
    /// something of it remains: its snapshots (deleted with
    /// `--keep-snapshots`) or its orphan (deleted while mounted).
    pub fn listing(&self, name: Option<&str>, snapshots: bool) -> Result<Listing> {
        let orphans = self.orphans_of(name)?;
        let mut objects = match name {
            Some(n) => match self.info(n) {
                Ok(i) => vec![i],
                Err(e) if (snapshots || !orphans.is_empty()) && e.kind == ErrorKind::NotFound => vec![],
                Err(e) => return Err(e),
            },
            None => self.list()?,
        };
        if snapshots {
            objects.extend(self.list_snapshots(name)?);
        }
        self.fill_space(&mut objects)?;
        if snapshots {
            sort_with_snapshots(&mut objects);
        }
        Ok(Listing { objects, orphans })
    }
}

/// Each subvolume followed by its snapshots, oldest first. Stable, so
/// snapshots taken within one second keep the order they were listed in.
fn sort_with_snapshots(list: &mut [SubvolumeInfo]) {
    list.sort_by(|a, b| {
        let key = |s: &SubvolumeInfo| {
            (s.name.split('@').next().unwrap_or("").to_string(), s.kind == ObjectKind::Snapshot, s.created.clone())
        };
        key(a).cmp(&key(b))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::State;
    use subvol_core::FsKind;

    fn object(name: &str, created: &str) -> SubvolumeInfo {
        SubvolumeInfo {
            name: name.into(),
            kind: if name.contains('@') { ObjectKind::Snapshot } else { ObjectKind::Subvolume },
            fs: FsKind::Xfs,
            guid: String::new(),
            virtual_size_bytes: 0,
            allocated_bytes: 0,
            created: created.into(),
            image: "/p/x.img".into(),
            mount_point: None,
            loop_device: None,
            state: State::Unmounted,
            attachments: Vec::new(),
            origin: None,
            properties: Default::default(),
            tags: Vec::new(),
            holds: Vec::new(),
            guarantee: false,
            exclusive_bytes: None,
            shared_bytes: None,
            written_bytes: None,
            encrypted: false,
            unlocked: None,
            integrity: None,
            problem: None,
        }
    }

    #[test]
    fn each_subvolume_comes_before_its_snapshots_oldest_first() {
        let mut list = vec![
            object("b", "2026-01-05T00:00:00Z"),
            object("a", "2026-01-09T00:00:00Z"),
            object("b@late", "2026-01-03T00:00:00Z"),
            object("a@second", "2026-01-02T00:00:00Z"),
            object("a@first", "2026-01-01T00:00:00Z"),
            object("a@same-2", "2026-01-02T00:00:00Z"),
            // A snapshot whose subvolume was deleted with --keep-snapshots.
            object("gone@s", "2026-01-01T00:00:00Z"),
        ];
        sort_with_snapshots(&mut list);
        let names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "a@first", "a@second", "a@same-2", "b", "b@late", "gone@s"]);
    }
}
