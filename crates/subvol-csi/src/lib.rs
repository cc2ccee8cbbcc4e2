//! subvol's CSI driver: the Identity, Controller and Node services of the
//! Container Storage Interface over gRPC on a Unix socket, one process per
//! node, each provisioning volumes in its own pool. It translates requests
//! into `subvol_pool::Pool` calls and their results into responses, and
//! decides nothing about storage itself (docs/CSI.md: ids, parameters,
//! what each call does, the error codes).

mod authority;
mod capability;
mod condition;
mod controller;
mod driver;
mod identity;
mod ids;
mod node;
mod node_stats;
mod paging;
mod server;
mod snapshots;
mod status;
mod volumes;

/// The generated CSI messages, servers and clients (`proto/csi.proto`).
pub mod proto {
    tonic::include_proto!("csi.v1");
}

pub use ids::{DRIVER_NAME, TOPOLOGY_KEY};
pub use server::{serve, Config};
