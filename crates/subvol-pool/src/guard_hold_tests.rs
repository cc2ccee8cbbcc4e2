//! The guard's freeze, reclaim and thaw order on every path, against a
//! recording fake with a model of which filesystems the kernel holds frozen
//! (and by whom): no root, no loop devices.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    WriteRecord { name: String, hard: bool, ok: bool },
    RemoveRecord(String),
    Freeze { name: String, ok: bool },
    Thaw { name: String, ok: bool },
    Reclaim,
}

/// Who froze a filesystem, in the kernel model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Guard,
    /// A snapshot's window: the guard must leave it alone.
    Snapshot,
}

#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<Call>>,
    records: Mutex<BTreeMap<String, GuardFreeze>>,
    kernel: Mutex<BTreeMap<String, Holder>>,
    fail_record: Mutex<BTreeSet<String>>,
    fail_freeze: BTreeMap<String, i32>,
    fail_thaw: BTreeSet<String>,
    /// What reclaiming gives back (`None`: nothing), as the free bytes after.
    reclaim_to: Option<u64>,
    panic_in_reclaim: bool,
    /// A freeze that panics on its thread.
    panic_in_freeze: Option<String>,
    /// Freezes in flight now and at most, to see them run at once.
    in_flight: Mutex<(usize, usize)>,
    arrived: Condvar,
    wait_for_parallel: usize,
    /// The candidates of the reaction under way.
    reacting: Mutex<Vec<String>>,
    /// Anything the guard did that it must never do.
    violations: Mutex<Vec<String>>,
}

fn name_of(mp: &Path) -> String {
    mp.file_name().unwrap().to_string_lossy().into_owned()
}

fn errno(op: &'static str, mp: &Path, n: i32) -> subvol_os::OsError {
    subvol_os::OsError::sys(op, Some(mp), std::io::Error::from_raw_os_error(n))
}

impl Fake {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
    fn guard_frozen_in_kernel(&self) -> BTreeSet<String> {
        self.kernel.lock().unwrap().iter().filter(|(_, h)| **h == Holder::Guard).map(|(n, _)| n.clone()).collect()
    }
    fn records(&self) -> BTreeSet<String> {
        self.records.lock().unwrap().keys().cloned().collect()
    }
}

impl GuardOps for &Fake {
    fn records(&self) -> Vec<GuardFreeze> {
        self.records.lock().unwrap().values().cloned().collect()
    }

    fn write_record(&self, record: &GuardFreeze) -> std::io::Result<()> {
        let ok = !self.fail_record.lock().unwrap().contains(&record.name);
        self.record(Call::WriteRecord { name: record.name.clone(), hard: record.hard, ok });
        if !ok {
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.records.lock().unwrap().insert(record.name.clone(), record.clone());
        Ok(())
    }

    fn remove_record(&self, name: &str) {
        self.record(Call::RemoveRecord(name.to_string()));
        self.records.lock().unwrap().remove(name);
    }

    fn freeze(&self, mp: &Path) -> OsResult<()> {
        let name = name_of(mp);
        if self.panic_in_freeze.as_ref() == Some(&name) {
            panic!("a bug in the freeze of {name}");
        }
        if self.wait_for_parallel > 0 {
            let mut n = self.in_flight.lock().unwrap();
            n.0 += 1;
            n.1 = n.1.max(n.0);
            self.arrived.notify_all();
            let (mut n, _) =
                self.arrived.wait_timeout_while(n, Duration::from_secs(2), |n| n.1 < self.wait_for_parallel).unwrap();
            n.0 -= 1;
        }
        let result = if let Some(e) = self.fail_freeze.get(&name) {
            Err(errno("FIFREEZE", mp, *e))
        } else {
            let mut k = self.kernel.lock().unwrap();
            if k.contains_key(&name) {
                Err(errno("FIFREEZE", mp, libc::EBUSY))
            } else {
                let recorded = self.records.lock().unwrap().contains_key(&name);
                if !recorded && !self.fail_record.lock().unwrap().contains(&name) {
                    self.violations.lock().unwrap().push(format!("{name} frozen before its record"));
                }
                k.insert(name.clone(), Holder::Guard);
                Ok(())
            }
        };
        self.record(Call::Freeze { name, ok: result.is_ok() });
        result
    }

    fn thaw(&self, mp: &Path) -> OsResult<()> {
        let name = name_of(mp);
        let ok = !self.fail_thaw.contains(&name);
        self.record(Call::Thaw { name: name.clone(), ok });
        if !ok {
            return Err(errno("FITHAW", mp, libc::EIO));
        }
        match self.kernel.lock().unwrap().remove(&name) {
            Some(Holder::Guard) => Ok(()),
            Some(Holder::Snapshot) => {
                self.violations.lock().unwrap().push(format!("thawed {name}, which a snapshot held"));
                Ok(())
            }
            None => Err(errno("FITHAW", mp, libc::EINVAL)),
        }
    }

    fn reclaim(&mut self, _: &mut dyn FnMut(Event)) -> bool {
        self.record(Call::Reclaim);
        // Reclaiming happens while every candidate that could be frozen is.
        let kernel = self.kernel.lock().unwrap();
        for n in self.reacting.lock().unwrap().iter() {
            if !kernel.contains_key(n) && !self.fail_freeze.contains_key(n) {
                self.violations.lock().unwrap().push(format!("reclaimed while {n} was not frozen"));
            }
        }
        drop(kernel);
        if self.panic_in_reclaim {
            panic!("a bug while frozen");
        }
        self.reclaim_to.is_some()
    }

    fn free_bytes(&self) -> Option<u64> {
        self.reclaim_to
    }
}

fn candidates(names: &[&str]) -> Vec<Candidate> {
    names.iter().map(|n| Candidate { name: n.to_string(), mount_point: PathBuf::from(format!("/mnt/{n}")) }).collect()
}

/// Logs into a vector.
/// Keeps the sentence of each event, as the text log prints it.
fn logger(lines: &mut Vec<String>) -> impl FnMut(Event) + '_ {
    move |e| lines.push(e.message)
}

const HIGH: u64 = 1000;

fn react(hold: &mut Hold<&Fake>, names: &[&str], hard: bool, lines: &mut Vec<String>) -> Reacted {
    *hold.ops.reacting.lock().unwrap() = names.iter().map(|n| n.to_string()).collect();
    hold.react(&candidates(names), &Numbers::note("host free 1M"), hard, 0, HIGH, &mut logger(lines))
}

fn ok_freeze(n: &str) -> Call {
    Call::Freeze { name: n.into(), ok: true }
}
fn ok_thaw(n: &str) -> Call {
    Call::Thaw { name: n.into(), ok: true }
}
fn ok_record(n: &str, hard: bool) -> Call {
    Call::WriteRecord { name: n.into(), hard, ok: true }
}
fn removed(n: &str) -> Call {
    Call::RemoveRecord(n.into())
}

#[test]
fn a_reaction_records_all_then_freezes_all_then_reclaims_then_thaws_at_high() {
    let fake = Fake { reclaim_to: Some(HIGH), ..Fake::default() };
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, false);
    let r = react(&mut hold, &["a", "b", "c"], true, &mut lines);
    assert_eq!(r.froze, ["a", "b", "c"]);
    assert!(r.thawed);
    let calls = fake.calls();
    assert_eq!(calls[..3], [ok_record("a", true), ok_record("b", true), ok_record("c", true)]);
    let mut freezes = calls[3..6].to_vec();
    freezes.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(freezes, [ok_freeze("a"), ok_freeze("b"), ok_freeze("c")]);
    assert_eq!(
        calls[6..],
        [Call::Reclaim, ok_thaw("a"), removed("a"), ok_thaw("b"), removed("b"), ok_thaw("c"), removed("c")]
    );
    assert!(fake.guard_frozen_in_kernel().is_empty() && fake.records().is_empty());
    assert!(lines.iter().any(|l| l.contains("froze a at /mnt/a") && l.ends_with("(until the high watermark)")));
    assert!(lines.iter().any(|l| l.starts_with("guard: reclaim made room")), "{lines:?}");
    drop(hold);
    assert_eq!(fake.calls().len(), calls.len(), "the drop did something more");
}

#[test]
fn the_freezes_run_at_once() {
    let fake = Fake { wait_for_parallel: 4, ..Fake::default() };
    let mut hold = Hold::new(&fake, false);
    let r = react(&mut hold, &["a", "b", "c", "d"], true, &mut Vec::new());
    assert_eq!(r.froze.len(), 4);
    assert_eq!(fake.in_flight.lock().unwrap().1, 4, "the freezes ran one after another");
}

#[test]
fn without_room_after_reclaim_it_holds_until_told_to_thaw() {
    let fake = Fake::default();
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, false);
    let r = react(&mut hold, &["a", "b"], false, &mut lines);
    assert!(!r.thawed);
    assert_eq!(fake.guard_frozen_in_kernel().len(), 2);
    assert!(hold.frozen().iter().all(|f| !f.hard));
    // The next sample: already frozen, not frozen twice.
    let r = react(&mut hold, &["a", "b"], false, &mut lines);
    assert!(r.froze.is_empty());
    hold.harden();
    assert!(hold.frozen().iter().all(|f| f.hard));
    hold.thaw_all(&Numbers::note("headroom is back"), &mut logger(&mut lines));
    let thaws = fake.calls().iter().filter(|c| matches!(c, Call::Thaw { .. })).count();
    assert_eq!(thaws, 2);
    assert!(fake.guard_frozen_in_kernel().is_empty() && fake.records().is_empty());
    assert!(lines.iter().any(|l| l == "guard: thawed a at /mnt/a: headroom is back"), "{lines:?}");
}

#[test]
fn a_failed_freeze_leaves_no_record_and_is_never_thawed() {
    for failing in ["a", "b", "c"] {
        let fake = Fake { fail_freeze: [(failing.to_string(), libc::EIO)].into(), ..Fake::default() };
        let mut lines = Vec::new();
        let mut hold = Hold::new(&fake, false);
        let r = react(&mut hold, &["a", "b", "c"], true, &mut lines);
        assert!(!r.froze.contains(&failing.to_string()));
        assert!(!fake.records().contains(failing));
        assert!(lines.iter().any(|l| l.starts_with(&format!("guard: could not freeze {failing}: FIFREEZE"))));
        hold.stop(&mut logger(&mut lines));
        let calls = fake.calls();
        assert!(!calls.iter().any(|c| matches!(c, Call::Thaw { name, .. } if name == failing)), "{calls:?}");
        assert_eq!(calls.iter().filter(|c| matches!(c, Call::Thaw { .. })).count(), 2);
        assert!(fake.guard_frozen_in_kernel().is_empty());
    }
}

#[test]
fn a_filesystem_a_snapshot_holds_is_left_to_the_snapshot() {
    let fake = Fake::default();
    fake.kernel.lock().unwrap().insert("b".into(), Holder::Snapshot);
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, false);
    let r = react(&mut hold, &["a", "b"], true, &mut lines);
    assert_eq!(r.froze, ["a"]);
    assert!(!fake.records().contains("b"), "its record would make our thaw cut into the snapshot");
    assert!(lines.iter().any(|l| l.contains("b is frozen by someone else")), "{lines:?}");
    hold.stop(&mut logger(&mut lines));
    assert!(fake.violations.lock().unwrap().is_empty(), "{:?}", fake.violations);
    assert_eq!(fake.kernel.lock().unwrap().get("b"), Some(&Holder::Snapshot));
}

#[test]
fn a_freeze_that_could_not_be_recorded_is_still_thawed() {
    let fake = Fake { fail_record: Mutex::new(["b".to_string()].into()), ..Fake::default() };
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, false);
    let r = react(&mut hold, &["a", "b"], true, &mut lines);
    assert_eq!(r.froze, ["a", "b"]);
    assert!(lines.iter().any(|l| l.contains("cannot write the freeze record of b")), "{lines:?}");
    // The guard counts it as frozen (no second freeze) and thaws it.
    assert!(hold.frozen().iter().any(|f| f.name == "b"));
    react(&mut hold, &["a", "b"], true, &mut lines);
    assert_eq!(fake.calls().iter().filter(|c| **c == ok_freeze("b")).count(), 1);
    hold.thaw_all(&Numbers::note("headroom is back"), &mut logger(&mut lines));
    assert!(fake.calls().contains(&ok_thaw("b")));
    assert!(fake.guard_frozen_in_kernel().is_empty());
}

#[test]
fn hardening_records_a_freeze_that_could_not_be_recorded_before() {
    let fake = Fake { fail_record: Mutex::new(["a".to_string()].into()), ..Fake::default() };
    let mut hold = Hold::new(&fake, true);
    react(&mut hold, &["a"], false, &mut Vec::new());
    assert!(fake.records().is_empty());
    // Still no room: it stays unrecorded, now hard.
    hold.harden();
    assert!(fake.records().is_empty() && hold.frozen().iter().all(|f| f.hard));
    // Room for the record: it is written, and the freeze is an ordinary
    // recorded one, which a `--once` check leaves for the next.
    fake.fail_record.lock().unwrap().clear();
    hold.harden();
    assert_eq!(fake.records(), ["a".to_string()].into());
    assert!(fake.records.lock().unwrap()["a"].hard);
    hold.stop(&mut |_| {});
    assert_eq!(fake.guard_frozen_in_kernel(), ["a".to_string()].into());
}

#[test]
fn a_once_check_thaws_a_freeze_nothing_would_find() {
    let fake = Fake { fail_record: Mutex::new(["a".to_string()].into()), ..Fake::default() };
    let mut hold = Hold::new(&fake, true);
    react(&mut hold, &["a"], true, &mut Vec::new());
    let mut lines = Vec::new();
    hold.stop(&mut logger(&mut lines));
    assert!(fake.guard_frozen_in_kernel().is_empty());
    assert!(lines.iter().any(|l| l.contains("WARNING thawed a: its freeze could not be recorded")), "{lines:?}");
}

#[test]
fn stopping_thaws_everything_the_guard_holds() {
    let fake = Fake::default();
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, false);
    react(&mut hold, &["a", "b"], true, &mut lines);
    hold.stop(&mut logger(&mut lines));
    assert!(fake.guard_frozen_in_kernel().is_empty() && fake.records().is_empty());
    assert!(lines.iter().any(|l| l.ends_with("the guard stopped; nothing watches the host now")), "{lines:?}");
    let n = fake.calls().len();
    hold.stop(&mut logger(&mut lines));
    drop(hold);
    assert_eq!(fake.calls().len(), n, "stopped twice");
}

#[test]
fn a_once_check_keeps_its_recorded_freezes_for_the_next_check() {
    let fake = Fake { fail_record: Mutex::new(["b".to_string()].into()), ..Fake::default() };
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, true);
    react(&mut hold, &["a", "b"], true, &mut lines);
    hold.stop(&mut logger(&mut lines));
    drop(hold);
    // `a` stays frozen with its record; `b`, which nothing would find, thaws.
    assert_eq!(fake.guard_frozen_in_kernel(), ["a".to_string()].into());
    assert_eq!(fake.records(), ["a".to_string()].into());
    // The next check takes it over and thaws it when told.
    let mut hold = Hold::new(&fake, true);
    assert!(react(&mut hold, &["a"], true, &mut lines).froze.is_empty());
    hold.thaw_all(&Numbers::note("headroom is back"), &mut logger(&mut lines));
    assert!(fake.guard_frozen_in_kernel().is_empty() && fake.records().is_empty());
}

#[test]
fn a_panic_while_frozen_thaws_on_the_way_out() {
    let fake = Fake { panic_in_reclaim: true, ..Fake::default() };
    let caught = std::panic::catch_unwind(|| {
        let mut hold = Hold::new(&fake, false);
        react(&mut hold, &["a", "b"], true, &mut Vec::new());
    });
    assert!(caught.is_err());
    assert!(fake.guard_frozen_in_kernel().is_empty() && fake.records().is_empty(), "{:?}", fake.calls());
}

#[test]
fn a_freeze_that_panicked_is_held_and_thawed() {
    let fake = Fake { panic_in_freeze: Some("b".into()), ..Fake::default() };
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, false);
    let r = react(&mut hold, &["a", "b"], true, &mut lines);
    assert_eq!(r.froze, ["a"]);
    assert!(lines.iter().any(|l| l == "guard: freezing b panicked; holding it as frozen"), "{lines:?}");
    assert!(hold.frozen().iter().any(|f| f.name == "b"));
    hold.stop(&mut logger(&mut lines));
    let calls = fake.calls();
    assert_eq!(calls.iter().filter(|c| matches!(c, Call::Thaw { name, .. } if name == "b")).count(), 1);
    assert!(fake.records().is_empty() && fake.guard_frozen_in_kernel().is_empty());
}

#[test]
fn a_failed_thaw_is_reported_once_and_its_record_still_goes() {
    let fake = Fake { fail_thaw: ["a".to_string()].into(), ..Fake::default() };
    let mut lines = Vec::new();
    let mut hold = Hold::new(&fake, false);
    react(&mut hold, &["a", "b"], true, &mut lines);
    hold.thaw_all(&Numbers::note("headroom is back"), &mut logger(&mut lines));
    hold.stop(&mut logger(&mut lines));
    let calls = fake.calls();
    assert_eq!(calls.iter().filter(|c| matches!(c, Call::Thaw { name, .. } if name == "a")).count(), 1);
    assert!(calls.contains(&ok_thaw("b")) && fake.records().is_empty());
    assert!(lines.iter().any(|l| l.starts_with("guard: thaw of a reported: FITHAW /mnt/a")), "{lines:?}");
}

#[test]
fn an_earlier_guards_freezes_are_taken_over_and_thawed() {
    let fake = Fake::default();
    let earlier = GuardFreeze {
        name: "a".into(),
        mount_point: "/mnt/a".into(),
        reason: "before".into(),
        at: "then".into(),
        hard: true,
    };
    fake.records.lock().unwrap().insert("a".into(), earlier);
    fake.kernel.lock().unwrap().insert("a".into(), Holder::Guard);
    let mut hold = Hold::new(&fake, false);
    assert_eq!(hold.frozen().len(), 1);
    let r = react(&mut hold, &["a", "b"], true, &mut Vec::new());
    assert_eq!(r.froze, ["b"]);
    hold.stop(&mut |_| {});
    assert!(fake.guard_frozen_in_kernel().is_empty() && fake.records().is_empty());
}

/// One thing the guard's loop may do next.
#[derive(Debug, Clone)]
enum Act {
    React { hard: bool, names: Vec<usize> },
    Harden,
    ThawAll,
}

fn act(n: usize) -> impl Strategy<Value = Act> {
    prop_oneof![
        (any::<bool>(), proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n))
            .prop_map(|(hard, names)| Act::React { hard, names }),
        Just(Act::Harden),
        Just(Act::ThawAll),
    ]
}

fn subset(n: usize) -> impl Strategy<Value = BTreeSet<usize>> {
    proptest::collection::btree_set(0..n, 0..=n)
}

/// What must hold of the calls, whatever failed: a record (attempt) before
/// each freeze; no second freeze of what the guard holds; every successful
/// freeze thawed exactly once, before its record goes; a failed freeze never
/// thawed and its record gone.
fn check_calls(calls: &[Call], names: &[String]) {
    for n in names {
        let mut held = false;
        let mut recorded_since = false;
        for (i, c) in calls.iter().enumerate() {
            match c {
                Call::WriteRecord { name, .. } if name == n => recorded_since = true,
                Call::Freeze { name, ok } if name == n => {
                    assert!(recorded_since, "{n} frozen without a record first: {calls:?}");
                    assert!(!held, "{n} frozen twice: {calls:?}");
                    held = *ok;
                    let forgotten = calls[i + 1..].iter().any(|c| matches!(c, Call::RemoveRecord(x) if x == n));
                    assert!(*ok || forgotten, "{n}: the record of a failed freeze kept: {calls:?}");
                    recorded_since = false;
                }
                Call::Thaw { name, .. } if name == n => {
                    assert!(held, "{n} thawed but not frozen by the guard: {calls:?}");
                    held = false;
                }
                Call::RemoveRecord(name) if name == n => assert!(!held, "{n}'s record gone while frozen: {calls:?}"),
                _ => {}
            }
        }
        assert!(!held, "{n} left frozen: {calls:?}");
    }
}

proptest! {
    /// Any subvolumes, any failing records, freezes (errors, or a snapshot
    /// holding it) and thaws, any sequence of reactions, hardenings and
    /// thaws, ended by a stop or by a panic: nothing the guard froze stays
    /// frozen (for `--once`: nothing without its record, no record without
    /// its freeze), a failed thaw aside (FITHAW is not retried), and it
    /// never thaws what a snapshot holds nor reclaims before freezing.
    #[test]
    fn the_guard_leaves_nothing_frozen_whatever_fails(
        (n, fail_record, fail_freeze, snapshot_holds, fail_thaw, acts, room, panic, once) in (1usize..5)
            .prop_flat_map(|n| (
                Just(n), subset(n), subset(n), subset(n), subset(n),
                proptest::collection::vec(act(n), 1..6),
                any::<bool>(), any::<bool>(), any::<bool>(),
            ))
    ) {
        let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        let pick = |s: &BTreeSet<usize>| -> BTreeSet<String> { s.iter().map(|i| names[*i].clone()).collect() };
        let fake = Fake {
            fail_record: Mutex::new(pick(&fail_record)),
            fail_freeze: pick(&fail_freeze).into_iter().map(|n| (n, libc::EIO)).collect(),
            fail_thaw: pick(&fail_thaw),
            reclaim_to: room.then_some(HIGH),
            ..Fake::default()
        };
        for s in pick(&snapshot_holds) {
            fake.kernel.lock().unwrap().insert(s, Holder::Snapshot);
        }
        let run = || {
            let mut hold = Hold::new(&fake, once);
            let mut lines = Vec::new();
            for a in &acts {
                match a {
                    Act::React { hard, names: picked } => {
                        let ns: Vec<&str> = picked.iter().map(|i| names[*i].as_str()).collect();
                        react(&mut hold, &ns, *hard, &mut lines);
                    }
                    Act::Harden => hold.harden(),
                    Act::ThawAll => hold.thaw_all(&Numbers::note("headroom is back"), &mut logger(&mut lines)),
                }
            }
            if panic {
                panic!("the guard's loop failed");
            }
            hold.stop(&mut logger(&mut lines));
        };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
        let calls = fake.calls();
        prop_assert!(fake.violations.lock().unwrap().is_empty(), "{:?}", fake.violations);
        let left = fake.guard_frozen_in_kernel();
        let failed_thaw: BTreeSet<String> = calls.iter().filter_map(|c| match c {
            Call::Thaw { name, ok: false } => Some(name.clone()),
            _ => None,
        }).collect();
        if once {
            // What stays frozen has its record; nothing else stays.
            let records = fake.records();
            prop_assert!(left.iter().all(|n| records.contains(n) || failed_thaw.contains(n)), "{left:?} {records:?} {calls:?}");
            prop_assert!(records.iter().all(|n| left.contains(n)), "a record of nothing: {records:?} {calls:?}");
        } else {
            prop_assert!(left.iter().all(|n| failed_thaw.contains(n)), "left frozen: {left:?} {calls:?}");
            prop_assert!(fake.records().is_empty(), "{:?}", fake.records());
            check_calls(&calls, &names);
        }
    }
}
