//! The Controller service: each call runs its pool calls on a blocking
//! thread (volumes.rs, snapshots.rs). Expansion is the node's
//! (NodeExpandVolume), so no EXPAND_VOLUME here and no central resizer.
//! VOLUME_CONDITION, GET_VOLUME and GET_SNAPSHOT read what the node's
//! calls read (`Pool::condition`, `Pool::info`): one process serves both.

use crate::driver::Driver;
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::rpc::Type as Rpc;
use crate::proto::controller_service_capability::{Rpc as RpcCap, Type};
use crate::proto::*;
use crate::{snapshots, volumes};
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Controller for Driver {
    async fn create_volume(&self, r: Request<CreateVolumeRequest>) -> Result<Response<CreateVolumeResponse>, Status> {
        let node = self.node_id.clone();
        self.with_pool(move |p| volumes::create(p, r.into_inner(), &node)).await.map(Response::new)
    }

    async fn delete_volume(&self, r: Request<DeleteVolumeRequest>) -> Result<Response<DeleteVolumeResponse>, Status> {
        self.with_pool(move |p| volumes::delete(p, r.into_inner())).await.map(Response::new)
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        self.with_pool(move |p| volumes::validate(p, r.into_inner())).await.map(Response::new)
    }

    async fn list_volumes(&self, r: Request<ListVolumesRequest>) -> Result<Response<ListVolumesResponse>, Status> {
        let node = self.node_id.clone();
        self.with_pool(move |p| volumes::list(p, r.into_inner(), &node)).await.map(Response::new)
    }

    async fn get_capacity(&self, r: Request<GetCapacityRequest>) -> Result<Response<GetCapacityResponse>, Status> {
        let node = self.node_id.clone();
        self.with_pool(move |p| volumes::capacity(p, r.into_inner(), &node)).await.map(Response::new)
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let served = [
            Rpc::CreateDeleteVolume,
            Rpc::ListVolumes,
            Rpc::GetCapacity,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
            Rpc::VolumeCondition,
            Rpc::GetVolume,
            Rpc::GetSnapshot,
        ];
        let capabilities = served
            .into_iter()
            .map(|t| ControllerServiceCapability { r#type: Some(Type::Rpc(RpcCap { r#type: t as i32 })) })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse { capabilities }))
    }

    async fn create_snapshot(
        &self,
        r: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        self.with_pool(move |p| snapshots::create(p, r.into_inner())).await.map(Response::new)
    }

    async fn delete_snapshot(
        &self,
        r: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        self.with_pool(move |p| snapshots::delete(p, r.into_inner())).await.map(Response::new)
    }

    async fn list_snapshots(
        &self,
        r: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        self.with_pool(move |p| snapshots::list(p, r.into_inner())).await.map(Response::new)
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let node = self.node_id.clone();
        self.with_pool(move |p| volumes::get(p, r.into_inner(), &node)).await.map(Response::new)
    }

    async fn get_snapshot(&self, r: Request<GetSnapshotRequest>) -> Result<Response<GetSnapshotResponse>, Status> {
        self.with_pool(move |p| snapshots::get(p, r.into_inner())).await.map(Response::new)
    }
}
