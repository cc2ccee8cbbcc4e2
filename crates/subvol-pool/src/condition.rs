//! Whether a subvolume is in a state its users should hear about: what a
//! front end reports as a volume condition (CSI's VOLUME_CONDITION), from
//! the same facts `list`, `pool status` and `health` use.

use crate::error::{ErrorKind, Result};
use crate::kernel::KernelView;
use crate::orphans::Orphan;
use crate::pool::Pool;

/// What an orphan of a subvolume means to its users: their writes go to an
/// image that no longer has a name, and are lost when it is released.
fn orphaned(name: &str, o: &[Orphan]) -> String {
    let mounts: Vec<String> = o.iter().flat_map(|o| o.mount_points.iter().map(|m| m.display().to_string())).collect();
    let at = if mounts.is_empty() { String::new() } else { format!(", mounted at {}", mounts.join(", ")) };
    format!(
        "an image of {name} was deleted while attached ({}{at}): what is written there is lost when it is released; copy out what is needed, then `subvol pool check --repair`",
        o.iter().map(|o| o.loop_device.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

impl Pool {
    /// `None` while subvolume `name` is usable; else what is wrong and the
    /// way back: the guard froze it (its writers wait for free space), the
    /// kernel shut its filesystem down or made it read-only after an error,
    /// its image's metadata cannot be read, or an image of it was deleted
    /// while attached (an orphan). A name with neither an image nor an
    /// orphan is NotFound.
    pub fn condition(&self, name: &str) -> Result<Option<String>> {
        let info = match self.info(name) {
            Ok(info) => info,
            Err(e) if e.kind == ErrorKind::NotFound => {
                let orphans = self.orphans_named(&KernelView::read()?, name);
                return if orphans.is_empty() { Err(e) } else { Ok(Some(orphaned(name, &orphans))) };
            }
            Err(e) => return Err(e),
        };
        if let Some(advice) = info.failure_advice() {
            return Ok(Some(advice));
        }
        if let Some(f) = self.guard_frozen().into_iter().find(|f| f.name == info.name) {
            return Ok(Some(format!(
                "{} is frozen by the guard since {} because the host is nearly full ({}); its writers wait until space is freed on the host",
                info.name, f.at, f.reason
            )));
        }
        if let Some(p) = info.problem {
            return Ok(Some(format!("{}: {p}; run `subvol pool check`", info.name)));
        }
        let orphans = self.orphans_named(&KernelView::read()?, name);
        Ok((!orphans.is_empty()).then(|| orphaned(name, &orphans)))
    }
}
