//! Whether a subvolume is in a state its users should hear about: what a
//! front end reports as a volume condition (CSI's VOLUME_CONDITION), from
//! the same facts `list`, `pool status` and `health` use.

use crate::error::Result;
use crate::pool::Pool;

impl Pool {
    /// `None` while subvolume `name` is usable; else what is wrong and the
    /// way back: the guard froze it (its writers wait for free space), the
    /// kernel shut its filesystem down or made it read-only after an error,
    /// or its image's metadata cannot be read.
    pub fn condition(&self, name: &str) -> Result<Option<String>> {
        let info = self.info(name)?;
        if let Some(advice) = info.failure_advice() {
            return Ok(Some(advice));
        }
        if let Some(f) = self.guard_frozen().into_iter().find(|f| f.name == info.name) {
            return Ok(Some(format!(
                "{} is frozen by the guard since {} because the host is nearly full ({}); its writers wait until space is freed on the host",
                info.name, f.at, f.reason
            )));
        }
        Ok(info.problem.map(|p| format!("{}: {p}; run `subvol pool check`", info.name)))
    }
}
