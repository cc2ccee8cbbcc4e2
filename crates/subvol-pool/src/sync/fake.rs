//! An in-memory side for the protocol's tests: snapshots with guids and
//! holds, a stream that names what it carries, and failures staged per
//! operation.

use super::side::{SnapshotEntry, SyncSide};
use crate::error::{Error, ErrorKind, Result};
use crate::outcome::Outcome;
use chrono::DateTime;
use std::io::{Read, Write};
use std::sync::Mutex;
use uuid::Uuid;

/// Operations a failure can be staged for. `ReceiveThenFail` receives the
/// whole stream and then reports an error (an acknowledgement lost on the
/// way back); `ReceiveEarly` gives up after reading a few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Snapshots,
    TakeSnapshot,
    Hold,
    Release,
    Send,
    Receive,
    ReceiveThenFail,
    ReceiveEarly,
}

#[derive(Default)]
struct State {
    snaps: Vec<SnapshotEntry>,
    /// Seconds since the epoch of the next snapshot.
    clock: i64,
    failures: Vec<(Op, ErrorKind)>,
    /// How many snapshot names to report as already taken.
    taken_names: u32,
}

pub struct Fake {
    label: String,
    name: String,
    state: Mutex<State>,
}

/// Bytes after the stream's header line, so the stream fills a pipe.
const PADDING: usize = 1 << 20;

impl Fake {
    pub fn new(label: &str) -> Fake {
        let name = label.rsplit(':').next().unwrap_or(label).to_string();
        Fake { label: label.to_string(), name, state: Mutex::new(State { clock: 1_700_000_000, ..State::default() }) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn fail(&self, op: Op, kind: ErrorKind) {
        self.state().failures.push((op, kind));
    }

    pub fn heal(&self) {
        self.state().failures.clear();
    }

    pub fn take_names(&self, n: u32) {
        self.state().taken_names = n;
    }

    /// Adds a snapshot `NAME@snap` with `guid`, as if made long ago.
    pub fn add(&self, snap: &str, guid: u128, age_rank: i64) {
        let entry = SnapshotEntry {
            name: format!("{}@{snap}", self.name),
            guid: Uuid::from_u128(guid),
            created: DateTime::from_timestamp(1_600_000_000 + age_rank, 0).unwrap_or_default(),
            holds: Vec::new(),
        };
        self.state().snaps.push(entry);
    }

    pub fn names(&self) -> Vec<String> {
        self.state().snaps.iter().map(|s| s.name.clone()).collect()
    }

    /// `NAME@SNAP` of every snapshot held with `tag`.
    pub fn held(&self, tag: &str) -> Vec<String> {
        self.state().snaps.iter().filter(|s| s.holds.iter().any(|h| h == tag)).map(|s| s.name.clone()).collect()
    }

    /// Every hold on every snapshot, to see that none was left behind.
    pub fn all_holds(&self) -> Vec<(String, String)> {
        let st = self.state();
        st.snaps.iter().flat_map(|s| s.holds.iter().map(move |h| (s.name.clone(), h.clone()))).collect()
    }

    fn check(&self, op: Op) -> Result<()> {
        match self.state().failures.iter().find(|(o, _)| *o == op) {
            Some((_, kind)) => Err(Error::new(*kind, format!("{}: {op:?} failed", self.label))),
            None => Ok(()),
        }
    }

    fn find(&self, name: &str) -> Result<usize> {
        self.state()
            .snaps
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{}: no {name}", self.label)))
    }
}

impl SyncSide for Fake {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        self.check(Op::Snapshots)?;
        Ok(self.state().snaps.clone())
    }

    fn take_snapshot(&self, snapshot: &str, _tag: &str) -> Result<(SnapshotEntry, Outcome)> {
        self.check(Op::TakeSnapshot)?;
        let mut st = self.state();
        if st.taken_names > 0 {
            st.taken_names -= 1;
            let taken = SnapshotEntry {
                name: snapshot.into(),
                guid: Uuid::new_v4(),
                created: DateTime::default(),
                holds: Vec::new(),
            };
            return Ok((taken, Outcome::AlreadyDone));
        }
        if let Some(there) = st.snaps.iter().find(|s| s.name == snapshot) {
            return Ok((there.clone(), Outcome::AlreadyDone));
        }
        st.clock += 60;
        let made = SnapshotEntry {
            name: snapshot.to_string(),
            guid: Uuid::new_v4(),
            created: DateTime::from_timestamp(st.clock, 0).unwrap_or_default(),
            holds: Vec::new(),
        };
        st.snaps.push(made.clone());
        Ok((made, Outcome::Done))
    }

    fn hold(&self, snapshot: &str, tag: &str) -> Result<()> {
        self.check(Op::Hold)?;
        let i = self.find(snapshot)?;
        let mut st = self.state();
        if !st.snaps[i].holds.iter().any(|h| h == tag) {
            st.snaps[i].holds.push(tag.to_string());
        }
        Ok(())
    }

    fn release(&self, snapshot: &str, tag: &str) -> Result<()> {
        self.check(Op::Release)?;
        let i = self.find(snapshot)?;
        self.state().snaps[i].holds.retain(|h| h != tag);
        Ok(())
    }

    fn delete_snapshot(&self, snapshot: &str) -> Result<()> {
        let i = self.find(snapshot)?;
        let mut st = self.state();
        if !st.snaps[i].holds.is_empty() {
            return Err(Error::new(ErrorKind::Busy, format!("{}: {snapshot} is held", self.label)));
        }
        st.snaps.remove(i);
        Ok(())
    }

    fn estimate(&self, _snapshot: &str, _base: Option<&str>) -> Result<u64> {
        Ok(PADDING as u64)
    }

    fn send(&self, snapshot: &str, base: Option<&str>, _zstd: Option<i32>, out: &mut dyn Write) -> Result<()> {
        self.check(Op::Send)?;
        let st = self.state();
        let guid_of = |n: &str| st.snaps.iter().find(|s| s.name == n).map(|s| s.guid);
        let target = guid_of(snapshot).ok_or_else(|| Error::new(ErrorKind::NotFound, "no snapshot"))?;
        let base = match base {
            Some(b) => guid_of(b).ok_or_else(|| Error::new(ErrorKind::NotFound, "no base"))?.to_string(),
            None => "full".into(),
        };
        let snap = snapshot.split_once('@').map_or("", |(_, s)| s).to_string();
        drop(st);
        let io = |e: std::io::Error| Error::io("fake send", e);
        writeln!(out, "{target} {base} {snap}").map_err(io)?;
        out.write_all(&vec![0u8; PADDING]).map_err(io)
    }

    fn receive(&self, input: &mut dyn Read) -> Result<()> {
        self.check(Op::Receive)?;
        if self.check(Op::ReceiveEarly).is_err() {
            let mut few = [0u8; 16];
            let _ = input.read(&mut few);
            return self.check(Op::ReceiveEarly);
        }
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes).map_err(|e| Error::io("fake receive", e))?;
        let text = String::from_utf8_lossy(&bytes[..bytes.iter().position(|&b| b == b'\n').unwrap_or(0)]).into_owned();
        let mut words = text.split(' ');
        let (Some(guid), Some(base), Some(snap)) = (words.next(), words.next(), words.next()) else {
            return Err(Error::new(ErrorKind::Corrupt, format!("{}: the stream was cut short", self.label)));
        };
        if bytes.len() != text.len() + 1 + PADDING {
            return Err(Error::new(ErrorKind::Corrupt, format!("{}: the stream was cut short", self.label)));
        }
        let mut st = self.state();
        if base != "full" && !st.snaps.iter().any(|s| s.guid.to_string() == base) {
            return Err(Error::new(ErrorKind::NotFound, format!("{}: no base {base}", self.label)));
        }
        st.clock += 1;
        let entry = SnapshotEntry {
            name: format!("{}@{snap}", self.name),
            guid: guid.parse().map_err(|_| Error::new(ErrorKind::Corrupt, "bad guid"))?,
            created: DateTime::from_timestamp(st.clock, 0).unwrap_or_default(),
            holds: Vec::new(),
        };
        st.snaps.push(entry);
        drop(st);
        self.check(Op::ReceiveThenFail)
    }
}
