//! Replication between pools (`subvol sync`): the protocol, the sides it
//! runs between, and the pool's record of where each subvolume was synced.
//! Everything a front end needs is here, so the CLI, a CSI driver or a C
//! API run the same rules:
//!
//! - [`sync`] / [`sync_each`] take endpoints as a user writes them;
//! - [`replicate`] runs the protocol between any two [`SyncSide`]s;
//! - [`Pool::sync_targets`](crate::Pool::sync_targets) reads the records.

mod chunks;
#[cfg(test)]
mod fake;
mod local;
mod protocol;
mod remote;
mod run;
mod side;
mod targets;
mod transfer;

pub use chunks::{local_dir, RepairFrom, Reply};
pub use local::LocalSide;
pub use protocol::{replicate, SyncOptions, SyncReport, SYNC_TAG};
pub use remote::{CommandRunner, RemoteSide, Ssh};
pub use run::{recorded_destinations, sync, sync_each, SyncContext};
pub use side::{SnapshotEntry, SyncSide};
pub use subvol_core::sync_target::SyncTarget;
pub use targets::TargetStatus;
