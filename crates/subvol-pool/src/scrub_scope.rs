//! What a scrub covers: the snapshots of one subvolume, one snapshot, or
//! all of them; the live subvolumes it can only name (they have no
//! manifest); and, once damage is found, which live subvolumes still use
//! the damaged blocks.

use crate::error::{Error, ErrorKind, Result};
use crate::manifest_build::Wanted;
use crate::pool::Pool;
use crate::scrub_report::{LiveDamage, ScrubOptions};
use std::path::Path;
use subvol_core::chunks::{layouts, Layout};
use subvol_core::manifest::{Geometry, CHUNK_SIZE};
use subvol_core::scrub::{damaged_ranges, Fault};
use subvol_core::ObjectName;

/// What a scope covers.
pub(crate) struct Scope {
    pub(crate) label: String,
    pub(crate) groups: Vec<(String, Wanted)>,
    /// Live subvolumes the report notes as not covered.
    pub(crate) live: Vec<String>,
    /// Live subvolumes checked for blocks the scrub found damaged.
    pub(crate) neighbours: Vec<String>,
}

impl Pool {
    pub(crate) fn scrub_scope(&self, opts: &ScrubOptions) -> Result<Scope> {
        let Some(target) = &opts.target else {
            let mut groups: Vec<String> = std::fs::read_dir(self.layout.snapshots_dir())
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str().map(str::to_string))
                        .filter(|n| subvol_core::name::validate_part(n).is_ok())
                        .collect()
                })
                .unwrap_or_default();
            groups.sort();
            let mut live: Vec<String> = std::fs::read_dir(self.layout.subvolumes_dir())
                .map_err(|e| Error::io("cannot read the subvolumes", e))?
                .flatten()
                .filter_map(|e| crate::layout::name_of_image(Path::new(&e.file_name())))
                .collect();
            live.sort();
            return Ok(Scope {
                label: "--all".into(),
                groups: groups.into_iter().map(|g| (g, Wanted::All)).collect(),
                neighbours: live.clone(),
                live,
            });
        };
        let obj = ObjectName::parse(target)?;
        let live = self.layout.subvolume_image(&obj.subvolume).exists();
        let neighbours = if live { vec![obj.subvolume.clone()] } else { Vec::new() };
        if let Some(snap) = &obj.snapshot {
            self.object_image(&obj)?;
            return Ok(Scope {
                label: obj.to_string(),
                groups: vec![(obj.subvolume.clone(), Wanted::Only(snap.clone()))],
                live: Vec::new(),
                neighbours,
            });
        }
        if !live && !self.layout.snapshot_dir(&obj.subvolume).exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no subvolume {:?} and no snapshots of it; see `subvol list`", obj.subvolume),
            ));
        }
        Ok(Scope {
            label: obj.subvolume.clone(),
            groups: vec![(obj.subvolume, Wanted::All)],
            live: neighbours.clone(),
            neighbours,
        })
    }

    /// Which live subvolumes among `names` still map chunks to the blocks
    /// found damaged (`damaged`: position, layout, fault): a snapshot shares
    /// its blocks with its subvolume until the subvolume overwrites them.
    pub(crate) fn live_damage(&self, names: &[String], damaged: &[(u64, Layout, Fault)]) -> Vec<LiveDamage> {
        let chunk = u64::from(CHUNK_SIZE);
        let mut out = Vec::new();
        for name in names.iter().filter(|_| !damaged.is_empty()) {
            let Ok(f) = crate::subvolume::open_image(&self.layout.subvolume_image(name), false) else { continue };
            let (Ok(map), Ok(meta)) = (subvol_os::fiemap::fiemap(&f, true), f.metadata()) else { continue };
            let Ok(g) = Geometry::new(CHUNK_SIZE, meta.len()) else { continue };
            let mut hit: Vec<(u64, Fault)> = damaged
                .iter()
                .filter(|(pos, l, _)| layouts(&map, meta.len(), chunk, *pos..*pos + 1).first() == Some(l))
                .map(|(pos, _, fault)| (*pos, *fault))
                .collect();
            hit.sort_unstable();
            hit.dedup_by_key(|h| h.0);
            if !hit.is_empty() {
                let damaged = damaged_ranges(g, &hit);
                let damaged_bytes = damaged.iter().map(|r| r.length).sum();
                out.push(LiveDamage { name: name.clone(), damaged, damaged_bytes });
            }
        }
        out
    }
}
