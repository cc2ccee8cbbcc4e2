//! Independent, I/O-bound lookups over many images (stat, metadata xattr,
//! extent maps) run on several threads. With a cold page cache each lookup
//! waits for the device; one after another, a pool of 1,000 snapshots pays
//! that wait 1,000 times, while several at a time keep the device's queue
//! busy. The results keep the order of the input.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads for I/O-bound lookups: the device's queue, not the number of
/// CPUs, is what they use. `SUBVOL_IO_THREADS` overrides it (1 = serial).
const IO_THREADS: usize = 16;

fn io_threads() -> usize {
    std::env::var("SUBVOL_IO_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(IO_THREADS)
}

/// `items.iter().map(f).collect()`, run on up to `io_threads()` threads.
pub(crate) fn map_io<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = io_threads().min(items.len());
    if threads < 2 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else { break };
            done.push((i, f(item)));
        }
        done
    };
    std::thread::scope(|s| {
        // Helpers that cannot be started are simply missing: this thread
        // works through the items too, so every item is mapped regardless.
        let helpers: Vec<_> =
            (1..threads).filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok()).collect();
        let mut batches = vec![work()];
        for h in helpers {
            match h.join() {
                Ok(done) => batches.push(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        for (i, r) in batches.into_iter().flatten() {
            slots[i] = Some(r);
        }
    });
    slots.into_iter().map(|r| r.expect("every item was mapped")).collect()
}

#[cfg(test)]
mod tests {
    use super::map_io;

    #[test]
    fn keeps_order_and_maps_every_item() {
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(map_io(&v, |x| x * 2), v.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert_eq!(map_io(&[7u8], |x| *x), vec![7]);
        assert!(map_io(&[] as &[u8], |x| *x).is_empty());
    }
}
