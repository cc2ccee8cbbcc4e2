//! Space accounting and admission control.
//!
//! Exclusive and shared bytes come from the extent maps of every image in
//! the pool: a block is exclusive to an image when no other image maps it.
//! Snapshot maps never change (the images are immutable), so they are
//! cached per image file (extent_cache); only live subvolumes are mapped
//! each time.

use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use crate::subvolume::{open_image, read_meta};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use subvol_core::space::{margin, still_needed, Budget};
use subvol_core::{format_size, ExtentMap, ObjectKind};

/// The property that makes a subvolume guaranteed.
pub const GUARANTEE_PROPERTY: &str = "guarantee";
/// Dirty data each mounted thin subvolume may hold (its loop device's BDI
/// `max_bytes`); counted in the safety margin.
pub const DIRTY_LIMIT_BYTES: u64 = 64 << 20;

/// Space figures of one image.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ImageSpace {
    pub exclusive_bytes: u64,
    pub shared_bytes: u64,
    /// Subvolumes: bytes whose blocks differ from the newest snapshot.
    pub written_bytes: Option<u64>,
}

/// Space figures of the whole pool.
#[derive(Debug, Clone, Default)]
pub struct PoolSpace {
    pub images: HashMap<PathBuf, ImageSpace>,
    /// Guaranteed subvolumes and what each may still need.
    pub guaranteed: Vec<(String, u64)>,
    pub outstanding_bytes: u64,
}

/// The margin admission control keeps for a host of `capacity_bytes` with
/// the mounted thin subvolumes of `subs` (one rule, for admission, status
/// and the receive floor).
pub(crate) fn admission_margin(capacity_bytes: u64, subs: &[crate::SubvolumeInfo]) -> u64 {
    let mounted_thin = subs.iter().filter(|s| s.mount_point.is_some() && !s.guarantee).count() as u64;
    margin(capacity_bytes, mounted_thin, DIRTY_LIMIT_BYTES)
}

/// The budget from a space sweep, a listing and a statfs the caller already
/// has (status needs all three; listing again would double its cost).
pub(crate) fn budget_from(space: &PoolSpace, subs: &[crate::SubvolumeInfo], st: &subvol_os::statfs::FsStats) -> Budget {
    Budget {
        free_bytes: st.free_bytes,
        outstanding_bytes: space.outstanding_bytes,
        margin_bytes: admission_margin(st.total_bytes, subs),
    }
}

impl PoolSpace {
    /// Puts each image's figures into its listing entry.
    pub fn apply(&self, infos: &mut [crate::SubvolumeInfo]) {
        for i in infos.iter_mut() {
            if let Some(sp) = self.images.get(&i.image) {
                i.exclusive_bytes = Some(sp.exclusive_bytes);
                i.shared_bytes = Some(sp.shared_bytes);
                i.written_bytes = sp.written_bytes;
            }
        }
    }
}

/// One image seen by the accounting.
struct Item {
    path: PathBuf,
    map: ExtentMap,
    kind: ObjectKind,
    name: String,
    virtual_bytes: u64,
    created: chrono::DateTime<chrono::Utc>,
    guaranteed: bool,
}

/// FIEMAP one call at a time while the rest of the accounting runs on
/// several threads: on a reflinked XFS file FIEMAP looks up every extent in
/// the refcount btree under that btree's buffer lock, so several at once only
/// queue on the lock (measured: 4 threads made a warm listing 3x slower).
#[derive(Default)]
struct SerialFiemap(std::sync::Mutex<()>);

impl SerialFiemap {
    fn map(&self, file: &std::fs::File) -> Result<ExtentMap> {
        let _turn = self.0.lock().unwrap_or_else(|p| p.into_inner());
        subvol_os::fiemap::fiemap(file, true).map_err(|e| Error::os("cannot map an image", e))
    }
}

/// How much the thin subvolumes may still grow: their virtual sizes minus
/// what they already hold (what overcommit means for the host).
pub(crate) fn thin_growth_bytes(subs: &[crate::SubvolumeInfo]) -> u64 {
    subs.iter().filter(|s| !s.guarantee).map(|s| s.virtual_size_bytes.saturating_sub(s.allocated_bytes)).sum()
}

pub(crate) fn is_guaranteed(props: &std::collections::BTreeMap<String, String>) -> bool {
    props.get(GUARANTEE_PROPERTY).map(String::as_str) == Some("on")
}

impl Pool {
    fn collect(&self) -> Result<Vec<Item>> {
        let mut images: Vec<(PathBuf, String)> = Vec::new();
        for entry in std::fs::read_dir(self.layout.subvolumes_dir())
            .map_err(|e| Error::io(format!("cannot read {}", self.layout.subvolumes_dir().display()), e))?
            .flatten()
        {
            if let Some(n) = crate::layout::name_of_image(Path::new(&entry.file_name())) {
                images.push((entry.path(), n));
            }
        }
        if let Ok(dirs) = std::fs::read_dir(self.layout.snapshots_dir()) {
            for d in dirs.flatten() {
                let sub = d.file_name().to_string_lossy().into_owned();
                for (snap, path) in self.snapshot_images(&sub)? {
                    images.push((path, format!("{sub}@{snap}")));
                }
            }
        }
        let fiemap = SerialFiemap::default();
        let items = crate::par::map_io(&images, |(path, name)| -> Result<Option<Item>> {
            let Ok(f) = open_image(path, false) else { return Ok(None) };
            let Ok(meta) = read_meta(&f) else { return Ok(None) };
            let virtual_bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
            let map = match meta.kind {
                ObjectKind::Snapshot => self.snapshot_map_with(&f, &meta, &|f| fiemap.map(f))?,
                ObjectKind::Subvolume => fiemap.map(&f)?,
            };
            Ok(Some(Item {
                path: path.clone(),
                map,
                kind: meta.kind,
                name: name.clone(),
                virtual_bytes,
                created: meta.created,
                guaranteed: meta.kind == ObjectKind::Subvolume && is_guaranteed(&meta.properties),
            }))
        });
        items.into_iter().filter_map(Result::transpose).collect()
    }

    /// Exclusive/shared/written bytes of every image and what guarantees
    /// are outstanding.
    pub fn space(&self) -> Result<PoolSpace> {
        let items = self.collect()?;
        let ranges: Vec<Vec<(u64, u64)>> = items.iter().map(|i| i.map.physical_ranges()).collect();
        let excl = subvol_core::space::exclusive_bytes(&ranges);
        let mut out = PoolSpace::default();
        // Newest snapshot of each subvolume, for "written since".
        let mut newest: HashMap<&str, usize> = HashMap::new();
        for (idx, it) in items.iter().enumerate() {
            if it.kind == ObjectKind::Snapshot {
                let sub = it.name.split_once('@').map(|p| p.0).unwrap_or(&it.name);
                let entry = newest.entry(sub).or_insert(idx);
                if it.created > items[*entry].created {
                    *entry = idx;
                }
            }
        }
        for (idx, it) in items.iter().enumerate() {
            let mapped = it.map.mapped_bytes();
            let exclusive = excl[idx].min(mapped);
            let written = (it.kind == ObjectKind::Subvolume).then(|| match newest.get(it.name.as_str()) {
                Some(&s) => {
                    let base = &items[s];
                    subvol_core::diff::diff(&base.map, base.virtual_bytes, &it.map, it.virtual_bytes).data_bytes()
                }
                None => mapped,
            });
            out.images.insert(
                it.path.clone(),
                ImageSpace { exclusive_bytes: exclusive, shared_bytes: mapped - exclusive, written_bytes: written },
            );
            if it.guaranteed {
                let need = still_needed(it.virtual_bytes, exclusive);
                out.guaranteed.push((it.name.clone(), need));
                out.outstanding_bytes += need;
            }
        }
        Ok(out)
    }

    /// Fills in the space figures of listed objects; returns the pool's.
    pub fn fill_space(&self, infos: &mut [crate::SubvolumeInfo]) -> Result<PoolSpace> {
        let space = self.space()?;
        space.apply(infos);
        Ok(space)
    }

    /// The budget admission control works with.
    pub fn budget(&self, space: &PoolSpace) -> Result<Budget> {
        let st =
            subvol_os::statfs::statfs(self.root()).map_err(|e| Error::os("cannot read the host's free space", e))?;
        Ok(budget_from(space, &self.list()?, &st))
    }

    /// Refuses an operation that would add `extra` bytes to what the pool
    /// owes if the host cannot honour it, naming what would free space.
    pub(crate) fn admit(&self, what: &str, extra: u64) -> Result<()> {
        if extra == 0 {
            return Ok(());
        }
        let space = self.space()?;
        let b = self.budget(&space)?;
        if b.admits(extra) {
            return Ok(());
        }
        // Which snapshots would free the most.
        let mut freeable: Vec<(String, u64)> = Vec::new();
        for s in self.list_snapshots(None)? {
            if let Some(sp) = space.images.get(&s.image) {
                if sp.exclusive_bytes > 0 && s.holds.is_empty() {
                    freeable.push((s.name.clone(), sp.exclusive_bytes));
                }
            }
        }
        freeable.sort_by_key(|f| std::cmp::Reverse(f.1));
        let hint = if freeable.is_empty() {
            "no unheld snapshot would free space; grow the pool or delete data".to_string()
        } else {
            let list: Vec<String> = freeable.iter().take(3).map(|(n, b)| format!("{n} {}", format_size(*b))).collect();
            format!("deleting snapshots would free: {}", list.join(", "))
        };
        Err(Error::new(
            ErrorKind::NoSpace,
            format!(
                "{what} needs {} guaranteed, but only {} can be promised (free {} - guaranteed {} - margin {}); {hint}",
                format_size(extra),
                format_size(b.available()),
                format_size(b.free_bytes),
                format_size(b.outstanding_bytes),
                format_size(b.margin_bytes)
            ),
        ))
    }
}
