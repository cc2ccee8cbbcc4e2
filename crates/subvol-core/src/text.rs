//! Free-form strings that subvol stores or prints: property values from the
//! command line, strings from a stream's header. They are bounded in length
//! and may not hold control characters (nor the Unicode controls that
//! reorder text on a terminal), so they cannot forge output rows or drive a
//! terminal; and whatever is printed for a human is escaped, so strings
//! stored by an older version cannot either.

use std::borrow::Cow;
use std::fmt::Write;

/// Longest property value.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most tags one snapshot (or stream) may carry.
pub const MAX_TAGS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("{what} is {len} bytes long; the limit is {max}")]
    TooLong { what: String, len: usize, max: usize },
    #[error("{what} contains the control character {ch}; use printable characters only")]
    Control { what: String, ch: String },
}

/// Characters never accepted in stored text and always escaped in output:
/// C0/C1 controls and DEL, and the bidirectional formatting characters that
/// make a terminal show text in another order than it is stored.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Checks a free-form string: at most `max` bytes, nothing [`is_unsafe`].
/// `what` names the string in the error.
pub fn validate(what: &str, s: &str, max: usize) -> Result<(), TextError> {
    if s.len() > max {
        return Err(TextError::TooLong { what: what.to_string(), len: s.len(), max });
    }
    if let Some(c) = s.chars().find(|&c| is_unsafe(c)) {
        return Err(TextError::Control { what: what.to_string(), ch: escape(&c.to_string()).into_owned() });
    }
    Ok(())
}

/// The string as it may be shown on a terminal: every unsafe character
/// becomes `\n`, `\t`, `\r` or `\u{XXXX}`; a string without any is returned
/// as it is.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_controls_and_long_strings() {
        assert!(validate("tag", "pre-upgrade", 128).is_ok());
        assert!(validate("value", "owner: Zoë", 128).is_ok());
        for bad in ["a\nb", "\u{1b}[31mred", "x\u{7f}", "\u{9b}2J", "a\u{202e}b", "\0", "\r"] {
            assert!(matches!(validate("tag", bad, 128), Err(TextError::Control { .. })), "{bad:?} accepted");
        }
        assert!(matches!(validate("tag", &"a".repeat(129), 128), Err(TextError::TooLong { .. })));
        let e = validate("source_name", "a\u{1b}b", 128).unwrap_err().to_string();
        assert!(e.contains("\\u{1b}") && !e.contains('\u{1b}'), "{e}");
    }

    #[test]
    fn escapes_what_a_terminal_would_act_on() {
        assert_eq!(escape("plain"), "plain");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(escape("\u{1b}[2J"), "\\u{1b}[2J");
        assert_eq!(escape("x\u{202e}y"), "x\\u{202e}y");
    }

    proptest! {
        #[test]
        fn escaped_text_is_safe_and_valid_text_unchanged(s in "\\PC{0,40}|[\\x00-\\x7f\\u{80}-\\u{9f}\\u{202a}-\\u{202e}]{0,40}") {
            let e = escape(&s);
            prop_assert!(!e.chars().any(is_unsafe));
            prop_assert!(!e.contains('\n'));
            if validate("t", &s, usize::MAX).is_ok() {
                prop_assert_eq!(e.as_ref(), s.as_str());
            } else {
                prop_assert!(e.len() > s.len());
            }
        }

        #[test]
        fn validate_bounds_length(s in "[a-z]{0,64}", max in 0usize..64) {
            prop_assert_eq!(validate("t", &s, max).is_ok(), s.len() <= max);
        }
    }
}
