//! Mount points, opened so that no symlink at a component the pool owns is
//! ever followed. The mount base (the pool's `mnt`, or `--mount-base`) must
//! be a real directory owned by root and writable by nobody else; a mount
//! point below it is created with `mkdirat` and opened `O_NOFOLLOW` relative
//! to the base's handle, and the filesystem is mounted onto that handle
//! (`/proc/self/fd/N`), so swapping the path for a symlink between the check
//! and the mount cannot redirect it. An explicit path given to `mount NAME
//! PATH` is the administrator's: its symlinks are resolved once, and the
//! directory it resolves to is mounted by handle.

use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use subvol_core::mountinfo::MountEntry;
use subvol_os::dirfd::{DirHandle, EntryKind};

/// A directory ready to be mounted on.
pub(crate) struct MountPoint {
    pub dir: DirHandle,
    /// The path reported to the user (and found in mountinfo afterwards).
    pub path: PathBuf,
    /// The parent handle and name, when this command created the directory
    /// under the mount base (to remove it again if the mount fails).
    created: Option<(DirHandle, String)>,
}

impl MountPoint {
    /// Removes the directory again if this command created it.
    pub fn remove_if_created(self) {
        if let Some((parent, name)) = &self.created {
            drop(self.dir);
            let _ = parent.rmdir(name);
        }
    }
}

fn planted(path: &Path, what: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!(
            "{} is a symlink (planted?); subvol never {what} through one: remove it (`subvol pool check --repair`) and retry",
            path.display()
        ),
    )
}

/// Refuses a mount base others could plant symlinks in.
pub(crate) fn check_mount_base_owner(dir: &DirHandle) -> Result<()> {
    let o = dir.owner().map_err(|e| Error::os("cannot inspect the mount base", e))?;
    let p = dir.path().display();
    if o.uid != 0 {
        return Err(Error::invalid(format!(
            "mount base {p} is owned by uid {}, not root, who could redirect mounts; run `chown root: {p}` or choose another --mount-base",
            o.uid
        )));
    }
    if o.mode & 0o022 != 0 {
        return Err(Error::invalid(format!(
            "mount base {p} is writable by group or others (mode {:o}), who could redirect mounts; run `chmod go-w {p}`",
            o.mode
        )));
    }
    Ok(())
}

fn utf8_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(format!("{} has no usable last component; give a directory", path.display())))
}

/// The components of `path` below `base`, if it lies (lexically) below it.
fn below(path: &Path, base: &Path) -> Option<Vec<String>> {
    let rest = path.strip_prefix(base).ok()?;
    rest.components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().map(str::to_string),
            _ => None,
        })
        .collect()
}

impl Pool {
    /// Opens the mount base without following a symlink at it, creating it
    /// (mode 755) when `create`; `None` if it does not exist and `!create`.
    /// Refuses one that is a symlink, not root's, or writable by others.
    pub(crate) fn open_mount_base(&self, create: bool) -> Result<Option<DirHandle>> {
        let base = self.mount_base();
        let name = utf8_name(&base)?;
        let parent_path = base.parent().unwrap_or(Path::new("/"));
        if create && !parent_path.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent_path)
                .map_err(|e| Error::io(format!("cannot create {}", parent_path.display()), e))?;
        }
        let parent = match DirHandle::open(parent_path) {
            Ok(p) => p,
            Err(_) if !create => return Ok(None),
            Err(e) => return Err(Error::os("cannot open the mount base's parent", e)),
        };
        match parent.entry_kind(&name).map_err(|e| Error::os("cannot inspect the mount base", e))? {
            EntryKind::Missing if !create => return Ok(None),
            EntryKind::Missing => {
                parent.mkdir(&name, 0o755).map_err(|e| Error::os("cannot create the mount base", e))?;
            }
            EntryKind::Symlink => return Err(planted(&base, "mounts")),
            EntryKind::Other => {
                return Err(Error::invalid(format!(
                    "mount base {} is not a directory; remove it or choose another --mount-base",
                    base.display()
                )))
            }
            EntryKind::Directory => {}
        }
        let dir = parent.child(&name).map_err(|_| planted(&base, "mounts"))?;
        check_mount_base_owner(&dir)?;
        Ok(Some(dir))
    }

    /// Walks `names` below `dir`, creating missing directories (mode 755),
    /// never following a symlink, and refusing a directory not root's.
    fn walk_below(
        &self,
        mut dir: DirHandle,
        names: &[String],
        verb: &str,
    ) -> Result<(DirHandle, Option<(DirHandle, String)>)> {
        for (i, n) in names.iter().enumerate() {
            let path = dir.path().join(n);
            let mut made = false;
            match dir.entry_kind(n).map_err(|e| Error::os("cannot inspect a mount point", e))? {
                EntryKind::Symlink => return Err(planted(&path, verb)),
                EntryKind::Other => {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!("{} exists and is not a directory; remove it or mount elsewhere", path.display()),
                    ))
                }
                EntryKind::Missing => {
                    made = dir.mkdir(n, 0o755).map_err(|e| Error::os("cannot create the mount point", e))?;
                }
                EntryKind::Directory => {}
            }
            let child = dir.child(n).map_err(|_| planted(&path, verb))?;
            let o = child.owner().map_err(|e| Error::os("cannot inspect a mount point", e))?;
            if o.uid != 0 {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{} is owned by uid {}, not root (planted?); remove it (`rmdir {}`) and retry",
                        path.display(),
                        o.uid,
                        path.display()
                    ),
                ));
            }
            if made && i + 1 == names.len() {
                return Ok((child, Some((dir, n.clone()))));
            }
            dir = child;
        }
        Ok((dir, None))
    }

    /// The directory to mount `name` on: `<mount base>/NAME`, or `explicit`.
    pub(crate) fn mount_point_for(&self, name: &str, explicit: Option<&Path>) -> Result<MountPoint> {
        let base = self.mount_base();
        let (path, names) = match explicit {
            None => (base.join(name), vec![name.to_string()]),
            Some(p) => {
                let abs = std::path::absolute(p).map_err(|e| Error::io(format!("bad path {}", p.display()), e))?;
                match below(&abs, &base) {
                    Some(names) if names.is_empty() => {
                        return Err(Error::invalid(format!(
                            "{} is the mount base itself; give a path below it or elsewhere",
                            abs.display()
                        )))
                    }
                    Some(names) => (abs, names),
                    None => return self.explicit_mount_point(&abs),
                }
            }
        };
        let base_dir = self.open_mount_base(true)?.ok_or_else(|| Error::invalid("no mount base"))?;
        let (dir, created) = self.walk_below(base_dir, &names, "mounts")?;
        Ok(MountPoint { dir, path, created })
    }

    /// A path outside the mount base: resolved once (its symlinks are the
    /// administrator's), then held by handle. Never inside the pool.
    fn explicit_mount_point(&self, abs: &Path) -> Result<MountPoint> {
        let inside = |p: &Path| p.starts_with(self.root()) && !p.starts_with(self.mount_base());
        if inside(abs) {
            return Err(Error::invalid(format!(
                "{} is inside the pool; mount at the default place (omit the path) or outside {}",
                abs.display(),
                self.root().display()
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(abs)
            .map_err(|e| Error::io(format!("cannot create mount point {}", abs.display()), e))?;
        let canon =
            std::fs::canonicalize(abs).map_err(|e| Error::io(format!("cannot resolve {}", abs.display()), e))?;
        if inside(&canon) || (canon.starts_with(self.mount_base()) && !abs.starts_with(self.mount_base())) {
            return Err(Error::invalid(format!(
                "{} leads into the pool ({}) through a symlink; give a path outside the pool or omit it",
                abs.display(),
                canon.display()
            )));
        }
        let dir = DirHandle::open_nofollow(&canon)
            .map_err(|e| Error::os(format!("cannot open mount point {}", canon.display()), e))?;
        Ok(MountPoint { dir, path: canon, created: None })
    }

    /// Refuses to unmount `name` while `<mount base>/NAME` is a symlink.
    pub(crate) fn refuse_planted_mount_point(&self, name: &str) -> Result<()> {
        let base = self.mount_base();
        match DirHandle::open(base.parent().unwrap_or(Path::new("/"))) {
            Ok(parent) if parent.entry_kind(&utf8_name(&base)?).ok() == Some(EntryKind::Symlink) => {
                return Err(planted(&base, "unmounts"))
            }
            _ => {}
        }
        if let Ok(Some(dir)) = self.open_mount_base(false) {
            if dir.entry_kind(name).ok() == Some(EntryKind::Symlink) {
                return Err(planted(&base.join(name), "unmounts"));
            }
        }
        Ok(())
    }

    /// Checks that the kernel's mount `m` is still what its path leads to,
    /// without following a symlink below the mount base: the unmount by
    /// path that follows then cannot hit another mount.
    pub(crate) fn verify_mount_point(&self, name: &str, m: &MountEntry) -> Result<()> {
        let mp = &m.mount_point;
        let dir = match below(mp, &self.mount_base()) {
            Some(names) if !names.is_empty() => {
                let base = self.open_mount_base(false)?.ok_or_else(|| planted(&self.mount_base(), "unmounts"))?;
                let mut dir = base;
                for n in &names {
                    dir = dir.child(n).map_err(|_| planted(&mp.clone(), "unmounts"))?;
                }
                dir
            }
            _ => DirHandle::open_nofollow(mp).map_err(|_| planted(mp, "unmounts"))?,
        };
        let id = dir.mount_id().map_err(|e| Error::os(format!("cannot inspect {}", mp.display()), e))?;
        if id != m.mount_id {
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{} no longer leads to the mount of {name} the kernel lists (mount id {} instead of {}); check it (`findmnt {}`) and retry",
                    mp.display(),
                    id,
                    m.mount_id,
                    mp.display()
                ),
            ));
        }
        Ok(())
    }

    /// After an unmount from `mp`: removes it if it is a default mount point
    /// `<mount base>/NAME` (never a directory the administrator chose).
    pub(crate) fn remove_mount_point_if_default(&self, mp: &Path) {
        if mp.parent() == Some(self.mount_base().as_path()) {
            if let Some(n) = mp.file_name().and_then(|n| n.to_str()) {
                self.remove_default_mount_point(n);
            }
        }
    }

    /// Removes `<mount base>/NAME` if it is an empty directory (never
    /// through a symlink).
    pub(crate) fn remove_default_mount_point(&self, name: &str) {
        if let Ok(Some(base)) = self.open_mount_base(false) {
            if base.entry_kind(name).ok() == Some(EntryKind::Directory) {
                let _ = base.rmdir(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::below;
    use std::path::Path;

    #[test]
    fn below_splits_only_clean_descendants() {
        let b = Path::new("/p/mnt");
        assert_eq!(below(Path::new("/p/mnt/a"), b), Some(vec!["a".to_string()]));
        assert_eq!(below(Path::new("/p/mnt/a/b"), b), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(below(Path::new("/p/mnt"), b), Some(vec![]));
        assert_eq!(below(Path::new("/p/mntx"), b), None);
        assert_eq!(below(Path::new("/p/mnt/../etc"), b), None);
    }
}
