//! The pool layer of subvol: a pool directory holding subvolume images and
//! their metadata, and every operation on them. It reaches the kernel only
//! through `subvol-os` and keeps no state that the kernel already knows (what
//! is attached and mounted is read from sysfs and mountinfo each time).

mod backing;
mod check;
pub mod delta;
mod direct_writes;
mod dirty_cap;
mod error;
mod frozen_state;
mod guard;
mod guard_watch;
mod kernel;
mod layout;
mod lock;
mod mounting;
mod mountpoint;
mod outfile;
mod par;
mod pool;
mod probe;
mod reader;
mod receive;
mod recovery;
mod rename;
mod send;
mod snapops;
mod snapshot;
mod space;
mod staging;
mod subvolume;
mod trace;
mod writeback;

pub use check::{CheckReport, Finding};
pub use error::{Error, ErrorKind, Result};
pub use guard::{GuardFreeze, GuardOptions};
pub use kernel::Attachment;
pub use lock::PoolLock;
pub use mounting::{MountOptions, MountOutcome, UmountOutcome};
pub use outfile::StreamFile;
pub use pool::{InitOptions, Pool, PoolStatus};
pub use receive::{ReceiveOptions, ReceiveReport};
pub use recovery::Recovered;
pub use send::{SendEstimate, SendReport};
pub use snapops::{is_snapshot, PruneReport, RollbackReport, AUTOSNAP_TAG, POLICY_PROPERTY};
pub use snapshot::{Progress, SnapshotReport};
pub use space::{ImageSpace, PoolSpace, DIRTY_LIMIT_BYTES, GUARANTEE_PROPERTY};
pub use subvol_core::mountinfo::FsFailure;
pub use subvolume::{CreateOptions, State, SubvolumeInfo, DEFAULT_EXTENT_HINT_BYTES};
