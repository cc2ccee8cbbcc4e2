//! `subvol scrub` and the integrity lines of `info` and `pool status`:
//! words and exit status for what the pool layer found.

use crate::output::{emit, json};
use crate::progress::Bar;
use subvol_core::chunk_read::{parse_list, Replica};
use subvol_core::scrub::{SnapshotScrub, Verdict};
use subvol_core::{format_size, parse_size};
use subvol_pool::sync::RepairFrom;
use subvol_pool::{
    damage_advice, describe_damage, Error, ErrorKind, Integrity, Pool, RepairReport, Result, ScrubOptions, ScrubReport,
    ScrubStatus, SnapshotFiles,
};

/// `--repair-from` as the pool layer takes it.
pub fn repair_from(text: Option<&str>, ssh_options: Vec<String>, remote_bin: String) -> Result<Option<RepairFrom>> {
    let Some(text) = text else { return Ok(None) };
    let replica = Replica::parse(text).map_err(|e| Error::invalid(e.to_string()))?;
    Ok(Some(RepairFrom { replica, ssh_options, remote_bin }))
}

/// `subvol read-chunks GUID --chunks LIST`: the replica's side of a
/// repair, a chunk-read reply on standard output.
pub fn read_chunks(pool: &Pool, guid: &str, chunks: &str) -> Result<()> {
    let guid: uuid::Uuid = guid.parse().map_err(|_| Error::invalid(format!("{guid:?} is not a guid")))?;
    let chunks = parse_list(chunks).map_err(|e| Error::invalid(e.to_string()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    pool.read_chunks(guid, &chunks, &mut out)
}

/// Runs a scrub and prints its report; damage (or a snapshot that could not
/// be verified) is an error (exit 8) that names it and what to do.
pub fn run(pool: &Pool, opts: ScrubOptions, bwlimit: Option<&str>, as_json: bool) -> Result<()> {
    let opts = ScrubOptions { rate: bwlimit.map(parse_size).transpose()?, ..opts };
    if opts.rate == Some(0) {
        return Err(Error::invalid("--bwlimit must be above 0"));
    }
    let bar = Bar::new("scrubbing");
    let report = pool.scrub(
        &opts,
        &|pid| eprintln!("subvol: waiting for the manifest builder (pid {pid}) to finish..."),
        &|d, t| bar.update(d, t),
    );
    bar.finish();
    let report = report?;
    if as_json {
        json(&report);
    } else {
        emit(&render(&report));
    }
    verdict(&report)
}

fn verdict(r: &ScrubReport) -> Result<()> {
    if let Some(rep) = &r.repair {
        return repair_verdict(r, rep);
    }
    let damaged: Vec<&str> = r.damaged().map(|s| s.name.as_str()).collect();
    let unverified: Vec<&str> = r.unverified().map(|s| s.name.as_str()).collect();
    if !damaged.is_empty() {
        let live: Vec<String> = r.live_damaged.iter().map(|l| format!("{} (live)", l.name)).collect();
        let also = if live.is_empty() {
            String::new()
        } else {
            format!(", and in {} which still uses those blocks", live.join(", "))
        };
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("scrub found damage in {}{also}: {}", damaged.join(", "), damage_advice()),
        ));
    }
    if !unverified.is_empty() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("scrub could not verify {} (listed above with why)", unverified.join(", ")),
        ));
    }
    Ok(())
}

/// After a repair: only what is still lost fails (exit 8), named with its ranges.
fn repair_verdict(r: &ScrubReport, rep: &RepairReport) -> Result<()> {
    if !rep.lost.is_empty() {
        let lost: Vec<String> = rep.lost.iter().map(|l| format!("{} ({})", l.name, ranges(&l.ranges))).collect();
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "the repair from {} could not repair everything; lost: {} (listed above with why); \
                 restore those from another replica or a backup",
                escape(&rep.replica),
                escape(&lost.join(", "))
            ),
        ));
    }
    let unverified: Vec<&str> = r.unverified().map(|s| s.name.as_str()).collect();
    if !unverified.is_empty() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("scrub could not verify {} (listed above with why)", unverified.join(", ")),
        ));
    }
    Ok(())
}

/// Byte ranges as `OFFSET+LENGTH`, the first few.
fn ranges(v: &[subvol_pool::ByteRange]) -> String {
    let mut out: Vec<String> = v.iter().take(4).map(|r| format!("{}+{}", r.offset, r.length)).collect();
    if v.len() > 4 {
        out.push(format!("{} more", v.len() - 4));
    }
    if out.is_empty() {
        return "ranges past what the scrub lists".into();
    }
    out.join(", ")
}

fn render_repair(rep: &RepairReport) -> String {
    let mut out = format!(
        "repair from {}: fetched {} chunk(s) ({}), {} refused (not matching our manifests)\n",
        escape(&rep.replica),
        rep.chunks_fetched,
        format_size(rep.bytes_fetched),
        rep.chunks_refused
    );
    for r in &rep.repaired {
        let what = if r.live { " (live subvolume)" } else { "" };
        out.push_str(&format!(
            "REPAIRED {}{what}: {} at {}, verified\n",
            escape(&r.name),
            format_size(r.bytes),
            ranges(&r.ranges)
        ));
    }
    for l in &rep.lost {
        out.push_str(&format!(
            "LOST {}: {} at {}: {}\n",
            escape(&l.name),
            format_size(l.bytes),
            ranges(&l.ranges),
            escape(&l.why)
        ));
    }
    out
}

fn render_files(files: &[SnapshotFiles]) -> String {
    let mut out = String::new();
    for s in files {
        for f in &s.files {
            let at: Vec<String> = f.ranges.iter().take(4).map(|r| format!("{}+{}", r.file_offset, r.length)).collect();
            out.push_str(&format!(
                "  damaged file in {}: {} ({} at file offsets {})\n",
                escape(&s.name),
                escape(&f.path),
                format_size(f.damaged_bytes),
                at.join(", ")
            ));
        }
        if s.outside_files_bytes > 0 && s.note.is_none() {
            out.push_str(&format!(
                "  {}: {} damaged outside any file (filesystem metadata or free space)\n",
                escape(&s.name),
                format_size(s.outside_files_bytes)
            ));
        }
        if let Some(n) = &s.note {
            out.push_str(&format!("  files of {}: {}\n", escape(&s.name), escape(n)));
        }
    }
    out
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn render(r: &ScrubReport) -> String {
    let clean = r.snapshots.iter().filter(|s| s.verdict == Verdict::Clean).count();
    let mut out = format!(
        "scrubbed {} snapshot(s) ({}): {} clean, {} damaged, {} not verified\n",
        r.snapshots.len(),
        r.scope,
        clean,
        r.damaged().count(),
        r.unverified().count()
    );
    out.push_str(&format!(
        "read {} (each shared block once) to verify {} of snapshot content, in {:.1} s\n",
        format_size(r.bytes_read),
        format_size(r.bytes_verified),
        secs(r.duration_us)
    ));
    if let Some(at) = r.resumed_at_bytes {
        out.push_str(&format!("resumed the scrub started at {} from {}\n", r.started, format_size(at)));
    }
    for s in r.damaged() {
        out.push_str(&format!("DAMAGED {}\n", escape(&describe_damage(s))));
    }
    out.push_str(&render_files(&r.files));
    for l in &r.live_damaged {
        let ranges: Vec<String> =
            l.damaged.iter().take(4).map(|d| format!("{}+{} {}", d.offset, d.length, d.fault.as_str())).collect();
        out.push_str(&format!(
            "DAMAGED {} (live subvolume): it still uses the damaged blocks, {} at {}; its current data there is damaged too\n",
            escape(&l.name),
            format_size(l.damaged_bytes),
            ranges.join(", ")
        ));
    }
    for s in r.unverified() {
        out.push_str(&format!("NOT VERIFIED {}: {}\n", escape(&s.name), escape(s.problem.as_deref().unwrap_or(""))));
    }
    for c in &r.manifests_created {
        out.push_str(&format!(
            "manifest created: {} (hashed from the image as it is now: created, not verified)\n",
            escape(&c.name)
        ));
    }
    for n in &r.not_covered {
        out.push_str(&format!("not covered: {}: {}\n", escape(&n.name), n.why));
    }
    for l in &r.live {
        out.push_str(&format!(
            "not covered: {0} (live subvolume): it changes, so it has no manifest; snapshots of it are verified \
             (`subvol snapshot {0}`, or a snapshot.policy with `subvol autosnap`)\n",
            escape(l)
        ));
    }
    if let Some(rep) = &r.repair {
        out.push_str(&render_repair(rep));
    }
    out
}

fn escape(s: &str) -> String {
    subvol_core::text::escape(s).into_owned()
}

/// One line on what a scrub found in a snapshot.
fn last_scrub(s: &SnapshotScrub) -> String {
    let when = s.scrubbed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match s.verdict {
        Verdict::Clean => format!("clean at {when}"),
        Verdict::Damaged => format!("DAMAGED at {when}: {}", describe_damage(s)),
        Verdict::Unverified => format!("not verified at {when}: {}", s.problem.as_deref().unwrap_or("")),
    }
}

/// `info`'s integrity lines.
pub fn info_fields(i: &Integrity) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let manifest = match &i.details {
        Some(d) => format!(
            "{} ({}; {} chunks of {}, {} with data; {} read to build it; root {})",
            i.manifest,
            i.note,
            d.chunks,
            format_size(u64::from(d.chunk_size)),
            d.data_chunks,
            format_size(d.bytes_read),
            &d.root[..16]
        ),
        None => format!("{} ({})", i.manifest, i.note),
    };
    out.push(("manifest", manifest));
    if let Some(s) = &i.last_scrub {
        out.push(("last scrub", last_scrub(s)));
    }
    if !i.damaged_snapshots.is_empty() {
        out.push(("damaged snapshots", i.damaged_snapshots.join(", ")));
    }
    out
}

/// `pool status`'s scrub lines.
pub fn status_fields(s: &ScrubStatus) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let last = match &s.last {
        Some(l) => format!(
            "{} ({}): {} snapshot(s), {} damaged, {} not verified; read {}{}",
            l.finished.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            l.scope,
            l.snapshots,
            l.damaged,
            l.unverified,
            format_size(l.bytes_read),
            if l.resumed { " (resumed)" } else { "" }
        ),
        None => "never (run `subvol scrub --all`)".into(),
    };
    out.push(("last scrub", last));
    if let Some(pid) = s.running_pid {
        out.push(("scrub", format!("running (pid {pid})")));
    } else if let Some(i) = &s.interrupted {
        out.push((
            "scrub",
            format!(
                "interrupted at {} of {} (started {}); `subvol scrub {}` resumes it",
                format_size(i.done_bytes),
                format_size(i.total_bytes),
                i.started,
                i.scope
            ),
        ));
    }
    let missing = s.snapshots - s.with_manifest;
    let mut manifests = format!("{} of {} snapshots", s.with_manifest, s.snapshots);
    if missing > 0 {
        manifests.push_str(&match s.building_pid {
            Some(pid) => format!(" ({missing} being built in the background, pid {pid})"),
            None => format!(" ({missing} missing: `subvol scrub` creates them)"),
        });
    }
    out.push(("manifests", manifests));
    for d in &s.damaged {
        out.push(("damaged", format!("{}: {}", d.name, last_scrub(d))));
    }
    for d in &s.unverified {
        out.push(("not verified", format!("{}: {}", d.name, last_scrub(d))));
    }
    out
}
