//! VolumeCondition, as the Controller (ControllerGetVolume, ListVolumes)
//! and the Node (NodeGetVolumeStats) report it: both from
//! `Pool::condition`, so the two perspectives never disagree.

use crate::proto::VolumeCondition;
use crate::status::status;
use subvol_pool::Pool;
use tonic::Status;

/// The condition of volume `id`: abnormal, with the pool's message (which
/// names the way back), when `Pool::condition` finds something wrong.
pub(crate) fn of(pool: &Pool, id: &str) -> Result<VolumeCondition, Status> {
    Ok(match pool.condition(id).map_err(status)? {
        Some(message) => VolumeCondition { abnormal: true, message },
        None => VolumeCondition { abnormal: false, message: "the volume is usable".into() },
    })
}
