//! Integration tests of the `subvol` binary, built as one test binary.
//! Privileged tests build real loop-mounted XFS/btrfs hosts and tear them
//! down on drop; without root they print `SKIPPED` (and fail under CI=true).

mod harness;

mod concurrency;
mod content_root;
mod crash;
mod csi;
mod csi_conformance;
mod encryption;
mod enospc;
mod errors;
mod lifecycle;
mod mounting;
mod operations;
mod orphans;
mod pools;
mod replication;
mod replication_targets;
mod scrub;
mod shutdown;
mod snapshots;
mod space;
mod steady_state;
