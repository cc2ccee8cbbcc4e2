//! Controller calls on volumes: each one a few pool calls.

use crate::capability::{self, Params};
use crate::ids::{self, NAME_PROPERTY};
use crate::proto::volume_content_source::{SnapshotSource, Type as Source, VolumeSource};
use crate::proto::*;
use crate::status::{missing, status};
use std::collections::HashMap;
use subvol_core::capacity::volume_size;
use subvol_core::{FsKind, ObjectName};
use subvol_pool::{CreateOptions, ErrorKind, Pool, SubvolumeInfo, DEFAULT_EXTENT_HINT_BYTES};
use tonic::Status;

fn bytes(field: &str, n: i64) -> Result<u64, Status> {
    u64::try_from(n).map_err(|_| Status::invalid_argument(format!("{field} {n} is negative")))
}

/// The CSI view of a subvolume.
pub(crate) fn volume(info: &SubvolumeInfo, node_id: &str, source: Option<VolumeContentSource>) -> Volume {
    Volume {
        capacity_bytes: info.virtual_size_bytes as i64,
        volume_id: info.name.clone(),
        volume_context: HashMap::new(),
        content_source: source,
        accessible_topology: vec![ids::topology(node_id)],
    }
}

/// Refuses requisite topologies that do not include this node: the volume
/// can only be made here.
fn check_topology(req: &Option<TopologyRequirement>, node_id: &str) -> Result<(), Status> {
    let Some(r) = req else { return Ok(()) };
    let here = |t: &Topology| t.segments.get(ids::TOPOLOGY_KEY).is_some_and(|n| n == node_id);
    if r.requisite.is_empty() || r.requisite.iter().any(here) {
        return Ok(());
    }
    Err(Status::resource_exhausted(format!(
        "the volume can only be made on node {node_id}, which the requisite topologies do not include"
    )))
}

fn out_of_range(fs: FsKind, required: u64, limit: u64) -> Status {
    Status::out_of_range(format!(
        "no {fs} volume fits between {required} and {limit} bytes ({fs} needs at least {} bytes)",
        fs.min_size_bytes()
    ))
}

/// CreateVolume: a new subvolume, a clone of a snapshot (restore) or a copy
/// of a volume, named after the CSI name, which is kept in a property.
pub(crate) fn create(pool: &Pool, req: CreateVolumeRequest, node_id: &str) -> Result<CreateVolumeResponse, Status> {
    if req.name.is_empty() {
        return Err(missing("name"));
    }
    // Checked before anything is made: it is kept in a property.
    subvol_core::text::validate("the volume name", &req.name, subvol_core::text::MAX_VALUE_LEN)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let params = Params::parse(&req.parameters)?;
    if !req.mutable_parameters.is_empty() {
        // The CO sends them only to a plugin with MODIFY_VOLUME.
        return Err(Status::invalid_argument("mutable_parameters are not served (no MODIFY_VOLUME)"));
    }
    let asked = capability::asked_fs(&req.volume_capabilities, &params)?;
    let fs = asked.unwrap_or(FsKind::Xfs);
    let range = req.capacity_range.unwrap_or_default();
    let (required, limit) = (bytes("required_bytes", range.required_bytes)?, bytes("limit_bytes", range.limit_bytes)?);
    check_topology(&req.accessibility_requirements, node_id)?;
    let id = ids::volume_id(&req.name);
    let source = req.volume_content_source.clone();
    let info = match source.as_ref().and_then(|s| s.r#type.as_ref()) {
        None => {
            let size = volume_size(fs, required, limit).ok_or_else(|| out_of_range(fs, required, limit))?;
            let opts = CreateOptions {
                size_bytes: size,
                fs,
                mkfs_opts: Vec::new(),
                guarantee: params.guarantee,
                extent_hint_bytes: DEFAULT_EXTENT_HINT_BYTES,
                thin_unsafe: params.thin_unsafe,
                // Keys would have to reach the node through CSI secrets:
                // not served yet (docs/CSI.md).
                encryption: None,
            };
            let info = pool.create(&id, &opts).map_err(status)?.0;
            if let Some(o) = &info.origin {
                return Err(Status::already_exists(format!("volume {id} exists, made from {}, not empty", o.name)));
            }
            info
        }
        Some(from) => {
            let origin = match from {
                Source::Snapshot(SnapshotSource { snapshot_id: s }) if !s.is_empty() => s,
                Source::Volume(VolumeSource { volume_id: v }) if !v.is_empty() => v,
                Source::Snapshot(_) => return Err(missing("volume_content_source.snapshot.snapshot_id")),
                Source::Volume(_) => return Err(missing("volume_content_source.volume.volume_id")),
            };
            let of = pool.info(origin).map_err(|e| match e.kind {
                ErrorKind::InvalidArgument => Status::not_found(format!("no source {origin:?}: {}", e.message)),
                _ => status(e),
            })?;
            if let Some(f) = asked.filter(|f| *f != of.fs) {
                return Err(Status::invalid_argument(format!("the source {origin} holds {}, not {f}", of.fs)));
            }
            let size = volume_size(of.fs, required.max(of.virtual_size_bytes), limit)
                .ok_or_else(|| out_of_range(of.fs, required.max(of.virtual_size_bytes), limit))?;
            let made = match from {
                Source::Snapshot(_) if ObjectName::parse_snapshot(origin).is_ok() => {
                    pool.clone_snapshot(origin, &id, &|_, _| {})
                }
                Source::Snapshot(_) => return Err(Status::not_found(format!("{origin:?} is not a snapshot id"))),
                Source::Volume(_) if ObjectName::parse_subvolume(origin).is_ok() => {
                    pool.clone_subvolume(origin, &id, &|_, _| {})
                }
                Source::Volume(_) => return Err(Status::not_found(format!("{origin:?} is not a volume id"))),
            };
            let info = made.map_err(status)?.0;
            if params.guarantee && !info.guarantee {
                pool.set_property(&id, subvol_pool::GUARANTEE_PROPERTY, "on").map_err(status)?;
            }
            if info.virtual_size_bytes < size {
                pool.resize(&id, size).map_err(status)?
            } else {
                info
            }
        }
    };
    match info.properties.get(NAME_PROPERTY) {
        Some(n) if *n == req.name => {}
        Some(n) => {
            return Err(Status::already_exists(format!(
                "subvolume {id} belongs to CSI volume {n:?}, not {:?}",
                req.name
            )))
        }
        None => pool.set_property(&id, NAME_PROPERTY, &req.name).map_err(status)?,
    }
    Ok(CreateVolumeResponse { volume: Some(volume(&info, node_id, source)) })
}

/// DeleteVolume: the subvolume goes; its snapshots stay (CSI snapshots
/// outlive their volume). An id that names nothing is already deleted.
pub(crate) fn delete(pool: &Pool, req: DeleteVolumeRequest) -> Result<DeleteVolumeResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(missing("volume_id"));
    }
    if ObjectName::parse_subvolume(&req.volume_id).is_ok() {
        pool.delete(&req.volume_id, false, false, true).map_err(status)?;
    }
    Ok(DeleteVolumeResponse {})
}

/// The subvolume behind a volume id, or NOT_FOUND.
pub(crate) fn existing(pool: &Pool, volume_id: &str) -> Result<SubvolumeInfo, Status> {
    if volume_id.is_empty() {
        return Err(missing("volume_id"));
    }
    match ObjectName::parse_subvolume(volume_id) {
        Ok(_) => pool.info(volume_id).map_err(status),
        Err(_) => Err(Status::not_found(format!("no volume {volume_id:?}"))),
    }
}

/// Whether `id` could be a volume id (paging tokens carry one).
fn volume_id_like(id: &str) -> bool {
    ObjectName::parse_subvolume(id).is_ok_and(|o| o.snapshot.is_none())
}

pub(crate) fn validate(
    pool: &Pool,
    req: ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
    // Required fields first: a missing one is INVALID_ARGUMENT whatever
    // the volume id names.
    if req.volume_id.is_empty() {
        return Err(missing("volume_id"));
    }
    if req.volume_capabilities.is_empty() {
        return Err(missing("volume_capabilities"));
    }
    let info = existing(pool, &req.volume_id)?;
    let why = Params::parse(&req.parameters)
        .err()
        .map(|e| e.message().to_string())
        .or_else(|| (!req.mutable_parameters.is_empty()).then(|| "mutable parameters are not served".to_string()))
        .or_else(|| req.volume_capabilities.iter().find_map(|c| capability::mismatch(info.fs, c)));
    Ok(match why {
        Some(message) => ValidateVolumeCapabilitiesResponse { confirmed: None, message },
        None => ValidateVolumeCapabilitiesResponse {
            confirmed: Some(validate_volume_capabilities_response::Confirmed {
                volume_context: req.volume_context,
                volume_capabilities: req.volume_capabilities,
                parameters: req.parameters,
                mutable_parameters: HashMap::new(),
            }),
            message: String::new(),
        },
    })
}

/// ListVolumes: the subvolumes this driver made (those with a CSI name),
/// by id, each with its condition (the controller's VOLUME_CONDITION).
pub(crate) fn list(pool: &Pool, req: ListVolumesRequest, node_id: &str) -> Result<ListVolumesResponse, Status> {
    let all = pool.list().map_err(status)?;
    let mut ours: Vec<SubvolumeInfo> = all.into_iter().filter(|s| s.properties.contains_key(NAME_PROPERTY)).collect();
    ours.sort_by(|a, b| a.name.cmp(&b.name));
    let (page, next_token) =
        crate::paging::page(ours, |s| s.name.as_str(), volume_id_like, req.max_entries, &req.starting_token)?;
    let mut entries = Vec::with_capacity(page.len());
    for s in &page {
        let condition = match crate::condition::of(pool, &s.name) {
            Ok(c) => c,
            // Deleted since the listing: not an entry any more.
            Err(e) if e.code() == tonic::Code::NotFound => continue,
            Err(e) => return Err(e),
        };
        let status =
            list_volumes_response::VolumeStatus { published_node_ids: Vec::new(), volume_condition: Some(condition) };
        entries.push(list_volumes_response::Entry { volume: Some(volume(s, node_id, None)), status: Some(status) });
    }
    Ok(ListVolumesResponse { entries, next_token })
}

/// ControllerGetVolume: the volume and its condition. A volume whose image
/// was deleted while attached (an orphan) is still answered, abnormal:
/// its data lives on in the mounted filesystem, and the CO should hear so.
pub(crate) fn get(
    pool: &Pool,
    req: ControllerGetVolumeRequest,
    node_id: &str,
) -> Result<ControllerGetVolumeResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(missing("volume_id"));
    }
    if !volume_id_like(&req.volume_id) {
        return Err(Status::not_found(format!("no volume {:?}", req.volume_id)));
    }
    let condition = crate::condition::of(pool, &req.volume_id)?;
    let volume = match pool.info(&req.volume_id) {
        Ok(info) => volume(&info, node_id, None),
        Err(e) if e.kind == ErrorKind::NotFound => Volume {
            volume_id: req.volume_id.clone(),
            accessible_topology: vec![ids::topology(node_id)],
            ..Default::default()
        },
        Err(e) => return Err(status(e)),
    };
    let status = controller_get_volume_response::VolumeStatus {
        published_node_ids: Vec::new(),
        volume_condition: Some(condition),
    };
    Ok(ControllerGetVolumeResponse { volume: Some(volume), status: Some(status) })
}

/// GetCapacity: what the pool can still promise (free space on the host
/// minus outstanding guarantees minus the safety margin), for thin and
/// guaranteed classes alike (docs/CSI.md, "Capacity").
pub(crate) fn capacity(pool: &Pool, req: GetCapacityRequest, node_id: &str) -> Result<GetCapacityResponse, Status> {
    let params = Params::parse(&req.parameters)?;
    if let Some(t) = &req.accessible_topology {
        if t.segments.get(ids::TOPOLOGY_KEY).is_some_and(|n| n != node_id) {
            return Ok(GetCapacityResponse { available_capacity: 0, ..Default::default() });
        }
    }
    let fs = if req.volume_capabilities.is_empty() {
        params.fs.unwrap_or(FsKind::Xfs)
    } else {
        capability::asked_fs(&req.volume_capabilities, &params)?.unwrap_or(FsKind::Xfs)
    };
    let space = pool.space().map_err(status)?;
    let available = pool.budget(&space).map_err(status)?.available();
    let available = i64::try_from(available).unwrap_or(i64::MAX);
    Ok(GetCapacityResponse {
        available_capacity: available,
        maximum_volume_size: params.guarantee.then_some(available),
        minimum_volume_size: Some(fs.min_size_bytes() as i64),
    })
}
