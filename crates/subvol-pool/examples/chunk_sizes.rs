//! The measurement behind the manifest chunk size (docs/BENCHMARKS.md,
//! "Manifests"): for chunks of 64 KiB, 256 KiB and 1 MiB, on a real image,
//! how fast chunks hash, how large a manifest of the image is, what one
//! 4 KiB change costs (its chunk read with O_DIRECT and hashed), and what a
//! 1% change in scattered 4 KiB writes costs (every chunk it touches).
//!
//! `cargo run --release -p subvol-pool --example chunk_sizes -- IMAGE`
//! (bench/scrub.sh runs it on a 4 GiB image of random data in a pool).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Instant;
use subvol_core::manifest::{BuiltBy, Entry, Geometry, Manifest, Provenance};

const SIZES: [u64; 3] = [64 << 10, 256 << 10, 1 << 20];
const ALIGN: usize = 4096;

/// A buffer of `len` bytes aligned for O_DIRECT.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let v = vec![0u8; len + ALIGN];
    let at = v.as_ptr().align_offset(ALIGN).min(ALIGN);
    (v, at)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A fixed pseudo-random sequence (the same changes for every size).
fn offsets(n: usize, size: u64) -> Vec<u64> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % (size / 4096) * 4096
        })
        .collect()
}

fn main() {
    let path = std::env::args().nth(1).expect("usage: chunk_sizes IMAGE");
    let file = File::open(&path).expect("open the image");
    let direct = subvol_os::pagecache::reopen_direct(&file, false).expect("O_DIRECT");
    let size = file.metadata().expect("stat").len();
    // 1 GiB of the image in memory, for the hashing speed alone.
    let mem_len = size.min(1 << 30) as usize;
    let mut mem = vec![0u8; mem_len];
    file.read_exact_at(&mut mem, 0).expect("read");
    let prov = Provenance::unmeasured(BuiltBy::Snapshot);
    let changes = offsets((size / 100 / 4096) as usize, size);
    println!("| chunk | hash (GB/s, in memory) | manifest of the image | one 4 KiB change: read + hash (ms, median of 64, cold) | 1% in 4 KiB writes: chunks | bytes read | time (s) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for cs in SIZES {
        let hash_gbs = median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    let n = mem.chunks(cs as usize).map(Entry::of).filter(|e| *e != Entry::Zero).count();
                    assert!(n > 0);
                    mem_len as f64 / t.elapsed().as_secs_f64() / 1e9
                })
                .collect(),
        );
        let g = Geometry::new(cs as u32, size).expect("chunk size");
        let full = Manifest::from_entries(g, uuid::Uuid::nil(), prov, (0..g.chunks()).map(|_| Entry::Data([7; 32])));
        let manifest_bytes = full.to_bytes().len();
        let (mut buf, at) = aligned(4 << 20);
        let one: Vec<f64> = offsets(64, size)
            .into_iter()
            .map(|o| {
                let (off, len) = g.chunk(o / cs);
                let t = Instant::now();
                direct.read_exact_at(&mut buf[at..at + len as usize], off).expect("read");
                let _ = Entry::of(&buf[at..at + len as usize]);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let mut dirty: Vec<u64> = changes.iter().map(|o| o / cs).collect();
        dirty.sort_unstable();
        dirty.dedup();
        let t = Instant::now();
        let mut read = 0u64;
        let mut k = 0;
        while k < dirty.len() {
            // Runs of neighbouring chunks in one read of up to 4 MiB, as the
            // product reads them.
            let mut end = k + 1;
            while end < dirty.len() && dirty[end] == dirty[end - 1] + 1 && (end - k + 1) as u64 * cs <= 4 << 20 {
                end += 1;
            }
            let off = dirty[k] * cs;
            let len = ((end - k) as u64 * cs).min(size - off) as usize;
            direct.read_exact_at(&mut buf[at..at + len], off).expect("read");
            for c in buf[at..at + len].chunks(cs as usize) {
                let _ = Entry::of(c);
            }
            read += len as u64;
            k = end;
        }
        println!(
            "| {} KiB | {:.2} | {} KiB | {:.2} | {} | {} MiB | {:.2} |",
            cs >> 10,
            hash_gbs,
            manifest_bytes >> 10,
            median(one),
            dirty.len(),
            read >> 20,
            t.elapsed().as_secs_f64()
        );
    }
}
