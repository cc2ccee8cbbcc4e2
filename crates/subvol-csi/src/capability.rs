//! What a request asks of a volume: StorageClass parameters and volume
//! capabilities, checked and turned into what the pool takes.

use crate::proto::volume_capability::access_mode::Mode;
use crate::proto::volume_capability::AccessType;
use crate::proto::VolumeCapability;
use std::collections::HashMap;
use subvol_core::FsKind;
use tonic::Status;

/// StorageClass parameter: `xfs` or `ext4` (a capability's fs_type wins
/// when both are given and agree; they must agree).
pub(crate) const FS_TYPE: &str = "fsType";
/// StorageClass parameter: `true` reserves the whole size (subvol's
/// `--guarantee`, admission-checked); default thin.
pub(crate) const GUARANTEE: &str = "guarantee";
/// StorageClass parameter: `true` accepts a thin block volume in an
/// overcommitted pool (subvol's `--thin-unsafe`: the guard cannot freeze a
/// raw image, so its user may see I/O errors when the host fills).
pub(crate) const THIN_UNSAFE: &str = "thinUnsafe";
/// Parameters under this prefix are the CO's own (Kubernetes passes PVC
/// and PV names there with --extra-create-metadata); they are ignored.
const CO_PREFIX: &str = "csi.storage.k8s.io/";

/// The StorageClass parameters the driver understands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Params {
    pub fs: Option<FsKind>,
    pub guarantee: bool,
    pub thin_unsafe: bool,
}

fn flag(key: &str, value: &str) -> Result<bool, Status> {
    match value {
        "true" | "on" | "yes" => Ok(true),
        "false" | "off" | "no" | "" => Ok(false),
        _ => Err(Status::invalid_argument(format!("parameter {key} is true or false, not {value:?}"))),
    }
}

fn fs_named(what: &str, name: &str) -> Result<FsKind, Status> {
    match name {
        "xfs" => Ok(FsKind::Xfs),
        "ext4" => Ok(FsKind::Ext4),
        _ => Err(Status::invalid_argument(format!("{what} {name:?} is not served; use xfs or ext4"))),
    }
}

impl Params {
    pub(crate) fn parse(parameters: &HashMap<String, String>) -> Result<Params, Status> {
        let mut p = Params::default();
        for (k, v) in parameters {
            match k.as_str() {
                FS_TYPE if !v.is_empty() => p.fs = Some(fs_named("fsType", v)?),
                FS_TYPE => {}
                GUARANTEE => p.guarantee = flag(k, v)?,
                THIN_UNSAFE => p.thin_unsafe = flag(k, v)?,
                _ if k.starts_with(CO_PREFIX) => {}
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "unknown parameter {k:?}; known: {FS_TYPE}, {GUARANTEE}, {THIN_UNSAFE}"
                    )))
                }
            }
        }
        Ok(p)
    }
}

/// How a volume is used, from its capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    Block,
    Mount { fs: Option<FsKind>, flags: Vec<String> },
}

/// The access modes served: one node, one or more workloads there,
/// read-write or read-only. Volumes live on one node.
fn mode_served(mode: i32) -> bool {
    matches!(Mode::try_from(mode), Ok(Mode::SingleNodeWriter | Mode::SingleNodeReaderOnly))
}

/// Why `cap` cannot be served, if it cannot.
pub(crate) fn unserved(cap: &VolumeCapability) -> Option<String> {
    match &cap.access_mode {
        None => Some("a volume capability has no access_mode".into()),
        Some(m) if !mode_served(m.mode) => Some(format!(
            "access mode {} is not served: volumes live on one node (SINGLE_NODE_WRITER or SINGLE_NODE_READER_ONLY)",
            Mode::try_from(m.mode).map(|m| m.as_str_name()).unwrap_or("unknown")
        )),
        Some(_) => match &cap.access_type {
            None => Some("a volume capability has neither block nor mount".into()),
            Some(AccessType::Mount(m)) if !m.fs_type.is_empty() && fs_named("fs_type", &m.fs_type).is_err() => {
                Some(format!("fs_type {:?} is not served; use xfs or ext4", m.fs_type))
            }
            Some(_) => None,
        },
    }
}

/// One capability's access (it must be served).
pub(crate) fn access(cap: &VolumeCapability) -> Result<Access, Status> {
    if let Some(why) = unserved(cap) {
        return Err(Status::invalid_argument(why));
    }
    Ok(match &cap.access_type {
        Some(AccessType::Mount(m)) => Access::Mount {
            fs: if m.fs_type.is_empty() { None } else { Some(fs_named("fs_type", &m.fs_type)?) },
            flags: m.mount_flags.clone(),
        },
        _ => Access::Block,
    })
}

/// Whether the capability asks for read-only access.
pub(crate) fn read_only(cap: &VolumeCapability) -> bool {
    cap.access_mode.as_ref().is_some_and(|m| m.mode == Mode::SingleNodeReaderOnly as i32)
}

/// The filesystem asked for: raw for block access; else the capabilities'
/// fs_type or the fsType parameter (they must agree), `None` when neither
/// names one (a new volume then gets xfs, a copy its source's). All
/// capabilities must be served and of one access type.
pub(crate) fn asked_fs(caps: &[VolumeCapability], params: &Params) -> Result<Option<FsKind>, Status> {
    if caps.is_empty() {
        return Err(crate::status::missing("volume_capabilities"));
    }
    let accesses = caps.iter().map(access).collect::<Result<Vec<_>, _>>()?;
    let block = accesses.iter().filter(|a| **a == Access::Block).count();
    if block > 0 && block < accesses.len() {
        return Err(Status::invalid_argument("a volume is either a block device or a filesystem, not both"));
    }
    if block > 0 {
        return Ok(Some(FsKind::Raw));
    }
    let mut fs = params.fs;
    for a in &accesses {
        if let Access::Mount { fs: Some(f), .. } = a {
            if fs.is_some_and(|g| g != *f) {
                return Err(Status::invalid_argument(format!(
                    "the capabilities and the fsType parameter ask for different filesystems ({} and {})",
                    f,
                    fs.map(|g| g.to_string()).unwrap_or_default()
                )));
            }
            fs = Some(*f);
        }
    }
    Ok(fs)
}

/// Why volume of filesystem `fs` cannot be used as `cap` asks, if it cannot.
pub(crate) fn mismatch(fs: FsKind, cap: &VolumeCapability) -> Option<String> {
    if let Some(why) = unserved(cap) {
        return Some(why);
    }
    match (access(cap).ok()?, fs) {
        (Access::Block, FsKind::Raw) => None,
        (Access::Block, _) => Some(format!("the volume holds {fs}; it is not a block volume")),
        (Access::Mount { .. }, FsKind::Raw) => Some("the volume is a block volume; it has no filesystem".into()),
        (Access::Mount { fs: Some(f), .. }, _) if f != fs => Some(format!("the volume holds {fs}, not {f}")),
        (Access::Mount { .. }, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::volume_capability::{AccessMode, BlockVolume, MountVolume};

    fn mount(fs: &str, mode: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume { fs_type: fs.into(), ..Default::default() })),
            access_mode: Some(AccessMode { mode: mode as i32 }),
        }
    }

    fn block() -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
        }
    }

    #[test]
    fn filesystems_from_capabilities_and_parameters() {
        let none = Params::default();
        let ext4 = Params { fs: Some(FsKind::Ext4), ..Params::default() };
        let volume_fs = |c: &[VolumeCapability], p: &Params| asked_fs(c, p).map(|f| f.unwrap_or(FsKind::Xfs));
        assert_eq!(volume_fs(&[mount("", Mode::SingleNodeWriter)], &none).unwrap(), FsKind::Xfs);
        assert_eq!(volume_fs(&[mount("", Mode::SingleNodeWriter)], &ext4).unwrap(), FsKind::Ext4);
        assert_eq!(volume_fs(&[mount("ext4", Mode::SingleNodeWriter)], &none).unwrap(), FsKind::Ext4);
        assert!(volume_fs(&[mount("xfs", Mode::SingleNodeWriter)], &ext4).is_err());
        assert_eq!(volume_fs(&[block()], &none).unwrap(), FsKind::Raw);
        assert!(volume_fs(&[block(), mount("", Mode::SingleNodeWriter)], &none).is_err());
        assert!(volume_fs(&[mount("btrfs", Mode::SingleNodeWriter)], &none).is_err());
        assert!(volume_fs(&[mount("", Mode::MultiNodeMultiWriter)], &none).is_err());
        assert!(volume_fs(&[], &none).is_err());
    }

    #[test]
    fn parameters() {
        let p = |kv: &[(&str, &str)]| Params::parse(&kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert!(p(&[("guarantee", "true"), ("csi.storage.k8s.io/pvc/name", "x")]).unwrap().guarantee);
        assert!(p(&[("guarantee", "maybe")]).is_err());
        assert!(p(&[("color", "blue")]).is_err());
        assert_eq!(p(&[("fsType", "ext4")]).unwrap().fs, Some(FsKind::Ext4));
    }

    #[test]
    fn a_volume_matches_its_access() {
        assert_eq!(mismatch(FsKind::Raw, &block()), None);
        assert!(mismatch(FsKind::Xfs, &block()).is_some());
        assert!(mismatch(FsKind::Raw, &mount("", Mode::SingleNodeWriter)).is_some());
        assert!(mismatch(FsKind::Xfs, &mount("ext4", Mode::SingleNodeWriter)).is_some());
        assert_eq!(mismatch(FsKind::Ext4, &mount("", Mode::SingleNodeReaderOnly)), None);
    }
}
