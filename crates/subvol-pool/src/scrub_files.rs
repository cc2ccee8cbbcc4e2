//! Which files inside a damaged snapshot the damaged byte ranges belong
//! to: the snapshot is mounted read-only (no log replayed, beside its
//! origin), its files are walked and each one's extents (FIEMAP) are
//! compared with the damaged ranges: inside a subvolume, image offsets are
//! device addresses. Bounded: a few snapshots per scrub, a number of files
//! walked and named, and a time limit; it says when it stopped early or
//! could not look (a raw image has no files, an encrypted one hides its
//! names, a snapshot that does not mount says why).

use crate::error::Result;
use crate::pool::Pool;
use crate::scrub_report::ScrubReport;
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use subvol_core::damage_map::damaged_pieces;
use subvol_core::{FsKind, ObjectName};

/// Damaged snapshots whose files are looked for, per scrub.
pub const MAX_SNAPSHOTS: usize = 8;
/// Files named per snapshot.
pub const MAX_FILES: usize = 50;
/// Files (and directories) walked per snapshot.
pub const MAX_WALKED: u64 = 200_000;
/// Time spent walking one snapshot.
const MAX_WALK_TIME: Duration = Duration::from_secs(60);
/// Pieces listed per file.
const MAX_PIECES: usize = 16;

/// A damaged piece of a file.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FileRange {
    pub file_offset: u64,
    pub image_offset: u64,
    pub length: u64,
}

/// A file whose data lies in damaged ranges.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedFile {
    /// Path inside the snapshot (from the image: escape before printing).
    pub path: String,
    pub damaged_bytes: u64,
    pub ranges: Vec<FileRange>,
}

/// The files of one damaged snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFiles {
    pub name: String,
    pub files: Vec<DamagedFile>,
    /// Damaged bytes in no file found: filesystem metadata, free space, or
    /// files past the walk's limits.
    pub outside_files_bytes: u64,
    /// The walk stopped at a limit: more files may be damaged.
    pub incomplete: bool,
    /// Why the files could not be looked for, or what limit stopped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

struct Walk {
    damaged: Vec<(u64, u64)>,
    files: Vec<DamagedFile>,
    covered: u64,
    walked: u64,
    started: Instant,
    stopped: Option<String>,
}

impl Walk {
    fn file(&mut self, path: &Path, rel: &Path) {
        let Ok(f) = std::fs::File::open(path) else { return };
        let Ok(map) = subvol_os::fiemap::fiemap(&f, false) else { return };
        let pieces = damaged_pieces(&map, &self.damaged);
        if pieces.is_empty() {
            return;
        }
        let bytes: u64 = pieces.iter().map(|p| p.length).sum();
        self.covered += bytes;
        if self.files.len() >= MAX_FILES {
            self.stopped.get_or_insert_with(|| format!("only the first {MAX_FILES} damaged files are named"));
            return;
        }
        self.files.push(DamagedFile {
            path: rel.to_string_lossy().into_owned(),
            damaged_bytes: bytes,
            ranges: pieces
                .iter()
                .take(MAX_PIECES)
                .map(|p| FileRange { file_offset: p.file_offset, image_offset: p.image_offset, length: p.length })
                .collect(),
        });
    }

    /// Walks `root` (one filesystem, no symlink followed), depth first.
    fn run(&mut self, root: &Path) {
        let Ok(dev) = std::fs::symlink_metadata(root).map(|m| m.dev()) else { return };
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                self.walked += 1;
                if self.walked > MAX_WALKED {
                    self.stopped = Some(format!("stopped after {MAX_WALKED} files"));
                    return;
                }
                if self.started.elapsed() > MAX_WALK_TIME {
                    self.stopped = Some(format!("stopped after {} s", MAX_WALK_TIME.as_secs()));
                    return;
                }
                let path = e.path();
                let Ok(m) = std::fs::symlink_metadata(&path) else { continue };
                if m.dev() != dev {
                    continue;
                }
                if m.is_dir() {
                    stack.push(path);
                } else if m.is_file() {
                    let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                    self.file(&path, &rel);
                }
            }
        }
    }
}

impl Pool {
    /// The files of the damaged snapshots of `report` (at most
    /// [`MAX_SNAPSHOTS`]) that hold damaged bytes.
    pub(crate) fn damaged_files(&self, report: &ScrubReport) -> Vec<SnapshotFiles> {
        let mut out = Vec::new();
        for (k, s) in report.damaged().filter(|s| !s.damaged.is_empty()).enumerate() {
            let mut entry = SnapshotFiles {
                name: s.name.clone(),
                files: Vec::new(),
                outside_files_bytes: s.damaged.iter().map(|r| r.length).sum(),
                incomplete: false,
                note: None,
            };
            if k >= MAX_SNAPSHOTS {
                entry.note =
                    Some(format!("files not looked for: only the first {MAX_SNAPSHOTS} damaged snapshots are"));
                out.push(entry);
                continue;
            }
            let damaged: Vec<(u64, u64)> = s.damaged.iter().map(|r| (r.offset, r.length)).collect();
            match self.walk_snapshot(&s.name, damaged) {
                Ok(w) => {
                    entry.outside_files_bytes = entry.outside_files_bytes.saturating_sub(w.covered);
                    entry.incomplete = w.stopped.is_some();
                    entry.note = w.stopped;
                    entry.files = w.files;
                }
                Err(why) => entry.note = Some(why),
            }
            out.push(entry);
        }
        out
    }

    /// Mounts snapshot `name` read-only and walks it; why not, in words.
    fn walk_snapshot(&self, name: &str, damaged: Vec<(u64, u64)>) -> std::result::Result<Walk, String> {
        let obj = ObjectName::parse(name).map_err(|e| e.to_string())?;
        let image = self.object_image(&obj).map_err(|e| e.message)?;
        let file = crate::subvolume::open_image(&image, false).map_err(|e| e.to_string())?;
        let meta = crate::subvolume::read_meta(&file)?;
        match meta.fs {
            FsKind::Raw => return Err("a raw image has no filesystem, so no files to name".into()),
            _ if crate::encryption::is_encrypted_image(&file, meta.fs) => {
                return Err("an encrypted subvolume's file names are not readable here".into())
            }
            _ => {}
        }
        drop(file);
        crate::error::require_root("finding the damaged files (the snapshot is mounted read-only)")
            .map_err(|e| e.message)?;
        let _lock = self.lock().map_err(|e| e.message)?;
        let mut walk =
            Walk { damaged, files: Vec::new(), covered: 0, walked: 0, started: Instant::now(), stopped: None };
        let r: Result<()> = self.with_snapshot_mount(name, &image, meta.fs, |dir| {
            walk.run(dir);
            Ok(())
        });
        r.map_err(|e| format!("it cannot be mounted read-only ({}): files not looked for", e.message))?;
        Ok(walk)
    }
}
