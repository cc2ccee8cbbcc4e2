//! The pool calls a front end such as the CSI driver is built on, on a real
//! pool in a loop-mounted XFS host: a copy of a subvolume as it is now
//! (also after a crash at either side of its clone), a snapshot name
//! unique in the pool, a block device attached without a mount and bound
//! onto a file, and unbind leaving mounts that are not the pool's alone.
//! Everything under the host is unmounted and detached on drop.

mod common;
use common::{privileged, sh};
use std::path::{Path, PathBuf};
use std::process::Command;
use subvol_core::FsKind;
use subvol_pool::{CreateOptions, ErrorKind, InitOptions, MountOptions, Outcome, Pool, DEFAULT_EXTENT_HINT_BYTES};

/// A loop-mounted XFS with a pool in it; everything below its directory is
/// unmounted and detached on drop.
struct Host {
    dir: tempfile::TempDir,
    pool: Pool,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new().prefix("subvol-front.").tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("host.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh("truncate", &["-s", "3G", img.to_str().unwrap()]);
        sh("mkfs.xfs", &["-q", "-m", "reflink=1", img.to_str().unwrap()]);
        let dev = sh("losetup", &["--show", "-f", img.to_str().unwrap()]).trim().to_string();
        sh("mount", &[&dev, mnt.to_str().unwrap()]);
        let pool = Pool::init(&mnt.join("pool"), &InitOptions::default()).unwrap();
        Host { dir, pool }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn create(&self, name: &str, fs: FsKind, size: u64) {
        let opts = CreateOptions {
            size_bytes: size,
            fs,
            mkfs_opts: Vec::new(),
            guarantee: false,
            extent_hint_bytes: DEFAULT_EXTENT_HINT_BYTES,
            thin_unsafe: false,
            encryption: None,
        };
        self.pool.create(name, &opts).unwrap();
    }

    fn mount(&self, name: &str) -> PathBuf {
        self.pool.mount(name, &MountOptions::default()).unwrap().mount_point
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let dir = self.dir.path().to_path_buf();
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            let _ = Command::new("umount").arg(&m).output();
        }
        for e in std::fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
                if Path::new(b.trim().trim_end_matches(" (deleted)")).starts_with(&dir) {
                    let _ = Command::new("losetup")
                        .arg("-d")
                        .arg(format!("/dev/{}", e.file_name().to_string_lossy()))
                        .output();
                }
            }
        }
        let _ = Command::new("chattr").args(["-R", "-i"]).arg(&dir).output();
    }
}

fn snapshots_of(pool: &Pool, name: &str) -> Vec<String> {
    pool.list_snapshots(Some(name)).unwrap().into_iter().map(|s| s.name).collect()
}

#[test]
fn clone_subvolume_copies_now_and_recovers_from_a_crash_on_either_side() {
    if !privileged("clone_subvolume_copies_now_and_recovers_from_a_crash_on_either_side") {
        return;
    }
    let h = Host::new();
    h.create("src", FsKind::Xfs, 400 << 20);
    let mp = h.mount("src");
    std::fs::write(mp.join("f"), b"one").unwrap();

    let (info, outcome) = h.pool.clone_subvolume("src", "a", &|_, _| {}).unwrap();
    assert_eq!((info.name.as_str(), outcome), ("a", Outcome::Done));
    assert!(snapshots_of(&h.pool, "src").is_empty(), "the passage snapshot stayed");
    assert_eq!(h.pool.clone_subvolume("src", "a", &|_, _| {}).unwrap().1, Outcome::AlreadyDone);
    assert_eq!(std::fs::read(h.mount("a").join("f")).unwrap(), b"one");

    // A crash before the clone left the passage snapshot (of older data):
    // the retry copies the subvolume as it is at the retry.
    h.pool.snapshot(&["src@clone-b".to_string()], &[], &|_, _| {}).unwrap();
    std::fs::write(mp.join("f"), b"two").unwrap();
    assert_eq!(h.pool.clone_subvolume("src", "b", &|_, _| {}).unwrap().1, Outcome::Done);
    assert_eq!(std::fs::read(h.mount("b").join("f")).unwrap(), b"two");
    assert!(snapshots_of(&h.pool, "src").is_empty());

    // A crash after the clone left both: the retry removes the snapshot.
    h.pool.snapshot(&["src@clone-c".to_string()], &[], &|_, _| {}).unwrap();
    h.pool.clone_snapshot("src@clone-c", "c", &|_, _| {}).unwrap();
    assert_eq!(h.pool.clone_subvolume("src", "c", &|_, _| {}).unwrap().1, Outcome::AlreadyDone);
    assert!(snapshots_of(&h.pool, "src").is_empty());

    // A subvolume of that name made otherwise is not a copy.
    assert_eq!(h.pool.clone_subvolume("a", "b", &|_, _| {}).unwrap_err().kind, ErrorKind::AlreadyExists);
    assert_eq!(h.pool.clone_subvolume("nothing", "d", &|_, _| {}).unwrap_err().kind, ErrorKind::NotFound);
    let r = h.pool.check(false).unwrap();
    assert!(r.findings.iter().all(|f| f.severity != subvol_pool::Severity::Error), "{:?}", r.findings);
}

#[test]
fn snapshot_unique_refuses_a_name_taken_by_another_subvolume() {
    if !privileged("snapshot_unique_refuses_a_name_taken_by_another_subvolume") {
        return;
    }
    let h = Host::new();
    h.create("a", FsKind::Ext4, 64 << 20);
    h.create("b", FsKind::Ext4, 64 << 20);
    let first = h.pool.snapshot_unique("a", "s", &|_, _| {}).unwrap();
    assert_eq!((first.name.as_str(), first.outcome), ("a@s", Outcome::Done));
    assert_eq!(h.pool.snapshot_unique("a", "s", &|_, _| {}).unwrap().outcome, Outcome::AlreadyDone);
    let e = h.pool.snapshot_unique("b", "s", &|_, _| {}).unwrap_err();
    assert_eq!(e.kind, ErrorKind::AlreadyExists);
    assert!(e.message.contains("a@s"), "{}", e.message);
    assert_eq!(h.pool.snapshot_unique("nothing", "t", &|_, _| {}).unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn an_attached_block_device_binds_onto_a_file_and_goes_again() {
    if !privileged("an_attached_block_device_binds_onto_a_file_and_goes_again") {
        return;
    }
    let h = Host::new();
    h.create("disk", FsKind::Raw, 16 << 20);
    let (dev, outcome) = h.pool.attach("disk").unwrap();
    assert_eq!(outcome, Outcome::Done);
    assert_eq!(h.pool.attach("disk").unwrap(), (dev.clone(), Outcome::AlreadyDone));
    assert_eq!(h.pool.info("disk").unwrap().state.as_str(), "attached");
    let r = h.pool.check(false).unwrap();
    assert!(r.findings.iter().all(|f| !f.what.contains("without a mount")), "{:?}", r.findings);

    let target = h.path("disk-target");
    assert_eq!(h.pool.bind("disk", &target, false).unwrap(), Outcome::Done);
    assert_eq!(h.pool.bind("disk", &target, false).unwrap(), Outcome::AlreadyDone);
    std::fs::write(&target, vec![7u8; 4096]).unwrap();
    assert_eq!(h.pool.detach("disk").unwrap_err().kind, ErrorKind::Busy, "detached while bound?");
    assert_eq!(h.pool.unbind(&target).unwrap(), Outcome::Done);
    assert!(!target.exists());
    assert_eq!(h.pool.unbind(&target).unwrap(), Outcome::AlreadyDone);
    assert_eq!(h.pool.detach("disk").unwrap(), Outcome::Done);
    assert_eq!(h.pool.detach("disk").unwrap(), Outcome::AlreadyDone);
    assert_eq!(h.pool.info("disk").unwrap().state.as_str(), "unmounted");
    let img = h.pool.info("disk").unwrap().image;
    assert_eq!(&std::fs::read(img).unwrap()[..4096], &[7u8; 4096][..]);

    // Neither mounted nor attached: nothing to bind.
    assert_eq!(h.pool.bind("disk", &target, false).unwrap_err().kind, ErrorKind::InvalidArgument);
}

#[test]
fn unbind_leaves_a_mount_that_is_not_the_pools_alone() {
    if !privileged("unbind_leaves_a_mount_that_is_not_the_pools_alone") {
        return;
    }
    let h = Host::new();
    let target = h.path("elsewhere");
    std::fs::create_dir(&target).unwrap();
    sh("mount", &["-t", "tmpfs", "none", target.to_str().unwrap()]);
    let e = h.pool.unbind(&target).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Busy);
    assert!(std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(target.to_str().unwrap()));

    // A mounted subvolume binds read-only, and unbinds.
    h.create("fs", FsKind::Ext4, 64 << 20);
    h.mount("fs");
    let ro = h.path("ro");
    assert_eq!(h.pool.bind("fs", &ro, true).unwrap(), Outcome::Done);
    assert!(std::fs::write(ro.join("x"), b"x").is_err(), "a read-only bind took a write");
    assert_eq!(h.pool.bind("fs", &ro, true).unwrap(), Outcome::AlreadyDone);
    assert_eq!(h.pool.bind("fs", &ro, false).unwrap_err().kind, ErrorKind::AlreadyExists);
    assert_eq!(h.pool.unbind(&ro).unwrap(), Outcome::Done);
    assert!(!ro.exists());
}
