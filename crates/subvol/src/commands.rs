//! Dispatch: one function per command, each calling the pool layer and
//! choosing what to print.

use crate::cli::{Cli, Command, PoolCommand};
use crate::output::{emit, fields, json, Table};
use std::time::Duration;
use subvol_core::{format_size, parse_size, FsKind};
use subvol_pool::{CreateOptions, Error, InitOptions, MountOptions, Pool, PoolStatus, Result, SubvolumeInfo};

pub fn run(cli: Cli) -> Result<()> {
    let timeout = Duration::from_secs(cli.lock_timeout);
    let open = || -> Result<Pool> {
        let mut pool = Pool::open(&cli.pool)?;
        pool.set_lock_wait(
            timeout,
            Box::new(|| eprintln!("subvol: waiting for the pool lock (another subvol command is running)...")),
        );
        Ok(pool)
    };
    match cli.command {
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
        Command::Create { name, size, fs, mkfs_opt, json: j } => {
            let fs: FsKind = fs.parse().map_err(Error::invalid)?;
            let info =
                open()?.create(&name, &CreateOptions { size_bytes: parse_size(&size)?, fs, mkfs_opts: mkfs_opt })?;
            if j.json {
                json(&info);
            } else {
                emit(&format!(
                    "created {} ({} {}, image {})\n",
                    info.name,
                    format_size(info.virtual_size_bytes),
                    info.fs,
                    info.image.display()
                ));
            }
        }
        Command::List { json: j } => {
            let list = open()?.list()?;
            if j.json {
                json(&list);
            } else {
                emit(&render_list(&list));
            }
        }
        Command::Info { name, json: j } => {
            let info = open()?.info(&name)?;
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
            let info = open()?.rename(&old, &new)?;
            emit(&format!("renamed {old} to {}\n", info.name));
        }
        Command::Delete { name, force } => {
            open()?.delete(&name, force)?;
            emit(&format!("deleted {name}\n"));
        }
        Command::Mount { name, path, ro, options, json: j } => {
            let out = open()?.mount(&name, &MountOptions { path, read_only: ro, options })?;
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
        Command::Umount { name } => {
            let done = open()?.umount(&name)?;
            for mp in done {
                emit(&format!("unmounted {name} from {}\n", mp.display()));
            }
        }
    }
    Ok(())
}

fn dash(p: &Option<std::path::PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "-".into())
}

fn render_list(list: &[SubvolumeInfo]) -> String {
    if list.is_empty() {
        return "no subvolumes; create one with `subvol create NAME --size SIZE`\n".into();
    }
    let mut t = Table::new(&["NAME", "TYPE", "FS", "SIZE", "ALLOC", "MOUNTPOINT", "CREATED"]);
    for s in list {
        let kind = if s.problem.is_some() { "BROKEN".to_string() } else { format!("{:?}", s.kind).to_lowercase() };
        t.row(vec![
            s.name.clone(),
            kind,
            s.fs.to_string(),
            format_size(s.virtual_size_bytes),
            format_size(s.allocated_bytes),
            dash(&s.mount_point),
            s.created.clone(),
        ]);
    }
    t.render()
}

fn render_info(s: &SubvolumeInfo) -> String {
    let mut pairs = vec![
        ("name", s.name.clone()),
        ("type", format!("{:?}", s.kind).to_lowercase()),
        ("filesystem", s.fs.to_string()),
        ("size", format!("{} ({} bytes)", format_size(s.virtual_size_bytes), s.virtual_size_bytes)),
        ("allocated", format!("{} ({} bytes)", format_size(s.allocated_bytes), s.allocated_bytes)),
        ("created", s.created.clone()),
        ("guid", s.guid.clone()),
        ("image", s.image.display().to_string()),
        ("mountpoint", dash(&s.mount_point)),
        ("loop device", dash(&s.loop_device)),
    ];
    if let Some(a) = s.attachments.first() {
        pairs.push(("direct io", if a.direct_io { "on".into() } else { "off".into() }));
    }
    if let Some(o) = &s.origin {
        pairs.push(("origin", o.name.clone()));
    }
    for (k, v) in &s.properties {
        pairs.push(("property", format!("{k}={v}")));
    }
    if let Some(p) = &s.problem {
        pairs.push(("problem", p.clone()));
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
        ("subvolumes", format!("{} ({} mounted)", st.subvolumes, st.mounted)),
        ("mount base", st.mount_base.display().to_string()),
    ]);
    for p in &st.problems {
        pairs.push(("problem", p.clone()));
    }
    fields(&pairs)
}
