//! Writeback of a file being filled from a stream, on a second thread.
//! Starting writeback (sync_file_range) is synchronous work in the kernel:
//! for data that lands on shared blocks it allocates and remaps each
//! copy-on-write range. Done by the receiving thread it would stall the
//! stream; done on a helper it overlaps with the next writes, and the fsync
//! before publishing finds little left to do.

use std::fs::File;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

pub(super) struct BackgroundWriteback {
    kick: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundWriteback {
    /// Starts the helper for `file` (without one if the descriptor cannot be
    /// duplicated: writeback then simply happens at fsync).
    pub(super) fn start(file: &File) -> Self {
        let Ok(f) = file.try_clone() else {
            return BackgroundWriteback { kick: None, thread: None };
        };
        // One pending kick is enough: a kick covers all dirty pages.
        let (tx, rx) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("writeback".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let _ = subvol_os::pagecache::start_writeback(&f, 0, 0);
                }
            })
            .ok();
        BackgroundWriteback { kick: thread.as_ref().map(|_| tx), thread }
    }

    /// Asks for writeback of everything dirty so far; never blocks.
    pub(super) fn kick(&self) {
        if let Some(tx) = &self.kick {
            let _ = tx.try_send(());
        }
    }
}

impl Drop for BackgroundWriteback {
    fn drop(&mut self) {
        self.kick = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
