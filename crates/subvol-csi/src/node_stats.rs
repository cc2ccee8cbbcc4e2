//! NodeGetVolumeStats: bytes and inodes of the mounted filesystem (statfs),
//! the size of a block volume, and its condition from the pool.

use crate::proto::volume_usage::Unit;
use crate::proto::*;
use crate::status::missing;
use subvol_core::FsKind;
use subvol_pool::Pool;
use tonic::Status;

fn usage(unit: Unit, total: u64, available: u64) -> VolumeUsage {
    VolumeUsage {
        available: available as i64,
        total: total as i64,
        used: total.saturating_sub(available) as i64,
        unit: unit as i32,
    }
}

pub(crate) fn stats(pool: &Pool, req: NodeGetVolumeStatsRequest) -> Result<NodeGetVolumeStatsResponse, Status> {
    if req.volume_path.is_empty() {
        return Err(missing("volume_path"));
    }
    // An orphan (an image of the volume deleted while it stayed mounted)
    // is reported, abnormal, rather than NOT_FOUND: its pod still writes.
    let fs = match crate::volumes::existing(pool, &req.volume_id) {
        Ok(info) => Some(info),
        Err(e) if e.code() == tonic::Code::NotFound => match crate::condition::of(pool, &req.volume_id) {
            Ok(c) if c.abnormal => None,
            _ => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let path = std::path::Path::new(&req.volume_path);
    // Only a missing path is NOT_FOUND: a shut-down XFS answers EIO to
    // stat, and that is a condition to report, not an error.
    if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        return Err(Status::not_found(format!("volume_path {} does not exist", path.display())));
    }
    let usage = match fs.as_ref().map(|i| (i.fs, i.virtual_size_bytes)) {
        Some((FsKind::Raw, size)) => {
            vec![VolumeUsage { total: size as i64, unit: Unit::Bytes as i32, ..Default::default() }]
        }
        None if !path.is_dir() => Vec::new(),
        _ => {
            let st = subvol_os::statfs::statfs(path)
                .map_err(|e| Status::internal(format!("cannot statfs {}: {e}", path.display())))?;
            vec![usage(Unit::Bytes, st.total_bytes, st.avail_bytes), usage(Unit::Inodes, st.files, st.files_free)]
        }
    };
    Ok(NodeGetVolumeStatsResponse { usage, volume_condition: Some(crate::condition::of(pool, &req.volume_id)?) })
}
