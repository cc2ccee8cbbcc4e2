//! A side on another host, driven through its `subvol` command: every call
//! is one `subvol ... --json` run there, and its exit code is read back
//! through the same table this host's exit codes come from.

use super::side::{SnapshotEntry, SyncSide};
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::Outcome;
use serde::Deserialize;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use subvol_core::Endpoint;

/// Runs `subvol ARGS` on the other host.
pub trait CommandRunner: Sync {
    /// The command running `subvol` with `args` there; the caller sets
    /// its standard streams.
    fn command(&self, args: &[String]) -> Command;
    /// Whether `code` is the transport's own failure (ssh's 255: no
    /// connection, no authentication) rather than subvol's.
    fn transport_failed(&self, code: i32) -> bool;
}

/// `ssh [OPTIONS] -o BatchMode=yes -- HOST 'REMOTE_BIN ARGS...'`, with the
/// user's own ssh configuration (keys, ports, jump hosts).
#[derive(Debug, Clone)]
pub struct Ssh {
    pub host: String,
    pub options: Vec<String>,
    pub remote_bin: String,
}

impl CommandRunner for Ssh {
    fn command(&self, args: &[String]) -> Command {
        // The remote shell splits the command line again: quote each word.
        let remote: Vec<String> = std::iter::once(&self.remote_bin).chain(args).map(|a| shell_quote(a)).collect();
        let mut c = Command::new("ssh");
        // BatchMode: never stop to ask for a password on a terminal.
        c.args(&self.options).arg("-o").arg("BatchMode=yes").arg("--").arg(&self.host).arg(remote.join(" "));
        c
    }

    fn transport_failed(&self, code: i32) -> bool {
        code == 255
    }
}

/// `s` as one word for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Subvolume `name` in `pool` (the remote's default when `None`), reached
/// through `runner`.
pub struct RemoteSide<R: CommandRunner> {
    runner: R,
    label: String,
    pool: Option<PathBuf>,
    name: String,
}

impl RemoteSide<Ssh> {
    /// The side `endpoint` names, over ssh.
    pub fn ssh(endpoint: &Endpoint, options: &[String], remote_bin: &str) -> Self {
        let runner = Ssh {
            host: endpoint.host.clone().unwrap_or_default(),
            options: options.to_vec(),
            remote_bin: remote_bin.to_string(),
        };
        RemoteSide::new(runner, endpoint)
    }
}

/// An object of `subvol list --json` / `info --json`, as far as sync reads it.
#[derive(Deserialize)]
struct Listed {
    name: String,
    #[serde(default)]
    guid: String,
    #[serde(default)]
    created: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    holds: Vec<String>,
}

impl Listed {
    /// `None` for a subvolume, and for a snapshot whose metadata the other
    /// side cannot read (it lists no guid).
    fn entry(self) -> Option<SnapshotEntry> {
        if self.kind != "snapshot" {
            return None;
        }
        Some(SnapshotEntry {
            guid: self.guid.parse().ok()?,
            created: chrono::DateTime::parse_from_rfc3339(&self.created).ok()?.to_utc(),
            name: self.name,
            holds: self.holds,
        })
    }
}

/// An element of `subvol snapshot --json`.
#[derive(Deserialize)]
struct Taken {
    /// Absent from subvol builds before retries were told apart.
    outcome: Option<Outcome>,
}

/// Reads a child's output to the end on a thread of its own, so a child
/// writing much to one stream never blocks on it while we serve another.
fn drain(stream: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut s) = stream {
            let mut bytes = Vec::new();
            let _ = s.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

impl<R: CommandRunner> RemoteSide<R> {
    pub fn new(runner: R, endpoint: &Endpoint) -> Self {
        RemoteSide { runner, label: endpoint.to_string(), pool: endpoint.pool.clone(), name: endpoint.name.clone() }
    }

    /// The same side, called `label` in messages.
    pub(crate) fn labelled(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut all: Vec<String> = Vec::new();
        if let Some(p) = &self.pool {
            all.push("--pool".into());
            all.push(p.display().to_string());
        }
        all.extend(args.iter().map(|a| a.to_string()));
        self.runner.command(&all)
    }

    fn spawn(&self, args: &[&str], stdin: Stdio) -> Result<Child> {
        self.command(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("cannot run subvol for {}", self.label), e))
    }

    /// Runs to completion: exit code, stdout, stderr.
    fn run(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("cannot run subvol for {}", self.label), e))?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs to completion; its stdout, or its error.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.run(args)?;
        if code != 0 {
            return Err(self.failure(code, &err));
        }
        Ok(out)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, text: &str, what: &str) -> Result<T> {
        serde_json::from_str(text)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{}: unexpected {what} output: {e}", self.label)))
    }

    /// The error a run on this side ended with: its kind from the exit code,
    /// its words from subvol's one error line.
    fn failure(&self, code: i32, stderr: &str) -> Error {
        let line = stderr.trim().lines().last().unwrap_or("failed");
        let msg = line.strip_prefix("subvol: error: ").unwrap_or(line);
        let (kind, msg) = if self.runner.transport_failed(code) {
            (ErrorKind::Io, format!("ssh failed: {msg}"))
        } else if code == 127 {
            (ErrorKind::MissingTool, format!("{msg}; install subvol there, or give its path with --remote-bin"))
        } else {
            (ErrorKind::from_exit_code(code).unwrap_or(ErrorKind::Io), msg.to_string())
        };
        Error::new(kind, format!("{}: {msg}", self.label))
    }

    /// Waits for a child whose stderr `err` drains; its error if it failed.
    fn finish(&self, mut child: Child, err: JoinHandle<String>) -> Result<()> {
        let status = child.wait().map_err(|e| Error::io(format!("cannot wait for subvol on {}", self.label), e))?;
        let stderr = err.join().unwrap_or_default();
        match status.code() {
            Some(0) => Ok(()),
            code => Err(self.failure(code.unwrap_or(-1), &stderr)),
        }
    }

    fn info(&self, object: &str) -> Result<SnapshotEntry> {
        let listed: Listed = self.json(&self.ok(&["info", object, "--json"])?, "info")?;
        listed.entry().ok_or_else(|| {
            Error::new(ErrorKind::Corrupt, format!("{}: {object} lists no readable guid or time", self.label))
        })
    }
}

impl<R: CommandRunner> RemoteSide<R> {
    /// Runs `subvol read-chunks GUID --chunks LIST` there (chunk reads for
    /// `scrub --repair-from`) and gives its reply to `read`, which may stop
    /// early (the reader is then stopped). When the other side failed, its
    /// error says why, not the cut-off reply.
    pub(crate) fn read_chunks(
        &self,
        guid: &str,
        list: &str,
        read: &mut dyn FnMut(&mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let mut child = self.spawn(&["read-chunks", guid, "--chunks", list], Stdio::null())?;
        let err = drain(child.stderr.take());
        let mut stream = child.stdout.take().ok_or_else(|| Error::new(ErrorKind::Io, "no reader output"))?;
        let r = read(&mut stream);
        drop(stream);
        if r.is_err() {
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| Error::io(format!("cannot wait for subvol on {}", self.label), e))?;
        let stderr = err.join().unwrap_or_default();
        match (r, status.code()) {
            (Ok(()), Some(0)) => Ok(()),
            // Stopped by us (a signal): our reason.
            (Err(e), None) => Err(e),
            (_, code) => Err(self.failure(code.unwrap_or(-1), &stderr)),
        }
    }
}

impl<R: CommandRunner> SyncSide for RemoteSide<R> {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        let (code, out, err) = self.run(&["list", "--snapshots", &self.name, "--json"])?;
        if ErrorKind::from_exit_code(code) == Some(ErrorKind::NotFound) {
            return Ok(Vec::new());
        }
        if code != 0 {
            return Err(self.failure(code, &err));
        }
        let all: Vec<Listed> = self.json(&out, "list")?;
        Ok(all.into_iter().filter_map(Listed::entry).collect())
    }

    fn take_snapshot(&self, snapshot: &str, tag: &str) -> Result<(SnapshotEntry, Outcome)> {
        let taken: Vec<Taken> = self.json(&self.ok(&["snapshot", snapshot, "--tag", tag, "--json"])?, "snapshot")?;
        let outcome = taken.first().and_then(|t| t.outcome).unwrap_or(Outcome::Done);
        Ok((self.info(snapshot)?, outcome))
    }

    fn hold(&self, snapshot: &str, tag: &str) -> Result<()> {
        self.ok(&["hold", snapshot, tag]).map(drop)
    }

    fn release(&self, snapshot: &str, tag: &str) -> Result<()> {
        self.ok(&["release", snapshot, tag]).map(drop)
    }

    fn delete_snapshot(&self, snapshot: &str) -> Result<()> {
        self.ok(&["delete", snapshot]).map(drop)
    }

    fn estimate(&self, snapshot: &str, base: Option<&str>) -> Result<u64> {
        let mut args = vec!["send", "--estimate", snapshot, "--json"];
        if let Some(b) = base {
            args.extend(["--from", b]);
        }
        let v: serde_json::Value = self.json(&self.ok(&args)?, "send --estimate")?;
        Ok(v["data_bytes"].as_u64().unwrap_or(0))
    }

    fn send(&self, snapshot: &str, base: Option<&str>, zstd_level: Option<i32>, out: &mut dyn Write) -> Result<()> {
        let level = zstd_level.map(|l| format!("--compress={l}"));
        let mut args = vec!["send", snapshot];
        if let Some(b) = base {
            args.extend(["--from", b]);
        }
        args.extend(level.as_deref());
        let mut child = self.spawn(&args, Stdio::null())?;
        let err = drain(child.stderr.take());
        let mut stream = child.stdout.take().ok_or_else(|| Error::new(ErrorKind::Io, "no sender output"))?;
        let mut buf = vec![0u8; 256 * 1024];
        let copied = loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(Error::io(format!("cannot read the stream from {}", self.label), e)),
            };
            if let Err(e) = out.write_all(&buf[..n]) {
                break Err(Error::io("cannot pass the stream on", e));
            }
        };
        if copied.is_err() {
            // Nothing takes the rest of the stream: stop the sender.
            let _ = child.kill();
        }
        drop(stream);
        let finished = self.finish(child, err);
        copied.and(finished)
    }

    fn receive(&self, input: &mut dyn Read) -> Result<()> {
        let mut child = self.spawn(&["receive", &self.name, "--json"], Stdio::piped())?;
        let err = drain(child.stderr.take());
        let out = drain(child.stdout.take());
        let mut stdin = child.stdin.take().ok_or_else(|| Error::new(ErrorKind::Io, "no receiver input"))?;
        let mut buf = vec![0u8; 256 * 1024];
        let fed = loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(Error::io("cannot read the stream", e)),
            };
            // A receiver that stopped reading has exited: its exit code
            // says why, below.
            if stdin.write_all(&buf[..n]).is_err() {
                break Ok(());
            }
        };
        drop(stdin);
        if fed.is_err() {
            let _ = child.kill();
        }
        let finished = self.finish(child, err);
        let _ = out.join();
        // A stream we could not read is why the receiver was stopped.
        fed.and(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs each call as a shell script chosen by the call's subcommand,
    /// so exit codes and output of the other side can be staged.
    struct Scripted(Vec<(&'static str, &'static str)>);

    impl CommandRunner for Scripted {
        fn command(&self, args: &[String]) -> Command {
            let verb = args.iter().find(|a| !a.starts_with('-') && !a.starts_with('/')).cloned().unwrap_or_default();
            let script = self.0.iter().find(|(v, _)| *v == verb).map_or("exit 99", |(_, s)| *s);
            let mut c = Command::new("sh");
            c.arg("-c").arg(script).arg("sh").args(args);
            c
        }

        fn transport_failed(&self, code: i32) -> bool {
            code == 255
        }
    }

    fn side(script: Vec<(&'static str, &'static str)>) -> RemoteSide<Scripted> {
        RemoteSide::new(Scripted(script), &Endpoint::parse("backup:/srv/pool:db").unwrap())
    }

    #[test]
    fn exit_codes_come_back_as_the_kinds_they_stand_for() {
        let cases: [(&str, ErrorKind, &str); 6] = [
            (
                "echo 'subvol: error: db@x is held (sync)' >&2; exit 5",
                ErrorKind::Busy,
                "backup:/srv/pool:db: db@x is held (sync)",
            ),
            ("echo 'subvol: error: bad name' >&2; exit 2", ErrorKind::InvalidArgument, "bad name"),
            ("echo 'subvol: error: damaged' >&2; exit 8", ErrorKind::Corrupt, "damaged"),
            ("echo 'Connection refused' >&2; exit 255", ErrorKind::Io, "ssh failed: Connection refused"),
            ("echo 'sh: 1: subvol: not found' >&2; exit 127", ErrorKind::MissingTool, "--remote-bin"),
            ("exit 42", ErrorKind::Io, "backup:/srv/pool:db: failed"),
        ];
        for (script, kind, words) in cases {
            let e = side(vec![("hold", script)]).hold("db@x", "sync").unwrap_err();
            assert_eq!(e.kind, kind, "{script}");
            assert!(e.message.contains(words), "{script}: {}", e.message);
            assert_eq!(e.message.lines().count(), 1, "{}", e.message);
        }
    }

    #[test]
    fn the_pool_and_quoted_arguments_reach_the_other_side() {
        let s = side(vec![("hold", r#"[ "$1 $2 $3 $4 $5" = "--pool /srv/pool hold db@x it's" ] || exit 3"#)]);
        s.hold("db@x", "it's").unwrap();
        let ssh = Ssh { host: "h".into(), options: vec!["-p".into(), "2222".into()], remote_bin: "/opt/subvol".into() };
        let c = ssh.command(&["hold".into(), "db@x".into(), "it's".into()]);
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["-p", "2222", "-o", "BatchMode=yes", "--", "h", r"/opt/subvol hold db@x 'it'\''s'"]);
        assert_eq!(shell_quote("a b"), "'a b'");
    }

    #[test]
    fn listing_keeps_readable_snapshots_and_a_missing_subvolume_has_none() {
        let s = side(vec![(
            "list",
            r#"echo '[{"name":"db","type":"subvolume","guid":"00000000-0000-0000-0000-000000000001","created":"2026-01-01T00:00:00Z"},
{"name":"db@a","type":"snapshot","guid":"00000000-0000-0000-0000-000000000002","created":"2026-01-02T00:00:00Z","holds":["sync"]},
{"name":"db@broken","type":"snapshot","guid":"","created":"","problem":"bad"}]'"#,
        )]);
        let snaps = s.snapshots().unwrap();
        assert_eq!(snaps.len(), 1);
        assert_eq!(
            (snaps[0].name.as_str(), snaps[0].holds.as_slice(), snaps[0].snap_part()),
            ("db@a", &["sync".to_string()][..], "a")
        );
        let missing = side(vec![("list", "echo 'subvol: error: no subvolume \"db\"' >&2; exit 3")]);
        assert_eq!(missing.snapshots().unwrap(), Vec::new());
    }

    #[test]
    fn a_stream_passes_through_and_a_receiver_that_quits_is_heard() {
        let s = side(vec![("send", "printf 'STREAM'"), ("receive", "cat > /dev/null")]);
        let mut out = Vec::new();
        s.send("db@x", None, Some(3), &mut out).unwrap();
        assert_eq!(out, b"STREAM");
        s.receive(&mut &b"STREAM"[..]).unwrap();
        let quits = side(vec![("receive", "echo 'subvol: error: no space left' >&2; exit 6")]);
        let big = vec![7u8; 8 << 20];
        let e = quits.receive(&mut &big[..]).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::NoSpace, "backup:/srv/pool:db: no space left"));
    }
}
