//! The record a pool keeps of each place `sync` sent one of its
//! subvolumes (docs/FORMAT.md, "Sync targets"): enough to repeat the sync
//! without being told where, and to report how far behind each copy is
//! without contacting the other side.

use crate::endpoint::Endpoint;
use crate::meta::{decode, encode, MetaError};
use crate::text;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Record type in the header line (`subvol-sync-target/1 ...`).
pub const RECORD_TYPE: &str = "sync-target";
/// Format version of sync-target records written by this build.
pub const SYNC_TARGET_FORMAT: u32 = 1;
/// Longest error message kept in a record; longer ones are cut.
pub const MAX_ERROR_LEN: usize = 1024;
/// Extension of record files.
pub const FILE_EXT: &str = "target";

/// Where one subvolume was synced to, and how that went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncTarget {
    /// The subvolume in this pool.
    pub name: String,
    /// The destination as given to `sync` (an [`Endpoint`]; a local one
    /// with its pool directory made absolute).
    pub destination: String,
    /// The newest snapshot both sides hold, as of the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<SyncBase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<SyncSuccess>,
    /// The last failure, if it came after the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SyncFailure>,
}

/// The snapshot both sides hold (one guid, a name on each side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncBase {
    pub guid: Uuid,
    /// `NAME@SNAP` in this pool.
    pub source: String,
    /// `NAME@SNAP` on the destination.
    pub destination: String,
    /// When the snapshot was taken: the destination is at least this old.
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncSuccess {
    /// When the sync finished.
    pub at: DateTime<Utc>,
    /// Bytes of stream sent.
    pub stream_bytes: u64,
    /// How long it took.
    pub seconds: f64,
    /// Whether only the increment since the previous base was sent.
    pub incremental: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncFailure {
    pub at: DateTime<Utc>,
    /// The exit code `subvol sync` ended with.
    pub exit_code: u8,
    /// The error, escaped and cut to [`MAX_ERROR_LEN`] bytes.
    pub message: String,
}

impl SyncFailure {
    /// A failure with its message made safe to store and print: another
    /// host's stderr may hold anything.
    pub fn new(at: DateTime<Utc>, exit_code: u8, message: &str) -> Self {
        let mut message = text::escape(message).into_owned();
        if message.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN - 3;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        SyncFailure { at, exit_code, message }
    }
}

impl SyncTarget {
    pub fn new(name: &str, destination: &Endpoint) -> Self {
        SyncTarget {
            name: name.to_string(),
            destination: destination.to_string(),
            base: None,
            last_success: None,
            last_error: None,
        }
    }

    /// Age of the newest snapshot both sides hold: how much the
    /// destination would lose if the source went away `now`.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<u64> {
        self.base.as_ref().map(|b| (now - b.created).num_seconds().max(0) as u64)
    }

    /// The file name of this record: `NAME.KEY.target` (see [`file_key`]).
    pub fn file_name(&self) -> String {
        format!("{}.{}.{FILE_EXT}", self.name, file_key(&self.destination))
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(RECORD_TYPE, SYNC_TARGET_FORMAT, self)
    }

    /// Decodes a record and checks that it is one a pool could have
    /// written: a valid name and destination, and (when `file_name` is
    /// given) stored under the file name they make.
    pub fn decode(bytes: &[u8], file_name: Option<&str>) -> Result<Self, MetaError> {
        let t: SyncTarget = decode(RECORD_TYPE, SYNC_TARGET_FORMAT, bytes)?;
        crate::name::ObjectName::parse_subvolume(&t.name).map_err(|e| MetaError::Json(e.to_string()))?;
        Endpoint::parse(&t.destination).map_err(|e| MetaError::Json(e.to_string()))?;
        if let Some(f) = file_name {
            if f != t.file_name() {
                return Err(MetaError::Json(format!("the record for {} is stored as {f:?}", t.destination)));
            }
        }
        Ok(t)
    }
}

/// Destinations hold `/`, `:` and `@`, so records are named by a digest:
/// the first 16 bytes of BLAKE3 of the destination text, in lowercase hex.
pub fn file_key(destination: &str) -> String {
    blake3::hash(destination.as_bytes()).to_hex()[..32].to_string()
}

/// The subvolume a record file name belongs to (`NAME.KEY.target`), or
/// `None` for anything else in the directory (temporaries, strangers).
pub fn name_of_file(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(&format!(".{FILE_EXT}"))?;
    let (name, key) = stem.rsplit_once('.')?;
    let hex = key.len() == 32 && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && crate::name::validate_part(name).is_ok()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn sample() -> SyncTarget {
        let mut t = SyncTarget::new("db", &Endpoint::parse("root@backup:/var/lib/subvol:db").unwrap());
        t.base = Some(SyncBase {
            guid: Uuid::from_u128(7),
            source: "db@sync-1".into(),
            destination: "db@sync-1".into(),
            created: at(1_700_000_000),
        });
        t.last_success =
            Some(SyncSuccess { at: at(1_700_000_060), stream_bytes: 4096, seconds: 1.5, incremental: true });
        t
    }

    #[test]
    fn round_trips_under_its_own_file_name() {
        let t = sample();
        let bytes = t.encode();
        assert!(bytes.starts_with(b"subvol-sync-target/1 blake3="));
        assert_eq!(SyncTarget::decode(&bytes, Some(&t.file_name())).unwrap(), t);
        assert_eq!(name_of_file(&t.file_name()), Some("db"));
        let moved = format!("db.{}.target", file_key("elsewhere:db"));
        assert!(SyncTarget::decode(&bytes, Some(&moved)).is_err(), "a record under another name was trusted");
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(SyncTarget::decode(&b, None).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn records_with_hostile_names_are_refused() {
        let mut t = sample();
        t.destination = "-oProxyCommand=x:db".into();
        assert!(SyncTarget::decode(&t.encode(), None).is_err());
        let mut t = sample();
        t.name = "../x".into();
        assert!(SyncTarget::decode(&t.encode(), None).is_err());
    }

    #[test]
    fn lag_is_the_age_of_the_common_base() {
        let t = sample();
        assert_eq!(t.lag_seconds(at(1_700_000_300)), Some(300));
        assert_eq!(t.lag_seconds(at(1_600_000_000)), Some(0), "a clock set back is no negative lag");
        assert_eq!(SyncTarget::new("db", &Endpoint::parse("b:db").unwrap()).lag_seconds(at(0)), None);
    }

    #[test]
    fn failures_are_stored_escaped_and_bounded() {
        let f = SyncFailure::new(at(0), 5, "b: \u{1b}[2Jforged\nline");
        assert_eq!(f.message, "b: \\u{1b}[2Jforged\\nline");
        let f = SyncFailure::new(at(0), 1, &"é".repeat(2000));
        assert!(f.message.len() <= MAX_ERROR_LEN && f.message.ends_with("..."), "{}", f.message.len());
    }

    #[test]
    fn only_record_file_names_are_claimed() {
        let key = file_key("b:db");
        assert_eq!(name_of_file(&format!("my.db.{key}.target")), Some("my.db"));
        for other in [
            format!(".db.{key}.target.tmp.12"),
            format!("db.{key}.target.tmp"),
            format!("db.{}.target", &key[..31]),
            format!("db.{}.target", key.to_uppercase()),
            format!(".db.{key}.target"),
            "db.target".to_string(),
        ] {
            assert_eq!(name_of_file(&other), None, "{other}");
        }
    }
}
