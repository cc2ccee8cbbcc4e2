//! Test hosts: a sparse file with a real XFS or btrfs, loop-mounted in a temp
//! dir, holding a pool. Everything is torn down on drop, test failure or not.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_subvol");

/// True when privileged tests may run. Otherwise prints why and returns
/// false, or panics under CI=true, where a skip would hide a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> =
        ["mkfs.xfs", "mkfs.btrfs", "mkfs.ext4", "losetup", "xfs_growfs"].into_iter().filter(|t| !have(t)).collect();
    let reason = if !root {
        "needs root".to_string()
    } else if !missing.is_empty() {
        format!("needs {}", missing.join(", "))
    } else if !Path::new("/dev/loop-control").exists() {
        "needs loop devices".to_string()
    } else {
        return true;
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} would be SKIPPED ({reason}), but CI=true forbids skipping privileged tests");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

#[macro_export]
macro_rules! require_privileges {
    ($name:expr) => {
        if !$crate::harness::privileged($name) {
            return;
        }
    };
}

pub fn have(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(tool).is_file())
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(out.status.success(), "{prog} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The result of one `subvol` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "expected success; stderr: {}", self.stderr);
        self.stdout
    }

    /// Asserts failure with `code` and a one-line error containing `needle`.
    #[track_caller]
    pub fn fails(self, code: i32, needle: &str) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}; stdout: {} stderr: {}",
            self.code, self.stdout, self.stderr
        );
        assert!(self.stderr.contains(needle), "stderr {:?} lacks {needle:?}", self.stderr);
        assert_eq!(
            self.stderr.trim_end().lines().filter(|l| l.starts_with("subvol: error:")).count(),
            1,
            "not one error line: {:?}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.stdout))
    }
}

/// Runs `subvol` with `args` against `pool`.
pub fn subvol(pool: &Path, args: &[&str]) -> Run {
    subvol_env(pool, args, &[])
}

pub fn subvol_env(pool: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("--pool").arg(pool).args(args).env_remove("SUBVOL_POOL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().expect("run subvol"))
}

/// A temp dir for tests, on the disk (not tmpfs).
pub fn tempdir() -> tempfile::TempDir {
    let base = Path::new("/var/tmp");
    tempfile::Builder::new()
        .prefix("subvol-test.")
        .tempdir_in(if base.is_dir() { base } else { Path::new("/tmp") })
        .expect("tempdir")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    Xfs,
    Btrfs,
    /// No reflinks: snapshots are copies.
    Ext4,
}

/// A loop-mounted host filesystem with a pool on it.
pub struct TestHost {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
    pub pool: PathBuf,
}

impl TestHost {
    pub fn new(kind: HostKind, size: &str) -> TestHost {
        let dir = tempdir();
        let img = dir.path().join("host.img");
        let mnt = dir.path().join("host");
        std::fs::create_dir(&mnt).unwrap();
        sh("truncate", &["-s", size, img.to_str().unwrap()]);
        match kind {
            HostKind::Xfs => sh("mkfs.xfs", &["-q", "-m", "reflink=1", img.to_str().unwrap()]),
            HostKind::Btrfs => sh("mkfs.btrfs", &["-q", img.to_str().unwrap()]),
            HostKind::Ext4 => sh("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]),
        };
        let loop_dev = sh("losetup", &["--direct-io=on", "--show", "-f", img.to_str().unwrap()]).trim().to_string();
        let mut host = TestHost { pool: mnt.join("pool"), mnt, dir };
        let fstype = match kind {
            HostKind::Xfs => "xfs",
            HostKind::Btrfs => "btrfs",
            HostKind::Ext4 => "ext4",
        };
        sh("mount", &["-t", fstype, &loop_dev, host.mnt.to_str().unwrap()]);
        let pool = host.mnt.join("pool");
        subvol(&pool, &["pool", "init", pool.to_str().unwrap()]).ok();
        host.pool = pool;
        host
    }

    pub fn xfs() -> TestHost {
        TestHost::new(HostKind::Xfs, "6G")
    }

    pub fn run(&self, args: &[&str]) -> Run {
        subvol(&self.pool, args)
    }

    pub fn info(&self, name: &str) -> serde_json::Value {
        self.run(&["info", name, "--json"]).json()
    }
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// Loop devices whose backing file is at or below `dir`, including files
/// deleted while attached (sysfs appends " (deleted)"; see `it::orphans`).
pub fn loops_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim().trim_end_matches(" (deleted)")).starts_with(dir) {
                out.push(format!("/dev/{name}"));
            }
        }
    }
    out
}

/// Pids of `subvol` processes started detached by a snapshot (the
/// manifest builders: `subvol --pool POOL build-manifests ...`) on a pool at
/// or below `dir`.
pub fn background_builders(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let under =
            args.windows(2).any(|w| w[0] == b"--pool" && Path::new(std::ffi::OsStr::from_bytes(w[1])).starts_with(dir));
        if under && args.contains(&&b"build-manifests"[..]) {
            out.push(pid);
        }
    }
    out
}

/// The manifest-builder locks (`.subvol/scrub/build.lock`) of the pools at
/// or below `dir` (a few levels down; images and mounts are not entered).
fn build_locks(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let lock = dir.join(".subvol/scrub/build.lock");
    if lock.exists() {
        out.push(lock);
    }
    if depth == 0 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let skip = [".subvol", "mnt", "subvolumes", "snapshots"].iter().any(|n| name == OsStr::new(n));
        if !skip && e.file_type().is_ok_and(|t| t.is_dir()) {
            build_locks(&e.path(), depth - 1, out);
        }
    }
}

/// Whether a manifest builder holds the lock at `path` now.
fn held(path: &Path) -> bool {
    std::fs::File::open(path).is_ok_and(|f| f.try_lock_shared().is_err())
}

/// Waits (at most two minutes) for the manifest builders of pools below
/// `dir` to finish: they hold files of the pool open, and write manifests.
/// Quiet means no builder process and no builder lock held, seen twice.
pub fn wait_for_builders(dir: &Path) {
    let start = std::time::Instant::now();
    let mut quiet = 0;
    while quiet < 2 && start.elapsed().as_secs() < 120 {
        let mut locks = Vec::new();
        build_locks(dir, 3, &mut locks);
        if background_builders(dir).is_empty() && !locks.iter().any(|l| held(l)) {
            quiet += 1;
        } else {
            quiet = 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Unmounts and detaches everything below `dir`.
pub fn teardown(dir: &Path) {
    wait_for_builders(dir);
    for m in mounts_under(dir) {
        let _ = Command::new("fsfreeze").arg("--unfreeze").arg(&m).output();
        if !Command::new("umount").arg(&m).output().map(|o| o.status.success()).unwrap_or(false) {
            let _ = Command::new("umount").arg("-l").arg(&m).output();
        }
    }
    for _ in 0..50 {
        let loops = loops_under(dir);
        if loops.is_empty() {
            break;
        }
        for l in loops {
            let _ = Command::new("losetup").arg("-d").arg(&l).output();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Tears down everything under a dir on drop (for tests without a TestHost).
pub struct Teardown(pub PathBuf);

impl Drop for Teardown {
    fn drop(&mut self) {
        teardown(&self.0);
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Thaw, unmount and detach first (a frozen filesystem would block
        // anything that touches it), including the host's own loop device
        // (its file is in `dir`); never detach by a remembered name: the
        // number may be reused.
        teardown(self.dir.path());
        // Snapshots are immutable; clear the flag so the dir can go.
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(self.dir.path()).output();
    }
}

/// A listing of every file under `dir` with its size, to show a failed
/// command left a pool untouched (once the manifest builders of earlier
/// snapshots are done).
pub fn tree_state(dir: &Path) -> Vec<(PathBuf, u64)> {
    wait_for_builders(dir);
    fn walk(d: &Path, out: &mut Vec<(PathBuf, u64)>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() {
                if p.file_name() == Some(OsStr::new("mnt")) {
                    continue;
                }
                walk(&p, out);
            } else if !(p.extension().is_some_and(|x| x == "lock") || p.file_name() == Some(OsStr::new("lock"))) {
                // Locks (the pool's, the guard's, a builder's) hold the pid
                // of their last holder: runtime, not what the pool holds.
                out.push((p, m.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// blake3 of a file's content.
pub fn hash_file(p: &Path) -> String {
    let data = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    blake3::hash(&data).to_hex().to_string()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Writes `len` bytes of deterministic pseudo-random data and returns its hash.
pub fn write_data(path: &Path, seed: u64, len: usize) -> String {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    std::fs::write(path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    blake3::hash(&data).to_hex().to_string()
}

/// The mount point of a freshly mounted object.
pub fn mount(host: &TestHost, name: &str) -> PathBuf {
    PathBuf::from(host.run(&["mount", name, "--json"]).json()["mount_point"].as_str().unwrap())
}

/// Runs `send ARGS` on one pool piped into `receive ARGS` on another;
/// `recv_env` goes to the receiver only (e.g. a crash point).
pub fn pipe_env(src: &Path, send: &[&str], dst: &Path, recv: &[&str], recv_env: &[(&str, &str)]) -> (Run, Run) {
    let mut s = Command::new(BIN)
        .arg("--pool")
        .arg(src)
        .arg("send")
        .args(send)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = Command::new(BIN);
    r.arg("--pool").arg(dst).arg("receive").args(recv).stdin(s.stdout.take().unwrap());
    for (k, v) in recv_env {
        r.env(k, v);
    }
    let ro = r.output().unwrap();
    // The Command still holds the pipe's read end: drop it, or a sender
    // whose receiver died would block on a full pipe forever.
    drop(r);
    let so = s.wait_with_output().unwrap();
    (Run::from(so), Run::from(ro))
}

pub fn pipe(src: &Path, send: &[&str], dst: &Path, recv: &[&str]) -> (Run, Run) {
    pipe_env(src, send, dst, recv, &[])
}

/// The name (`loop7`) of the loop device a mounted object is attached to.
pub fn loop_name(host: &TestHost, name: &str) -> String {
    host.info(name)["loop_device"].as_str().unwrap().trim_start_matches("/dev/").to_string()
}

/// The kernel log from a marker on: written to /dev/kmsg at the start, so
/// only what the kernel said during this test is judged.
pub struct KernelLog {
    marker: String,
}

impl KernelLog {
    pub fn mark() -> Self {
        let marker = format!("subvol-test-{}", random_hex());
        std::fs::write("/dev/kmsg", format!("{marker}\n")).expect("write /dev/kmsg");
        KernelLog { marker }
    }

    /// Lines since the marker about one of `devices` (`loop7`, ...) that
    /// hold one of `words`.
    pub fn lines(&self, devices: &[String], words: &[&str]) -> Vec<String> {
        let out = Command::new("dmesg").output().expect("dmesg");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let Some(at) = text.find(&self.marker) else { return vec!["the marker is missing from dmesg".into()] };
        text[at..]
            .lines()
            .filter(|l| words.iter().any(|w| l.contains(w)))
            .filter(|l| {
                devices.iter().any(|d| {
                    l.contains(&format!("{d},")) || l.contains(&format!("{d})")) || l.contains(&format!("dev {d}"))
                })
            })
            .map(str::to_string)
            .collect()
    }

    /// Everything the kernel logged since the marker.
    pub fn text_since(&self) -> String {
        let out = Command::new("dmesg").output().expect("dmesg");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.find(&self.marker).map(|at| text[at..].to_string()).unwrap_or_default()
    }

    /// Lines since the marker that complain about one of `devices`.
    pub fn complaints(&self, devices: &[String]) -> Vec<String> {
        self.lines(
            devices,
            &["critical space allocation", "writeback error", "I/O error", "shut down", "Shutting down", "Corruption"],
        )
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An sshd on 127.0.0.1 for this test only, with keys in the test dir.
pub struct Sshd {
    child: std::process::Child,
    port: u16,
    key: PathBuf,
    known: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path) -> Sshd {
        let sshd = ["/usr/sbin/sshd", "/sbin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd (openssh-server) is needed");
        let hostkey = dir.join("hostkey");
        let key = dir.join("userkey");
        sh("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", path_str(&hostkey)]);
        sh("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", path_str(&key)]);
        let auth = dir.join("authorized_keys");
        std::fs::copy(dir.join("userkey.pub"), &auth).unwrap();
        // A port free right now (tests run side by side, in this process
        // and in others).
        let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin yes\nPasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile {}\nSetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
                hostkey.display(),
                auth.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child =
            Command::new(sshd).args(["-D", "-e", "-f", path_str(&config)]).stderr(Stdio::null()).spawn().unwrap();
        let known = dir.join("known_hosts");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Sshd { child, port, key, known }
    }

    /// The `--ssh-opt` arguments of `subvol sync` that reach this sshd.
    pub fn opts(&self) -> Vec<String> {
        [
            "-p".to_string(),
            self.port.to_string(),
            "-i".into(),
            path_str(&self.key).into(),
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known.display()),
        ]
        .into_iter()
        .flat_map(|o| ["--ssh-opt".to_string(), o])
        .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
