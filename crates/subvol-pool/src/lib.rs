//! The pool layer of subvol: a pool directory holding subvolume images and
//! their metadata, and every operation on them. It reaches the kernel only
//! through `subvol-os` and keeps no state that the kernel already knows (what
//! is attached and mounted is read from sysfs and mountinfo each time).

mod attach;
mod backing;
mod check;
mod chunk_io;
pub mod chunk_serve;
mod clone_volume;
mod condition;
pub mod delta;
mod destroy;
mod dirty_cap;
mod encryption;
mod error;
mod event;
mod extent_cache;
mod frozen_state;
mod guard;
mod guard_hold;
mod guard_watch;
mod health;
mod integrity;
mod io_sizes;
mod kernel;
mod layout;
mod listing;
mod lock;
mod manifest_build;
mod manifest_store;
mod metrics;
mod mounting;
mod mountpoint;
mod names;
mod option_rules;
mod orphans;
mod outcome;
mod outfile;
mod par;
mod pool;
mod probe;
mod publish;
mod recovery;
mod rename;
mod replication;
mod scrub;
mod scrub_files;
mod scrub_repair;
mod scrub_report;
mod scrub_scope;
mod scrub_verify;
mod snapops;
mod snapshot;
mod snapshot_once;
mod snapshot_window;
mod space;
mod subvolume;
pub mod sync;
mod trace;
mod worker;

pub use check::{CheckReport, Finding, Severity};
pub use destroy::DestroyReport;
pub use encryption::{KeySource, LockReport, UnlockReport};
pub use error::{Error, ErrorKind, Result};
pub use event::{Event, Field};
pub use guard::{GuardFreeze, GuardOptions};
pub use health::{HealthFinding, HealthOptions, HealthReport, HealthStatus};
pub use integrity::{Integrity, Interrupted, ManifestDetails, ScrubStatus};
pub use kernel::Attachment;
pub use listing::Listing;
pub use lock::PoolLock;
pub use manifest_build::{Background, BuildReport};
pub use mounting::{MountOptions, MountOutcome, UmountReport};
pub use option_rules::{
    check_extent_hint, check_zstd_level, extent_hint_bytes, DEFAULT_ZSTD_LEVEL, MAX_EXTENT_HINT_BYTES, ZSTD_LEVELS,
};
pub use orphans::{orphan_warning, orphans_held, Orphan, Release};
pub use outcome::Outcome;
pub use outfile::StreamFile;
pub use pool::{InitOptions, Pool, PoolStatus};
pub use replication::{ReceiveOptions, ReceiveReport, SendEstimate, SendReport};
pub use scrub_files::{DamagedFile, FileRange, SnapshotFiles};
pub use scrub_repair::{ByteRange, Lost, RepairReport, Repaired};
pub use scrub_report::{damage_advice, describe_damage, LiveDamage, NotCovered, ScrubOptions, ScrubReport};
pub use snapops::{is_snapshot, PruneReport, RollbackReport, AUTOSNAP_TAG, POLICY_PROPERTY};
pub use snapshot::{Progress, SnapshotReport};
pub use space::{ImageSpace, PoolSpace, DIRTY_LIMIT_BYTES, GUARANTEE_PROPERTY};
pub use subvol_core::mountinfo::FsFailure;
pub use subvolume::{CreateOptions, State, SubvolumeInfo, DEFAULT_EXTENT_HINT_BYTES};

/// What unit tests share: a test that cannot exercise its path on this
/// machine says why, and fails under CI=true, where a skip would hide a
/// path that no longer runs (the same rule as the integration tests).
#[cfg(test)]
pub(crate) mod test_support {
    pub(crate) fn cannot_run(test: &str, reason: &str) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test} would be SKIPPED ({reason}), but CI=true forbids skipping");
        }
        eprintln!("SKIPPED {test}: {reason}");
    }
}
