//! One CSI call against a running `subvol csi`, timed: what bench/csi.sh
//! measures the driver with. Prints the new object's id and the call's
//! round trip in milliseconds (connecting is not counted), tab-separated.
//!
//!   csi_call SOCKET create NAME BYTES
//!   csi_call SOCKET snapshot VOLUME_ID NAME
//!   csi_call SOCKET restore NAME SNAPSHOT_ID BYTES
//!   csi_call SOCKET delete-volume VOLUME_ID
//!   csi_call SOCKET delete-snapshot SNAPSHOT_ID
//!   csi_call SOCKET probe          (Identity.Probe: opens the pool, nothing else)

use std::time::Instant;
use subvol_csi::proto::controller_client::ControllerClient;
use subvol_csi::proto::identity_client::IdentityClient;
use subvol_csi::proto::volume_capability::access_mode::Mode;
use subvol_csi::proto::volume_capability::{AccessMode, AccessType, MountVolume};
use subvol_csi::proto::volume_content_source::{SnapshotSource, Type as Source};
use subvol_csi::proto::*;
use tonic::transport::Endpoint;

fn volume_request(name: &str, bytes: &str) -> Result<CreateVolumeRequest, String> {
    let bytes: i64 = bytes.parse().map_err(|_| format!("BYTES {bytes:?} is not a number"))?;
    Ok(CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
        }],
        ..Default::default()
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sock, call, rest @ ..] = args.as_slice() else {
        return Err("usage: csi_call SOCKET create|snapshot|restore|delete-volume|delete-snapshot|probe ARGS".into());
    };
    let sock = sock.clone();
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let sock = sock.clone();
        async move { tokio::net::UnixStream::connect(sock).await.map(hyper_util::rt::TokioIo::new) }
    });
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut ident = IdentityClient::new(channel.clone());
    let mut c = ControllerClient::new(channel);
    let start = Instant::now();
    let id = match (call.as_str(), rest) {
        ("create", [name, bytes]) => {
            let r = c.create_volume(volume_request(name, bytes)?).await.map_err(|e| e.to_string())?;
            r.into_inner().volume.map(|v| v.volume_id).unwrap_or_default()
        }
        ("restore", [name, snapshot, bytes]) => {
            let mut req = volume_request(name, bytes)?;
            req.volume_content_source = Some(VolumeContentSource {
                r#type: Some(Source::Snapshot(SnapshotSource { snapshot_id: snapshot.clone() })),
            });
            let r = c.create_volume(req).await.map_err(|e| e.to_string())?;
            r.into_inner().volume.map(|v| v.volume_id).unwrap_or_default()
        }
        ("snapshot", [volume, name]) => {
            let req =
                CreateSnapshotRequest { source_volume_id: volume.clone(), name: name.clone(), ..Default::default() };
            let r = c.create_snapshot(req).await.map_err(|e| e.to_string())?;
            r.into_inner().snapshot.map(|s| s.snapshot_id).unwrap_or_default()
        }
        ("delete-volume", [volume]) => {
            let req = DeleteVolumeRequest { volume_id: volume.clone(), ..Default::default() };
            c.delete_volume(req).await.map_err(|e| e.to_string())?;
            volume.clone()
        }
        ("probe", []) => {
            let r = ident.probe(ProbeRequest {}).await.map_err(|e| e.to_string())?;
            format!("ready={:?}", r.into_inner().ready)
        }
        ("delete-snapshot", [snapshot]) => {
            let req = DeleteSnapshotRequest { snapshot_id: snapshot.clone(), ..Default::default() };
            c.delete_snapshot(req).await.map_err(|e| e.to_string())?;
            snapshot.clone()
        }
        _ => return Err(format!("unknown call or arguments: {call} {}", rest.join(" "))),
    };
    println!("{id}\t{:.3}", start.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}
