//! Durations typed by people: `90s`, `45m`, `25h`, `2d`, `1w`, or plain
//! seconds. Checked arithmetic; anything else is refused with the accepted
//! forms in the message.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; use e.g. 90s, 45m, 25h, 2d or 1w");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_people_type() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("25h"), Ok(Duration::from_secs(90_000)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("3600"), Ok(Duration::from_secs(3_600)));
        for bad in ["", "h", "1.5h", "-1d", "2y", "99999999999999999999d", "1d2h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
