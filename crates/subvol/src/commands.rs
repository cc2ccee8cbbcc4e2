//! Dispatch: one function per command, each calling the pool layer and
//! choosing what to print.

use crate::cli::{Cli, Command, KeyArgs, PoolCommand};
use crate::output::{emit, fields, json, json_with_outcome, Table};
use crate::progress;
use crate::{replication, sync};
use std::time::Duration;
use subvol_core::retention::KeepPolicy;
use subvol_core::text::escape;
use subvol_core::{format_size, parse_size, FsKind};
use subvol_pool::{
    extent_hint_bytes, is_snapshot, orphan_warning, orphans_held, CreateOptions, Error, ErrorKind, GuardOptions,
    InitOptions, KeySource, Listing, MountOptions, Orphan, Pool, PoolStatus, PruneReport, Result, State, SubvolumeInfo,
    POLICY_PROPERTY,
};

/// Runs one command; returns the exit status of a command that succeeded
/// (0, except `health`, whose status is its verdict).
pub fn run(cli: Cli) -> Result<u8> {
    let timeout = Duration::from_secs(cli.lock_timeout);
    let open = || -> Result<Pool> {
        let mut pool = Pool::open(&cli.pool)?;
        pool.set_lock_wait(
            timeout,
            Box::new(|| eprintln!("subvol: waiting for the pool lock (another subvol command is running)...")),
        );
        pool.set_background(Box::new(crate::background::start));
        Ok(pool)
    };
    match cli.command {
        Command::Health { warn_age, crit_age, json: j } => return Ok(health(&open, warn_age, crit_age, j.json)),
        Command::Pool(PoolCommand::Init { dir, backing_image, backing_file, mount_base, force, json: j }) => {
            let opts = InitOptions {
                backing_image_bytes: backing_image.as_deref().map(parse_size).transpose()?,
                backing_file,
                mount_base,
                force,
            };
            let pool = Pool::init(&dir, &opts)?;
            let st = pool.status()?;
            if j.json {
                json(&st);
            } else {
                let mut msg = format!("initialised pool {} on {}", st.path.display(), st.host_fs);
                if let Some(b) = &st.backing_image {
                    msg.push_str(&format!(" (backing image {}, {})", b.display(), format_size(st.capacity_bytes)));
                }
                msg.push('\n');
                if st.reflink {
                    msg.push_str("reflinks work: snapshots and clones will be instant\n");
                } else {
                    msg.push_str("warning: this filesystem has no reflinks: snapshots and clones will be full copies (use xfs with reflink=1, btrfs, or --backing-image)\n");
                }
                emit(&msg);
            }
        }
        Command::Pool(PoolCommand::Status { json: j }) => {
            let st = open()?.status()?;
            if j.json {
                json(&st);
            } else {
                emit(&render_status(&st));
            }
        }
        Command::Pool(PoolCommand::Check { repair, json: j }) => {
            let report = open()?.check(repair)?;
            if j.json {
                json(&report);
            } else {
                let mut out = String::new();
                for f in &report.findings {
                    let fix = match (&f.repair, f.repaired, repair) {
                        (Some(r), true, _) => format!(" [repaired: {r}]"),
                        (Some(r), false, false) => format!(" [--repair: {r}]"),
                        (Some(r), false, true) => format!(" [repair failed: {r}]"),
                        (None, _, _) => String::new(),
                    };
                    // Findings quote paths found on disk or in the kernel's
                    // tables: escaped, like every table.
                    out.push_str(&format!("{}: {}\n", f.severity, escape(&format!("{}{fix}", f.what))));
                }
                out.push_str(&format!(
                    "{}: {} images checked, {} problem(s){}\n",
                    report.pool.display(),
                    report.images,
                    report.open_errors(),
                    if report.clean { ", clean" } else { "" }
                ));
                emit(&out);
            }
            if !report.clean {
                let next = if report.repair_would_help() {
                    "; run `subvol pool check --repair`"
                } else {
                    ", each with what to do"
                };
                return Err(Error::new(ErrorKind::Corrupt, format!("the pool has problems (listed above){next}")));
            }
        }
        Command::Pool(PoolCommand::Mount { dir, backing_file }) => {
            let (pool, newly) = Pool::mount_backing(&dir, backing_file.as_deref())?;
            if newly {
                emit(&format!("mounted pool {}\n", pool.root().display()));
            } else {
                emit(&format!("pool {} is already mounted\n", pool.root().display()));
            }
        }
        Command::Pool(PoolCommand::Umount { dir, force }) => {
            let mut pool = Pool::open(&dir)?;
            pool.set_lock_wait(timeout, Box::new(|| eprintln!("subvol: waiting for the pool lock...")));
            let root = pool.root().to_path_buf();
            pool.umount_backing(force)?;
            emit(&format!("unmounted pool {}\n", root.display()));
        }
        Command::Pool(PoolCommand::Destroy { dir, force, json: j }) => {
            let r = Pool::destroy(&dir, force)?;
            if j.json {
                json(&r);
            } else if !r.outcome.changed() {
                emit(&format!("no pool at {}; nothing destroyed\n", r.path.display()));
            } else {
                emit(&format!(
                    "destroyed pool {} ({} subvolumes, {} snapshots{}{})\n",
                    r.path.display(),
                    r.subvolumes,
                    r.snapshots,
                    if r.unmounted.is_empty() {
                        String::new()
                    } else {
                        format!("; unmounted {}", r.unmounted.join(", "))
                    },
                    r.backing_image_removed.as_ref().map(|p| format!("; removed {}", p.display())).unwrap_or_default()
                ));
                if let Some(why) = &r.directory_kept {
                    eprintln!("subvol: warning: {why}");
                }
            }
        }
        Command::Create { name, size, fs, mkfs_opt, guarantee, extent_hint, thin_unsafe, encrypt, key, json: j } => {
            let encryption = match (encrypt, key_source(&key)) {
                (true, None) => {
                    return Err(Error::invalid("--encrypt needs --key-file FILE or --passphrase-file FILE"))
                }
                (false, Some(_)) => return Err(Error::invalid("--key-file and --passphrase-file go with --encrypt")),
                (_, source) => source,
            };
            let extent_hint_bytes = extent_hint_bytes(&extent_hint)?;
            let fs: FsKind = fs.parse().map_err(Error::invalid)?;
            let (info, outcome) = open()?.create(
                &name,
                &CreateOptions {
                    size_bytes: parse_size(&size)?,
                    fs,
                    mkfs_opts: mkfs_opt,
                    guarantee,
                    extent_hint_bytes,
                    thin_unsafe,
                    encryption,
                },
            )?;
            if j.json {
                json_with_outcome(&info, outcome);
            } else {
                emit(&format!(
                    "{} {} ({} {}, image {})\n",
                    if outcome.changed() { "created" } else { "already created:" },
                    info.name,
                    format_size(info.virtual_size_bytes),
                    info.fs,
                    info.image.display()
                ));
            }
        }
        Command::List { name, snapshots, json: j } => {
            let Listing { objects: list, orphans } = open()?.listing(name.as_deref(), snapshots)?;
            if j.json {
                // The array stays what scripts parse; orphans are in
                // `pool status --json`.
                json(&list);
                if let Some(w) = orphan_warning(&orphans) {
                    eprintln!("subvol: warning: {w}");
                }
            } else {
                let mut out = render_list(&list, snapshots);
                out.push_str(&render_orphans(&orphans));
                emit(&out);
            }
        }
        Command::Info { name, json: j } => {
            let pool = open()?;
            let mut info = vec![pool.info(&name)?];
            pool.fill_space(&mut info)?;
            let mut info = info.remove(0);
            pool.fill_integrity(&mut info);
            if j.json {
                json(&info);
            } else {
                emit(&render_info(&info));
            }
        }
        Command::Resize { name, size, json: j } => {
            let info = open()?.resize(&name, parse_size(&size)?)?;
            if j.json {
                json(&info);
            } else {
                emit(&format!("{} is now {}\n", info.name, format_size(info.virtual_size_bytes)));
            }
        }
        Command::Rename { old, new } => {
            let (info, outcome) = open()?.rename(&old, &new)?;
            let done = if outcome.changed() { "renamed" } else { "already renamed" };
            emit(&format!("{done} {old} to {}\n", info.name));
        }
        Command::Delete { name, force, recursive, keep_snapshots } => {
            let outcome = open()?.delete(&name, force, recursive, keep_snapshots)?;
            emit(&if outcome.changed() {
                format!("deleted {name}\n")
            } else {
                format!("{name} is not there; nothing deleted\n")
            });
        }
        Command::Snapshot { names, tags, json: j } => {
            let pool = open()?;
            if !pool.meta().reflink {
                eprintln!("subvol: warning: this pool has no reflinks: the snapshot is a full copy, and mounted subvolumes stay frozen while it is made");
            }
            let bar = progress::Bar::new("copying");
            let reports = pool.snapshot(&names, &tags, &|d, t| bar.update(d, t))?;
            bar.finish();
            if j.json {
                json(&reports);
            } else {
                for r in reports {
                    if !r.outcome.changed() {
                        emit(&format!("snapshot {} already taken\n", r.name));
                        continue;
                    }
                    let frozen = if r.frozen {
                        format!("frozen {:.1} ms", r.frozen_us as f64 / 1000.0)
                    } else {
                        "not mounted".into()
                    };
                    emit(&format!(
                        "snapshot {} ({}, {}, {:.1} ms)\n",
                        r.name,
                        r.method,
                        frozen,
                        r.total_us as f64 / 1000.0
                    ));
                }
            }
        }
        Command::Clone { snapshot, new_name, json: j } => {
            let bar = progress::Bar::new("copying");
            let (info, outcome) = open()?.clone_snapshot(&snapshot, &new_name, &|d, t| bar.update(d, t))?;
            bar.finish();
            if j.json {
                json_with_outcome(&info, outcome);
            } else {
                let done = if outcome.changed() { "cloned" } else { "already cloned" };
                emit(&format!("{done} {snapshot} to {}\n", info.name));
            }
        }
        Command::Rollback { snapshot, force, json: j } => {
            let bar = progress::Bar::new("copying");
            let r = open()?.rollback(&snapshot, force, &|d, t| bar.update(d, t))?;
            bar.finish();
            if j.json {
                json(&r);
            } else {
                let mut msg = format!("rolled {} back to {}", r.name, r.to);
                if let Some(p) = &r.pre_rollback {
                    msg.push_str(&format!(" (undo with `subvol rollback {p}`)"));
                }
                if let Some(m) = &r.remounted_at {
                    msg.push_str(&format!("; mounted again at {}", m.display()));
                }
                msg.push('\n');
                emit(&msg);
            }
        }
        Command::Hold { snapshot, tag } => {
            let done = if open()?.hold(&snapshot, &tag)?.changed() { "held" } else { "already held" };
            emit(&format!("{done} {snapshot} ({tag})\n"));
        }
        Command::Release { snapshot, tag } => {
            let outcome = open()?.release(&snapshot, &tag)?;
            emit(&if outcome.changed() {
                format!("released {snapshot} ({tag})\n")
            } else {
                format!("{snapshot} has no hold {tag}; nothing released\n")
            });
        }
        Command::Prune {
            name,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            tag,
            dry_run,
            json: j,
        } => {
            let policy = KeepPolicy {
                last: keep_last.unwrap_or(0),
                hourly: keep_hourly.unwrap_or(0),
                daily: keep_daily.unwrap_or(0),
                weekly: keep_weekly.unwrap_or(0),
                monthly: keep_monthly.unwrap_or(0),
                yearly: keep_yearly.unwrap_or(0),
            };
            let any = [keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly]
                .iter()
                .any(Option::is_some);
            let r = open()?.prune(&name, any.then_some(policy), tag.as_deref(), dry_run)?;
            if j.json {
                json(&r);
            } else {
                emit(&render_prune(&r));
            }
        }
        Command::Autosnap { names, log_format, json: j } => {
            let bar = progress::Bar::new("copying");
            let r = open()?.autosnap(&names, &|d, t| bar.update(d, t))?;
            bar.finish();
            if j.json {
                let v: Vec<_> =
                    r.iter().map(|(s, p)| serde_json::json!({"name": s.name, "snapshot": s, "prune": p})).collect();
                json(&v);
            } else if r.is_empty() {
                emit("no subvolume has a snapshot.policy; nothing to do\n");
            } else {
                let mut sink = crate::logline::LogSink::new(log_format, crate::logline::Stream::Stdout);
                for (s, p) in &r {
                    let owner = s.name.split_once('@').map_or(s.name.as_str(), |(n, _)| n);
                    let msg = format!("snapshot {}; pruned {} ({})", s.name, p.deleted.len(), p.policy);
                    sink.emit(
                        &subvol_pool::Event::new("snapshot", msg)
                            .on(owner)
                            .text("snapshot", s.name.clone())
                            .float("frozen_ms", s.frozen_us as f64 / 1000.0)
                            .float("total_ms", s.total_us as f64 / 1000.0)
                            .int("pruned", p.deleted.len() as u64)
                            .text("policy", p.policy.to_string()),
                    );
                }
            }
        }
        Command::Send {
            snapshot,
            from,
            compress,
            encrypt_to,
            passphrase_file,
            output,
            force,
            resume,
            estimate,
            json: j,
        } => {
            let args = replication::SendArgs {
                snapshot,
                from,
                compress,
                encrypt_to,
                passphrase_file,
                output,
                force,
                resume,
                estimate,
                json: j.json,
            };
            replication::send(&open()?, args)?;
        }
        Command::Receive { name, resume, abort, token, force, identity, passphrase_file, input, json: j } => {
            let args = replication::ReceiveArgs {
                name,
                resume,
                abort,
                token,
                force,
                identity,
                passphrase_file,
                input,
                json: j.json,
            };
            replication::receive(&open()?, args)?;
        }
        Command::Sync { src, dst, list, forget, bwlimit, compress, ssh_opt, remote_bin, json: j } => {
            let args = sync::SyncArgs { src, dst, list, forget, bwlimit, compress, ssh_opt, remote_bin, json: j.json };
            sync::run(&cli.pool, timeout, &open, args)?;
        }
        Command::Guard { once, interval_ms, low_watermark, high_watermark, prune, log_format } => {
            let pool = open()?;
            let opts = GuardOptions {
                interval: Duration::from_millis(interval_ms.max(10)),
                low_watermark_bytes: low_watermark.as_deref().map(parse_size).transpose()?,
                high_watermark_bytes: high_watermark.as_deref().map(parse_size).transpose()?,
                once,
                prune,
                ..GuardOptions::default()
            };
            let stop = signal_flag();
            let mut sink = crate::logline::LogSink::new(log_format, crate::logline::Stream::Stderr);
            pool.guard(&opts, &|| stop.load(std::sync::atomic::Ordering::Relaxed), &mut |ev| sink.emit(&ev))?;
        }
        Command::Trim { names, all, json: j } => {
            if names.is_empty() && !all {
                return Err(Error::invalid("name the subvolumes to trim, or --all"));
            }
            let (done, freed) = open()?.trim(&names)?;
            if j.json {
                let v: Vec<_> = done.iter().map(|(n, b)| serde_json::json!({"name": n, "trimmed_bytes": b})).collect();
                json(&serde_json::json!({"subvolumes": v, "host_freed_bytes": freed}));
            } else {
                for (n, b) in &done {
                    emit(&format!("{n}: trimmed {}\n", format_size(*b)));
                }
                emit(&format!(
                    "host free space changed by {}{}\n",
                    if freed < 0 { "-" } else { "+" },
                    format_size(freed.unsigned_abs())
                ));
            }
        }
        Command::Set { name, assignment } => {
            let (k, v) = assignment
                .split_once('=')
                .ok_or_else(|| Error::invalid(format!("{assignment:?} is not PROPERTY=VALUE")))?;
            open()?.set_property(&name, k, v)?;
            emit(&format!("{name}: {k}={v}\n"));
        }
        Command::Get { name, property, json: j } => {
            let info = open()?.info(&name)?;
            let rows = properties_of(&info, property.as_deref())?;
            if j.json {
                json(&rows);
            } else {
                let mut t = Table::new(&["NAME", "PROPERTY", "VALUE", "SOURCE"]);
                for r in &rows {
                    t.row(vec![r.name.clone(), r.property.clone(), r.value.clone(), r.source.to_string()]);
                }
                emit(&t.render());
            }
        }
        Command::Mount { name, path, ro, options, json: j } => {
            let out = open()?.mount(&name, &MountOptions { path, read_only: ro, options })?;
            for w in &out.warnings {
                eprintln!("subvol: warning: {w}");
            }
            if j.json {
                json(&out);
            } else if out.already_mounted {
                emit(&format!("{} is already mounted at {}\n", out.name, out.mount_point.display()));
            } else {
                emit(&format!(
                    "mounted {} at {} ({})\n",
                    out.name,
                    out.mount_point.display(),
                    out.loop_device.display()
                ));
            }
        }
        Command::Unlock { name, key, json: j } => {
            let source =
                key_source(&key).ok_or_else(|| Error::invalid("give --key-file FILE or --passphrase-file FILE"))?;
            let r = open()?.unlock_encrypted(&name, &source)?;
            if j.json {
                json(&r);
            } else if r.outcome.changed() {
                let how = if r.mounted { "mounted and unlocked" } else { "unlocked" };
                emit(&format!("{how} {} at {}\n", r.name, r.mount_point.display()));
            } else {
                emit(&format!("{} is already unlocked at {}\n", r.name, r.mount_point.display()));
            }
        }
        Command::Lock { name, json: j } => {
            let r = open()?.lock_encrypted(&name)?;
            if j.json {
                json(&r);
            } else {
                emit(&match (&r.mount_point, r.outcome.changed()) {
                    (Some(mp), true) => {
                        format!("locked {} (mounted again at {}, nothing decrypted in memory)\n", r.name, mp.display())
                    }
                    (Some(mp), false) => format!("{} is already locked (mounted at {})\n", r.name, mp.display()),
                    (None, _) => format!("{} is not mounted, so no key is loaded; nothing to lock\n", r.name),
                });
            }
        }
        Command::Umount { name, force, json: j } => {
            let r = open()?.umount(&name, force)?;
            for w in &r.warnings {
                eprintln!("subvol: warning: {w}");
            }
            if j.json {
                json(&r);
            } else {
                for mp in &r.unmounted {
                    emit(&format!("unmounted {} from {}\n", r.name, mp.display()));
                }
                for o in &r.released {
                    emit(&format!("released the deleted image of {}: {}\n", r.name, o.summary()));
                }
            }
        }
        Command::Scrub {
            name,
            all: _,
            snapshots_only,
            bwlimit,
            io_class,
            restart,
            repair_from,
            ssh_opt,
            remote_bin,
            json: j,
        } => {
            let opts = subvol_pool::ScrubOptions {
                target: name,
                snapshots_only,
                rate: None,
                idle: io_class == "idle",
                restart,
                repair_from: crate::scrub::repair_from(repair_from.as_deref(), ssh_opt, remote_bin)?,
            };
            crate::scrub::run(&open()?, opts, bwlimit.as_deref(), j.json)?;
        }
        Command::ReadChunks { guid, chunks } => crate::scrub::read_chunks(&open()?, &guid, &chunks)?,
        Command::BuildManifests { names } => {
            // Detached, without a terminal: the outcome shows in `info`.
            open()?.build_after_snapshot(&names, true, &|_| {}, &|_, _| {})?;
        }
        Command::Metrics { output } => {
            let text = subvol_core::exposition::render(&open()?.metrics()?);
            match output {
                None => emit(&text),
                Some(path) => {
                    let mut f = subvol_pool::StreamFile::create_with_mode(&path, true, 0o644)?;
                    std::io::Write::write_all(&mut f, text.as_bytes())
                        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
                    f.commit()?;
                }
            }
        }
        Command::Csi { endpoint, node_id, max_volumes } => {
            let config = subvol_csi::Config {
                endpoint,
                node_id,
                pool: cli.pool.clone(),
                max_volumes,
                background: Some(crate::background::start),
            };
            subvol_csi::serve(config).map_err(|e| Error::new(ErrorKind::Io, e))?;
        }
        Command::Completions { shell } => emit(&crate::shell::script(shell)),
        Command::Man { dir: None } => emit(&String::from_utf8_lossy(&crate::manpages::main_page()?)),
        Command::Man { dir: Some(dir) } => {
            for p in crate::manpages::write_all(&dir)? {
                emit(&format!("{}\n", p.display()));
            }
        }
        Command::CompleteNames { snapshots } => {
            // A keystroke: never waits for the pool lock; an unreadable
            // pool completes nothing.
            if let Ok(names) = Pool::open(&cli.pool).and_then(|p| p.object_names(snapshots)) {
                emit(&names.iter().map(|n| format!("{n}\n")).collect::<String>());
            }
        }
    }
    Ok(0)
}

fn dash(p: &Option<std::path::PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into())
}

fn render_list(list: &[SubvolumeInfo], with_origin: bool) -> String {
    if list.is_empty() {
        return "no subvolumes; create one with `subvol create NAME --size SIZE`\n".into();
    }
    let mut header = vec!["NAME", "TYPE", "FS", "SIZE", "ALLOC", "EXCL", "WRITTEN", "STATE", "MOUNTPOINT", "CREATED"];
    if with_origin {
        header.push("ORIGIN");
    }
    let mut t = Table::new(&header);
    for s in list {
        let kind = if s.problem.is_some() { "BROKEN".to_string() } else { format!("{:?}", s.kind).to_lowercase() };
        let mut row = vec![
            s.name.clone(),
            kind,
            s.fs.to_string(),
            format_size(s.virtual_size_bytes),
            format_size(s.allocated_bytes),
            s.exclusive_bytes.map(format_size).unwrap_or_else(|| "-".into()),
            s.written_bytes.map(format_size).unwrap_or_else(|| "-".into()),
            state_cell(s.state),
            dash(&s.mount_point),
            s.created.clone(),
        ];
        if with_origin {
            row.push(s.origin.as_ref().map(|o| o.name.clone()).unwrap_or_else(|| "-".into()));
        }
        t.row(row);
    }
    t.render()
}

/// The orphans after the listing: a marked section with its own table, so
/// the listing above keeps its columns.
fn render_orphans(orphans: &[Orphan]) -> String {
    if orphans.is_empty() {
        return String::new();
    }
    let mut t = Table::new(&["NAME", "LOOP", "HELD", "MOUNTPOINT"]);
    for o in orphans {
        let mounts: Vec<String> = o.mount_points.iter().map(|m| m.display().to_string()).collect();
        t.row(vec![
            o.name.clone(),
            o.loop_device.display().to_string(),
            o.held_bytes.map(format_size).unwrap_or_else(|| "unknown".into()),
            if mounts.is_empty() { "-".into() } else { mounts.join(",") },
        ]);
    }
    format!(
        "\nDELETED WHILE ATTACHED (still holding {}; release with `subvol pool check --repair` or `subvol umount --force NAME`):\n{}",
        orphans_held(orphans),
        t.render()
    )
}

/// A failed filesystem stands out in a table, as BROKEN does.
fn state_cell(state: State) -> String {
    match state {
        State::Shutdown | State::Error => state.as_str().to_uppercase(),
        _ => state.as_str().to_string(),
    }
}

fn render_prune(r: &PruneReport) -> String {
    let mut t = Table::new(&["SNAPSHOT", "ACTION", "WHY"]);
    for v in &r.verdicts {
        let action = match (v.keep, r.dry_run) {
            (true, _) => "keep",
            (false, true) => "would delete",
            (false, false) => "deleted",
        };
        let why = if v.keep { v.reasons.join(", ") } else { format!("not kept by {}", r.policy) };
        t.row(vec![v.name.clone(), action.into(), why]);
    }
    if r.verdicts.is_empty() {
        return format!("{} has no snapshots to consider\n", r.name);
    }
    t.render()
}

#[derive(serde::Serialize)]
struct PropertyRow {
    name: String,
    property: String,
    value: String,
    source: &'static str,
}

fn properties_of(info: &SubvolumeInfo, only: Option<&str>) -> Result<Vec<PropertyRow>> {
    let mut rows: Vec<(String, String, &'static str)> = vec![
        ("type".into(), format!("{:?}", info.kind).to_lowercase(), "-"),
        ("fs".into(), info.fs.to_string(), "-"),
        ("size".into(), info.virtual_size_bytes.to_string(), "-"),
        ("allocated".into(), info.allocated_bytes.to_string(), "-"),
        ("created".into(), info.created.clone(), "-"),
        ("guid".into(), info.guid.clone(), "-"),
        ("origin".into(), info.origin.as_ref().map(|o| o.name.clone()).unwrap_or_else(|| "-".into()), "-"),
        ("mountpoint".into(), dash(&info.mount_point), "-"),
        ("image".into(), info.image.display().to_string(), "-"),
    ];
    if !info.holds.is_empty() {
        rows.push(("holds".into(), info.holds.join(","), "-"));
    }
    if !info.tags.is_empty() {
        rows.push(("tags".into(), info.tags.join(","), "-"));
    }
    let policy_set = info.properties.contains_key(POLICY_PROPERTY);
    for (k, v) in &info.properties {
        rows.push((k.clone(), v.clone(), "local"));
    }
    if !policy_set && !is_snapshot(info) {
        rows.push((POLICY_PROPERTY.into(), "-".into(), "default"));
    }
    let out: Vec<PropertyRow> = rows
        .into_iter()
        .filter(|(k, _, _)| only.is_none_or(|o| o == k))
        .map(|(property, value, source)| PropertyRow { name: info.name.clone(), property, value, source })
        .collect();
    if let (Some(o), true) = (only, out.is_empty()) {
        return Err(Error::new(ErrorKind::NotFound, format!("{} has no property {o:?}", info.name)));
    }
    Ok(out)
}

fn key_source(k: &KeyArgs) -> Option<KeySource> {
    match (&k.key_file, &k.passphrase_file) {
        (Some(f), _) => Some(KeySource::KeyFile(f.clone())),
        (None, Some(f)) => Some(KeySource::PassphraseFile(f.clone())),
        (None, None) => None,
    }
}

fn render_info(s: &SubvolumeInfo) -> String {
    let mut pairs = vec![
        ("name", s.name.clone()),
        ("type", format!("{:?}", s.kind).to_lowercase()),
        ("filesystem", s.fs.to_string()),
        ("size", format!("{} ({} bytes)", format_size(s.virtual_size_bytes), s.virtual_size_bytes)),
        ("allocated", format!("{} ({} bytes)", format_size(s.allocated_bytes), s.allocated_bytes)),
        (
            "exclusive",
            s.exclusive_bytes
                .map(|b| format!("{} (freed by deleting it)", format_size(b)))
                .unwrap_or_else(|| "-".into()),
        ),
        ("shared", s.shared_bytes.map(format_size).unwrap_or_else(|| "-".into())),
        (
            "written",
            s.written_bytes
                .map(|b| format!("{} since the newest snapshot", format_size(b)))
                .unwrap_or_else(|| "-".into()),
        ),
        ("guarantee", if s.guarantee { "on".into() } else { "off (thin)".into() }),
        ("created", s.created.clone()),
        ("guid", s.guid.clone()),
        ("image", s.image.display().to_string()),
        (
            "state",
            s.failure_advice()
                .map_or_else(|| s.state.as_str().to_string(), |a| format!("{}: {a}", state_cell(s.state))),
        ),
        ("mountpoint", dash(&s.mount_point)),
        ("loop device", dash(&s.loop_device)),
    ];
    if let Some(a) = s.attachments.first() {
        pairs.push(("direct io", if a.direct_io { "on".into() } else { "off".into() }));
        pairs.push((
            "dirty cap",
            match a.writeback_cap_bytes {
                Some(b) => format_size(b),
                None if a.read_only => "- (read-only)".into(),
                None if s.guarantee => "kernel default (guaranteed)".into(),
                None => "NONE: the guard cannot bound this subvolume's flush; run `subvol pool check --repair`".into(),
            },
        ));
    }
    if s.encrypted {
        let key = match s.unlocked {
            Some(true) => "unlocked",
            _ if s.mount_point.is_some() => "locked (`subvol unlock` loads the key)",
            _ => "locked (not mounted)",
        };
        pairs.push(("encryption", format!("fscrypt v2, aes-256-xts, {key}")));
    }
    if let Some(o) = &s.origin {
        pairs.push(("origin", o.name.clone()));
    }
    if !s.tags.is_empty() {
        pairs.push(("tags", s.tags.join(", ")));
    }
    if !s.holds.is_empty() {
        pairs.push(("holds", s.holds.join(", ")));
    }
    for (k, v) in &s.properties {
        pairs.push(("property", format!("{k}={v}")));
    }
    if let Some(p) = &s.problem {
        pairs.push(("problem", p.clone()));
    }
    if let Some(i) = &s.integrity {
        pairs.extend(crate::scrub::info_fields(i));
    }
    fields(&pairs)
}

fn render_status(st: &PoolStatus) -> String {
    let mut pairs = vec![
        ("pool", st.path.display().to_string()),
        ("uuid", st.uuid.clone()),
        ("format", st.format.to_string()),
        ("host filesystem", st.host_fs.clone()),
        (
            "reflinks",
            if st.reflink { "yes (instant snapshots)".into() } else { "no (snapshots are full copies)".into() },
        ),
    ];
    if let Some(b) = &st.backing_image {
        pairs.push(("backing image", b.display().to_string()));
    }
    pairs.extend([
        ("capacity", format_size(st.capacity_bytes)),
        ("free", format_size(st.free_bytes)),
        ("allocated", format_size(st.allocated_bytes)),
        ("virtual", format!("{} (overcommit {:.2}x)", format_size(st.virtual_bytes), st.overcommit_ratio)),
        ("subvolumes", format!("{} ({} mounted), {} snapshots", st.subvolumes, st.mounted, st.snapshots)),
        (
            "guaranteed",
            format!(
                "{} outstanding, margin {}, {} can still be guaranteed",
                format_size(st.outstanding_guarantees_bytes),
                format_size(st.margin_bytes),
                format_size(st.available_bytes)
            ),
        ),
        ("mount base", st.mount_base.display().to_string()),
        (
            "guard",
            match st.guard_pid {
                Some(pid) => format!("watching (pid {pid})"),
                None => "not running".into(),
            },
        ),
        ("thin dirty cap", format!("{} per mounted thin subvolume", format_size(st.thin_writeback_cap_bytes))),
    ]);
    if !st.orphans.is_empty() {
        let names: Vec<&str> = st.orphans.iter().map(|o| o.name.as_str()).collect();
        pairs.push((
            "orphans",
            format!("{} ({}), holding {}", st.orphans.len(), names.join(", "), orphans_held(&st.orphans)),
        ));
    }
    pairs.extend(crate::scrub::status_fields(&st.scrub));
    for f in &st.frozen {
        pairs.push(("frozen", format!("{} at {} since {}: {}", f.name, f.mount_point.display(), f.at, f.reason)));
    }
    for p in &st.problems {
        pairs.push(("problem", p.clone()));
    }
    for w in &st.warnings {
        pairs.push(("WARNING", w.clone()));
    }
    fields(&pairs)
}

/// A flag set by SIGINT/SIGTERM, for the long-running guard.
fn signal_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// `subvol health`: one summary line, then one line per finding, and the
/// monitoring-plugin status; a pool that cannot be read is UNKNOWN (3).
fn health(open: &dyn Fn() -> Result<Pool>, warn: Option<String>, crit: Option<String>, as_json: bool) -> u8 {
    let report = (|| {
        let opts = subvol_pool::HealthOptions {
            warn_age: warn.as_deref().map(subvol_core::duration::parse_duration).transpose().map_err(Error::invalid)?,
            crit_age: crit.as_deref().map(subvol_core::duration::parse_duration).transpose().map_err(Error::invalid)?,
        };
        open()?.health(&opts)
    })();
    let r = match report {
        Ok(r) => r,
        Err(e) => {
            if as_json {
                json(
                    &serde_json::json!({"status": "UNKNOWN", "findings": [{"severity": "UNKNOWN", "message": e.message}]}),
                );
            } else {
                emit(&format!("SUBVOL UNKNOWN - {}\n", escape(&e.message)));
            }
            return subvol_pool::HealthStatus::Unknown.exit_code();
        }
    };
    if as_json {
        json(&r);
    } else {
        let summary = match r.findings.len() {
            0 => "no findings".to_string(),
            n => format!("{n} finding(s)"),
        };
        let mut out = format!("SUBVOL {} - {}: {summary}\n", r.status.as_str(), escape(&r.pool.display().to_string()));
        for f in &r.findings {
            out.push_str(&format!("{}: {}\n", f.severity.as_str(), escape(&f.message)));
        }
        emit(&out);
    }
    r.status.exit_code()
}
