//! The CSI driver: `subvol csi` run as a process on a real pool in a
//! loop-mounted XFS host, called over its Unix socket with a tonic client
//! (and, for the `:authority` a kubelet may send, with hand-made HTTP/2
//! frames). The driver is stopped and everything under the host unmounted
//! on drop, whatever the test did.

use crate::harness::*;
use crate::require_privileges;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use subvol_csi::proto::controller_client::ControllerClient;
use subvol_csi::proto::identity_client::IdentityClient;
use subvol_csi::proto::node_client::NodeClient;
use subvol_csi::proto::volume_capability::access_mode::Mode;
use subvol_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use subvol_csi::proto::volume_content_source::{SnapshotSource, Type as Source, VolumeSource};
use subvol_csi::proto::*;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

pub(crate) const NODE: &str = "node-a";
pub(crate) const MIB: i64 = 1 << 20;

/// A running `subvol csi`; stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Driver {
    child: Option<Child>,
}

impl Driver {
    pub(crate) fn start(pool: &Path, sock: &Path) -> Driver {
        let child = Command::new(BIN)
            .arg("--pool")
            .arg(pool)
            .args(["csi", "--endpoint", &format!("unix://{}", sock.display()), "--node-id", NODE])
            .env_remove("SUBVOL_POOL")
            .stdout(Stdio::null())
            .spawn()
            .expect("start subvol csi");
        Driver { child: Some(child) }
    }

    /// SIGKILL: the driver dies mid-lifecycle, as a crashed pod would.
    fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        for _ in 0..50 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A tonic channel over the socket; the authority it sends is `localhost`.
async fn channel(sock: &Path) -> Channel {
    for _ in 0..200 {
        let path = sock.to_path_buf();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move { tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new) }
        });
        if let Ok(ch) = Endpoint::from_static("http://localhost").connect_with_connector(connector).await {
            if IdentityClient::new(ch.clone()).probe(ProbeRequest {}).await.is_ok() {
                return ch;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the driver never answered on {}", sock.display());
}

pub(crate) struct Csi {
    pub(crate) ident: IdentityClient<Channel>,
    pub(crate) ctl: ControllerClient<Channel>,
    pub(crate) node: NodeClient<Channel>,
}

impl Csi {
    pub(crate) async fn connect(sock: &Path) -> Csi {
        let ch = channel(sock).await;
        Csi {
            ident: IdentityClient::new(ch.clone()),
            ctl: ControllerClient::new(ch.clone()),
            node: NodeClient::new(ch),
        }
    }
}

/// A host with a pool, the driver on it, and a "kubelet" directory for
/// staging and target paths.
pub(crate) struct World {
    pub(crate) kube: PathBuf,
    pub(crate) sock: PathBuf,
    pub(crate) driver: Option<Driver>,
    pub(crate) host: TestHost,
}

impl World {
    pub(crate) fn new() -> World {
        let host = TestHost::xfs();
        let kube = host.dir.path().join("kubelet");
        std::fs::create_dir(&kube).unwrap();
        let sock = host.dir.path().join("csi/csi.sock");
        let driver = Some(Driver::start(&host.pool, &sock));
        World { kube, sock, driver, host }
    }

    /// A staging directory, made as the CO makes it.
    pub(crate) fn staging(&self, name: &str) -> String {
        let p = self.kube.join("staging").join(name);
        std::fs::create_dir_all(&p).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// A target path; its parent exists, as the CO ensures.
    pub(crate) fn target(&self, name: &str) -> String {
        let p = self.kube.join("pods").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The driver first, so nothing mounts while the host is torn down.
        self.driver.take();
    }
}

pub(crate) fn mount_cap(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume { fs_type: fs.into(), ..Default::default() })),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    }
}

pub(crate) fn block_cap() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
    }
}

pub(crate) fn create_req(name: &str, bytes: i64, cap: VolumeCapability) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: bytes, limit_bytes: 0 }),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

pub(crate) fn from_snapshot(mut r: CreateVolumeRequest, id: &str) -> CreateVolumeRequest {
    r.volume_content_source =
        Some(VolumeContentSource { r#type: Some(Source::Snapshot(SnapshotSource { snapshot_id: id.into() })) });
    r
}

pub(crate) fn from_volume(mut r: CreateVolumeRequest, id: &str) -> CreateVolumeRequest {
    r.volume_content_source =
        Some(VolumeContentSource { r#type: Some(Source::Volume(VolumeSource { volume_id: id.into() })) });
    r
}

/// The code of a call that must fail.
#[track_caller]
pub(crate) fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

impl Csi {
    /// CreateVolume, twice: the retry must return the same volume.
    pub(crate) async fn create(&mut self, req: CreateVolumeRequest) -> Volume {
        let v = self.ctl.create_volume(req.clone()).await.unwrap().into_inner().volume.unwrap();
        let again = self.ctl.create_volume(req).await.unwrap().into_inner().volume.unwrap();
        assert_eq!(v, again, "a retried CreateVolume returned another volume");
        v
    }

    pub(crate) async fn snapshot(&mut self, volume: &str, name: &str) -> Snapshot {
        let req = CreateSnapshotRequest { source_volume_id: volume.into(), name: name.into(), ..Default::default() };
        let s = self.ctl.create_snapshot(req.clone()).await.unwrap().into_inner().snapshot.unwrap();
        let again = self.ctl.create_snapshot(req).await.unwrap().into_inner().snapshot.unwrap();
        assert_eq!(s, again, "a retried CreateSnapshot returned another snapshot");
        s
    }

    /// NodeStageVolume then NodePublishVolume, each twice.
    pub(crate) async fn stage_publish(
        &mut self,
        id: &str,
        cap: VolumeCapability,
        staging: &str,
        target: &str,
        ro: bool,
    ) {
        let stage = NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.into(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        };
        for _ in 0..2 {
            self.node.node_stage_volume(stage.clone()).await.unwrap();
        }
        let publish = NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.into(),
            target_path: target.into(),
            volume_capability: Some(cap),
            readonly: ro,
            ..Default::default()
        };
        for _ in 0..2 {
            self.node.node_publish_volume(publish.clone()).await.unwrap();
        }
    }

    /// NodeUnpublishVolume then NodeUnstageVolume, each twice; the target
    /// goes.
    pub(crate) async fn unpublish_unstage(&mut self, id: &str, staging: &str, target: &str) {
        let unpublish = NodeUnpublishVolumeRequest { volume_id: id.into(), target_path: target.into() };
        for _ in 0..2 {
            self.node.node_unpublish_volume(unpublish.clone()).await.unwrap();
        }
        assert!(!Path::new(target).exists(), "unpublish left {target}");
        let unstage = NodeUnstageVolumeRequest { volume_id: id.into(), staging_target_path: staging.into() };
        for _ in 0..2 {
            self.node.node_unstage_volume(unstage.clone()).await.unwrap();
        }
    }

    pub(crate) async fn delete_volume(&mut self, id: &str) {
        for _ in 0..2 {
            self.ctl.delete_volume(DeleteVolumeRequest { volume_id: id.into(), ..Default::default() }).await.unwrap();
        }
    }

    pub(crate) async fn delete_snapshot(&mut self, id: &str) {
        for _ in 0..2 {
            let req = DeleteSnapshotRequest { snapshot_id: id.into(), ..Default::default() };
            self.ctl.delete_snapshot(req).await.unwrap();
        }
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn total_bytes(path: &str) -> u64 {
    subvol_os::statfs::statfs(Path::new(path)).unwrap().total_bytes
}

#[test]
fn csi_lifecycle_keeps_data_across_snapshot_restore_clone_and_expand() {
    require_privileges!("csi_lifecycle_keeps_data_across_snapshot_restore_clone_and_expand");
    let w = World::new();
    runtime().block_on(async {
        let mut c = Csi::connect(&w.sock).await;
        let info = c.ident.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.name, subvol_csi::DRIVER_NAME);
        assert_eq!(c.ident.probe(ProbeRequest {}).await.unwrap().into_inner().ready, Some(true));

        let v = c.create(create_req("pvc-lifecycle", 400 * MIB, mount_cap(""))).await;
        assert_eq!(v.capacity_bytes, 400 * MIB);
        assert_eq!(v.accessible_topology[0].segments[subvol_csi::TOPOLOGY_KEY], NODE);
        let (st, tg) = (w.staging("v"), w.target("v"));
        c.stage_publish(&v.volume_id, mount_cap(""), &st, &tg, false).await;
        let before = write_data(&Path::new(&tg).join("data"), 1, 8 << 20);

        let s = c.snapshot(&v.volume_id, "snapshot-1").await;
        assert_eq!(s.source_volume_id, v.volume_id);
        assert!(s.ready_to_use && s.creation_time.is_some());
        let after = write_data(&Path::new(&tg).join("data"), 2, 8 << 20);

        // Restore: the snapshot's data, in a volume of its own.
        let r = c.create(from_snapshot(create_req("pvc-restore", 400 * MIB, mount_cap("")), &s.snapshot_id)).await;
        assert_ne!(r.volume_id, v.volume_id);
        let (rst, rtg) = (w.staging("r"), w.target("r"));
        c.stage_publish(&r.volume_id, mount_cap(""), &rst, &rtg, false).await;
        assert_eq!(hash_file(&Path::new(&rtg).join("data")), before, "the restore lost the snapshot's data");

        // Clone: the volume as it is now, mounted beside it.
        let k = c.create(from_volume(create_req("pvc-clone", 400 * MIB, mount_cap("")), &v.volume_id)).await;
        let (kst, ktg) = (w.staging("k"), w.target("k"));
        c.stage_publish(&k.volume_id, mount_cap(""), &kst, &ktg, true).await;
        assert_eq!(hash_file(&Path::new(&ktg).join("data")), after, "the clone lost the volume's data");
        assert!(std::fs::write(Path::new(&ktg).join("x"), b"x").is_err(), "a read-only publish took a write");

        // Expand while published, twice.
        let grown = total_bytes(&tg);
        for _ in 0..2 {
            let req = NodeExpandVolumeRequest {
                volume_id: v.volume_id.clone(),
                volume_path: tg.clone(),
                capacity_range: Some(CapacityRange { required_bytes: 800 * MIB, limit_bytes: 0 }),
                ..Default::default()
            };
            assert_eq!(c.node.node_expand_volume(req).await.unwrap().into_inner().capacity_bytes, 800 * MIB);
        }
        assert!(total_bytes(&tg) > grown + (300 << 20), "the filesystem did not grow");
        assert_eq!(hash_file(&Path::new(&tg).join("data")), after);

        let stats = c
            .node
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: v.volume_id.clone(),
                volume_path: tg.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.usage.len(), 2, "bytes and inodes: {stats:?}");
        assert!(stats.usage.iter().all(|u| u.total > 0 && u.used > 0), "{stats:?}");
        assert!(!stats.volume_condition.unwrap().abnormal);

        for (id, st, tg) in [(&v.volume_id, &st, &tg), (&r.volume_id, &rst, &rtg), (&k.volume_id, &kst, &ktg)] {
            c.unpublish_unstage(id, st, tg).await;
        }
        assert!(mounts_under(&w.kube).is_empty(), "mounts left: {:?}", mounts_under(&w.kube));
        c.delete_snapshot(&s.snapshot_id).await;
        for id in [&v.volume_id, &r.volume_id, &k.volume_id] {
            c.delete_volume(id).await;
        }
    });
    assert_eq!(w.host.run(&["list", "--snapshots", "--json"]).json(), serde_json::json!([]));
    assert!(loops_under(&w.host.pool).is_empty(), "loop devices left: {:?}", loops_under(&w.host.pool));
    w.host.run(&["pool", "check"]).ok();
}

#[test]
fn csi_block_volume_is_the_loop_device_at_the_target() {
    require_privileges!("csi_block_volume_is_the_loop_device_at_the_target");
    let w = World::new();
    runtime().block_on(async {
        let mut c = Csi::connect(&w.sock).await;
        let v = c.create(create_req("pvc-block", 64 * MIB, block_cap())).await;
        let (st, tg) = (w.staging("b"), w.target("b"));
        c.stage_publish(&v.volume_id, block_cap(), &st, &tg, false).await;
        let meta = std::fs::metadata(&tg).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()), "{tg} is no device");
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&tg).unwrap();
            f.write_all(&data).unwrap();
            f.sync_all().unwrap();
        }
        // An attached block volume is not a problem for `pool check`.
        w.host.run(&["pool", "check"]).ok();
        let s = c.snapshot(&v.volume_id, "block-snap").await;
        let r = c.create(from_snapshot(create_req("pvc-block-restore", 64 * MIB, block_cap()), &s.snapshot_id)).await;
        let (rst, rtg) = (w.staging("rb"), w.target("rb"));
        c.stage_publish(&r.volume_id, block_cap(), &rst, &rtg, false).await;
        let mut back = vec![0u8; data.len()];
        std::io::Read::read_exact(&mut std::fs::File::open(&rtg).unwrap(), &mut back).unwrap();
        assert!(back == data, "the restored block volume differs");
        for (id, st, tg) in [(&v.volume_id, &st, &tg), (&r.volume_id, &rst, &rtg)] {
            c.unpublish_unstage(id, st, tg).await;
        }
        c.delete_snapshot(&s.snapshot_id).await;
        c.delete_volume(&v.volume_id).await;
        c.delete_volume(&r.volume_id).await;
    });
    assert!(loops_under(&w.host.pool).is_empty(), "loop devices left: {:?}", loops_under(&w.host.pool));
    assert!(mounts_under(&w.kube).is_empty());
}

#[test]
fn csi_error_codes() {
    require_privileges!("csi_error_codes");
    let w = World::new();
    runtime().block_on(async {
        let mut c = Csi::connect(&w.sock).await;
        let ok = create_req("pvc-a", 400 * MIB, mount_cap(""));
        // Missing required fields.
        assert_eq!(code(c.ctl.create_volume(create_req("", 400 * MIB, mount_cap(""))).await), Code::InvalidArgument);
        let mut no_caps = ok.clone();
        no_caps.volume_capabilities.clear();
        assert_eq!(code(c.ctl.create_volume(no_caps).await), Code::InvalidArgument);
        let mut no_mode = ok.clone();
        no_mode.volume_capabilities[0].access_mode = None;
        assert_eq!(code(c.ctl.create_volume(no_mode).await), Code::InvalidArgument);
        let mut multi = ok.clone();
        multi.volume_capabilities[0].access_mode = Some(AccessMode { mode: Mode::MultiNodeMultiWriter as i32 });
        assert_eq!(code(c.ctl.create_volume(multi).await), Code::InvalidArgument);
        let mut bad_param = ok.clone();
        bad_param.parameters = HashMap::from([("colour".into(), "blue".into())]);
        assert_eq!(code(c.ctl.create_volume(bad_param).await), Code::InvalidArgument);
        let mut too_small = ok.clone();
        too_small.capacity_range = Some(CapacityRange { required_bytes: 0, limit_bytes: 100 * MIB });
        assert_eq!(code(c.ctl.create_volume(too_small).await), Code::OutOfRange);
        // Same name, same parameters: the volume; different: ALREADY_EXISTS.
        let a = c.create(ok.clone()).await;
        assert_eq!(code(c.ctl.create_volume(create_req("pvc-a", 500 * MIB, mount_cap(""))).await), Code::AlreadyExists);
        assert_eq!(
            code(c.ctl.create_volume(create_req("pvc-a", 400 * MIB, mount_cap("ext4"))).await),
            Code::AlreadyExists
        );
        // No space: a guarantee the host cannot honour.
        let mut huge = create_req("pvc-huge", 64 << 30, mount_cap(""));
        huge.parameters = HashMap::from([("guarantee".into(), "true".into())]);
        assert_eq!(code(c.ctl.create_volume(huge).await), Code::ResourceExhausted);
        // Topology elsewhere.
        let mut elsewhere = create_req("pvc-elsewhere", 400 * MIB, mount_cap(""));
        elsewhere.accessibility_requirements = Some(TopologyRequirement {
            requisite: vec![Topology {
                segments: HashMap::from([(subvol_csi::TOPOLOGY_KEY.to_string(), "node-b".to_string())]),
            }],
            preferred: vec![],
        });
        assert_eq!(code(c.ctl.create_volume(elsewhere).await), Code::ResourceExhausted);
        // Unknown sources.
        let r = from_snapshot(create_req("pvc-r", 400 * MIB, mount_cap("")), "nothing@here");
        assert_eq!(code(c.ctl.create_volume(r).await), Code::NotFound);
        let r = from_volume(create_req("pvc-r", 400 * MIB, mount_cap("")), "nothing");
        assert_eq!(code(c.ctl.create_volume(r).await), Code::NotFound);
        // Deletes: required ids; unknown ids succeed.
        assert_eq!(code(c.ctl.delete_volume(DeleteVolumeRequest::default()).await), Code::InvalidArgument);
        c.delete_volume("no-such-volume").await;
        c.delete_volume("not a valid/name").await;
        assert_eq!(code(c.ctl.delete_snapshot(DeleteSnapshotRequest::default()).await), Code::InvalidArgument);
        c.delete_snapshot("no-such@snapshot").await;
        // Snapshots.
        let snap = |source: &str, name: &str| CreateSnapshotRequest {
            source_volume_id: source.into(),
            name: name.into(),
            ..Default::default()
        };
        assert_eq!(code(c.ctl.create_snapshot(snap("", "s")).await), Code::InvalidArgument);
        assert_eq!(code(c.ctl.create_snapshot(snap(&a.volume_id, "")).await), Code::InvalidArgument);
        assert_eq!(code(c.ctl.create_snapshot(snap("nothing", "s")).await), Code::NotFound);
        c.snapshot(&a.volume_id, "s").await;
        let b = c.create(create_req("pvc-b", 400 * MIB, mount_cap(""))).await;
        assert_eq!(code(c.ctl.create_snapshot(snap(&b.volume_id, "s")).await), Code::AlreadyExists);
        // ValidateVolumeCapabilities.
        let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
            volume_id: id.into(),
            volume_capabilities: caps,
            ..Default::default()
        };
        assert_eq!(
            code(c.ctl.validate_volume_capabilities(validate("", vec![mount_cap("")])).await),
            Code::InvalidArgument
        );
        assert_eq!(
            code(c.ctl.validate_volume_capabilities(validate(&a.volume_id, vec![])).await),
            Code::InvalidArgument
        );
        assert_eq!(
            code(c.ctl.validate_volume_capabilities(validate("nothing", vec![mount_cap("")])).await),
            Code::NotFound
        );
        let yes = c.ctl.validate_volume_capabilities(validate(&a.volume_id, vec![mount_cap("xfs")])).await.unwrap();
        assert!(yes.into_inner().confirmed.is_some());
        let no = c.ctl.validate_volume_capabilities(validate(&a.volume_id, vec![block_cap()])).await.unwrap();
        let no = no.into_inner();
        assert!(no.confirmed.is_none() && !no.message.is_empty());
        // Node calls: missing fields, unknown volumes, no staging.
        let stage = |id: &str, st: &str, cap: Option<VolumeCapability>| NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: st.into(),
            volume_capability: cap,
            ..Default::default()
        };
        let st = w.staging("a");
        assert_eq!(code(c.node.node_stage_volume(stage("", &st, Some(mount_cap("")))).await), Code::InvalidArgument);
        assert_eq!(
            code(c.node.node_stage_volume(stage(&a.volume_id, "", Some(mount_cap("")))).await),
            Code::InvalidArgument
        );
        assert_eq!(code(c.node.node_stage_volume(stage(&a.volume_id, &st, None)).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_stage_volume(stage("nothing", &st, Some(mount_cap("")))).await), Code::NotFound);
        let publish = |id: &str, st: &str, tg: &str| NodePublishVolumeRequest {
            volume_id: id.into(),
            staging_target_path: st.into(),
            target_path: tg.into(),
            volume_capability: Some(mount_cap("")),
            ..Default::default()
        };
        let tg = w.target("a");
        assert_eq!(code(c.node.node_publish_volume(publish("", &st, &tg)).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_publish_volume(publish(&a.volume_id, &st, "")).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_publish_volume(publish(&a.volume_id, "", &tg)).await), Code::FailedPrecondition);
        assert_eq!(code(c.node.node_publish_volume(publish(&a.volume_id, &st, &tg)).await), Code::FailedPrecondition);
        let mut no_cap = publish(&a.volume_id, &st, &tg);
        no_cap.volume_capability = None;
        assert_eq!(code(c.node.node_publish_volume(no_cap).await), Code::InvalidArgument);
        let unpublish =
            |id: &str, tg: &str| NodeUnpublishVolumeRequest { volume_id: id.into(), target_path: tg.into() };
        assert_eq!(code(c.node.node_unpublish_volume(unpublish("", &tg)).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_unpublish_volume(unpublish(&a.volume_id, "")).await), Code::InvalidArgument);
        let unstage =
            |id: &str, st: &str| NodeUnstageVolumeRequest { volume_id: id.into(), staging_target_path: st.into() };
        assert_eq!(code(c.node.node_unstage_volume(unstage("", &st)).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_unstage_volume(unstage(&a.volume_id, "")).await), Code::InvalidArgument);
        let stats = |id: &str, p: &str| NodeGetVolumeStatsRequest {
            volume_id: id.into(),
            volume_path: p.into(),
            ..Default::default()
        };
        assert_eq!(code(c.node.node_get_volume_stats(stats("", &st)).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_get_volume_stats(stats(&a.volume_id, "")).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_get_volume_stats(stats("nothing", &st)).await), Code::NotFound);
        let expand = |id: &str, p: &str| NodeExpandVolumeRequest {
            volume_id: id.into(),
            volume_path: p.into(),
            ..Default::default()
        };
        assert_eq!(code(c.node.node_expand_volume(expand("", &st)).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_expand_volume(expand(&a.volume_id, "")).await), Code::InvalidArgument);
        assert_eq!(code(c.node.node_expand_volume(expand("nothing", &st)).await), Code::NotFound);
        // A mounted volume cannot be deleted.
        c.stage_publish(&a.volume_id, mount_cap(""), &st, &tg, false).await;
        let del = DeleteVolumeRequest { volume_id: a.volume_id.clone(), ..Default::default() };
        assert_eq!(code(c.ctl.delete_volume(del).await), Code::FailedPrecondition);
        c.unpublish_unstage(&a.volume_id, &st, &tg).await;
        // Paging tokens this driver never gave.
        let lv = ListVolumesRequest { max_entries: 1, starting_token: "bogus".into() };
        assert_eq!(code(c.ctl.list_volumes(lv).await), Code::Aborted);
        let ls = ListSnapshotsRequest { max_entries: 1, starting_token: "99".into(), ..Default::default() };
        assert_eq!(code(c.ctl.list_snapshots(ls).await), Code::Aborted);
    });
}

#[test]
fn csi_lists_page_by_two_over_five_snapshots() {
    require_privileges!("csi_lists_page_by_two_over_five_snapshots");
    let w = World::new();
    runtime().block_on(async {
        let mut c = Csi::connect(&w.sock).await;
        let v = c.create(create_req("pvc-paged", 400 * MIB, mount_cap(""))).await;
        let other = c.create(create_req("pvc-other", 400 * MIB, mount_cap(""))).await;
        let mut want = Vec::new();
        for i in 0..5 {
            want.push(c.snapshot(&v.volume_id, &format!("snapshot-{i}")).await.snapshot_id);
        }
        c.snapshot(&other.volume_id, "snapshot-other").await;
        let (mut got, mut token, mut pages) = (Vec::new(), String::new(), Vec::new());
        loop {
            let req = ListSnapshotsRequest {
                max_entries: 2,
                starting_token: token.clone(),
                source_volume_id: v.volume_id.clone(),
                ..Default::default()
            };
            let page = c.ctl.list_snapshots(req).await.unwrap().into_inner();
            pages.push(page.entries.len());
            got.extend(page.entries.into_iter().map(|e| e.snapshot.unwrap().snapshot_id));
            if page.next_token.is_empty() {
                break;
            }
            token = page.next_token;
        }
        assert_eq!(pages, vec![2, 2, 1]);
        got.sort();
        want.sort();
        assert_eq!(got, want);
        let all = c.ctl.list_snapshots(ListSnapshotsRequest::default()).await.unwrap().into_inner();
        assert_eq!(all.entries.len(), 6);
        let one = ListSnapshotsRequest { snapshot_id: want[3].clone(), ..Default::default() };
        let one = c.ctl.list_snapshots(one).await.unwrap().into_inner();
        assert_eq!(one.entries.len(), 1);
        let bad = ListSnapshotsRequest { max_entries: 2, starting_token: "not-a-token".into(), ..Default::default() };
        assert_eq!(code(c.ctl.list_snapshots(bad).await), Code::Aborted);
        let vols = c.ctl.list_volumes(ListVolumesRequest { max_entries: 1, starting_token: String::new() }).await;
        let vols = vols.unwrap().into_inner();
        assert_eq!(vols.entries.len(), 1);
        assert!(!vols.next_token.is_empty());
        let rest = ListVolumesRequest { max_entries: 1, starting_token: vols.next_token };
        let rest = c.ctl.list_volumes(rest).await.unwrap().into_inner();
        assert_eq!((rest.entries.len(), rest.next_token.as_str()), (1, ""));
        let cap = c.ctl.get_capacity(GetCapacityRequest::default()).await.unwrap().into_inner();
        assert!(cap.available_capacity > 0 && cap.available_capacity < 6 << 30, "{cap:?}");
    });
}

#[test]
fn csi_concurrent_creates_of_one_name_make_one_volume() {
    require_privileges!("csi_concurrent_creates_of_one_name_make_one_volume");
    let w = World::new();
    let ids: Vec<String> = runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let sock = w.sock.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Csi::connect(&sock).await;
                let r = c.ctl.create_volume(create_req("pvc-race", 400 * MIB, mount_cap(""))).await;
                r.unwrap().into_inner().volume.unwrap().volume_id
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids
    });
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let list = w.host.run(&["list", "--json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[test]
fn csi_driver_killed_mid_lifecycle_is_finished_by_the_next() {
    require_privileges!("csi_driver_killed_mid_lifecycle_is_finished_by_the_next");
    let mut w = World::new();
    let (st, tg) = (w.staging("v"), w.target("v"));
    let rt = runtime();
    let (id, hash) = rt.block_on(async {
        let mut c = Csi::connect(&w.sock).await;
        let v = c.create(create_req("pvc-restart", 400 * MIB, mount_cap(""))).await;
        c.stage_publish(&v.volume_id, mount_cap(""), &st, &tg, false).await;
        (v.volume_id, write_data(&Path::new(&tg).join("data"), 7, 4 << 20))
    });
    w.driver.take().unwrap().kill();
    w.driver = Some(Driver::start(&w.host.pool, &w.sock));
    rt.block_on(async {
        let mut c = Csi::connect(&w.sock).await;
        // The new driver sees what the old one did, and finishes it.
        c.stage_publish(&id, mount_cap(""), &st, &tg, false).await;
        assert_eq!(hash_file(&Path::new(&tg).join("data")), hash);
        let stats = NodeGetVolumeStatsRequest { volume_id: id.clone(), volume_path: tg.clone(), ..Default::default() };
        c.node.node_get_volume_stats(stats).await.unwrap();
        c.unpublish_unstage(&id, &st, &tg).await;
        c.delete_volume(&id).await;
    });
    assert!(mounts_under(&w.kube).is_empty());
    assert!(loops_under(&w.host.pool).is_empty());
    assert_eq!(w.host.run(&["list", "--json"]).json(), serde_json::json!([]));
}

/// An HPACK literal without indexing (new name, plain strings).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        assert!(s.len() < 127);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// GetPluginInfo in hand-made HTTP/2 frames with `authority`; the reply's
/// DATA payload, or the frame type that ended the stream instead.
fn raw_plugin_info(sock: &Path, authority: &str) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut block = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/csi.v1.Identity/GetPluginInfo"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, n, v);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(4, 0, 0, &[]));
    out.extend(frame(1, 0x4, 1, &block));
    out.extend(frame(0, 0x1, 1, &[0, 0, 0, 0, 0]));
    s.write_all(&out).unwrap();
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).map_err(|e| format!("no reply: {e}"))?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        match (head[3], stream) {
            (4, 0) if head[4] & 1 == 0 => s.write_all(&frame(4, 1, 0, &[])).unwrap(),
            (0, 1) => return Ok(payload),
            (3, 1) => return Err("RST_STREAM".into()),
            (7, _) => return Err("GOAWAY".into()),
            _ => {}
        }
    }
}

#[test]
fn csi_answers_whatever_authority_the_client_sends() {
    require_privileges!("csi_answers_whatever_authority_the_client_sends");
    let w = World::new();
    runtime().block_on(async {
        // `localhost`, as tonic and newer grpc-go send it.
        let mut c = Csi::connect(&w.sock).await;
        let info = c.ident.get_plugin_info(GetPluginInfoRequest {}).await.unwrap().into_inner();
        assert_eq!(info.name, subvol_csi::DRIVER_NAME);
    });
    // The socket path, as older kubelets send it.
    for authority in [w.sock.to_str().unwrap(), "localhost", "%2Frun%2Fcsi.sock"] {
        let data = raw_plugin_info(&w.sock, authority).unwrap_or_else(|e| panic!("{authority}: {e}"));
        let name = subvol_csi::DRIVER_NAME.as_bytes();
        assert!(data.windows(name.len()).any(|x| x == name), "{authority}: {data:?}");
    }
}

#[test]
fn csi_volume_condition_names_a_frozen_or_shut_down_volume() {
    require_privileges!("csi_volume_condition_names_a_frozen_or_shut_down_volume");
    let w = World::new();
    let rt = runtime();
    let mut c = rt.block_on(Csi::connect(&w.sock));
    let v = rt.block_on(c.create(create_req("pvc-cond", 400 * MIB, mount_cap(""))));
    let (st, tg) = (w.staging("c"), w.target("c"));
    rt.block_on(c.stage_publish(&v.volume_id, mount_cap(""), &st, &tg, false));
    let condition = |c: &mut Csi| {
        let req =
            NodeGetVolumeStatsRequest { volume_id: v.volume_id.clone(), volume_path: tg.clone(), ..Default::default() };
        rt.block_on(c.node.node_get_volume_stats(req)).unwrap().into_inner().volume_condition.unwrap()
    };
    assert!(!condition(&mut c).abnormal);
    // The guard freezes it (as if the host were nearly full).
    w.host.run(&["guard", "--once", "--low-watermark", "100T"]).ok();
    let frozen = condition(&mut c);
    assert!(frozen.abnormal && frozen.message.contains("frozen by the guard"), "{frozen:?}");
    w.host.run(&["guard", "--once"]).ok();
    assert!(!condition(&mut c).abnormal);
    // The kernel shuts its filesystem down.
    sh("xfs_io", &["-x", "-c", "shutdown", &st]);
    let down = condition(&mut c);
    assert!(down.abnormal && down.message.contains("shut down"), "{down:?}");
    rt.block_on(c.unpublish_unstage(&v.volume_id, &st, &tg));
    rt.block_on(c.delete_volume(&v.volume_id));
    assert!(mounts_under(&w.kube).is_empty());
}
