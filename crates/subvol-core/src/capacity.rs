//! How big an image to make for a volume asked for as a range of bytes (a
//! CSI capacity range): at least what was asked, at least what the
//! filesystem needs, in whole 4 KiB blocks (the pool's image alignment), and
//! never more than the limit.

use crate::FsKind;

/// The size of a volume made without a lower bound.
pub const DEFAULT_VOLUME_BYTES: u64 = 1 << 30;
/// Image sizes are whole blocks of this many bytes.
pub const ALIGN_BYTES: u64 = 4096;

/// The image size for a volume of `fs` holding at least `required` and at
/// most `limit` bytes (0: that bound is not given), or `None` when no size
/// fits (the limit is below what `fs` needs or below `required`).
pub fn volume_size(fs: FsKind, required: u64, limit: u64) -> Option<u64> {
    let wanted = match (required, limit) {
        (0, 0) => DEFAULT_VOLUME_BYTES,
        (0, l) => DEFAULT_VOLUME_BYTES.min(l),
        (r, _) => r,
    };
    let size = wanted.max(fs.min_size_bytes()).checked_next_multiple_of(ALIGN_BYTES)?;
    (limit == 0 || size <= limit).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rounds_up_to_what_the_filesystem_needs() {
        assert_eq!(volume_size(FsKind::Xfs, 0, 0), Some(DEFAULT_VOLUME_BYTES));
        assert_eq!(volume_size(FsKind::Xfs, 1, 0), Some(FsKind::Xfs.min_size_bytes()));
        assert_eq!(volume_size(FsKind::Ext4, 10_000_000, 0), Some(10_002_432));
        assert_eq!(volume_size(FsKind::Xfs, 0, 100 << 20), None, "xfs needs 300 MiB");
        assert_eq!(volume_size(FsKind::Raw, 0, 100 << 20), Some(100 << 20));
        assert_eq!(volume_size(FsKind::Raw, 5000, 6000), None, "no whole block between");
    }

    proptest! {
        #[test]
        fn a_size_is_within_the_range_and_enough_for_the_filesystem(
            required in 0u64..(1 << 40), limit in 0u64..(1 << 40), fs in 0usize..3,
        ) {
            let fs = [FsKind::Xfs, FsKind::Ext4, FsKind::Raw][fs];
            if let Some(s) = volume_size(fs, required, limit) {
                prop_assert!(s >= required && s >= fs.min_size_bytes());
                prop_assert!(limit == 0 || s <= limit);
                prop_assert_eq!(s % ALIGN_BYTES, 0);
            } else {
                prop_assert!(limit != 0);
            }
        }
    }
}
