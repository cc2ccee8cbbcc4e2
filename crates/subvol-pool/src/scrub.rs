//! `subvol scrub`: reads snapshots and verifies every chunk against its
//! manifest, so that rot on a host without data checksums (XFS, ext4) is
//! found instead of being read back as good data forever.
//!
//! A scrub does not take the pool lock (it may run for hours beside every
//! other command); its own lock keeps scrubs apart. It first creates the
//! manifests that are missing (snapshots older than manifests, received
//! ones: hashed as found, so not verified), then verifies (scrub_verify),
//! saving where it is every few seconds so that an interrupted scrub
//! resumes there. What it found is kept per snapshot for `pool status`,
//! `info` and `pool check`.

use crate::chunk_io::{self, Source};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest_build::{BuildReport, OpenSnapshot, Wanted};
use crate::manifest_store::{ManifestStore, Stored};
use crate::pool::Pool;
use crate::scrub_report::{NotCovered, ScrubOptions, ScrubReport};
use crate::scrub_scope::Scope;
use crate::scrub_verify::{HashTable, Interned, Member, Verify};
use crate::snapshot::Progress;
use crate::worker::WorkerLock;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use subvol_core::chunks::Layout;
use subvol_core::manifest::{BuiltBy, Geometry, CHUNK_SIZE};
use subvol_core::scrub::{damaged_ranges, Fault, ScrubProgress, ScrubResults, ScrubRun, SnapshotScrub, Verdict};

/// How often a running scrub records where it is.
const SAVE_EVERY: Duration = Duration::from_secs(5);

/// A snapshot (`NAME@SNAP`) or subvolume (`NAME`, none of its snapshots)
/// whose missing manifest could not be built, and why.
type BuildFailure = (String, String);

/// One scrub's settings, for the verification pass.
struct Pass<'a> {
    scope: &'a str,
    started: DateTime<Utc>,
    prior: Option<&'a ScrubProgress>,
    opts: &'a ScrubOptions,
    created: &'a [BuildReport],
    progress: Progress<'a>,
}

/// The snapshots in scope, sorted by what can be done with them.
struct Sorted {
    members: Vec<(usize, subvol_core::manifest::Manifest)>,
    outcomes: Vec<SnapshotScrub>,
    not_covered: Vec<NotCovered>,
}

/// What the verification pass found.
struct Verified {
    outcomes: Vec<SnapshotScrub>,
    stats: chunk_io::ReadStats,
    /// The chunk it started from (a resumed scrub: where the last stopped).
    from_chunk: u64,
    /// Chunks found damaged, by host blocks: position, layout, fault.
    damaged_blocks: Vec<(u64, Layout, Fault)>,
}

fn outcome(s: &OpenSnapshot, verdict: Verdict, problem: Option<String>, at: DateTime<Utc>) -> SnapshotScrub {
    SnapshotScrub {
        name: s.name.clone(),
        guid: s.meta.guid,
        verdict,
        manifest_created: false,
        problem,
        damaged: Vec::new(),
        damaged_bytes: 0,
        scrubbed_at: at,
    }
}

impl Pool {
    /// The progress of an interrupted scrub, if one is recorded and readable.
    pub(crate) fn scrub_progress(&self) -> Option<ScrubProgress> {
        ScrubProgress::decode(&std::fs::read(self.layout.scrub_progress()).ok()?).ok()
    }

    /// What scrubs found so far (empty when none ran or the record is
    /// unreadable, which `pool check` reports).
    pub(crate) fn scrub_results(&self) -> ScrubResults {
        std::fs::read(self.layout.scrub_results()).ok().and_then(|b| ScrubResults::decode(&b).ok()).unwrap_or_default()
    }

    /// Guids of every snapshot in the pool.
    fn snapshot_guids(&self) -> HashSet<uuid::Uuid> {
        let mut out = HashSet::new();
        for e in std::fs::read_dir(self.layout.snapshots_dir()).into_iter().flatten().flatten() {
            let Some(group) = e.file_name().to_str().map(str::to_string) else { continue };
            for s in self.open_group(&group).unwrap_or_default() {
                out.insert(s.meta.guid);
            }
        }
        out
    }

    /// Scrubs the snapshots `opts` names, repairs what it found from
    /// `opts.repair_from` if given, and names the files the remaining
    /// damage is in. `on_wait` is told when it waits for a manifest
    /// builder; `progress` gets (bytes done, bytes in all).
    pub fn scrub(&self, opts: &ScrubOptions, on_wait: &dyn Fn(u32), progress: Progress<'_>) -> Result<ScrubReport> {
        let mut report = self.scrub_pass(opts, on_wait, progress)?;
        // After the pass, its scrub lock dropped: the repair takes the pool lock.
        if let Some(from) = &opts.repair_from {
            report.repair = Some(self.repair(&report, from, progress)?);
        }
        report.files = self.damaged_files(&report);
        Ok(report)
    }

    fn scrub_pass(&self, opts: &ScrubOptions, on_wait: &dyn Fn(u32), progress: Progress<'_>) -> Result<ScrubReport> {
        let clock = Instant::now();
        let _running = WorkerLock::try_take(&self.layout.scrub_lock())?.ok_or_else(|| {
            let pid = crate::worker::holder(&self.layout.scrub_lock()).unwrap_or(0);
            Error::new(
                ErrorKind::Busy,
                format!("a scrub (pid {pid}) is already running on this pool; wait for it (an interrupted scrub resumes where it stopped)"),
            )
        })?;
        // Every member stays open for the reads through it.
        let _ = subvol_os::limits::raise_open_files();
        let scope = self.scrub_scope(opts)?;
        let (created, build_failed) = self.create_missing(&scope, opts, on_wait, progress)?;
        let prior =
            self.scrub_progress().filter(|p| p.scope == scope.label && p.chunk_size == CHUNK_SIZE && !opts.restart);
        let mut snaps: Vec<OpenSnapshot> = Vec::new();
        for (group, wanted) in &scope.groups {
            let mut g = self.open_group(group)?;
            if let Wanted::Only(snap) = wanted {
                g.retain(|s| s.name == format!("{group}@{snap}"));
            }
            snaps.extend(g);
        }
        let sorted = self.sort_members(&snaps, prior.as_ref(), &build_failed);
        let pass = Pass {
            scope: &scope.label,
            started: prior.as_ref().map(|p| p.started).unwrap_or_else(Utc::now),
            prior: prior.as_ref(),
            opts,
            created: &created,
            progress,
        };
        let verified = self.verify_members(&snaps, sorted.members, &pass)?;
        let mut outcomes = sorted.outcomes;
        outcomes.extend(verified.outcomes);
        for o in outcomes.iter_mut() {
            o.manifest_created |= created.iter().any(|c| c.name == o.name);
        }
        outcomes.sort_by(|a, b| a.name.cmp(&b.name));
        let finished = Utc::now();
        let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count() as u64;
        let run = ScrubRun {
            scope: scope.label.clone(),
            started: pass.started,
            finished,
            resumed: prior.is_some(),
            snapshots: outcomes.len() as u64,
            damaged: count(Verdict::Damaged),
            unverified: count(Verdict::Unverified),
            manifests_created: outcomes.iter().filter(|o| o.manifest_created).count() as u64,
            bytes_read: verified.stats.bytes_read,
            bytes_verified: snaps
                .iter()
                .filter(|s| outcomes.iter().any(|o| o.guid == s.meta.guid))
                .map(|s| s.size)
                .sum(),
        };
        self.record_results(&run, &outcomes)?;
        let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let started = rfc(pass.started);
        Ok(ScrubReport {
            pool: self.root().to_path_buf(),
            scope: scope.label,
            started,
            finished: rfc(finished),
            resumed_at_bytes: prior.map(|_| verified.from_chunk * u64::from(CHUNK_SIZE)),
            clean: outcomes.iter().all(|o| o.verdict == Verdict::Clean),
            snapshots: outcomes,
            manifests_created: created,
            live: if opts.snapshots_only { Vec::new() } else { scope.live },
            live_damaged: self.live_damage(&scope.neighbours, &verified.damaged_blocks),
            not_covered: sorted.not_covered,
            bytes_read: verified.stats.bytes_read,
            chunks_read: verified.stats.chunks_read,
            bytes_verified: run.bytes_verified,
            duration_us: clock.elapsed().as_micros() as u64,
            repair: None,
            files: Vec::new(),
        })
    }

    /// Creates the missing manifests in scope (hashed as found: not
    /// verified). Returns them, and the subvolumes whose builds failed, why.
    fn create_missing(
        &self,
        scope: &Scope,
        opts: &ScrubOptions,
        on_wait: &dyn Fn(u32),
        progress: Progress<'_>,
    ) -> Result<(Vec<BuildReport>, Vec<BuildFailure>)> {
        let _build = WorkerLock::take(&self.layout.build_lock(), on_wait)?;
        let mut created = Vec::new();
        let mut failed = Vec::new();
        for (group, wanted) in &scope.groups {
            match self.build_group(group, wanted, BuiltBy::Scrub, opts.pace(), progress) {
                Ok(built) => {
                    created.extend(built.reports);
                    failed.extend(built.failed);
                }
                Err(e) => failed.push((group.clone(), e.message)),
            }
        }
        Ok((created, failed))
    }

    /// Splits the snapshots in scope into members to verify (with their
    /// manifests), outcomes known without reading (no usable manifest), and
    /// those a resumed scrub does not cover.
    fn sort_members(
        &self,
        snaps: &[OpenSnapshot],
        prior: Option<&ScrubProgress>,
        build_failed: &[BuildFailure],
    ) -> Sorted {
        let now = Utc::now();
        let store = ManifestStore::new(self.layout.manifests_dir());
        let mut out = Sorted { members: Vec::new(), outcomes: Vec::new(), not_covered: Vec::new() };
        for (i, s) in snaps.iter().enumerate() {
            if prior.is_some_and(|p| !p.members.contains(&s.meta.guid)) {
                out.not_covered.push(NotCovered {
                    name: s.name.clone(),
                    why: "taken after the interrupted scrub this one resumes; the next scrub covers it".into(),
                });
                continue;
            }
            let stored = match s.key() {
                Ok(key) => store.read(&key, s.meta.guid, s.size),
                Err(e) => Stored::Damaged(e.message),
            };
            let unverified = |why: String| outcome(s, Verdict::Unverified, Some(why), now);
            let known = match stored {
                Stored::Found(m) if m.geometry().chunk_size() == CHUNK_SIZE => {
                    out.members.push((i, m));
                    continue;
                }
                Stored::Found(m) => unverified(format!(
                    "its manifest uses {}-byte chunks; this subvol verifies {}-byte chunks",
                    m.geometry().chunk_size(),
                    CHUNK_SIZE
                )),
                Stored::OtherSize(m) => outcome(
                    s,
                    Verdict::Damaged,
                    Some(format!(
                        "the image is {} bytes but was {} when its manifest was built: it was changed after it was taken",
                        s.size,
                        m.geometry().image_size()
                    )),
                    now,
                ),
                Stored::Damaged(why) => unverified(format!(
                    "its manifest is damaged ({why}); `subvol pool check --repair` removes it and the next scrub creates a new one from the image as it is then (not verified)"
                )),
                Stored::Missing => {
                    let group = s.name.split('@').next().unwrap_or_default();
                    let why = build_failed
                        .iter()
                        .find(|(n, _)| *n == s.name || n == group)
                        .map(|(_, e)| e.clone())
                        .unwrap_or_else(|| "it was deleted or replaced meanwhile".into());
                    unverified(format!("it has no manifest, and none could be created: {why}"))
                }
            };
            out.outcomes.push(known);
        }
        out
    }

    /// Keeps a finished scrub's findings for `pool status`, `info` and
    /// `pool check`, and drops the place of the interrupted one it finished.
    fn record_results(&self, run: &ScrubRun, outcomes: &[SnapshotScrub]) -> Result<()> {
        let mut results = self.scrub_results();
        let alive = self.snapshot_guids();
        results.record(run.clone(), outcomes.to_vec(), |g| alive.contains(g));
        subvol_os::fsync::write_atomic(&self.layout.scrub_results(), &results.encode())
            .map_err(|e| Error::os("cannot record the scrub's results", e))?;
        let _ = std::fs::remove_file(self.layout.scrub_progress());
        Ok(())
    }

    /// The verification pass over the members (index into `snaps`, and
    /// manifest), resuming `pass.prior` if given.
    fn verify_members(
        &self,
        snaps: &[OpenSnapshot],
        members: Vec<(usize, subvol_core::manifest::Manifest)>,
        pass: &Pass<'_>,
    ) -> Result<Verified> {
        let chunk = u64::from(CHUNK_SIZE);
        let next = pass.prior.map(|p| p.next_chunk).unwrap_or(0);
        let mut table = HashTable::default();
        let mut engine_members = Vec::with_capacity(members.len());
        let mut sources = Vec::with_capacity(members.len());
        let mut who: Vec<&OpenSnapshot> = Vec::with_capacity(members.len());
        for (i, m) in members {
            let s = &snaps[i];
            engine_members.push(Member {
                map: s.extents()?,
                size: s.size,
                entries: Interned::of(&m, &mut table),
                damage: Vec::new(),
            });
            sources.push(Source::new(&s.file));
            who.push(s);
        }
        let member_guids: Vec<uuid::Uuid> = match pass.prior {
            Some(p) => p.members.clone(),
            None => snaps.iter().map(|s| s.meta.guid).collect(),
        };
        // Each member's outcome: what earlier parts of a resumed scrub
        // found, and `damage`.
        let found = |damage: &[Vec<(u64, Fault)>], at: DateTime<Utc>| -> Vec<SnapshotScrub> {
            who.iter()
                .zip(damage)
                .map(|(s, d)| {
                    let earlier = pass.prior.and_then(|p| p.found.iter().find(|f| f.guid == s.meta.guid));
                    let mut o = earlier.cloned().unwrap_or_else(|| outcome(s, Verdict::Clean, None, at));
                    o.scrubbed_at = at;
                    o.manifest_created |= pass.created.iter().any(|c| c.name == s.name);
                    if let Ok(g) = Geometry::new(CHUNK_SIZE, s.size) {
                        o.add_damage(&damaged_ranges(g, d));
                    }
                    o
                })
                .collect()
        };
        let layout = &self.layout;
        let mut last_save = Instant::now();
        let mut save = |v: &Verify<'_>| {
            (pass.progress)(v.completed * chunk, v.total() * chunk);
            if last_save.elapsed() < SAVE_EVERY {
                return;
            }
            last_save = Instant::now();
            let record = ScrubProgress {
                scope: pass.scope.to_string(),
                started: pass.started,
                chunk_size: CHUNK_SIZE,
                next_chunk: v.completed,
                total_chunks: v.total(),
                members: member_guids.clone(),
                found: found(&v.damage_before(v.completed), Utc::now())
                    .into_iter()
                    .filter(|o| o.verdict != Verdict::Clean || o.manifest_created)
                    .collect(),
            };
            // Best effort: a scrub that cannot record its place still verifies.
            let _ = subvol_os::fsync::write_atomic(&layout.scrub_progress(), &record.encode());
        };
        let mut plan = Verify::new(engine_members, table, chunk, next, &mut save);
        let stats = chunk_io::run(&mut plan, &sources, pass.opts.pace())?;
        let damage = plan.damage_before(u64::MAX);
        let damaged_blocks = plan.damaged_layouts();
        drop(plan);
        Ok(Verified { outcomes: found(&damage, Utc::now()), stats, from_chunk: next, damaged_blocks })
    }
}
