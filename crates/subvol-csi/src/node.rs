//! The Node service. Stage mounts the subvolume at the staging path (block
//! volumes: attaches it to a loop device), publish binds that into the
//! pod's target, unpublish and unstage undo them; all of it read back from
//! the kernel's tables on each call, so a restarted driver finishes what
//! an earlier one began. Undoing what is already undone succeeds; a volume
//! id that names nothing is NOT_FOUND, as the spec's error tables say.

use crate::capability::{self, Access};
use crate::driver::Driver;
use crate::proto::node_server::Node;
use crate::proto::node_service_capability::rpc::Type as Rpc;
use crate::proto::node_service_capability::{Rpc as RpcCap, Type};
use crate::proto::*;
use crate::status::{missing, status};
use crate::volumes::existing;
use std::path::{Path, PathBuf};
use subvol_core::capacity::volume_size;
use subvol_core::FsKind;
use subvol_pool::{MountOptions, Outcome, Pool, SubvolumeInfo};
use tonic::{Request, Response, Status};

fn required_path(field: &str, p: &str) -> Result<PathBuf, Status> {
    match p {
        "" => Err(missing(field)),
        p if !p.starts_with('/') => Err(Status::invalid_argument(format!("{field} {p:?} is not absolute"))),
        p => Ok(std::fs::canonicalize(p).unwrap_or_else(|_| PathBuf::from(p))),
    }
}

fn mounted_at(info: &SubvolumeInfo, path: &Path) -> bool {
    info.attachments.iter().any(|a| a.mount_points.iter().any(|m| m == path))
}

fn attached_bare(info: &SubvolumeInfo) -> bool {
    !info.attachments.is_empty() && info.attachments.iter().all(|a| a.mount_points.is_empty())
}

fn stage(pool: &Pool, req: NodeStageVolumeRequest) -> Result<(), Status> {
    let staging = required_path("staging_target_path", &req.staging_target_path)?;
    let cap = req.volume_capability.ok_or_else(|| missing("volume_capability"))?;
    let info = existing(pool, &req.volume_id)?;
    if let Some(why) = capability::mismatch(info.fs, &cap) {
        return Err(Status::failed_precondition(why));
    }
    match capability::access(&cap)? {
        Access::Block => {
            pool.attach(&req.volume_id).map_err(status)?;
        }
        Access::Mount { flags, .. } => {
            let options = Some(flags.join(",")).filter(|o| !o.is_empty());
            let opts = MountOptions { path: Some(staging.clone()), read_only: capability::read_only(&cap), options };
            let out = pool.mount(&req.volume_id, &opts).map_err(status)?;
            if out.mount_point != staging {
                return Err(Status::already_exists(format!(
                    "{} is staged at {}, not {}",
                    req.volume_id,
                    out.mount_point.display(),
                    staging.display()
                )));
            }
        }
    }
    Ok(())
}

fn unstage(pool: &Pool, req: NodeUnstageVolumeRequest) -> Result<(), Status> {
    let staging = required_path("staging_target_path", &req.staging_target_path)?;
    let info = match existing(pool, &req.volume_id) {
        Err(e) if e.code() == tonic::Code::NotFound => return Err(gone(pool, &req.volume_id, e)),
        other => other?,
    };
    if mounted_at(&info, &staging) {
        pool.umount(&req.volume_id, false).map_err(status)?;
    } else if info.fs == FsKind::Raw && attached_bare(&info) {
        pool.detach(&req.volume_id).map_err(status)?;
    }
    Ok(())
}

fn publish(pool: &Pool, req: NodePublishVolumeRequest) -> Result<(), Status> {
    if req.volume_id.is_empty() {
        return Err(missing("volume_id"));
    }
    let target = required_path("target_path", &req.target_path)?;
    let cap = req.volume_capability.ok_or_else(|| missing("volume_capability"))?;
    if req.staging_target_path.is_empty() {
        return Err(Status::failed_precondition("staging_target_path is required: volumes are staged first"));
    }
    let staging = required_path("staging_target_path", &req.staging_target_path)?;
    let info = existing(pool, &req.volume_id)?;
    if let Some(why) = capability::mismatch(info.fs, &cap) {
        return Err(Status::failed_precondition(why));
    }
    let staged = match capability::access(&cap)? {
        Access::Block => attached_bare(&info),
        Access::Mount { .. } => mounted_at(&info, &staging),
    };
    if !staged {
        return Err(Status::failed_precondition(format!(
            "{} is not staged at {}; NodeStageVolume first",
            req.volume_id,
            staging.display()
        )));
    }
    let read_only = req.readonly || capability::read_only(&cap);
    pool.bind(&req.volume_id, &target, read_only).map_err(status)?;
    Ok(())
}

fn unpublish(pool: &Pool, req: NodeUnpublishVolumeRequest) -> Result<(), Status> {
    if req.volume_id.is_empty() {
        return Err(missing("volume_id"));
    }
    let target = required_path("target_path", &req.target_path)?;
    // Whatever of this pool's is there goes first, even a volume's orphan.
    if pool.unbind(&target).map_err(status)? == Outcome::AlreadyDone {
        if let Err(e) = existing(pool, &req.volume_id) {
            if e.code() == tonic::Code::NotFound {
                return Err(gone(pool, &req.volume_id, e));
            }
        }
    }
    Ok(())
}

/// The answer for a volume that has no image: NOT_FOUND, as the spec's
/// tables ask of every node call, unless an image of it was deleted while
/// attached (an orphan, still mounted): then FAILED_PRECONDITION with the
/// way to release it, since unmounting it by name is no longer possible.
fn gone(pool: &Pool, volume_id: &str, not_found: Status) -> Status {
    match crate::condition::of(pool, volume_id) {
        Ok(c) if c.abnormal => Status::failed_precondition(c.message),
        _ => not_found,
    }
}

/// Grows the image and its filesystem (online, through `Pool::resize`).
fn expand(pool: &Pool, req: NodeExpandVolumeRequest) -> Result<NodeExpandVolumeResponse, Status> {
    let path = required_path("volume_path", &req.volume_path)?;
    let info = existing(pool, &req.volume_id)?;
    if !path.exists() {
        return Err(Status::not_found(format!("volume_path {} does not exist", path.display())));
    }
    let range = req.capacity_range.unwrap_or_default();
    if range.required_bytes < 0 || range.limit_bytes < 0 {
        return Err(Status::invalid_argument("capacity_range bounds must not be negative"));
    }
    let (required, limit) = (range.required_bytes as u64, range.limit_bytes as u64);
    let size = match required {
        0 => info.virtual_size_bytes,
        r => volume_size(info.fs, r, limit).ok_or_else(|| Status::out_of_range("no size fits the capacity range"))?,
    };
    let info = if size > info.virtual_size_bytes { pool.resize(&req.volume_id, size).map_err(status)? } else { info };
    Ok(NodeExpandVolumeResponse { capacity_bytes: info.virtual_size_bytes as i64 })
}

#[tonic::async_trait]
impl Node for Driver {
    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        self.with_pool(move |p| stage(p, req)).await.map(|()| Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let req = r.into_inner();
        if req.volume_id.is_empty() {
            return Err(missing("volume_id"));
        }
        self.with_pool(move |p| unstage(p, req)).await.map(|()| Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        self.with_pool(move |p| publish(p, r.into_inner())).await.map(|()| Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        self.with_pool(move |p| unpublish(p, r.into_inner()))
            .await
            .map(|()| Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        self.with_pool(move |p| crate::node_stats::stats(p, r.into_inner())).await.map(Response::new)
    }

    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        self.with_pool(move |p| expand(p, r.into_inner())).await.map(Response::new)
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        let served = [Rpc::StageUnstageVolume, Rpc::GetVolumeStats, Rpc::ExpandVolume, Rpc::VolumeCondition];
        let capabilities = served
            .into_iter()
            .map(|t| NodeServiceCapability { r#type: Some(Type::Rpc(RpcCap { r#type: t as i32 })) })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(&self, _: Request<NodeGetInfoRequest>) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.to_string(),
            max_volumes_per_node: self.max_volumes,
            accessible_topology: Some(crate::ids::topology(&self.node_id)),
        }))
    }
}
