//! Rules on option values that every front end must apply the same way
//! (the CLI today; a CSI driver or a C API later), so they live here and
//! the pool's own calls check them too.

use crate::error::{Error, Result};
use std::ops::RangeInclusive;
use subvol_core::parse_size;

/// Largest extent size hint: beyond it a 4K write allocates (and a
/// snapshot then copies) more than anyone wants per extent.
pub const MAX_EXTENT_HINT_BYTES: u64 = 1 << 30;

/// zstd levels a stream may be compressed at: above 19 zstd needs far more
/// memory per record for little gain.
pub const ZSTD_LEVELS: RangeInclusive<i32> = 1..=19;

/// The level `--compress` (and `sync --compress`) means without a number.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Parses an extent size hint: a size (`1M`) or `0` for none.
pub fn extent_hint_bytes(text: &str) -> Result<u32> {
    let bytes = if text == "0" { 0 } else { parse_size(text)? };
    check_extent_hint(bytes)
}

/// An extent size hint must be whole 4K blocks and at most 1G (0: none).
pub fn check_extent_hint(bytes: u64) -> Result<u32> {
    if !bytes.is_multiple_of(4096) || bytes > MAX_EXTENT_HINT_BYTES {
        return Err(Error::invalid("--extent-hint must be a multiple of 4K, at most 1G (or 0)"));
    }
    Ok(bytes as u32)
}

pub fn check_zstd_level(level: i32) -> Result<()> {
    if !ZSTD_LEVELS.contains(&level) {
        return Err(Error::invalid(format!("--compress level must be {}-{}", ZSTD_LEVELS.start(), ZSTD_LEVELS.end())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn extent_hints_are_whole_blocks_up_to_1g_or_off() {
        assert_eq!(extent_hint_bytes("0").unwrap(), 0);
        assert_eq!(extent_hint_bytes("1M").unwrap(), 1 << 20);
        assert_eq!(extent_hint_bytes("4K").unwrap(), 4096);
        assert_eq!(extent_hint_bytes("1G").unwrap(), 1 << 30);
        for bad in ["6K", "1025M", "2G", "4097", "0K", "x"] {
            let e = extent_hint_bytes(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
        }
        assert!(extent_hint_bytes("6K").unwrap_err().message.contains("multiple of 4K, at most 1G (or 0)"));
        assert!(check_extent_hint(4095).is_err() && check_extent_hint(8192).is_ok());
    }

    #[test]
    fn zstd_levels_are_1_to_19() {
        for ok in [1, DEFAULT_ZSTD_LEVEL, 19] {
            assert!(check_zstd_level(ok).is_ok(), "{ok}");
        }
        for bad in [0, 20, -1] {
            assert_eq!(check_zstd_level(bad).unwrap_err().message, "--compress level must be 1-19", "{bad}");
        }
    }
}
