//! Parsing and printing of byte sizes (`512M`, `10G`, `1.5T`, `4096`).
//!
//! Suffixes are binary (K = 1024), as in LVM, ZFS and most storage tools;
//! `KiB`/`KB` style spellings are accepted with the same meaning.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("size is empty; give a number with an optional unit, e.g. 512M, 10G or 1.5T")]
    Empty,
    #[error("size {0:?} is not a number with a unit; use e.g. 512M, 10G, 1.5T or plain bytes")]
    Malformed(String),
    #[error("size {0:?} has an unknown unit; use K, M, G, T, P or E (binary, 1K = 1024)")]
    BadUnit(String),
    #[error("size {0:?} is too large; the largest size is 15E")]
    TooLarge(String),
    #[error("size {0:?} is zero; give a positive size")]
    Zero(String),
}

const UNITS: [(char, u32); 7] = [('B', 0), ('K', 10), ('M', 20), ('G', 30), ('T', 40), ('P', 50), ('E', 60)];

/// Parses a size in bytes. Fractions are allowed with a unit (`1.5T`); the
/// result is rounded down to a whole byte. Zero is refused.
pub fn parse_size(input: &str) -> Result<u64, SizeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.matches('.').count() > 1 || num.starts_with('.') || num.ends_with('.') {
        return Err(SizeError::Malformed(input.to_string()));
    }
    let unit = unit.trim();
    let shift = parse_unit(unit).ok_or_else(|| SizeError::BadUnit(input.to_string()))?;
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let int: u128 = int_part.parse().map_err(|_| SizeError::TooLarge(input.to_string()))?;
    let mut bytes: u128 = int.checked_shl(shift).ok_or_else(|| SizeError::TooLarge(input.to_string()))?;
    if int > (u64::MAX as u128) {
        return Err(SizeError::TooLarge(input.to_string()));
    }
    if !frac_part.is_empty() {
        if shift == 0 {
            return Err(SizeError::Malformed(input.to_string()));
        }
        // frac = digits / 10^len; add floor(digits * 2^shift / 10^len).
        let digits = &frac_part[..frac_part.len().min(18)];
        let num: u128 = digits.parse().map_err(|_| SizeError::Malformed(input.to_string()))?;
        let den: u128 = 10u128.pow(digits.len() as u32);
        bytes += (num << shift) / den;
    }
    let bytes = u64::try_from(bytes).map_err(|_| SizeError::TooLarge(input.to_string()))?;
    if bytes == 0 {
        return Err(SizeError::Zero(input.to_string()));
    }
    Ok(bytes)
}

fn parse_unit(unit: &str) -> Option<u32> {
    let u = unit.to_ascii_uppercase();
    let u = u.strip_suffix("IB").or_else(|| u.strip_suffix('B').filter(|r| !r.is_empty())).unwrap_or(&u);
    if u.is_empty() {
        return Some(0);
    }
    let mut chars = u.chars();
    let c = chars.next()?;
    if chars.next().is_some() {
        return None;
    }
    UNITS.iter().find(|(name, _)| *name == c).map(|(_, shift)| *shift)
}

/// Formats bytes for people: `0`, `512B`, `1.5K`, `10G`, `1.50T`.
/// Exact multiples of the unit print without decimals, others with one or two.
pub fn format_size(bytes: u64) -> String {
    let mut idx = 0;
    while idx + 1 < UNITS.len() && bytes >= 1u64 << UNITS[idx + 1].1 {
        idx += 1;
    }
    if idx == 0 {
        return format!("{bytes}B");
    }
    let (unit, shift) = UNITS[idx];
    let whole = bytes >> shift;
    if bytes & ((1u64 << shift) - 1) == 0 {
        return format!("{whole}{unit}");
    }
    // Round down (never print a size larger than the real one, which could
    // then not be parsed back, e.g. 16.0E).
    if whole < 10 {
        let hundredths = ((u128::from(bytes) * 100) >> shift) as u64;
        format!("{}.{:02}{unit}", hundredths / 100, hundredths % 100)
    } else {
        let tenths = ((u128::from(bytes) * 10) >> shift) as u64;
        format!("{}.{}{unit}", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("10g").unwrap(), 10 << 30);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("10GB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5T").unwrap(), 3 << 39);
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        assert_eq!(parse_size(" 2 M ").unwrap(), 2 << 20);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert_eq!(parse_size("16E").unwrap_err(), SizeError::TooLarge("16E".into()));
        assert_eq!(parse_size("7E").unwrap(), 7 << 60);
    }

    #[test]
    fn refuses_bad_sizes() {
        for s in [
            "",
            "G",
            "-1G",
            "1..5G",
            ".5G",
            "5.G",
            "1X",
            "1GG",
            "abc",
            "1.5",
            "0",
            "0G",
            "99999999999999999999999",
            "1e9",
            "16E",
            "nan",
        ] {
            assert!(parse_size(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1023), "1023B");
        assert_eq!(format_size(1024), "1K");
        assert_eq!(format_size(10 << 30), "10G");
        assert_eq!(format_size(3 << 39), "1.50T");
        assert_eq!(format_size((10 << 30) + 1), "10.0G");
    }

    proptest! {
        #[test]
        fn exact_sizes_round_trip(n in 1u64..(1 << 62)) {
            let text = format_size(n);
            if !text.contains('.') {
                prop_assert_eq!(parse_size(&text).unwrap(), n);
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,30}") {
            let _ = parse_size(&s);
        }
    }
}
