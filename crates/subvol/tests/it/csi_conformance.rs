//! The CSI specification's MUST rules, checked against the real driver
//! over its socket, one line per rule, in the spirit of csi-sanity (which
//! needs Go, not available here). Every rule is checked even when an
//! earlier one fails; the test then lists every broken rule by its text.
//! The driver and host are those of `csi.rs` (a pool on a loop-mounted
//! XFS host, torn down on drop).

use crate::csi::*;
use crate::harness::*;
use crate::require_privileges;
use std::collections::HashMap;
use std::fmt::Debug;
use std::path::Path;
use subvol_csi::proto::controller_service_capability::rpc::Type as CtlRpc;
use subvol_csi::proto::controller_service_capability::Type as CtlType;
use subvol_csi::proto::node_service_capability::rpc::Type as NodeRpc;
use subvol_csi::proto::node_service_capability::Type as NodeType;
use subvol_csi::proto::plugin_capability::service::Type as PluginService;
use subvol_csi::proto::plugin_capability::volume_expansion::Type as Expansion;
use subvol_csi::proto::plugin_capability::Type as PluginType;
use subvol_csi::proto::*;
use tonic::{Code, Response, Status};

/// The rules checked so far and those broken.
#[derive(Default)]
struct Rules {
    checked: usize,
    broken: Vec<String>,
}

impl Rules {
    /// `rule` holds when the call failed with `want`.
    fn code<T: Debug>(&mut self, rule: &str, want: Code, got: Result<Response<T>, Status>) {
        self.checked += 1;
        match got {
            Err(s) if s.code() == want => {}
            Err(s) => self.broken.push(format!("{rule}: got {:?} ({})", s.code(), s.message())),
            Ok(r) => self.broken.push(format!("{rule}: got OK {:?}", r.into_inner())),
        }
    }

    /// `rule` holds when the call succeeded; its answer, if so.
    fn ok<T>(&mut self, rule: &str, got: Result<Response<T>, Status>) -> Option<T> {
        self.checked += 1;
        match got {
            Ok(r) => Some(r.into_inner()),
            Err(s) => {
                self.broken.push(format!("{rule}: got {:?} ({})", s.code(), s.message()));
                None
            }
        }
    }

    fn check(&mut self, rule: &str, holds: bool, detail: impl Debug) {
        self.checked += 1;
        if !holds {
            self.broken.push(format!("{rule}: {detail:?}"));
        }
    }

    #[track_caller]
    fn finish(self) {
        assert!(
            self.broken.is_empty(),
            "{} of {} rules broken:\n{}",
            self.broken.len(),
            self.checked,
            self.broken.join("\n")
        );
        eprintln!("{} rules hold", self.checked);
    }
}

fn ctl_caps(r: &ControllerGetCapabilitiesResponse) -> Vec<CtlRpc> {
    r.capabilities
        .iter()
        .filter_map(|c| match c.r#type {
            Some(CtlType::Rpc(rpc)) => CtlRpc::try_from(rpc.r#type).ok(),
            None => None,
        })
        .collect()
}

fn volume_req(id: &str) -> ControllerGetVolumeRequest {
    ControllerGetVolumeRequest { volume_id: id.into() }
}

fn snap_req(source: &str, name: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest { source_volume_id: source.into(), name: name.into(), ..Default::default() }
}

fn list_snaps(max: i32, token: &str, source: &str, id: &str) -> ListSnapshotsRequest {
    ListSnapshotsRequest {
        max_entries: max,
        starting_token: token.into(),
        source_volume_id: source.into(),
        snapshot_id: id.into(),
        ..Default::default()
    }
}

fn snapshot_ids(r: &Option<ListSnapshotsResponse>) -> Vec<String> {
    r.iter().flat_map(|r| r.entries.iter().filter_map(|e| e.snapshot.as_ref().map(|s| s.snapshot_id.clone()))).collect()
}

#[test]
fn csi_conformance_identity_and_controller() {
    require_privileges!("csi_conformance_identity_and_controller");
    let w = World::new();
    let mut r = Rules::default();
    runtime().block_on(identity_and_controller(&w, &mut r));
    r.finish();
    assert_eq!(w.host.run(&["list", "--json"]).json(), serde_json::json!([]));
}

/// The rules of the Identity and Controller services, in the order a CO
/// meets them; every volume and snapshot made is deleted at the end.
async fn identity_and_controller(w: &World, r: &mut Rules) {
    let mut c = Csi::connect(&w.sock).await;
    // Identity.
    let info = r.ok("GetPluginInfo answers", c.ident.get_plugin_info(GetPluginInfoRequest {}).await);
    let info = info.unwrap_or_default();
    let dns = |n: &str| {
        n.len() <= 63
            && n.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && n.ends_with(|ch: char| ch.is_ascii_alphanumeric())
            && n.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
    };
    r.check("GetPluginInfo: name is a domain name of at most 63 characters", dns(&info.name), &info.name);
    r.check("GetPluginInfo: vendor_version is set", !info.vendor_version.is_empty(), &info);
    let plugin =
        r.ok("GetPluginCapabilities answers", c.ident.get_plugin_capabilities(GetPluginCapabilitiesRequest {}).await);
    let controller_service = plugin.iter().flat_map(|p| &p.capabilities).any(
        |c| matches!(&c.r#type, Some(PluginType::Service(s)) if s.r#type == PluginService::ControllerService as i32),
    );
    r.check("GetPluginCapabilities: CONTROLLER_SERVICE, since the Controller is served", controller_service, &plugin);
    let topology_service = PluginService::VolumeAccessibilityConstraints as i32;
    let topology = plugin
        .iter()
        .flat_map(|p| &p.capabilities)
        .any(|c| matches!(&c.r#type, Some(PluginType::Service(s)) if s.r#type == topology_service));
    r.check(
        "GetPluginCapabilities: VOLUME_ACCESSIBILITY_CONSTRAINTS, since volumes have a topology",
        topology,
        &plugin,
    );
    let online = plugin
        .iter()
        .flat_map(|p| &p.capabilities)
        .any(|c| matches!(&c.r#type, Some(PluginType::VolumeExpansion(e)) if e.r#type == Expansion::Online as i32));
    r.check("GetPluginCapabilities: VolumeExpansion ONLINE", online, &plugin);
    r.ok("Probe answers", c.ident.probe(ProbeRequest {}).await);
    let caps = r.ok(
        "ControllerGetCapabilities answers",
        c.ctl.controller_get_capabilities(ControllerGetCapabilitiesRequest {}).await,
    );
    let caps = caps.as_ref().map(ctl_caps).unwrap_or_default();
    for want in [
        CtlRpc::CreateDeleteVolume,
        CtlRpc::ListVolumes,
        CtlRpc::GetCapacity,
        CtlRpc::CreateDeleteSnapshot,
        CtlRpc::ListSnapshots,
        CtlRpc::CloneVolume,
        CtlRpc::VolumeCondition,
        CtlRpc::GetVolume,
        CtlRpc::GetSnapshot,
    ] {
        r.check(&format!("ControllerGetCapabilities: {want:?} (served)"), caps.contains(&want), &caps);
    }
    for not in [
        CtlRpc::PublishUnpublishVolume,
        CtlRpc::ExpandVolume,
        CtlRpc::ModifyVolume,
        CtlRpc::ListVolumesPublishedNodes,
        CtlRpc::PublishReadonly,
        CtlRpc::SingleNodeMultiWriter,
    ] {
        r.check(&format!("ControllerGetCapabilities: no {not:?} (not served)"), !caps.contains(&not), &caps);
    }

    // CreateVolume.
    let base = create_req("conf-a", 400 * MIB, mount_cap(""));
    r.code(
        "CreateVolume without name: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.create_volume(create_req("", 400 * MIB, mount_cap(""))).await,
    );
    let mut no_caps = base.clone();
    no_caps.volume_capabilities.clear();
    r.code(
        "CreateVolume without volume_capabilities: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.create_volume(no_caps).await,
    );
    let mut negative = base.clone();
    negative.capacity_range = Some(CapacityRange { required_bytes: -1, limit_bytes: 0 });
    r.code(
        "CreateVolume with a negative required_bytes: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.create_volume(negative).await,
    );
    let mut inverted = base.clone();
    inverted.capacity_range = Some(CapacityRange { required_bytes: 800 * MIB, limit_bytes: 400 * MIB });
    r.code(
        "CreateVolume with a capacity range nothing fits: OUT_OF_RANGE",
        Code::OutOfRange,
        c.ctl.create_volume(inverted).await,
    );
    let mut mutable = base.clone();
    mutable.mutable_parameters = HashMap::from([("iops".into(), "1".into())]);
    r.code(
        "CreateVolume with mutable_parameters but no MODIFY_VOLUME: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.create_volume(mutable).await,
    );
    r.code(
        "CreateVolume from a snapshot that does not exist: NOT_FOUND",
        Code::NotFound,
        c.ctl.create_volume(from_snapshot(create_req("conf-r", 400 * MIB, mount_cap("")), "csi-none@csi-none")).await,
    );
    r.code(
        "CreateVolume from a volume that does not exist: NOT_FOUND",
        Code::NotFound,
        c.ctl.create_volume(from_volume(create_req("conf-r", 400 * MIB, mount_cap("")), "csi-none")).await,
    );
    let a = r
        .ok("CreateVolume makes a volume", c.ctl.create_volume(base.clone()).await)
        .and_then(|v| v.volume)
        .unwrap_or_default();
    let again = r.ok("CreateVolume again, same name and parameters: OK", c.ctl.create_volume(base.clone()).await);
    r.check("CreateVolume again: the same volume", again.as_ref().and_then(|v| v.volume.as_ref()) == Some(&a), &again);
    r.check("CreateVolume: volume_id is set", !a.volume_id.is_empty(), &a);
    r.check("CreateVolume: capacity_bytes at least required_bytes", a.capacity_bytes >= 400 * MIB, &a);
    r.code(
        "CreateVolume of a name in use with another capacity: ALREADY_EXISTS",
        Code::AlreadyExists,
        c.ctl.create_volume(create_req("conf-a", 600 * MIB, mount_cap(""))).await,
    );
    r.code(
        "CreateVolume of a name in use with another fs type: ALREADY_EXISTS",
        Code::AlreadyExists,
        c.ctl.create_volume(create_req("conf-a", 400 * MIB, mount_cap("ext4"))).await,
    );

    // ControllerGetVolume.
    r.code(
        "ControllerGetVolume without volume_id: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.controller_get_volume(volume_req("")).await,
    );
    r.code(
        "ControllerGetVolume of an unknown volume: NOT_FOUND",
        Code::NotFound,
        c.ctl.controller_get_volume(volume_req("csi-none")).await,
    );
    r.code(
        "ControllerGetVolume of a malformed id: NOT_FOUND",
        Code::NotFound,
        c.ctl.controller_get_volume(volume_req("not/an id")).await,
    );
    let got =
        r.ok("ControllerGetVolume of a volume answers", c.ctl.controller_get_volume(volume_req(&a.volume_id)).await);
    r.check(
        "ControllerGetVolume: the volume CreateVolume returned",
        got.as_ref().and_then(|g| g.volume.as_ref()) == Some(&a),
        &got,
    );
    let cond = got.as_ref().and_then(|g| g.status.as_ref()).and_then(|s| s.volume_condition.as_ref());
    r.check(
        "ControllerGetVolume: status.volume_condition set (VOLUME_CONDITION), normal",
        cond.is_some_and(|c| !c.abnormal),
        &got,
    );

    // ValidateVolumeCapabilities.
    let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    r.code(
        "ValidateVolumeCapabilities without volume_id: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.validate_volume_capabilities(validate("", vec![mount_cap("")])).await,
    );
    r.code(
        "ValidateVolumeCapabilities without capabilities: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.validate_volume_capabilities(validate(&a.volume_id, vec![])).await,
    );
    r.code(
        "ValidateVolumeCapabilities without capabilities, unknown volume: INVALID_ARGUMENT (a missing field first)",
        Code::InvalidArgument,
        c.ctl.validate_volume_capabilities(validate("csi-none", vec![])).await,
    );
    r.code(
        "ValidateVolumeCapabilities of an unknown volume: NOT_FOUND",
        Code::NotFound,
        c.ctl.validate_volume_capabilities(validate("csi-none", vec![mount_cap("")])).await,
    );
    let yes = r.ok(
        "ValidateVolumeCapabilities of a served capability answers",
        c.ctl.validate_volume_capabilities(validate(&a.volume_id, vec![mount_cap("")])).await,
    );
    r.check(
        "ValidateVolumeCapabilities: confirmed when served",
        yes.as_ref().is_some_and(|y| y.confirmed.is_some()),
        &yes,
    );
    let mut mutable = validate(&a.volume_id, vec![mount_cap("")]);
    mutable.mutable_parameters = HashMap::from([("iops".into(), "1".into())]);
    let no = r.ok(
        "ValidateVolumeCapabilities with mutable_parameters answers",
        c.ctl.validate_volume_capabilities(mutable).await,
    );
    r.check(
        "ValidateVolumeCapabilities with mutable_parameters: not confirmed, a message",
        no.as_ref().is_some_and(|n| n.confirmed.is_none() && !n.message.is_empty()),
        &no,
    );

    // Snapshots.
    r.code(
        "CreateSnapshot without name: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.create_snapshot(snap_req(&a.volume_id, "")).await,
    );
    r.code(
        "CreateSnapshot without source_volume_id: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.create_snapshot(snap_req("", "conf-s")).await,
    );
    r.code(
        "CreateSnapshot of a volume that does not exist: NOT_FOUND",
        Code::NotFound,
        c.ctl.create_snapshot(snap_req("csi-none", "conf-s")).await,
    );
    let s = r
        .ok("CreateSnapshot makes a snapshot", c.ctl.create_snapshot(snap_req(&a.volume_id, "conf-s")).await)
        .and_then(|s| s.snapshot)
        .unwrap_or_default();
    let again = r.ok(
        "CreateSnapshot again, same name and source: OK",
        c.ctl.create_snapshot(snap_req(&a.volume_id, "conf-s")).await,
    );
    r.check(
        "CreateSnapshot again: the same snapshot",
        again.as_ref().and_then(|x| x.snapshot.as_ref()) == Some(&s),
        &again,
    );
    r.check(
        "CreateSnapshot: snapshot_id and source_volume_id set",
        !s.snapshot_id.is_empty() && s.source_volume_id == a.volume_id,
        &s,
    );
    r.check("CreateSnapshot: creation_time set, ready_to_use", s.creation_time.is_some() && s.ready_to_use, &s);
    r.check("CreateSnapshot: size_bytes not negative", s.size_bytes >= 0, &s);
    let b = r
        .ok(
            "CreateVolume of a second volume",
            c.ctl.create_volume(create_req("conf-b", 400 * MIB, mount_cap(""))).await,
        )
        .and_then(|v| v.volume)
        .unwrap_or_default();
    r.code(
        "CreateSnapshot of a name in use from another source: ALREADY_EXISTS",
        Code::AlreadyExists,
        c.ctl.create_snapshot(snap_req(&b.volume_id, "conf-s")).await,
    );
    r.code(
        "CreateVolume of a name in use from another source: ALREADY_EXISTS",
        Code::AlreadyExists,
        c.ctl.create_volume(from_snapshot(create_req("conf-b", 400 * MIB, mount_cap("")), &s.snapshot_id)).await,
    );
    let restored = r.ok(
        "CreateVolume from the snapshot",
        c.ctl.create_volume(from_snapshot(create_req("conf-r", 400 * MIB, mount_cap("")), &s.snapshot_id)).await,
    );
    let restored = restored.and_then(|v| v.volume).unwrap_or_default();
    r.check(
        "CreateVolume from a snapshot: content_source names it",
        matches!(
            &restored.content_source,
            Some(VolumeContentSource { r#type: Some(volume_content_source::Type::Snapshot(x)) })
                if x.snapshot_id == s.snapshot_id
        ),
        &restored,
    );
    r.code(
        "GetSnapshot without snapshot_id: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.get_snapshot(GetSnapshotRequest::default()).await,
    );
    r.code(
        "GetSnapshot of an unknown snapshot: NOT_FOUND",
        Code::NotFound,
        c.ctl.get_snapshot(GetSnapshotRequest { snapshot_id: "csi-none@csi-none".into(), ..Default::default() }).await,
    );
    r.code(
        "GetSnapshot of a malformed id: NOT_FOUND",
        Code::NotFound,
        c.ctl.get_snapshot(GetSnapshotRequest { snapshot_id: "no-at-sign".into(), ..Default::default() }).await,
    );
    let got = r.ok(
        "GetSnapshot of a snapshot answers",
        c.ctl.get_snapshot(GetSnapshotRequest { snapshot_id: s.snapshot_id.clone(), ..Default::default() }).await,
    );
    r.check(
        "GetSnapshot: the snapshot CreateSnapshot returned",
        got.as_ref().and_then(|g| g.snapshot.as_ref()) == Some(&s),
        &got,
    );

    // ListSnapshots: filters.
    let one =
        r.ok("ListSnapshots by snapshot_id answers", c.ctl.list_snapshots(list_snaps(0, "", "", &s.snapshot_id)).await);
    r.check("ListSnapshots by snapshot_id: that one", snapshot_ids(&one) == vec![s.snapshot_id.clone()], &one);
    let none = r.ok(
        "ListSnapshots by an unknown snapshot_id: OK",
        c.ctl.list_snapshots(list_snaps(0, "", "", "csi-none@csi-none")).await,
    );
    r.check("ListSnapshots by an unknown snapshot_id: empty", snapshot_ids(&none).is_empty(), &none);
    let mine = r.ok(
        "ListSnapshots by source_volume_id answers",
        c.ctl.list_snapshots(list_snaps(0, "", &a.volume_id, "")).await,
    );
    r.check(
        "ListSnapshots by source_volume_id: its snapshots",
        snapshot_ids(&mine) == vec![s.snapshot_id.clone()],
        &mine,
    );
    let theirs = r
        .ok("ListSnapshots by another source answers", c.ctl.list_snapshots(list_snaps(0, "", &b.volume_id, "")).await);
    r.check("ListSnapshots by a source without snapshots: empty", snapshot_ids(&theirs).is_empty(), &theirs);
    let unknown =
        r.ok("ListSnapshots by an unknown source: OK", c.ctl.list_snapshots(list_snaps(0, "", "csi-none", "")).await);
    r.check("ListSnapshots by an unknown source: empty", snapshot_ids(&unknown).is_empty(), &unknown);
    let crossed = r.ok(
        "ListSnapshots by snapshot_id and another source: OK",
        c.ctl.list_snapshots(list_snaps(0, "", &b.volume_id, &s.snapshot_id)).await,
    );
    r.check(
        "ListSnapshots by snapshot_id and another source: empty (both filters apply)",
        snapshot_ids(&crossed).is_empty(),
        &crossed,
    );
    r.code(
        "ListSnapshots with a token never given: ABORTED",
        Code::Aborted,
        c.ctl.list_snapshots(list_snaps(1, "7", "", "")).await,
    );
    r.code(
        "ListSnapshots with a negative max_entries: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.list_snapshots(list_snaps(-1, "", "", "")).await,
    );

    // ListVolumes: conditions and paging that survives a deletion.
    let mut made = vec![a.volume_id.clone(), b.volume_id.clone(), restored.volume_id.clone()];
    for n in ["conf-c", "conf-d"] {
        let v = r.ok("CreateVolume for paging", c.ctl.create_volume(create_req(n, 300 * MIB, mount_cap(""))).await);
        made.extend(v.and_then(|v| v.volume).map(|v| v.volume_id));
    }
    made.sort();
    let all = r.ok("ListVolumes answers", c.ctl.list_volumes(ListVolumesRequest::default()).await).unwrap_or_default();
    r.check(
        "ListVolumes: every entry has status.volume_condition (VOLUME_CONDITION)",
        all.entries.iter().all(|e| e.status.as_ref().is_some_and(|s| s.volume_condition.is_some())),
        &all,
    );
    let first = r
        .ok(
            "ListVolumes with max_entries 2",
            c.ctl.list_volumes(ListVolumesRequest { max_entries: 2, starting_token: String::new() }).await,
        )
        .unwrap_or_default();
    r.check(
        "ListVolumes: at most max_entries, and a next_token",
        first.entries.len() == 2 && !first.next_token.is_empty(),
        &first,
    );
    // The last entry of the page goes, a new volume comes: the next
    // pages still hold everything else, once.
    let last = first.entries.last().and_then(|e| e.volume.as_ref()).map(|v| v.volume_id.clone()).unwrap_or_default();
    r.ok(
        "DeleteVolume of the page's last entry",
        c.ctl.delete_volume(DeleteVolumeRequest { volume_id: last.clone(), ..Default::default() }).await,
    );
    let new =
        r.ok("CreateVolume between pages", c.ctl.create_volume(create_req("conf-e", 300 * MIB, mount_cap(""))).await);
    made.retain(|v| *v != last);
    made.extend(new.and_then(|v| v.volume).map(|v| v.volume_id));
    made.sort();
    let mut seen: Vec<String> = first
        .entries
        .iter()
        .filter_map(|e| e.volume.as_ref())
        .map(|v| v.volume_id.clone())
        .filter(|v| *v != last)
        .collect();
    let mut token = first.next_token.clone();
    while !token.is_empty() {
        let page = r.ok(
            "ListVolumes with a token it gave, after a deletion: OK",
            c.ctl.list_volumes(ListVolumesRequest { max_entries: 2, starting_token: token }).await,
        );
        let Some(page) = page else { break };
        r.check("ListVolumes: no page longer than max_entries", page.entries.len() <= 2, &page);
        seen.extend(page.entries.iter().filter_map(|e| e.volume.as_ref()).map(|v| v.volume_id.clone()));
        token = page.next_token;
    }
    seen.sort();
    r.check("ListVolumes pages: every volume once, none skipped", seen == made, (&seen, &made));
    r.code(
        "ListVolumes with a token never given: ABORTED",
        Code::Aborted,
        c.ctl.list_volumes(ListVolumesRequest { max_entries: 1, starting_token: "1".into() }).await,
    );
    r.code(
        "ListVolumes with a negative max_entries: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.list_volumes(ListVolumesRequest { max_entries: -1, starting_token: String::new() }).await,
    );
    let cap = r.ok("GetCapacity answers", c.ctl.get_capacity(GetCapacityRequest::default()).await);
    r.check(
        "GetCapacity: available_capacity not negative",
        cap.as_ref().is_some_and(|c| c.available_capacity >= 0),
        cap,
    );

    // Deletes.
    r.code(
        "DeleteSnapshot without snapshot_id: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.delete_snapshot(DeleteSnapshotRequest::default()).await,
    );
    for _ in 0..2 {
        r.ok(
            "DeleteSnapshot, twice: OK",
            c.ctl
                .delete_snapshot(DeleteSnapshotRequest { snapshot_id: s.snapshot_id.clone(), ..Default::default() })
                .await,
        );
    }
    r.ok(
        "DeleteSnapshot of an unknown snapshot: OK",
        c.ctl
            .delete_snapshot(DeleteSnapshotRequest { snapshot_id: "csi-none@csi-none".into(), ..Default::default() })
            .await,
    );
    r.code(
        "GetSnapshot of a deleted snapshot: NOT_FOUND",
        Code::NotFound,
        c.ctl.get_snapshot(GetSnapshotRequest { snapshot_id: s.snapshot_id.clone(), ..Default::default() }).await,
    );
    r.code(
        "DeleteVolume without volume_id: INVALID_ARGUMENT",
        Code::InvalidArgument,
        c.ctl.delete_volume(DeleteVolumeRequest::default()).await,
    );
    r.ok(
        "DeleteVolume of an unknown volume: OK",
        c.ctl.delete_volume(DeleteVolumeRequest { volume_id: "csi-none".into(), ..Default::default() }).await,
    );
    for id in &made {
        for _ in 0..2 {
            r.ok(
                "DeleteVolume, twice: OK",
                c.ctl.delete_volume(DeleteVolumeRequest { volume_id: id.clone(), ..Default::default() }).await,
            );
        }
    }
    r.code(
        "ControllerGetVolume of a deleted volume: NOT_FOUND",
        Code::NotFound,
        c.ctl.controller_get_volume(volume_req(&a.volume_id)).await,
    );
}

#[test]
fn csi_conformance_node() {
    require_privileges!("csi_conformance_node");
    let w = World::new();
    let mut r = Rules::default();
    runtime().block_on(async {
        let mut c = Csi::connect(&w.sock).await;
        let caps =
            r.ok("NodeGetCapabilities answers", c.node.node_get_capabilities(NodeGetCapabilitiesRequest {}).await);
        let has = |t: NodeRpc| {
            caps.iter()
                .flat_map(|c| &c.capabilities)
                .any(|c| matches!(c.r#type, Some(NodeType::Rpc(x)) if x.r#type == t as i32))
        };
        for t in [NodeRpc::StageUnstageVolume, NodeRpc::GetVolumeStats, NodeRpc::ExpandVolume, NodeRpc::VolumeCondition]
        {
            r.check(&format!("NodeGetCapabilities: {t:?} (served)"), has(t), &caps);
        }
        for t in [NodeRpc::SingleNodeMultiWriter, NodeRpc::VolumeMountGroup] {
            r.check(&format!("NodeGetCapabilities: no {t:?} (not served)"), !has(t), &caps);
        }
        let info = r.ok("NodeGetInfo answers", c.node.node_get_info(NodeGetInfoRequest {}).await);
        r.check(
            "NodeGetInfo: node_id set, topology given",
            info.as_ref().is_some_and(|i| !i.node_id.is_empty() && i.accessible_topology.is_some()),
            &info,
        );

        let v = c.create(create_req("conf-node", 400 * MIB, mount_cap(""))).await;
        let (st, tg) = (w.staging("n"), w.target("n"));
        let stage = |id: &str, st: &str, cap: Option<VolumeCapability>| NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: st.into(),
            volume_capability: cap,
            ..Default::default()
        };
        let publish = |id: &str, st: &str, tg: &str, ro: bool| NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: st.into(),
            target_path: tg.into(),
            volume_capability: Some(mount_cap("")),
            readonly: ro,
            ..Default::default()
        };
        let unpublish =
            |id: &str, tg: &str| NodeUnpublishVolumeRequest { volume_id: id.into(), target_path: tg.into() };
        let unstage =
            |id: &str, st: &str| NodeUnstageVolumeRequest { volume_id: id.into(), staging_target_path: st.into() };
        let stats = |id: &str, p: &str| NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: p.into(),
            ..Default::default()
        };
        let expand = |id: &str, p: &str, bytes: i64| NodeExpandVolumeRequest {
            volume_id: id.into(),
            volume_path: p.into(),
            capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
            ..Default::default()
        };

        r.code(
            "NodeStageVolume without volume_id: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_stage_volume(stage("", &st, Some(mount_cap("")))).await,
        );
        r.code(
            "NodeStageVolume without staging_target_path: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_stage_volume(stage(&v.volume_id, "", Some(mount_cap("")))).await,
        );
        r.code(
            "NodeStageVolume without volume_capability: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_stage_volume(stage(&v.volume_id, &st, None)).await,
        );
        r.code(
            "NodeStageVolume of an unknown volume: NOT_FOUND",
            Code::NotFound,
            c.node.node_stage_volume(stage("csi-none", &st, Some(mount_cap("")))).await,
        );
        r.code(
            "NodeStageVolume with a capability the volume cannot serve (block, of a filesystem): FAILED_PRECONDITION",
            Code::FailedPrecondition,
            c.node.node_stage_volume(stage(&v.volume_id, &st, Some(block_cap()))).await,
        );
        r.code(
            "NodePublishVolume before NodeStageVolume: FAILED_PRECONDITION",
            Code::FailedPrecondition,
            c.node.node_publish_volume(publish(&v.volume_id, &st, &tg, false)).await,
        );
        for _ in 0..2 {
            r.ok(
                "NodeStageVolume, twice: OK",
                c.node.node_stage_volume(stage(&v.volume_id, &st, Some(mount_cap("")))).await,
            );
        }
        let elsewhere = w.staging("n2");
        r.code(
            "NodeStageVolume at another staging path: ALREADY_EXISTS",
            Code::AlreadyExists,
            c.node.node_stage_volume(stage(&v.volume_id, &elsewhere, Some(mount_cap("")))).await,
        );
        r.code(
            "NodePublishVolume without volume_id: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_publish_volume(publish("", &st, &tg, false)).await,
        );
        r.code(
            "NodePublishVolume without target_path: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_publish_volume(publish(&v.volume_id, &st, "", false)).await,
        );
        let mut no_cap = publish(&v.volume_id, &st, &tg, false);
        no_cap.volume_capability = None;
        r.code(
            "NodePublishVolume without volume_capability: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_publish_volume(no_cap).await,
        );
        r.code(
            "NodePublishVolume without staging_target_path: FAILED_PRECONDITION",
            Code::FailedPrecondition,
            c.node.node_publish_volume(publish(&v.volume_id, "", &tg, false)).await,
        );
        r.code(
            "NodePublishVolume of an unknown volume id: NOT_FOUND",
            Code::NotFound,
            c.node.node_publish_volume(publish("csi-none", &st, &tg, false)).await,
        );
        for _ in 0..2 {
            r.ok(
                "NodePublishVolume, twice: OK",
                c.node.node_publish_volume(publish(&v.volume_id, &st, &tg, false)).await,
            );
        }
        r.code(
            "NodePublishVolume at the same target, read-only this time: ALREADY_EXISTS",
            Code::AlreadyExists,
            c.node.node_publish_volume(publish(&v.volume_id, &st, &tg, true)).await,
        );
        r.code(
            "DeleteVolume of a published volume: FAILED_PRECONDITION",
            Code::FailedPrecondition,
            c.ctl.delete_volume(DeleteVolumeRequest { volume_id: v.volume_id.clone(), ..Default::default() }).await,
        );

        r.code(
            "NodeGetVolumeStats without volume_id: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_get_volume_stats(stats("", &tg)).await,
        );
        r.code(
            "NodeGetVolumeStats without volume_path: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_get_volume_stats(stats(&v.volume_id, "")).await,
        );
        r.code(
            "NodeGetVolumeStats of an unknown volume: NOT_FOUND",
            Code::NotFound,
            c.node.node_get_volume_stats(stats("csi-none", &tg)).await,
        );
        let gone = w.kube.join("nowhere").to_string_lossy().into_owned();
        r.code(
            "NodeGetVolumeStats of a path that does not exist: NOT_FOUND",
            Code::NotFound,
            c.node.node_get_volume_stats(stats(&v.volume_id, &gone)).await,
        );
        let got = r.ok("NodeGetVolumeStats answers", c.node.node_get_volume_stats(stats(&v.volume_id, &tg)).await);
        r.check(
            "NodeGetVolumeStats: volume_condition set (VOLUME_CONDITION)",
            got.as_ref().is_some_and(|g| g.volume_condition.is_some()),
            &got,
        );

        r.code(
            "NodeExpandVolume without volume_id: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_expand_volume(expand("", &tg, 500 * MIB)).await,
        );
        r.code(
            "NodeExpandVolume without volume_path: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_expand_volume(expand(&v.volume_id, "", 500 * MIB)).await,
        );
        r.code(
            "NodeExpandVolume of an unknown volume: NOT_FOUND",
            Code::NotFound,
            c.node.node_expand_volume(expand("csi-none", &tg, 500 * MIB)).await,
        );
        r.code(
            "NodeExpandVolume with a negative required_bytes: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_expand_volume(expand(&v.volume_id, &tg, -1)).await,
        );
        for _ in 0..2 {
            let grown = r.ok(
                "NodeExpandVolume, twice: OK",
                c.node.node_expand_volume(expand(&v.volume_id, &tg, 500 * MIB)).await,
            );
            r.check(
                "NodeExpandVolume: capacity_bytes at least required_bytes",
                grown.is_some_and(|g| g.capacity_bytes >= 500 * MIB),
                (),
            );
        }

        r.code(
            "NodeUnpublishVolume without volume_id: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_unpublish_volume(unpublish("", &tg)).await,
        );
        r.code(
            "NodeUnpublishVolume without target_path: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_unpublish_volume(unpublish(&v.volume_id, "")).await,
        );
        for _ in 0..2 {
            r.ok("NodeUnpublishVolume, twice: OK", c.node.node_unpublish_volume(unpublish(&v.volume_id, &tg)).await);
        }
        r.check("NodeUnpublishVolume: the target is gone", !Path::new(&tg).exists(), &tg);
        r.code(
            "NodeUnpublishVolume of an unknown volume: NOT_FOUND",
            Code::NotFound,
            c.node.node_unpublish_volume(unpublish("csi-none", &tg)).await,
        );
        r.code(
            "NodeUnstageVolume without volume_id: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_unstage_volume(unstage("", &st)).await,
        );
        r.code(
            "NodeUnstageVolume without staging_target_path: INVALID_ARGUMENT",
            Code::InvalidArgument,
            c.node.node_unstage_volume(unstage(&v.volume_id, "")).await,
        );
        for _ in 0..2 {
            r.ok("NodeUnstageVolume, twice: OK", c.node.node_unstage_volume(unstage(&v.volume_id, &st)).await);
        }
        r.code(
            "NodeUnstageVolume of an unknown volume: NOT_FOUND",
            Code::NotFound,
            c.node.node_unstage_volume(unstage("csi-none", &st)).await,
        );
        c.delete_volume(&v.volume_id).await;
    });
    r.finish();
    assert!(mounts_under(&w.kube).is_empty(), "mounts left: {:?}", mounts_under(&w.kube));
    assert!(loops_under(&w.host.pool).is_empty(), "loop devices left: {:?}", loops_under(&w.host.pool));
}

/// An image deleted while its volume stays staged (an orphan): the
/// controller and the node report the volume abnormal rather than missing,
/// unstage says how to release it, and once released it is NOT_FOUND.
#[test]
fn csi_orphaned_volume_is_abnormal_until_released() {
    require_privileges!("csi_orphaned_volume_is_abnormal_until_released");
    let w = World::new();
    let rt = runtime();
    let mut c = rt.block_on(Csi::connect(&w.sock));
    let v = rt.block_on(c.create(create_req("conf-orphan", 400 * MIB, mount_cap(""))));
    let st = w.staging("o");
    let stage = NodeStageVolumeRequest {
        volume_id: v.volume_id.clone(),
        staging_target_path: st.clone(),
        volume_capability: Some(mount_cap("")),
        ..Default::default()
    };
    rt.block_on(c.node.node_stage_volume(stage)).unwrap();
    std::fs::remove_file(w.host.pool.join(format!("subvolumes/{}.img", v.volume_id))).unwrap();

    let got = rt.block_on(c.ctl.controller_get_volume(volume_req(&v.volume_id))).unwrap().into_inner();
    let cond = got.status.unwrap().volume_condition.unwrap();
    assert!(cond.abnormal && cond.message.contains("deleted while attached"), "{cond:?}");
    let stats =
        NodeGetVolumeStatsRequest { volume_id: v.volume_id.clone(), volume_path: st.clone(), ..Default::default() };
    let node = rt.block_on(c.node.node_get_volume_stats(stats.clone())).unwrap().into_inner();
    assert!(node.volume_condition.unwrap().abnormal);
    let unstage = NodeUnstageVolumeRequest { volume_id: v.volume_id.clone(), staging_target_path: st.clone() };
    let refused = rt.block_on(c.node.node_unstage_volume(unstage.clone())).unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("pool check --repair"), "{refused:?}");

    w.host.run(&["pool", "check", "--repair"]).ok();
    assert_eq!(code(rt.block_on(c.ctl.controller_get_volume(volume_req(&v.volume_id)))), Code::NotFound);
    assert_eq!(code(rt.block_on(c.node.node_get_volume_stats(stats))), Code::NotFound);
    assert_eq!(code(rt.block_on(c.node.node_unstage_volume(unstage))), Code::NotFound);
    assert!(mounts_under(&w.kube).is_empty(), "mounts left: {:?}", mounts_under(&w.kube));
    assert!(loops_under(&w.host.pool).is_empty(), "loop devices left: {:?}", loops_under(&w.host.pool));
}
