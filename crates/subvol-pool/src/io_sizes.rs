//! The block size, the alignments derived from it and the byte counts that
//! steer replication I/O, in one place: each of them used to be spelled
//! where it was needed, and the copies could drift apart (a staging limit
//! above the direct-write minimum, say, would send some records nowhere
//! fast). Each value says why it is what it is; docs/BENCHMARKS.md has the
//! measurements behind the thresholds.

use subvol_core::stream::MAX_DATA_RECORD;

/// The block of the stream format (docs/STREAM.md: `block_size` is 4096,
/// resume offsets are multiples of it) and of image sizes (docs/FORMAT.md):
/// one unit, so that whatever a stream describes is whole blocks of the
/// image it lands in, and every host and loop-device block size divides it.
pub(crate) const BLOCK_SIZE: u64 = subvol_core::stream::BLOCK_SIZE as u64;

/// What O_DIRECT needs offsets, lengths and buffers aligned to: the largest
/// logical block size of the devices pools live on (4096-byte loop devices
/// and disks; 512-byte ones are satisfied by it too).
pub(crate) const DIRECT_IO_ALIGN: usize = 4096;

// A block-aligned record must qualify for O_DIRECT, or long records would
// fall back to the page cache on every host.
const _: () = assert!(BLOCK_SIZE.is_multiple_of(DIRECT_IO_ALIGN as u64));

/// `n` rounded down to a whole block: the part of a byte count that covers
/// complete blocks (e.g. how far a resume may start).
pub(crate) const fn align_down(n: u64) -> u64 {
    n - n % BLOCK_SIZE
}

/// `n` rounded up to a whole block, None if that overflows.
pub(crate) fn align_up(n: u64) -> Option<u64> {
    n.checked_add(BLOCK_SIZE - 1).map(align_down)
}

/// Whether `n` is a whole number of blocks.
pub(crate) const fn is_block_aligned(n: u64) -> bool {
    n.is_multiple_of(BLOCK_SIZE)
}

/// Whether a transfer at `offset` of `len` bytes meets O_DIRECT's rules
/// (the buffer is the caller's: see `aligned_start`).
pub(crate) const fn is_direct_aligned(offset: u64, len: u64) -> bool {
    offset.is_multiple_of(DIRECT_IO_ALIGN as u64) && len.is_multiple_of(DIRECT_IO_ALIGN as u64)
}

/// A buffer with room for one record after an O_DIRECT-aligned start
/// (`aligned_start`): a Vec's own start has no such alignment.
pub(crate) fn record_buffer() -> Vec<u8> {
    vec![0u8; MAX_DATA_RECORD as usize + DIRECT_IO_ALIGN]
}

/// Where the O_DIRECT-aligned part of `buf` (from `record_buffer`) starts.
pub(crate) fn aligned_start(buf: &[u8]) -> usize {
    buf.as_ptr().align_offset(DIRECT_IO_ALIGN).min(DIRECT_IO_ALIGN)
}

/// Received records at least this long are written with O_DIRECT: they are
/// sequential already, and through the page cache a full receive spent most
/// of its time copying into the cache and out again. Shorter ones gain from
/// the page cache or from staging, which merge neighbours.
pub(crate) const DIRECT_WRITE_MIN: u64 = 256 * 1024;

/// Received records shorter than this are staged (scratch file, then
/// reflinked into place). It is the direct-write minimum, so that every
/// block-aligned record has one of the two fast paths.
pub(crate) const STAGE_BELOW: u64 = DIRECT_WRITE_MIN;

/// Scratch bytes written out and cloned into place as one batch: large
/// enough to reach the disk as one sequential run, small enough that the
/// page cache holds it comfortably.
pub(crate) const STAGE_BATCH_BYTES: u64 = 8 << 20;

/// Changed ranges at least this long are read by the sender with O_DIRECT
/// (sequential runs, which the device serves fastest without the page
/// cache); shorter ones through the page cache with readahead advice, so
/// scattered small reads overlap.
pub(crate) const DIRECT_READ_MIN: u64 = 256 * 1024;

/// How far ahead of the record being sent the kernel is asked to read
/// (posix_fadvise WILLNEED): read one by one from a cold cache, scattered
/// ranges each wait a device round trip (~150 µs for 4 KiB); advised ahead
/// they overlap.
pub(crate) const READAHEAD_BYTES: u64 = 16 << 20;

/// Data bytes a resumable receive applies between two checkpoints. Each
/// checkpoint flushes staging, waits for the writers and fsyncs, which
/// stalls the stream, so they are rare; a resume sends at most this much
/// again.
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// Bytes written through the page cache after which writeback of the
/// received image is started on a helper thread, so the fsync before
/// publishing finds little left.
pub(crate) const WRITEBACK_BYTES: u64 = 4 << 20;

/// Bytes a receive writes between two looks at the host's free space
/// (statfs): often enough that the receive stops well before the floor,
/// rarely enough to cost nothing.
pub(crate) const SPACE_CHECK_BYTES: u64 = 32 << 20;

/// Granularity of the content comparison on hosts without reflinks: a
/// multiple of the block, so changed ranges are whole stream blocks, and
/// large enough that reading both images is sequential.
pub(crate) const COMPARE_BYTES: u64 = 64 * 1024;

const _: () = assert!(COMPARE_BYTES.is_multiple_of(BLOCK_SIZE));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers_round_to_blocks() {
        assert_eq!(align_down(0), 0);
        assert_eq!(align_down(BLOCK_SIZE - 1), 0);
        assert_eq!(align_down(3 * BLOCK_SIZE + 7), 3 * BLOCK_SIZE);
        assert_eq!(align_up(1), Some(BLOCK_SIZE));
        assert_eq!(align_up(2 * BLOCK_SIZE), Some(2 * BLOCK_SIZE));
        assert_eq!(align_up(u64::MAX), None);
        assert!(is_block_aligned(0) && is_block_aligned(BLOCK_SIZE) && !is_block_aligned(512));
        assert!(is_direct_aligned(BLOCK_SIZE, 2 * BLOCK_SIZE) && !is_direct_aligned(512, BLOCK_SIZE));
        let buf = record_buffer();
        let start = aligned_start(&buf);
        assert!(buf[start..].len() as u64 >= MAX_DATA_RECORD);
        assert_eq!(buf[start..].as_ptr() as usize % DIRECT_IO_ALIGN, 0);
    }
}
