//! Names: the driver's, the topology key, and how CSI names become
//! subvolume and snapshot names (docs/CSI.md, "Ids").
//!
//! A CSI name may be any Unicode string, and a volume id and a snapshot id
//! must each fit in 128 bytes; subvol names are 1-128 characters of
//! `[A-Za-z0-9._-]`. So the volume id is `csi-` + up to 40 characters of
//! the CSI name (others become `_`) + `-` + 16 hex digits of its BLAKE3
//! hash (at most 61 bytes), and a snapshot's SNAP is made the same way, its
//! id being `VOLUME@SNAP` (at most 123 bytes). The same CSI name always
//! gives the same id, so a retried CreateVolume finds its volume; the CSI
//! name itself is kept in the subvolume's `NAME_PROPERTY`, which tells a
//! hash collision (or a subvolume made by hand) from the volume asked for.

use std::collections::HashMap;
use subvol_core::foreign_name::derive;

/// The driver's name (GetPluginInfo; Kubernetes' CSIDriver object).
pub const DRIVER_NAME: &str = "csi.subvol.io";
/// The topology segment naming the node that holds a volume.
pub const TOPOLOGY_KEY: &str = "topology.subvol.io/node";
/// The subvolume property holding the CSI name of a volume.
pub(crate) const NAME_PROPERTY: &str = "csi.subvol.io:name";

const PREFIX: &str = "csi-";

/// The volume id (subvolume name) of CSI volume `name`.
pub(crate) fn volume_id(name: &str) -> String {
    derive(PREFIX, name)
}

/// The SNAP of CSI snapshot `name`; its id is `VOLUME@SNAP`.
pub(crate) fn snapshot_part(name: &str) -> String {
    derive(PREFIX, name)
}

/// This node as a topology segment.
pub(crate) fn topology(node_id: &str) -> crate::proto::Topology {
    crate::proto::Topology { segments: HashMap::from([(TOPOLOGY_KEY.to_string(), node_id.to_string())]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_fit_the_spec_and_subvol() {
        let long = "ü/".repeat(200);
        let v = volume_id(&long);
        let s = format!("{v}@{}", snapshot_part(&long));
        assert!(v.len() <= 61 && s.len() <= 128, "{s}");
        assert!(subvol_core::ObjectName::parse_snapshot(&s).is_ok(), "{s}");
        assert_eq!(volume_id("pvc-1"), volume_id("pvc-1"));
        assert_ne!(volume_id("pvc-1"), volume_id("pvc-2"));
    }
}
