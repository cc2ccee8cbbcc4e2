//! Validation of subvolume and snapshot names.
//!
//! Names become file names inside the pool, so the rules are strict enough
//! that a name can never escape the pool directory or collide with the
//! pool's own files: 1-128 characters of `[A-Za-z0-9._-]`, not starting with
//! `.` or `-`. `@` separates a subvolume from a snapshot (`NAME@SNAP`).

use std::fmt;

/// Longest name accepted for a subvolume or a snapshot part.
pub const MAX_NAME_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty; use 1-{MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -")]
    Empty,
    #[error("name {0:?} is longer than {MAX_NAME_LEN} characters; choose a shorter name")]
    TooLong(String),
    #[error("name {0:?} starts with {1:?}; names must start with a letter, digit or '_'")]
    BadStart(String, char),
    #[error("name {0:?} contains {1:?}; use only A-Z a-z 0-9 . _ - ('@' separates NAME@SNAP)")]
    BadChar(String, char),
    #[error("{0:?} names a snapshot, but a subvolume name is needed here (drop the '@...')")]
    SnapshotNotAllowed(String),
    #[error("{0:?} names a subvolume, but a snapshot NAME@SNAP is needed here")]
    SnapshotRequired(String),
}

/// Checks one name part (a subvolume name or a snapshot name).
pub fn validate_part(part: &str) -> Result<(), NameError> {
    if part.is_empty() {
        return Err(NameError::Empty);
    }
    if part.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(shorten(part)));
    }
    for c in part.chars() {
        if !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-') {
            return Err(NameError::BadChar(shorten(part), c));
        }
    }
    let first = part.chars().next().unwrap_or('.');
    if first == '.' || first == '-' {
        return Err(NameError::BadStart(shorten(part), first));
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        let mut out: String = s.chars().take(37).collect();
        out.push_str("...");
        out
    } else {
        s.to_string()
    }
}

/// A validated `NAME` or `NAME@SNAP`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectName {
    pub subvolume: String,
    pub snapshot: Option<String>,
}

impl ObjectName {
    /// Parses `NAME` or `NAME@SNAP`, validating both parts.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        match s.split_once('@') {
            None => {
                validate_part(s)?;
                Ok(ObjectName { subvolume: s.to_string(), snapshot: None })
            }
            Some((name, snap)) => {
                validate_part(name)?;
                if snap.contains('@') {
                    return Err(NameError::BadChar(shorten(s), '@'));
                }
                validate_part(snap)?;
                Ok(ObjectName { subvolume: name.to_string(), snapshot: Some(snap.to_string()) })
            }
        }
    }

    /// Parses a plain subvolume name; `NAME@SNAP` is refused.
    pub fn parse_subvolume(s: &str) -> Result<Self, NameError> {
        let n = Self::parse(s)?;
        if n.snapshot.is_some() {
            return Err(NameError::SnapshotNotAllowed(shorten(s)));
        }
        Ok(n)
    }

    /// Parses `NAME@SNAP`; a plain name is refused.
    pub fn parse_snapshot(s: &str) -> Result<Self, NameError> {
        let n = Self::parse(s)?;
        if n.snapshot.is_none() {
            return Err(NameError::SnapshotRequired(shorten(s)));
        }
        Ok(n)
    }

    pub fn is_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }
}

impl fmt::Display for ObjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.snapshot {
            None => write!(f, "{}", self.subvolume),
            Some(s) => write!(f, "{}@{}", self.subvolume, s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_good_names() {
        for n in ["a", "web01", "db_data", "x.y-z", "_hidden", "A9", &"a".repeat(128)] {
            assert!(ObjectName::parse_subvolume(n).is_ok(), "{n}");
        }
        let s = ObjectName::parse("vm@2026-01-01T00.00.00Z").unwrap();
        assert_eq!(s.subvolume, "vm");
        assert_eq!(s.snapshot.as_deref(), Some("2026-01-01T00.00.00Z"));
        assert_eq!(s.to_string(), "vm@2026-01-01T00.00.00Z");
    }

    #[test]
    fn refuses_bad_names() {
        let long = "a".repeat(129);
        for n in ["", ".", "..", "../x", "a/b", "/", "-x", ".x", "a\0b", "a b", "é", &long, "a@", "@b", "a@b@c", "a@.."]
        {
            assert!(ObjectName::parse(n).is_err(), "{n:?} accepted");
        }
        assert!(matches!(ObjectName::parse_subvolume("a@b"), Err(NameError::SnapshotNotAllowed(_))));
        assert!(matches!(ObjectName::parse_snapshot("a"), Err(NameError::SnapshotRequired(_))));
    }

    proptest! {
        #[test]
        fn valid_names_are_safe_file_names(s in "\\PC{0,140}") {
            if let Ok(n) = ObjectName::parse(&s) {
                let text = n.to_string();
                prop_assert_eq!(&text, &s);
                prop_assert!(!n.subvolume.contains('/'));
                prop_assert!(!n.subvolume.starts_with('.'));
                prop_assert!(n.subvolume.len() <= MAX_NAME_LEN);
                prop_assert!(!text.contains('\0'));
            }
        }
    }
}
