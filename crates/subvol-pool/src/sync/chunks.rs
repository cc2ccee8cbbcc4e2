//! Where `scrub --repair-from` gets good chunks: a pool on this machine
//! (read in-process) or on another host (its `subvol read-chunks` over the
//! ssh transport `sync` uses). Both answer in the same framed, checksummed
//! reply, read here by the same checking reader, so a local replica is
//! trusted no more than a remote one.

use super::remote::{RemoteSide, Ssh};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::Pool;
use std::io::Read;
use std::ops::Range;
use std::path::PathBuf;
use subvol_core::chunk_read::{format_list, Record, Replica, ReplyHeader, ReplyReader};
use subvol_core::Endpoint;

/// A replica and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct RepairFrom {
    pub replica: Replica,
    /// Extra ssh options, as `sync --ssh-opt` takes them.
    pub ssh_options: Vec<String>,
    /// The subvol command on the other host.
    pub remote_bin: String,
}

/// What a replica's reply gives, in order: its header, then records.
pub enum Reply<'a> {
    Header(&'a ReplyHeader),
    Record(Record),
}

fn damaged(replica: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Corrupt, format!("{replica}: {e}"))
}

/// Reads a reply from `input`, giving each part to `on`.
fn read_reply(replica: &str, input: &mut dyn Read, on: &mut dyn FnMut(Reply<'_>) -> Result<()>) -> Result<()> {
    let mut r = ReplyReader::new(input).map_err(|e| damaged(replica, e))?;
    on(Reply::Header(r.header()))?;
    while let Some(rec) = r.next_record().map_err(|e| damaged(replica, e))? {
        on(Reply::Record(rec))?;
    }
    Ok(())
}

impl RepairFrom {
    /// The replica as written.
    pub fn describe(&self) -> String {
        self.replica.to_string()
    }

    /// Asks the replica for chunks `chunks` of the snapshot with `guid`.
    pub fn fetch(
        &self,
        guid: uuid::Uuid,
        chunks: &[Range<u64>],
        on: &mut dyn FnMut(Reply<'_>) -> Result<()>,
    ) -> Result<()> {
        let label = self.describe();
        match &self.replica.host {
            None => {
                let dir = self.replica.pool.clone().unwrap_or_default();
                let pool = Pool::open(&dir).map_err(|e| Error::new(e.kind, format!("{label}: {}", e.message)))?;
                let (mut rx, tx) = std::io::pipe().map_err(|e| Error::io("cannot make a pipe", e))?;
                std::thread::scope(|s| {
                    let writer = s.spawn(move || {
                        let mut tx = tx;
                        pool.read_chunks(guid, chunks, &mut tx)
                    });
                    let read = read_reply(&label, &mut rx, on);
                    // A reader that stopped early: the writer sees a closed pipe.
                    drop(rx);
                    let wrote = writer.join().unwrap_or_else(|_| Err(Error::new(ErrorKind::Io, "the reader panicked")));
                    match (read, wrote) {
                        (Ok(()), w) => w.map_err(|e| Error::new(e.kind, format!("{label}: {}", e.message))),
                        // The replica's own error explains a cut-off reply.
                        (Err(r), Ok(())) => Err(r),
                        (Err(r), Err(w)) if r.kind == ErrorKind::Corrupt => {
                            Err(Error::new(w.kind, format!("{label}: {}", w.message)))
                        }
                        (Err(r), Err(_)) => Err(r),
                    }
                })
            }
            Some(host) => {
                let endpoint = Endpoint { host: Some(host.clone()), pool: self.replica.pool.clone(), name: "-".into() };
                let runner =
                    Ssh { host: host.clone(), options: self.ssh_options.clone(), remote_bin: self.remote_bin.clone() };
                let side = RemoteSide::new(runner, &endpoint).labelled(&label);
                side.read_chunks(&guid.to_string(), &format_list(chunks), &mut |input| read_reply(&label, input, on))
            }
        }
    }
}

/// The local pool directory of a replica, if it is on this machine.
pub fn local_dir(r: &RepairFrom) -> Option<PathBuf> {
    r.replica.host.is_none().then(|| r.replica.pool.clone()).flatten()
}
