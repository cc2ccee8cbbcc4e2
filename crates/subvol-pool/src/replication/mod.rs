//! Replication: a snapshot leaves one pool as a stream (docs/STREAM.md) and
//! becomes a snapshot of another.
//!
//! - `send`: plans the changes from two extent maps (or contents, on hosts
//!   without reflinks) and writes them as records; its `reader` reads the
//!   changed data on a second thread.
//! - `receive`: checks and sets up a private image (`setup`, `target`,
//!   `partial`), applies the records to it (`applier`, which alone drives
//!   the write paths `staging`, `direct_writes` and `writeback` and the
//!   host's `space_floor`), then publishes the snapshot and lets the
//!   subvolume follow it (`publish`, `follow`, `guid`).
//!
//! The block size and the I/O thresholds both sides use are in
//! `crate::io_sizes`.

mod receive;
mod send;

pub(crate) use receive::{adopting, finish_adoptions};
pub use receive::{ReceiveOptions, ReceiveReport};
pub use send::{SendEstimate, SendReport};
