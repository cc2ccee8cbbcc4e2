//! `subvol sync SRC DST`: replication between pools, local or over ssh.
//! Each side is driven through the `subvol` command itself (locally, or on
//! the remote host through ssh), so both ends speak the same CLI contract.

use crate::output::{emit, json};
use crate::progress::Bar;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use subvol_core::{format_size, parse_size, ObjectName};
use subvol_pool::{Error, ErrorKind, Result};

/// Where one side of a sync lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `[user@]host` for a remote side.
    pub host: Option<String>,
    /// The pool (default: the local `--pool`, or the remote default).
    pub pool: Option<PathBuf>,
    pub name: String,
}

impl Endpoint {
    /// Parses `NAME`, `/POOLDIR:NAME` or `[user@]host:[/POOLDIR:]NAME`.
    pub fn parse(s: &str) -> Result<Endpoint> {
        let bad = || Error::invalid(format!("{s:?} is not NAME, /POOLDIR:NAME or [user@]host:[/POOLDIR:]NAME"));
        let (host, rest) = match s.split_once(':') {
            Some((h, r)) if !h.starts_with('/') => (Some(h.to_string()), r),
            _ => (None, s),
        };
        if let Some(h) = &host {
            if h.is_empty() || h.starts_with('-') || h.contains(char::is_whitespace) {
                return Err(bad());
            }
        }
        let (pool, name) = match rest.rsplit_once(':') {
            Some((p, n)) if p.starts_with('/') => (Some(PathBuf::from(p)), n),
            Some(_) => return Err(bad()),
            None => (None, rest),
        };
        let name = ObjectName::parse_subvolume(name)?.subvolume;
        Ok(Endpoint { host, pool, name })
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(h) = &self.host {
            s.push_str(h);
            s.push(':');
        }
        if let Some(p) = &self.pool {
            s.push_str(&p.display().to_string());
            s.push(':');
        }
        s.push_str(&self.name);
        s
    }
}

/// How to run `subvol` on each side.
pub struct Runner {
    pub local_pool: PathBuf,
    pub ssh_opts: Vec<String>,
    pub remote_bin: String,
}

impl Runner {
    fn command(&self, ep: &Endpoint, args: &[String]) -> Command {
        match &ep.host {
            None => {
                let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("subvol"));
                let mut c = Command::new(exe);
                c.arg("--pool").arg(ep.pool.as_ref().unwrap_or(&self.local_pool)).args(args);
                c
            }
            Some(host) => {
                let mut remote = vec![shell_quote(&self.remote_bin)];
                if let Some(p) = &ep.pool {
                    remote.push("--pool".into());
                    remote.push(shell_quote(&p.display().to_string()));
                }
                remote.extend(args.iter().map(|a| shell_quote(a)));
                let mut c = Command::new("ssh");
                c.args(&self.ssh_opts).arg("-o").arg("BatchMode=yes").arg("--").arg(host).arg(remote.join(" "));
                c
            }
        }
    }

    /// Runs a command to completion; returns stdout, or the side's error.
    fn run(&self, ep: &Endpoint, args: &[&str]) -> Result<(i32, String, String)> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = self
            .command(ep, &args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("cannot run subvol for {}", ep.describe()), e))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }

    fn ok(&self, ep: &Endpoint, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.run(ep, args)?;
        if code != 0 {
            return Err(side_error(ep, code, &err));
        }
        Ok(out)
    }
}

fn side_error(ep: &Endpoint, code: i32, stderr: &str) -> Error {
    let kind = match code {
        3 => ErrorKind::NotFound,
        4 => ErrorKind::AlreadyExists,
        5 => ErrorKind::Busy,
        6 => ErrorKind::NoSpace,
        9 => ErrorKind::PermissionDenied,
        11 => ErrorKind::NotInitialised,
        _ => ErrorKind::Io,
    };
    let msg = stderr.lines().last().unwrap_or("failed").trim_start_matches("subvol: error: ");
    let msg = if code == 255 && ep.host.is_some() { format!("ssh failed: {msg}") } else { msg.to_string() };
    Error::new(kind, format!("{}: {msg}", ep.describe()))
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Snap {
    name: String,
    guid: String,
    created: String,
    #[serde(rename = "type")]
    kind: String,
}

fn snapshots(r: &Runner, ep: &Endpoint) -> Result<Vec<Snap>> {
    let (code, out, err) = r.run(ep, &["list", "--snapshots", &ep.name, "--json"])?;
    if code == 3 {
        return Ok(Vec::new());
    }
    if code != 0 {
        return Err(side_error(ep, code, &err));
    }
    let all: Vec<Snap> = serde_json::from_str(&out)
        .map_err(|e| Error::new(ErrorKind::Io, format!("{}: bad list output: {e}", ep.describe())))?;
    let mut v: Vec<Snap> = all.into_iter().filter(|s| s.kind == "snapshot").collect();
    v.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(v)
}

/// The one snapshot of a side with `guid`. Two (made before receives
/// refused a guid their pool has) may differ, and an increment sent from
/// or applied to the wrong one would go unnoticed: refused.
fn only_one<'a>(ep: &Endpoint, snaps: &'a [Snap], guid: &str) -> Result<&'a Snap> {
    let found: Vec<&Snap> = snaps.iter().filter(|s| s.guid == guid).collect();
    match found[..] {
        [one] => Ok(one),
        _ => {
            let names: Vec<&str> = found.iter().map(|s| s.name.as_str()).collect();
            Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{}: {} share the guid {guid}; keep one (see `subvol pool check`)",
                    ep.describe(),
                    names.join(", ")
                ),
            ))
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SyncReport {
    pub name: String,
    pub snapshot: String,
    pub base: Option<String>,
    pub stream_bytes: u64,
    pub seconds: f64,
}

/// Hold tag marking the common base of a sync pair.
const SYNC_HOLD: &str = "sync";

pub fn sync(r: &Runner, src: &str, dst: &str, bwlimit: Option<&str>, compress: bool, as_json: bool) -> Result<()> {
    let src = Endpoint::parse(src)?;
    let dst = Endpoint::parse(dst)?;
    let rate = bwlimit.map(parse_size).transpose()?;
    let start = Instant::now();
    let src_snaps = snapshots(r, &src)?;
    let dst_snaps = snapshots(r, &dst)?;
    let base = src_snaps.iter().rev().find(|s| dst_snaps.iter().any(|d| d.guid == s.guid)).cloned();
    let dst_base = match &base {
        Some(b) => Some(only_one(&src, &src_snaps, &b.guid).and(only_one(&dst, &dst_snaps, &b.guid))?.clone()),
        None => None,
    };
    if base.is_none() && !dst_snaps.is_empty() {
        return Err(Error::new(
            ErrorKind::Busy,
            format!(
                "{} has snapshots but none in common with {}; receive into a new name",
                dst.describe(),
                src.describe()
            ),
        ));
    }
    // A new snapshot on the source is what gets sent.
    let stamp = format!("{}@sync-{}", src.name, chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ"));
    let mut snap_name = stamp.clone();
    let mut attempt = 0;
    let out = loop {
        let (code, out, err) = r.run(&src, &["snapshot", &snap_name, "--tag", SYNC_HOLD, "--json"])?;
        match code {
            0 => break out,
            // Two syncs within one second: take the next free name.
            4 if attempt < 50 => {
                attempt += 1;
                snap_name = format!("{stamp}.{attempt}");
            }
            _ => return Err(side_error(&src, code, &err)),
        }
    };
    let made: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::new(ErrorKind::Io, format!("bad snapshot output: {e}")))?;
    let new_snap = made[0]["name"].as_str().unwrap_or(&snap_name).to_string();
    let mut send_args: Vec<String> = vec!["send".into(), new_snap.clone()];
    if let Some(b) = &base {
        send_args.push("--from".into());
        send_args.push(b.name.clone());
    }
    if compress {
        send_args.push("--compress".into());
    }
    let total = {
        let mut est: Vec<&str> = vec!["send", "--estimate", &new_snap, "--json"];
        if let Some(b) = &base {
            est.push("--from");
            est.push(&b.name);
        }
        r.ok(&src, &est)
            .ok()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(&o).ok())
            .and_then(|v| v["data_bytes"].as_u64())
            .unwrap_or(0)
    };
    let mut sender = r
        .command(&src, &send_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("cannot start the sender", e))?;
    let recv_args: Vec<String> = vec!["receive".into(), dst.name.clone(), "--json".into()];
    let mut receiver = r
        .command(&dst, &recv_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("cannot start the receiver", e))?;
    let pumped = pump(&mut sender, &mut receiver, rate, total);
    let (s_status, s_err) = finish(sender);
    let (r_status, r_err) = finish(receiver);
    if r_status != 0 {
        return Err(side_error(&dst, r_status, &r_err));
    }
    if s_status != 0 {
        return Err(side_error(&src, s_status, &s_err));
    }
    let bytes = pumped?;
    // The new snapshot is the common base now: hold it on both sides and
    // release the old one, so the base is never pruned away under us.
    let snap_part = new_snap.split('@').nth(1).unwrap_or("").to_string();
    let dst_snap = format!("{}@{snap_part}", dst.name);
    r.ok(&src, &["hold", &new_snap, SYNC_HOLD])?;
    r.ok(&dst, &["hold", &dst_snap, SYNC_HOLD])?;
    if let (Some(b), Some(d)) = (&base, &dst_base) {
        let _ = r.run(&src, &["release", &b.name, SYNC_HOLD]);
        let _ = r.run(&dst, &["release", &d.name, SYNC_HOLD]);
    }
    let report = SyncReport {
        name: dst.describe(),
        snapshot: dst_snap,
        base: base.map(|b| b.name),
        stream_bytes: bytes,
        seconds: start.elapsed().as_secs_f64(),
    };
    if as_json {
        json(&report);
    } else {
        let kind = if report.base.is_some() { "incremental" } else { "full" };
        emit(&format!(
            "synced {} to {} ({kind}, {} in {:.1}s)\n",
            new_snap,
            report.snapshot,
            format_size(report.stream_bytes),
            report.seconds
        ));
    }
    Ok(())
}

/// Copies the sender's stdout into the receiver's stdin, at most `rate`
/// bytes per second, showing progress against `total` data bytes.
fn pump(sender: &mut Child, receiver: &mut Child, rate: Option<u64>, total: u64) -> Result<u64> {
    let mut from = sender.stdout.take().ok_or_else(|| Error::new(ErrorKind::Io, "no sender output"))?;
    let mut to = receiver.stdin.take().ok_or_else(|| Error::new(ErrorKind::Io, "no receiver input"))?;
    let bar = Bar::new("syncing");
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| Error::io("cannot read from the sender", e))?;
        if n == 0 {
            break;
        }
        to.write_all(&buf[..n]).map_err(|e| Error::io("cannot write to the receiver", e))?;
        done += n as u64;
        bar.update(done, total.max(done));
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(done as f64 / r as f64);
            let spent = start.elapsed();
            if due > spent {
                std::thread::sleep(due - spent);
            }
        }
    }
    drop(to);
    bar.finish();
    Ok(done)
}

fn finish(mut child: Child) -> (i32, String) {
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let code = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
    (code, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("web").unwrap();
        assert_eq!((e.host, e.pool, e.name.as_str()), (None, None, "web"));
        let e = Endpoint::parse("/srv/pool:web").unwrap();
        assert_eq!((e.host, e.pool.as_deref()), (None, Some(std::path::Path::new("/srv/pool"))));
        let e = Endpoint::parse("root@backup:web").unwrap();
        assert_eq!((e.host.as_deref(), e.pool), (Some("root@backup"), None));
        let e = Endpoint::parse("backup:/var/lib/subvol:web").unwrap();
        assert_eq!(
            (e.host.as_deref(), e.pool.as_deref(), e.name.as_str()),
            (Some("backup"), Some(std::path::Path::new("/var/lib/subvol")), "web")
        );
        for bad in ["", "host:", "host:rel/pool:web", "-oProxyCommand=x:web", "a:b:c", "web@snap", "/p:../x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("web"), "web");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
