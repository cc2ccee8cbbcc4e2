//! Controller calls on snapshots. A snapshot id is `VOLUME@SNAP`, SNAP
//! derived from the CSI name and unique in the pool, so a retry finds it
//! and the same name from another volume is refused.

use crate::ids;
use crate::proto::*;
use crate::status::{missing, status};
use subvol_core::ObjectName;
use subvol_pool::{ErrorKind, Pool, SubvolumeInfo};
use tonic::Status;

/// The CSI view of a snapshot image.
fn snapshot(info: &SubvolumeInfo) -> Snapshot {
    let created = chrono::DateTime::parse_from_rfc3339(&info.created).ok();
    Snapshot {
        size_bytes: info.virtual_size_bytes as i64,
        snapshot_id: info.name.clone(),
        source_volume_id: info.name.split_once('@').map(|(v, _)| v.to_string()).unwrap_or_default(),
        creation_time: created.map(|t| prost_types::Timestamp { seconds: t.timestamp(), nanos: 0 }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

pub(crate) fn create(pool: &Pool, req: CreateSnapshotRequest) -> Result<CreateSnapshotResponse, Status> {
    if req.source_volume_id.is_empty() {
        return Err(missing("source_volume_id"));
    }
    if req.name.is_empty() {
        return Err(missing("name"));
    }
    if !req.parameters.is_empty() {
        return Err(Status::invalid_argument("snapshots take no parameters"));
    }
    crate::volumes::existing(pool, &req.source_volume_id)?;
    let snap = ids::snapshot_part(&req.name);
    let report = pool.snapshot_unique(&req.source_volume_id, &snap, &|_, _| {}).map_err(status)?;
    let info = pool.info(&report.name).map_err(status)?;
    Ok(CreateSnapshotResponse { snapshot: Some(snapshot(&info)) })
}

/// DeleteSnapshot: an id that names nothing is already deleted.
pub(crate) fn delete(pool: &Pool, req: DeleteSnapshotRequest) -> Result<DeleteSnapshotResponse, Status> {
    if req.snapshot_id.is_empty() {
        return Err(missing("snapshot_id"));
    }
    if ObjectName::parse_snapshot(&req.snapshot_id).is_ok() {
        pool.delete(&req.snapshot_id, false, false, false).map_err(status)?;
    }
    Ok(DeleteSnapshotResponse {})
}

/// Whether `id` could be a snapshot id (paging tokens carry one).
fn snapshot_id_like(id: &str) -> bool {
    ObjectName::parse_snapshot(id).is_ok()
}

/// GetSnapshot: the snapshot, or NOT_FOUND.
pub(crate) fn get(pool: &Pool, req: GetSnapshotRequest) -> Result<GetSnapshotResponse, Status> {
    if req.snapshot_id.is_empty() {
        return Err(missing("snapshot_id"));
    }
    if !snapshot_id_like(&req.snapshot_id) {
        return Err(Status::not_found(format!("no snapshot {:?}", req.snapshot_id)));
    }
    let info = pool.info(&req.snapshot_id).map_err(status)?;
    Ok(GetSnapshotResponse { snapshot: Some(snapshot(&info)) })
}

/// ListSnapshots: every snapshot in the pool, or those of one volume, or
/// the one asked for (both filters apply when both are given), by id. An
/// id that names nothing lists nothing, as the spec asks.
pub(crate) fn list(pool: &Pool, req: ListSnapshotsRequest) -> Result<ListSnapshotsResponse, Status> {
    let found = if !req.snapshot_id.is_empty() {
        match ObjectName::parse_snapshot(&req.snapshot_id) {
            Ok(_) => match pool.info(&req.snapshot_id) {
                Ok(i) => vec![i],
                Err(e) if e.kind == ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(status(e)),
            },
            Err(_) => Vec::new(),
        }
    } else if !req.source_volume_id.is_empty() {
        match pool.list_snapshots(Some(&req.source_volume_id)) {
            Ok(v) => v,
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::InvalidArgument) => Vec::new(),
            Err(e) => return Err(status(e)),
        }
    } else {
        pool.list_snapshots(None).map_err(status)?
    };
    let mut found: Vec<SubvolumeInfo> = found
        .into_iter()
        .filter(|s| {
            req.source_volume_id.is_empty() || s.name.split_once('@').map(|p| p.0) == Some(&req.source_volume_id)
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    let (page, next_token) =
        crate::paging::page(found, |s| s.name.as_str(), snapshot_id_like, req.max_entries, &req.starting_token)?;
    let entries = page.iter().map(|s| list_snapshots_response::Entry { snapshot: Some(snapshot(s)) }).collect();
    Ok(ListSnapshotsResponse { entries, next_token })
}
