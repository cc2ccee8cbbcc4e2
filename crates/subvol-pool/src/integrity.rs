//! What `info`, `pool status` and `pool check` say about manifests and
//! scrubs: whether a snapshot has a manifest and how it was built, what the
//! latest scrub found in it, and which snapshots are known to be damaged.

use crate::check::{Checker, Seen};
use crate::extent_cache::CacheKey;
use crate::manifest_store::{file_name, ManifestStore, Stored};
use crate::pool::Pool;
use crate::subvolume::{open_image, SubvolumeInfo};
use serde::Serialize;
use std::collections::HashSet;
use subvol_core::manifest::{BuiltBy, Manifest};
use subvol_core::scrub::{ScrubRun, SnapshotScrub, Verdict};
use subvol_core::{ObjectKind, SubvolumeMeta};

/// How a manifest was built (`info`).
#[derive(Debug, Clone, Serialize)]
pub struct ManifestDetails {
    pub chunk_size: u32,
    pub chunks: u64,
    pub data_chunks: u64,
    /// The root hash, 64 hex digits.
    pub root: String,
    /// `snapshot` (right after it was taken), `scrub` (from the image as
    /// a scrub found it: not verified) or `receive` (by the receive that
    /// wrote it, with the sender's root).
    pub built_by: &'static str,
    pub built_at: String,
    /// Guid of the snapshot whose manifest gave the unchanged chunks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    pub bytes_read: u64,
    pub chunks_hashed: u64,
    pub chunks_copied: u64,
    pub build_us: u64,
}

/// The integrity of one subvolume or snapshot (`info`).
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    /// `present`, `pending` (being built), `missing`, `damaged`, `changed`
    /// (the image no longer has the manifest's size) or `none` (a live
    /// subvolume).
    pub manifest: &'static str,
    /// What it means, in words.
    pub note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<ManifestDetails>,
    /// What the latest scrub that covered it found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scrub: Option<SnapshotScrub>,
    /// A subvolume's snapshots whose latest scrub found damage.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged_snapshots: Vec<String>,
}

/// An interrupted scrub that the next one of the same scope resumes.
#[derive(Debug, Clone, Serialize)]
pub struct Interrupted {
    pub scope: String,
    pub started: String,
    pub done_bytes: u64,
    pub total_bytes: u64,
}

/// Scrubs and manifests in `pool status`.
#[derive(Debug, Clone, Serialize)]
pub struct ScrubStatus {
    /// The last finished scrub.
    pub last: Option<ScrubRun>,
    /// Snapshots whose latest scrub found damage, with the byte ranges.
    pub damaged: Vec<SnapshotScrub>,
    /// Snapshots the latest scrub could not verify (a damaged manifest).
    pub unverified: Vec<SnapshotScrub>,
    pub running_pid: Option<u32>,
    /// A manifest builder (after a snapshot) running.
    pub building_pid: Option<u32>,
    pub interrupted: Option<Interrupted>,
    pub snapshots: usize,
    /// Snapshots with a manifest.
    pub with_manifest: usize,
}

fn details(m: &Manifest) -> ManifestDetails {
    let p = &m.provenance;
    ManifestDetails {
        chunk_size: m.geometry().chunk_size(),
        chunks: m.geometry().chunks(),
        data_chunks: m.data_chunks(),
        root: m.root().iter().map(|b| format!("{b:02x}")).collect(),
        built_by: p.built_by.as_str(),
        built_at: chrono::DateTime::from_timestamp(p.built_at, 0).map(crate::subvolume::rfc3339).unwrap_or_default(),
        base: p.base.map(|g| g.to_string()),
        bytes_read: p.bytes_read,
        chunks_hashed: p.chunks_hashed,
        chunks_copied: p.chunks_copied,
        build_us: p.build_us,
    }
}

impl Pool {
    /// Fills in `info`'s integrity section.
    pub fn fill_integrity(&self, info: &mut SubvolumeInfo) {
        let results = self.scrub_results();
        if info.kind == ObjectKind::Subvolume {
            let prefix = format!("{}@", info.name);
            let damaged = results.damaged().into_iter().filter(|s| s.name.starts_with(&prefix)).map(|s| s.name.clone());
            info.integrity = Some(Integrity {
                manifest: "none",
                note: "a live subvolume changes, so it has no manifest; its snapshots are verified by `subvol scrub` (take them with `subvol snapshot`, or set a snapshot.policy for `subvol autosnap`)".into(),
                details: None,
                last_scrub: None,
                damaged_snapshots: damaged.collect(),
            });
            return;
        }
        let Ok(guid) = info.guid.parse::<uuid::Uuid>() else { return };
        let last_scrub = results.snapshots.get(&guid).cloned();
        let key = open_image(&info.image, false).ok().and_then(|f| CacheKey::of(&f, guid));
        let stored = match &key {
            Some(k) => ManifestStore::new(self.layout.manifests_dir()).read(k, guid, info.virtual_size_bytes),
            None => Stored::Damaged("this host has no inode generations to key a manifest by".into()),
        };
        let building = crate::worker::holder(&self.layout.build_lock()).is_some();
        let (manifest, note, m) = match stored {
            Stored::Found(m) => {
                let note = match m.provenance.built_by {
                    BuiltBy::Snapshot => "built when the snapshot was taken",
                    BuiltBy::Receive => "built by the receive that wrote it, equal to the sender's root",
                    BuiltBy::Scrub => {
                        "created by a scrub from the image as it was then (not verified against the snapshot's moment)"
                    }
                };
                ("present", note.to_string(), Some(m))
            }
            Stored::OtherSize(m) => (
                "changed",
                format!(
                    "the image is {} bytes but was {} when its manifest was built: it was changed after it was taken",
                    info.virtual_size_bytes,
                    m.geometry().image_size()
                ),
                Some(m),
            ),
            Stored::Damaged(why) => ("damaged", format!("{why}; `subvol pool check --repair` removes it"), None),
            Stored::Missing if building => ("pending", "being built in the background".into(), None),
            Stored::Missing => ("missing", "`subvol scrub` creates it (from the image as it is then)".into(), None),
        };
        info.integrity = Some(Integrity {
            manifest,
            note,
            details: m.as_ref().map(details),
            last_scrub,
            damaged_snapshots: Vec::new(),
        });
    }

    /// Scrubs and manifests, for `pool status`.
    pub(crate) fn scrub_status(&self, snaps: &[SubvolumeInfo]) -> ScrubStatus {
        let results = self.scrub_results();
        let alive: HashSet<&str> = snaps.iter().map(|s| s.guid.as_str()).collect();
        let current = |s: &&SnapshotScrub| alive.contains(s.guid.to_string().as_str());
        let dir = self.layout.manifests_dir();
        let with_manifest = crate::par::map_io(snaps, |s| {
            let Ok(guid) = s.guid.parse::<uuid::Uuid>() else { return false };
            let key = open_image(&s.image, false).ok().and_then(|f| CacheKey::of(&f, guid));
            key.is_some_and(|k| dir.join(file_name(&k)).exists())
        })
        .into_iter()
        .filter(|x| *x)
        .count();
        let chunk = |p: &subvol_core::scrub::ScrubProgress| u64::from(p.chunk_size);
        ScrubStatus {
            last: results.last.clone(),
            damaged: results.damaged().into_iter().filter(current).cloned().collect(),
            unverified: results
                .snapshots
                .values()
                .filter(|s| s.verdict == Verdict::Unverified)
                .filter(current)
                .cloned()
                .collect(),
            running_pid: crate::worker::holder(&self.layout.scrub_lock()),
            building_pid: crate::worker::holder(&self.layout.build_lock()),
            interrupted: self.scrub_progress().map(|p| Interrupted {
                scope: p.scope.clone(),
                started: crate::subvolume::rfc3339(p.started),
                done_bytes: p.next_chunk * chunk(&p),
                total_bytes: p.total_chunks * chunk(&p),
            }),
            snapshots: snaps.len(),
            with_manifest,
        }
    }

    /// `pool check` of one snapshot's manifest: a missing one is pending
    /// work (one warning for all, see `check_scrub_files`), a damaged one
    /// can verify nothing (an error).
    pub(crate) fn check_manifest(
        &self,
        c: &mut Checker,
        key: &CacheKey,
        m: &SubvolumeMeta,
        name: &str,
        size: u64,
        seen: &mut Seen,
    ) {
        let store = ManifestStore::new(self.layout.manifests_dir());
        seen.manifests.insert(file_name(key));
        match store.read(key, m.guid, size) {
            Stored::Found(_) => {}
            Stored::Missing => seen.without_manifest.push(name.to_string()),
            Stored::OtherSize(mf) => c.error(
                format!(
                    "snapshot {name} is {size} bytes but was {} when its manifest was built: it was changed after it was taken",
                    mf.geometry().image_size()
                ),
                None,
            ),
            Stored::Damaged(why) => {
                let path = store.path(key);
                c.error(
                    format!("the manifest of snapshot {name} is damaged: {why}; scrub cannot verify {name} with it"),
                    Some((
                        "removed it; the next scrub creates a new one from the image as it is then (not verified)",
                        &mut || std::fs::remove_file(&path).is_ok(),
                    )),
                );
            }
        }
    }

    /// Manifests no snapshot has (of deleted snapshots), leftovers of
    /// builders that died, unreadable scrub records, and the damage scrubs
    /// found.
    pub(crate) fn check_scrub_files(&self, c: &mut Checker, seen: &Seen) {
        let building = crate::worker::holder(&self.layout.build_lock()).is_some();
        // Right after a snapshot its manifest is on its way: not worth a
        // word (nor a `health` warning) while a builder runs.
        if !building && !seen.without_manifest.is_empty() {
            let mut names = seen.without_manifest.clone();
            names.sort();
            let more = names.len().saturating_sub(5);
            names.truncate(5);
            let list = if more > 0 { format!("{} and {more} more", names.join(", ")) } else { names.join(", ") };
            c.warning(format!("snapshots without a manifest yet: {list} (`subvol scrub` creates them)"));
        }
        for e in std::fs::read_dir(self.layout.manifests_dir()).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            if name.starts_with('.') {
                if !building {
                    c.warning_fixable(
                        format!("leftover {} of a manifest builder that died", p.display()),
                        ("removed", &mut || std::fs::remove_file(&p).is_ok()),
                    );
                }
            } else if !seen.manifests.contains(&name) {
                c.warning_fixable(
                    format!("stale manifest {} (no snapshot image has its key)", p.display()),
                    ("removed", &mut || std::fs::remove_file(&p).is_ok()),
                );
            }
        }
        let scrubbing = crate::worker::holder(&self.layout.scrub_lock()).is_some();
        for e in std::fs::read_dir(self.layout.scrub_dir()).into_iter().flatten().flatten() {
            let p = e.path();
            if !scrubbing && e.file_name().to_string_lossy().starts_with('.') {
                c.warning_fixable(
                    format!("leftover {} of a scrub that died", p.display()),
                    ("removed", &mut || std::fs::remove_file(&p).is_ok()),
                );
            }
        }
        let progress = self.layout.scrub_progress();
        if !scrubbing && progress.exists() && self.scrub_progress().is_none() {
            c.warning_fixable(
                format!(
                    "{} (an interrupted scrub's place) is unreadable; the next scrub starts over",
                    progress.display()
                ),
                ("removed", &mut || std::fs::remove_file(&progress).is_ok()),
            );
        }
        let results = self.layout.scrub_results();
        match std::fs::read(&results).map(|b| subvol_core::scrub::ScrubResults::decode(&b)) {
            Ok(Err(e)) if !scrubbing => c.warning_fixable(
                format!("{} (what scrubs found) is unreadable: {e}", results.display()),
                ("removed; the next scrub records its findings afresh", &mut || std::fs::remove_file(&results).is_ok()),
            ),
            Ok(Ok(r)) => {
                for s in r.damaged().into_iter().filter(|s| seen.has_snapshot(&s.guid)) {
                    c.error(
                        format!(
                            "the scrub of {} found damage in {}; {}",
                            crate::subvolume::rfc3339(s.scrubbed_at),
                            crate::scrub_report::describe_damage(s),
                            crate::scrub_report::damage_advice()
                        ),
                        None,
                    );
                }
            }
            _ => {}
        }
    }
}
