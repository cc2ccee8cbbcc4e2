//! `pool check`: verifies everything subvol keeps in a pool, and with
//! `--repair` fixes what is safe to fix (never data: an image with damaged
//! metadata is reported, not removed).

use crate::error::{Error, Result};
use crate::extent_cache::CacheKey;
use crate::kernel::KernelView;
use crate::layout;
use crate::pool::Pool;
use crate::recovery::{self, Recovered};
use crate::subvolume::read_meta;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use subvol_core::ObjectKind;
use subvol_os::dirfd::{DirHandle, EntryKind};

/// How much a finding matters; serialized as `"error"` / `"warning"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The pool is not clean.
    Error,
    /// Worth knowing; the pool is still clean.
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub what: String,
    /// What `--repair` did about it (or would do).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
    pub repaired: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub pool: std::path::PathBuf,
    pub images: usize,
    pub findings: Vec<Finding>,
    pub clean: bool,
}

impl Finding {
    /// An error still there (found, and not repaired).
    pub fn is_open_error(&self) -> bool {
        self.severity == Severity::Error && !self.repaired
    }
}

impl CheckReport {
    /// Errors still there: the pool is clean when there are none.
    pub fn open_errors(&self) -> usize {
        self.findings.iter().filter(|f| f.is_open_error()).count()
    }

    /// Whether `--repair` would fix one of the errors still there.
    pub fn repair_would_help(&self) -> bool {
        self.findings.iter().any(|f| f.is_open_error() && f.repair.is_some())
    }
}

/// What the image checks gathered for the pool-wide ones.
#[derive(Default)]
pub(crate) struct Seen {
    /// Snapshot names (`NAME@SNAP`) by guid.
    snapshot_guids: HashMap<uuid::Uuid, Vec<String>>,
    /// File names of the cache entries the snapshot images have.
    cache_entries: HashSet<String>,
    /// File names of the manifests the snapshot images have.
    pub(crate) manifests: HashSet<String>,
    /// Snapshots (`NAME@SNAP`) that have no manifest yet.
    pub(crate) without_manifest: Vec<String>,
}

impl Seen {
    pub(crate) fn has_snapshot(&self, guid: &uuid::Uuid) -> bool {
        self.snapshot_guids.contains_key(guid)
    }
}

/// A guid names one snapshot in a pool: receives find their base by it.
/// Older subvol took the same stream under two names; the fix is to keep
/// one of the two (deleting data is not `--repair`'s to do).
fn check_shared_guids(c: &mut Checker, seen: &Seen) {
    let mut shared: Vec<(&uuid::Uuid, &Vec<String>)> =
        seen.snapshot_guids.iter().filter(|(_, names)| names.len() > 1).collect();
    shared.sort_by(|a, b| a.1.cmp(b.1));
    for (guid, names) in shared {
        let mut names = names.clone();
        names.sort();
        c.error(
            format!(
                "snapshots {} share the guid {guid} (one stream received under several names); keep {} and `subvol delete` {}",
                names.join(", "),
                names[0],
                names[1..].join(", ")
            ),
            None,
        );
    }
}

pub(crate) struct Checker {
    pub(crate) repair: bool,
    findings: Vec<Finding>,
}

impl Checker {
    pub(crate) fn error(&mut self, what: String, repair: Option<(&str, &mut dyn FnMut() -> bool)>) {
        self.add(Severity::Error, what, repair)
    }

    pub(crate) fn warning(&mut self, what: String) {
        self.add(Severity::Warning, what, None)
    }

    pub(crate) fn warning_fixable(&mut self, what: String, repair: (&str, &mut dyn FnMut() -> bool)) {
        self.add(Severity::Warning, what, Some(repair))
    }

    /// An error whose repair reports what it did: `repair` returns whether
    /// the problem is gone and the words for what happened.
    fn error_with_outcome(&mut self, what: String, planned: &str, repair: impl FnOnce() -> (bool, String)) {
        let (repaired, text) = if self.repair { repair() } else { (false, planned.to_string()) };
        self.findings.push(Finding { severity: Severity::Error, what, repair: Some(text), repaired });
    }

    fn add(&mut self, severity: Severity, what: String, repair: Option<(&str, &mut dyn FnMut() -> bool)>) {
        let (text, repaired) = match repair {
            Some((text, f)) if self.repair => (Some(text.to_string()), f()),
            Some((text, _)) => (Some(text.to_string()), false),
            None => (None, false),
        };
        self.findings.push(Finding { severity, what, repair: text, repaired });
    }
}

fn mode(p: &Path) -> Option<u32> {
    std::fs::symlink_metadata(p).ok().map(|m| m.permissions().mode() & 0o7777)
}

fn chmod(p: &Path, m: u32) -> bool {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).is_ok()
}

/// What recovery did under `pool check --repair`, as repaired findings.
fn report_recovered(c: &mut Checker, r: &Recovered) {
    let done = |c: &mut Checker, what: String, how: &str| {
        c.findings.push(Finding { severity: Severity::Error, what, repair: Some(how.to_string()), repaired: true });
    };
    for mp in &r.thawed {
        done(c, format!("{mp} was left frozen by a crashed snapshot"), "thawed by recovery");
    }
    for f in &r.removed_tmp {
        done(c, format!("leftover file {f} of an interrupted command"), "removed by recovery");
    }
    for n in &r.finished_renames {
        done(c, format!("an interrupted rename ({n})"), "finished by recovery");
    }
    for n in &r.protected {
        done(c, format!("snapshot {n} had lost its immutable flag"), "re-protected by recovery");
    }
    for n in &r.finished_receives {
        done(c, format!("a receive died while it held {n}"), "put back by recovery");
    }
    for why in &r.unsettled_receives {
        c.findings.push(Finding {
            severity: Severity::Error,
            what: format!("a receive died while it held a subvolume, which cannot be put back ({why}); its image is kept in .subvol/receive/"),
            repair: None,
            repaired: false,
        });
    }
}

impl Pool {
    /// Checks the pool; with `repair`, fixes what is safe to fix.
    pub fn check(&self, repair: bool) -> Result<CheckReport> {
        let _lock = self.lock()?;
        let mut c = Checker { repair, findings: Vec::new() };
        // With --repair, recovery runs first and what it did is reported;
        // what is left after it (or, without --repair, what it would do)
        // is reported by check_recoverable.
        if repair {
            report_recovered(&mut c, &recovery::recover(&self.layout)?);
        }
        self.check_recoverable(&mut c);
        for (dir, m) in [(self.root().to_path_buf(), 0o700), (self.layout.meta_dir(), 0o700)] {
            if let Some(actual) = mode(&dir) {
                if actual != m {
                    c.error(
                        format!("{} has mode {actual:o}, not {m:o}", dir.display()),
                        Some(("chmod", &mut || chmod(&dir, m))),
                    );
                }
            }
        }
        let mut images = 0;
        let mut seen = Seen::default();
        for entry in std::fs::read_dir(self.layout.subvolumes_dir())
            .map_err(|e| Error::io(format!("cannot read {}", self.layout.subvolumes_dir().display()), e))?
            .flatten()
        {
            let path = entry.path();
            match layout::name_of_image(Path::new(&entry.file_name())) {
                Some(name) => {
                    images += 1;
                    self.check_image(&mut c, &path, &name, ObjectKind::Subvolume, &mut seen);
                }
                None => c.warning(format!("{} is not a subvolume image (unexpected name)", path.display())),
            }
        }
        if let Ok(dirs) = std::fs::read_dir(self.layout.snapshots_dir()) {
            for d in dirs.flatten() {
                let dpath = d.path();
                let is_dir = std::fs::symlink_metadata(&dpath).map(|m| m.is_dir()).unwrap_or(false);
                let sub = d.file_name().to_string_lossy().into_owned();
                if !is_dir || subvol_core::name::validate_part(&sub).is_err() {
                    c.error(format!("{} does not belong in the snapshots dir", dpath.display()), None);
                    continue;
                }
                for s in std::fs::read_dir(&dpath).into_iter().flatten().flatten() {
                    if let Some(snap) = layout::name_of_image(Path::new(&s.file_name())) {
                        images += 1;
                        self.check_image(&mut c, &s.path(), &format!("{sub}@{snap}"), ObjectKind::Snapshot, &mut seen);
                    } else {
                        c.warning(format!("{} is not a snapshot image (unexpected name)", s.path().display()));
                    }
                }
            }
        }
        check_shared_guids(&mut c, &seen);
        self.check_mount_points(&mut c);
        self.check_cache(&mut c, &seen);
        self.check_scrub_files(&mut c, &seen);
        let orphan_loops = self.check_orphans(&mut c)?;
        self.check_loops(&mut c, &orphan_loops)?;
        self.check_dirty_caps(&mut c)?;
        self.check_filesystems(&mut c)?;
        let clean = !c.findings.iter().any(Finding::is_open_error);
        Ok(CheckReport { pool: self.root().to_path_buf(), images, findings: c.findings, clean })
    }

    fn check_recoverable(&self, c: &mut Checker) {
        for e in std::fs::read_dir(self.layout.tmp_dir()).into_iter().flatten().flatten() {
            c.error(
                format!("leftover temp file {} (an interrupted command)", e.path().display()),
                Some(("removed by recovery", &mut || false)),
            );
        }
        for e in std::fs::read_dir(self.layout.frozen_dir()).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("snapshot.") {
                let mp = std::fs::read_to_string(e.path()).unwrap_or_default();
                c.error(
                    format!("{mp} was left frozen by a crashed snapshot"),
                    Some(("thawed by recovery", &mut || false)),
                );
            }
        }
        let kernel = KernelView::read().ok();
        for f in self.guard_frozen() {
            let mounted = kernel.as_ref().is_some_and(|k| k.mount_at(&f.mount_point).is_some());
            if mounted {
                c.warning(format!("{} is frozen by the guard since {}: {}", f.name, f.at, f.reason));
            } else {
                let marker = self.layout.guard_frozen_marker(&f.name);
                c.error(
                    format!("stale guard record for {} (no longer mounted at {})", f.name, f.mount_point.display()),
                    Some(("removed the record", &mut || std::fs::remove_file(&marker).is_ok())),
                );
            }
        }
        if self.layout.rename_intent().exists() {
            c.error("an interrupted rename".into(), Some(("finished by recovery", &mut || false)));
        }
        for e in std::fs::read_dir(self.layout.receive_dir()).into_iter().flatten().flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("img") if p.with_extension("state").exists() => c.warning(format!(
                    "a resumable partial receive: {} (see `subvol receive NAME --token`)",
                    p.display()
                )),
                Some("img") => {
                    let running = std::fs::File::open(&p).map(|f| f.try_lock().is_err()).unwrap_or(false);
                    let stem = p.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    if !running && crate::replication::adopting(&self.layout, &stem) {
                        // Recovery (run by this command's lock) could not
                        // put NAME back: this image is all there is of it.
                        c.findings.push(Finding {
                            severity: Severity::Error,
                            what: format!(
                                "a receive died while it held {stem}, which cannot be put back (its base and the new snapshot are gone); its image is kept at {}",
                                p.display()
                            ),
                            repair: None,
                            repaired: false,
                        });
                    } else if !running {
                        c.error(
                            format!("leftover partial receive {}", p.display()),
                            Some(("removed by recovery", &mut || false)),
                        );
                    }
                }
                Some("state") if !p.with_extension("img").exists() => {
                    c.error(
                        format!("receive state without its image: {}", p.display()),
                        Some(("removed", &mut || std::fs::remove_file(&p).is_ok())),
                    );
                }
                _ => {}
            }
        }
    }

    fn check_image(&self, c: &mut Checker, path: &Path, name: &str, kind: ObjectKind, seen: &mut Seen) {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return c.error(format!("{}: {e}", path.display()), None),
        };
        if meta.file_type().is_symlink() {
            return c.error(
                format!("{} is a symlink planted in the pool; subvol refuses to follow it", path.display()),
                Some(("removed the symlink", &mut || std::fs::remove_file(path).is_ok())),
            );
        }
        if !meta.is_file() {
            return c.error(format!("{} is not a regular file", path.display()), None);
        }
        if meta.nlink() > 1 {
            c.error(
                format!(
                    "{} has {} hard links; an image must have exactly one (remove the other links)",
                    path.display(),
                    meta.nlink()
                ),
                None,
            );
        }
        if meta.permissions().mode() & 0o7777 != 0o600 {
            c.error(
                format!("{} has mode {:o}, not 600", path.display(), meta.permissions().mode() & 0o7777),
                Some(("chmod 600", &mut || {
                    // An immutable snapshot cannot change mode: lift and restore.
                    let f = std::fs::File::open(path).ok();
                    let imm = f.as_ref().and_then(|f| subvol_os::flags::is_immutable(f).ok()).unwrap_or(false);
                    if let (Some(f), true) = (&f, imm) {
                        let _ = subvol_os::flags::set_immutable(f, false);
                    }
                    let ok = chmod(path, 0o600);
                    if let (Some(f), true) = (&f, imm) {
                        let _ = subvol_os::flags::set_immutable(f, true);
                    }
                    ok
                })),
            );
        }
        let Ok(file) = std::fs::File::open(path) else {
            return c.error(format!("{} cannot be opened", path.display()), None);
        };
        let m = match read_meta(&file) {
            Ok(m) => m,
            Err(e) => return c.error(format!("{}: {e}; the image is kept, inspect it by hand", path.display()), None),
        };
        if kind == ObjectKind::Snapshot {
            seen.snapshot_guids.entry(m.guid).or_default().push(name.to_string());
            if let Some(key) = CacheKey::of(&file, m.guid) {
                seen.cache_entries.insert(key.file_name());
                self.check_manifest(c, &key, &m, name, meta.len(), seen);
            }
        }
        if m.kind != kind {
            c.error(format!("{} is recorded as a {:?} but sits with the {:?}s", path.display(), m.kind, kind), None);
        }
        if kind == ObjectKind::Snapshot && !subvol_os::flags::is_immutable(&file).unwrap_or(true) {
            c.error(
                format!("snapshot {} is not immutable", path.display()),
                Some(("set immutable", &mut || subvol_os::flags::set_immutable(&file, true).is_ok())),
            );
        }
        if let (ObjectKind::Snapshot, Some(recorded)) = (kind, &m.content) {
            let why = crate::snapshot::content_stamp(&file).map(|now| recorded.differs(&now));
            if let Ok(Some(why)) = why {
                c.error(
                    format!(
                        "snapshot {} changed after it was taken: {why}; its content cannot be trusted (delete it, and send or take it again)",
                        path.display()
                    ),
                    None,
                );
            }
        }
        if kind == ObjectKind::Subvolume && !m.holds.is_empty() {
            c.error(
                format!("subvolume {} carries holds (only snapshots can be held)", path.display()),
                Some(("dropped the holds", &mut || {
                    let mut m2 = m.clone();
                    m2.holds.clear();
                    crate::snapshot::write_meta(&file, &m2).is_ok()
                })),
            );
        }
    }

    /// The mount base and what is planted in it: subvol never mounts or
    /// unmounts through a symlink, and reports one where a mount point goes.
    fn check_mount_points(&self, c: &mut Checker) {
        let base = self.mount_base();
        let default = base == self.layout.default_mount_base();
        if std::fs::symlink_metadata(&base).is_ok_and(|m| m.file_type().is_symlink()) {
            let what =
                format!("mount base {} is a symlink (planted?); subvol refuses to mount through it", base.display());
            if default {
                let root = DirHandle::open(self.root()).ok();
                c.error(
                    what,
                    Some(("removed the symlink", &mut || {
                        root.as_ref().is_some_and(|r| r.remove_symlink(crate::layout::MOUNT_DIR).unwrap_or(false))
                    })),
                );
            } else {
                c.error(format!("{what}; replace it by a directory owned by root"), None);
            }
            return;
        }
        let dir = match self.open_mount_base(false) {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => return c.error(e.message, None),
        };
        let Ok(entries) = std::fs::read_dir(&base) else { return };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
            if dir.entry_kind(&name).ok() != Some(EntryKind::Symlink) {
                continue;
            }
            let link = base.join(&name);
            let target = std::fs::read_link(&link).map(|t| t.display().to_string()).unwrap_or_default();
            c.error(
                format!(
                    "{} is a symlink (to {target}) planted at a mount point; subvol refuses to mount or unmount through it",
                    link.display()
                ),
                Some(("removed the symlink (not what it points to)", &mut || dir.remove_symlink(&name).unwrap_or(false))),
            );
        }
    }

    /// Cache entries that no snapshot image has the key of: maps of deleted
    /// snapshots, and entries named by an older subvol (by guid alone).
    fn check_cache(&self, c: &mut Checker, seen: &Seen) {
        for e in std::fs::read_dir(self.layout.cache_dir()).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !seen.cache_entries.contains(&name) {
                let p = e.path();
                c.warning_fixable(
                    format!("stale extent-map cache {} (no snapshot image has its key)", p.display()),
                    ("removed", &mut || std::fs::remove_file(&p).is_ok()),
                );
            }
        }
    }

    /// Every writable thin attachment must carry the dirty page cache cap the
    /// guard's margin counts on.
    fn check_dirty_caps(&self, c: &mut Checker) -> Result<()> {
        let subs = self.list()?;
        for (name, a) in self.uncapped_thin(&subs) {
            c.warning_fixable(
                format!(
                    "{name} ({}) is attached without its dirty page cache cap of {}: the guard cannot bound what its freeze flushes",
                    a.loop_device.display(),
                    subvol_core::format_size(crate::space::DIRTY_LIMIT_BYTES)
                ),
                ("restored the cap", &mut || crate::dirty_cap::apply(a.major, a.minor, true).is_ok()),
            );
        }
        Ok(())
    }

    /// A mounted filesystem the kernel shut down (or made read-only after
    /// an error) comes back only by an unmount and a mount that replays its
    /// log, which `--repair` must not do under its users. Nor may it finish
    /// a `lock` under them (an encrypted mount whose key is half removed).
    fn check_filesystems(&self, c: &mut Checker) -> Result<()> {
        let mut all = self.list()?;
        all.extend(self.list_snapshots(None)?);
        for advice in all.iter().filter_map(crate::SubvolumeInfo::failure_advice) {
            c.error(advice, None);
        }
        for what in crate::encryption::half_locked(&all) {
            c.error(what, None);
        }
        Ok(())
    }

    /// Images deleted while attached: their blocks are lost to the host
    /// (and a re-created name collides with their mounts) until released,
    /// which `--repair` does. Returns their loop device numbers.
    fn check_orphans(&self, c: &mut Checker) -> Result<Vec<u32>> {
        let kernel = KernelView::read()?;
        let orphans = self.orphans_in(&kernel);
        for o in &orphans {
            c.error_with_outcome(
                format!("{}; release it with {}", o.describe(), o.fix()),
                "unmount it (lazily where files are open) and detach its loop device",
                || match self.release_orphan_locked(o, &kernel) {
                    Ok(r) => (r.detached, r.summary()),
                    Err(e) => (false, e.message),
                },
            );
        }
        Ok(orphans.iter().map(|o| o.loop_number).collect())
    }

    /// Loop devices on the pool's files without a mount (orphans, reported
    /// above, excepted).
    fn check_loops(&self, c: &mut Checker, orphan_loops: &[u32]) -> Result<()> {
        for l in subvol_os::loopdev::list() {
            if !l.backing_file.starts_with(self.root()) || orphan_loops.contains(&l.number) {
                continue;
            }
            let mounted = subvol_os::mount::mounts_of_device(l.major, l.minor).map(|m| !m.is_empty()).unwrap_or(true);
            if mounted {
                continue;
            }
            if !l.backing_deleted && !l.autoclear && std::fs::symlink_metadata(&l.backing_file).is_ok() {
                // Attached on purpose (`Pool::attach`: a block volume, a VM's
                // disk); `detach` ends it.
                continue;
            }
            if l.backing_deleted || !l.autoclear {
                let dev = l.path.clone();
                let number = l.number;
                c.error(
                    format!(
                        "{} is attached to {} without a mount and would never detach by itself",
                        dev.display(),
                        l.backing_file.display()
                    ),
                    Some(("detached", &mut || subvol_os::loopdev::open(number).and_then(|d| d.detach()).is_ok())),
                );
            } else {
                c.warning(format!(
                    "{} holds {} open without a mount (a VM or another user?)",
                    l.path.display(),
                    l.backing_file.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(severity: Severity, repair: Option<&str>, repaired: bool) -> Finding {
        Finding { severity, what: "x".into(), repair: repair.map(str::to_string), repaired }
    }

    #[test]
    fn severity_prints_and_serializes_as_before() {
        assert_eq!(Severity::Error.to_string(), "error");
        assert_eq!(Severity::Warning.to_string(), "warning");
        let json = serde_json::to_value(finding(Severity::Warning, None, false)).unwrap();
        assert_eq!(json["severity"], "warning");
        assert_eq!(serde_json::to_value(Severity::Error).unwrap(), "error");
    }

    #[test]
    fn only_unrepaired_errors_count_and_repair_helps_only_with_one_it_can_fix() {
        let report = |findings| CheckReport { pool: "/p".into(), images: 0, findings, clean: false };
        let r = report(vec![
            finding(Severity::Warning, Some("remove"), false),
            finding(Severity::Error, Some("chmod"), true),
            finding(Severity::Error, None, false),
        ]);
        assert_eq!(r.open_errors(), 1);
        assert!(!r.repair_would_help(), "a warning's or a repaired error's repair is no reason to run --repair");
        let r = report(vec![finding(Severity::Error, Some("chmod"), false)]);
        assert_eq!((r.open_errors(), r.repair_would_help()), (1, true));
    }
}
