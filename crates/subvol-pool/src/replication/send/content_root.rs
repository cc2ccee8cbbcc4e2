//! The content root a stream carries: the root of the sent snapshot's
//! manifest, which the receiver checks the image it is about to publish
//! against (docs/STREAM.md, header field `manifest`).
//!
//! The snapshot command builds a new snapshot's manifest in the background;
//! a send that comes first waits for that builder (it holds the build
//! lock; a minute at most), or builds the manifest itself, from the newest older snapshot's
//! (only changed chunks are read). A snapshot whose manifest is damaged, or
//! that was written to after it was taken (its content stamp differs), is
//! sent without a root: the receiver then has nothing to check against,
//! which the report says.

use super::Side;
use crate::error::Result;
use crate::extent_cache::CacheKey;
use crate::manifest_store::{ManifestStore, Stored};
use crate::pool::Pool;
use std::time::{Duration, Instant};
use subvol_core::stream::ContentRoot;

/// How long a send waits for a manifest build before it sends no root.
const BUILD_WAIT: Duration = Duration::from_secs(60);

/// The root a stream carries, or why it carries none.
pub(super) enum Root {
    Carried(ContentRoot),
    None(String),
}

impl Pool {
    pub(super) fn content_root(&self, side: &Side) -> Result<Root> {
        let Some(key) = CacheKey::of(&side.file, side.meta.guid) else {
            return Ok(Root::None("this host has no inode generations to key manifests by".into()));
        };
        // Written to since it was taken (its immutable flag lifted): its
        // manifest, if any, says what it held then, not what is sent.
        if side.meta.content.is_none() {
            return Ok(Root::None(format!("{} has no content stamp (taken by an older subvol)", side.obj)));
        }
        if !crate::extent_cache::sealed(&side.file, &side.meta) {
            return Ok(Root::None(format!("{} was written to after it was taken", side.obj)));
        }
        let store = ManifestStore::new(self.layout.manifests_dir());
        if matches!(store.read(&key, side.meta.guid, side.size), Stored::Missing) {
            // A builder at work (the snapshot's own, or a scrub creating
            // manifests, which may read for hours) is waited for a while.
            let deadline = Instant::now() + BUILD_WAIT;
            while let Some(pid) = crate::worker::holder(&self.layout.build_lock()) {
                if Instant::now() >= deadline {
                    return Ok(Root::None(format!(
                        "the manifest of {} is still being built (process {pid}) after {} s",
                        side.obj,
                        BUILD_WAIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // What the background builder does; waits for one running. A
            // build that fails (a full host, an unreadable chunk) costs the
            // stream its root, not the send.
            if let Err(e) = self.build_after_snapshot(&[side.obj.to_string()], false, &|_| {}, &|_, _| {}) {
                return Ok(Root::None(e.message));
            }
        }
        Ok(match store.read(&key, side.meta.guid, side.size) {
            Stored::Found(m) => Root::Carried(ContentRoot::new(m.geometry().chunk_size(), &m.root())),
            Stored::Missing => Root::None(format!("{} has no manifest", side.obj)),
            Stored::Damaged(why) => Root::None(format!(
                "the manifest of {} is damaged ({why}); `subvol pool check --repair` removes it",
                side.obj
            )),
            Stored::OtherSize(_) => Root::None(format!("{} changed after its manifest was built", side.obj)),
        })
    }
}
