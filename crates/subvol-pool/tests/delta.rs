//! The delta that keeps a snapshot's frozen window short must make the
//! clone byte-identical to its source, whatever happened to the source
//! since the clone: writes small and large, holes punched, preallocation,
//! growth. Checked on real XFS and btrfs hosts, many random rounds.

mod common;
use common::{privileged, sh};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use subvol_pool::delta::update_clone;

/// A loop-mounted host filesystem in a temp dir, gone on drop.
struct Host {
    dir: tempfile::TempDir,
    mnt: PathBuf,
    dev: String,
}

impl Host {
    fn new(fs: &str) -> Host {
        let dir = tempfile::Builder::new().prefix("subvol-delta.").tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("host.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        sh("truncate", &["-s", "2G", img.to_str().unwrap()]);
        match fs {
            "xfs" => sh("mkfs.xfs", &["-q", "-m", "reflink=1", img.to_str().unwrap()]),
            _ => sh("mkfs.btrfs", &["-q", img.to_str().unwrap()]),
        };
        let dev = sh("losetup", &["--show", "-f", img.to_str().unwrap()]).trim().to_string();
        let h = Host { dir, mnt, dev };
        sh("mount", &[&h.dev, h.mnt.to_str().unwrap()]);
        h
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).output();
        // The device is ours only if it still backs our file.
        let backing =
            std::fs::read_to_string(format!("/sys/block/{}/loop/backing_file", self.dev.trim_start_matches("/dev/")))
                .unwrap_or_default();
        if Path::new(backing.trim()).starts_with(self.dir.path()) {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).output();
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn fill(f: &File, rng: &mut Rng, off: u64, len: usize) {
    let buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    f.write_all_at(&buf, off).unwrap();
}

fn hash(p: &Path) -> String {
    blake3::hash(&std::fs::read(p).unwrap()).to_hex().to_string()
}

fn rounds(fs: &str) {
    let host = Host::new(fs);
    let src_path = host.mnt.join("src.img");
    let src = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&src_path).unwrap();
    src.set_len(64 << 20).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001 ^ fs.len() as u64);
    for _ in 0..64 {
        let off = rng.below(64 << 8) << 12;
        let len = 4096 * (1 + rng.below(16)) as usize;
        fill(&src, &mut rng, off, len);
    }
    for round in 0..12 {
        let clone_path = host.mnt.join(format!("clone{round}.img"));
        let clone = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&clone_path).unwrap();
        subvol_os::reflink::ficlone(&clone, &src).unwrap();
        let clone_map = subvol_os::fiemap::fiemap(&clone, false).unwrap();
        // Mutate the source in every way an image changes.
        let size = src.metadata().unwrap().len();
        for _ in 0..(1 + rng.below(40)) {
            let off = rng.below(size >> 12) << 12;
            match rng.below(6) {
                0 | 1 => fill(&src, &mut rng, off, 4096),
                2 => fill(&src, &mut rng, off.min(size.saturating_sub(1 << 20)), 1 << 20),
                3 => subvol_os::alloc::punch_hole(&src, off, 4096 * (1 + rng.below(64))).unwrap(),
                4 => subvol_os::alloc::zero_range(&src, off, 4096 * (1 + rng.below(8))).unwrap(),
                _ => subvol_os::alloc::allocate_keep_size(&src, off, 4096 * (1 + rng.below(8))).unwrap(),
            }
        }
        if round % 4 == 3 {
            src.set_len(size + (8 << 20)).unwrap();
            fill(&src, &mut rng, size + (4 << 20), 8192);
        }
        src.sync_all().unwrap();
        let stats = update_clone(&clone, &clone_map, &src).unwrap();
        drop(clone);
        assert_eq!(hash(&clone_path), hash(&src_path), "{fs} round {round}: clone differs after the delta ({stats:?})");
        std::fs::remove_file(&clone_path).unwrap();
    }
}

#[test]
fn delta_makes_clone_identical_on_xfs() {
    if privileged("delta_makes_clone_identical_on_xfs") {
        rounds("xfs");
    }
}

#[test]
fn delta_makes_clone_identical_on_btrfs() {
    if privileged("delta_makes_clone_identical_on_btrfs") {
        rounds("btrfs");
    }
}
