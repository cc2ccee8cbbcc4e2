//! issue 12 item 3: a subvolume whose filesystem the kernel shut down (an
//! I/O error, or XFS failing to write its log into a full host) is named as
//! such by every command that meets it, with the way back: `list`, `info`,
//! `pool status` and `pool check` show it; `snapshot` and `resize` refuse
//! before freezing or growing anything; `umount` still unmounts and says
//! what to do next; mounting again replays the log and all is well.
//!
//! The shutdown is forced with `xfs_io -x -c shutdown` (FS_IOC_SHUTDOWN,
//! which XFS and ext4 share) without flushing the log, after an fsync put a
//! file's creation in the log, so that the mount afterwards has a log to
//! replay. The kernel's own report of the shutdown is read from its log.

use crate::harness::*;
use crate::require_privileges;
use std::path::{Path, PathBuf};

/// The way back once the subvolume is unmounted.
const AFTER_UMOUNT: &str = "run `subvol mount a` to replay its log, then `subvol pool check`";

/// An XFS host with one mounted subvolume `a` of `fs` holding a 1 MiB file
/// that was fsynced; returns the host, the mount point and the file's hash.
fn mounted_subvolume(fs: &str) -> (TestHost, PathBuf, String) {
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "512M", "--fs", fs]).ok();
    let mp = mount(&host, "a");
    let want = write_data(&mp.join("kept"), 7, 1 << 20);
    sh("sync", &["-f", path_str(&mp.join("kept"))]);
    (host, mp, want)
}

/// Shuts the filesystem at `mp` down without flushing its log, and checks
/// that the kernel reported it for the subvolume's loop device.
fn shut_down(host: &TestHost, mp: &Path) {
    let dev = loop_name(host, "a");
    let kmsg = KernelLog::mark();
    sh("xfs_io", &["-x", "-c", "shutdown", path_str(mp)]);
    let said = kmsg.lines(std::slice::from_ref(&dev), &["Shutting down", "shut down"]);
    assert!(!said.is_empty() && !said[0].contains("marker"), "the kernel did not report shutting down {dev}: {said:?}");
}

/// `list`, `info`, `pool status` and `pool check` name the failure with
/// `cause` and the way back.
fn assert_reported(host: &TestHost, state: &str, cause: &str) {
    let list = host.run(&["list", "--json"]).json();
    assert_eq!(list[0]["state"], state, "{list}");
    let table = host.run(&["list"]).ok();
    assert!(
        table.lines().any(|r| r.starts_with("a ") && r.contains(&state.to_uppercase())),
        "no {state} in the listing:\n{table}"
    );
    let info = host.run(&["info", "a"]).ok();
    let state_line = info.lines().find(|l| l.starts_with("state:")).unwrap_or_else(|| panic!("no state:\n{info}"));
    assert!(state_line.contains(cause) && state_line.contains("`subvol umount a`, then"), "{state_line}");
    let st = host.run(&["pool", "status", "--json"]).json();
    let warned = st["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains(cause));
    assert!(warned, "pool status does not warn: {st}");
    let r = host.run(&["pool", "check"]).fails(8, "the pool has problems");
    assert!(r.stdout.lines().any(|l| l.starts_with("error: ") && l.contains(cause)), "{}", r.stdout);
}

/// `snapshot` and `resize` refuse (exit 1) with `cause` and the way back,
/// and the pool is as it was: no snapshot, no temp file, the same size.
fn assert_refused(host: &TestHost, cause: &str) {
    let before = tree_state(&host.pool);
    let size = host.info("a")["virtual_size_bytes"].as_u64().unwrap();
    let r = host.run(&["snapshot", "a"]).fails(1, &format!("cannot snapshot a: {cause}"));
    assert!(r.stderr.contains("run `subvol umount a`, then `subvol mount a` to replay its log"), "{}", r.stderr);
    host.run(&["resize", "a", "768M"]).fails(1, &format!("cannot resize a: {cause}"));
    assert_eq!(tree_state(&host.pool), before, "a refused command changed the pool");
    assert_eq!(host.info("a")["virtual_size_bytes"].as_u64().unwrap(), size, "the image grew");
    assert_eq!(host.run(&["list", "--snapshots", "--json"]).json().as_array().unwrap().len(), 1);
}

/// `umount` unmounts the failed filesystem, detaches its loop device and
/// says (stderr and JSON) what happened and what to do next.
fn assert_umount_says(host: &TestHost, mp: &Path, failure: &str, cause: &str) {
    let image = PathBuf::from(host.info("a")["image"].as_str().unwrap());
    let r = host.run(&["umount", "a", "--json"]);
    assert_eq!(r.code, 0, "umount failed: {}", r.stderr);
    let out = r.json();
    assert_eq!(out["fs_failure"], failure, "{out}");
    assert_eq!(out["unmounted"][0], path_str(mp), "{out}");
    let warning = out["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains(cause) && warning.contains(AFTER_UMOUNT), "{out}");
    assert!(r.stderr.contains(&format!("subvol: warning: {warning}")), "{}", r.stderr);
    assert!(mounts_under(mp).is_empty(), "still mounted");
    assert!(loops_under(&image).is_empty(), "loop device left attached");
}

/// Mounting again replays the log (the kernel says so with `replayed`),
/// the fsynced file is there, and every command sees a healthy subvolume.
fn assert_recovered(host: &TestHost, want: &str, replayed: &str) {
    let kmsg = KernelLog::mark();
    let mp = mount(host, "a");
    let dev = loop_name(host, "a");
    assert!(!kmsg.lines(&[dev], &[replayed]).is_empty(), "the mount did not replay the log ({replayed:?})");
    assert_eq!(hash_file(&mp.join("kept")), want);
    assert_eq!(host.info("a")["state"], "mounted");
    host.run(&["pool", "check"]).ok();
    let st = host.run(&["pool", "status", "--json"]).json();
    assert!(!st.to_string().contains("inside a"), "{st}");
    host.run(&["snapshot", "a"]).ok();
    host.run(&["umount", "a"]).ok();
}

fn shut_down_subvolume_is_named_refused_and_recovered(fs: &str, replayed: &str) {
    let (host, mp, want) = mounted_subvolume(fs);
    shut_down(&host, &mp);
    let cause = "the filesystem inside a was shut down by the kernel (I/O error or full host)";
    assert_reported(&host, "shutdown", cause);
    assert_refused(&host, cause);
    // Mounting what is mounted says where, and that it failed.
    let r = host.run(&["mount", "a"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("subvol: warning: {cause}")), "{}", r.stderr);
    assert_umount_says(&host, &mp, "shutdown", cause);
    assert_recovered(&host, &want, replayed);
}

#[test]
fn shut_down_xfs_subvolume_is_named_refused_and_recovered() {
    require_privileges!("shut_down_xfs_subvolume_is_named_refused_and_recovered");
    shut_down_subvolume_is_named_refused_and_recovered("xfs", "Starting recovery");
}

#[test]
fn shut_down_ext4_subvolume_is_named_refused_and_recovered() {
    require_privileges!("shut_down_ext4_subvolume_is_named_refused_and_recovered");
    shut_down_subvolume_is_named_refused_and_recovered("ext4", "recovery complete");
}

/// An ext4 mounted `errors=remount-ro` that meets an error (injected
/// through its sysfs `trigger_fs_error`) is turned read-only by the kernel:
/// state `error`, the same refusals, the same way back.
#[test]
fn ext4_made_read_only_by_an_error_is_named_refused_and_recovered() {
    require_privileges!("ext4_made_read_only_by_an_error_is_named_refused_and_recovered");
    let host = TestHost::xfs();
    host.run(&["create", "a", "--size", "256M", "--fs", "ext4"]).ok();
    let mp = PathBuf::from(
        host.run(&["mount", "a", "-o", "errors=remount-ro", "--json"]).json()["mount_point"].as_str().unwrap(),
    );
    let want = write_data(&mp.join("kept"), 9, 1 << 20);
    sh("sync", &["-f", path_str(&mp.join("kept"))]);
    let dev = loop_name(&host, "a");
    let kmsg = KernelLog::mark();
    std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "subvol shutdown test").unwrap();
    let said = kmsg.lines(std::slice::from_ref(&dev), &["Remounting filesystem read-only"]);
    assert!(!said.is_empty() && !said[0].contains("marker"), "the kernel did not turn {dev} read-only: {said:?}");
    let cause = "the kernel made the filesystem inside a read-only after an error";
    assert_reported(&host, "error", cause);
    assert_refused(&host, cause);
    assert_umount_says(&host, &mp, "error", cause);
    assert_recovered(&host, &want, "recovery complete");
}

/// Preloaded into `subvol`, shuts a filesystem down (without flushing its
/// log) just before FIFREEZE reaches it, so the kernel fails the real
/// FIFREEZE with EIO: the shutdown happens during the snapshot, after every
/// check, as when the freeze's own log write meets a full host.
const SHUTDOWN_AT_FREEZE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <linux/fs.h>

#define GOINGDOWN _IOR('X', 125, unsigned int)
#define NOLOGFLUSH 2

int ioctl(int fd, unsigned long request, ...) {
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int (*real)(int, unsigned long, ...) = dlsym(RTLD_NEXT, "ioctl");
    if (request == FIFREEZE) {
        unsigned int how = NOLOGFLUSH;
        real(fd, GOINGDOWN, &how);
    }
    return real(fd, request, arg);
}
"#;

/// Builds `SHUTDOWN_AT_FREEZE` into a shared library in `dir`.
fn shutdown_at_freeze_library(dir: &Path) -> PathBuf {
    let src = dir.join("shutdown_at_freeze.c");
    let lib = dir.join("shutdown_at_freeze.so");
    std::fs::write(&src, SHUTDOWN_AT_FREEZE).unwrap();
    sh("cc", &["-shared", "-fPIC", "-o", path_str(&lib), path_str(&src), "-ldl"]);
    lib
}

#[test]
fn a_shutdown_during_the_snapshot_freeze_is_named() {
    require_privileges!("a_shutdown_during_the_snapshot_freeze_is_named");
    let (host, mp, want) = mounted_subvolume("xfs");
    let lib = shutdown_at_freeze_library(host.dir.path());
    let dev = loop_name(&host, "a");
    let before = tree_state(&host.pool);
    let kmsg = KernelLog::mark();
    let r = subvol_env(&host.pool, &["snapshot", "a"], &[("LD_PRELOAD", path_str(&lib))]);
    let cause = "the filesystem inside a was shut down by the kernel (I/O error or full host)";
    let r = r.fails(1, &format!("cannot snapshot a: {cause}"));
    assert!(r.stderr.contains("`subvol umount a`, then `subvol mount a`"), "{}", r.stderr);
    assert!(!r.stderr.contains("os error"), "a bare errno: {}", r.stderr);
    let said = kmsg.lines(std::slice::from_ref(&dev), &["Shutting down"]);
    assert!(!said.is_empty() && !said[0].contains("marker"), "the kernel did not report shutting down {dev}: {said:?}");
    assert_eq!(tree_state(&host.pool), before, "the failed snapshot left something behind");
    assert_eq!(host.info("a")["state"], "shutdown");
    assert_umount_says(&host, &mp, "shutdown", cause);
    assert_recovered(&host, &want, "Starting recovery");
}
