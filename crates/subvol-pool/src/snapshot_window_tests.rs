//! The snapshot window's order on every path, against a recording fake that
//! fails whichever steps a test names: no root, no loop devices.

use super::*;
use crate::error::ErrorKind;
use proptest::prelude::*;
use std::collections::BTreeSet;

/// A step of the window, by target index where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    BlockSignals,
    WriteMarker(usize),
    Freeze(usize),
    UpdateClone(usize),
    Thaw(usize),
}

/// What the window asked for, in order; `ok` says whether the fake let it
/// succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Did { step: Step, ok: bool },
    RemoveMarker(usize),
    UnblockSignals,
}

/// Records every call; fails the steps in `fail` (a freeze with `errno`).
struct Fake {
    calls: Vec<Call>,
    fail: BTreeSet<Step>,
    errno: i32,
}

fn index(p: &Path) -> usize {
    p.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix('t')).and_then(|n| n.parse().ok()).unwrap()
}

impl Fake {
    fn new(fail: impl IntoIterator<Item = Step>) -> Self {
        Fake { calls: Vec::new(), fail: fail.into_iter().collect(), errno: libc::EBUSY }
    }

    fn step(&mut self, step: Step) -> bool {
        let ok = !self.fail.contains(&step);
        self.calls.push(Call::Did { step, ok });
        ok
    }

    fn os(&mut self, step: Step, op: &'static str, p: &Path) -> OsResult<()> {
        let errno = if matches!(step, Step::Freeze(_)) { self.errno } else { libc::EIO };
        match self.step(step) {
            true => Ok(()),
            false => Err(subvol_os::OsError::sys(op, Some(p), std::io::Error::from_raw_os_error(errno))),
        }
    }

    fn steps(&self) -> Vec<Step> {
        self.calls.iter().filter_map(|c| if let Call::Did { step, .. } = c { Some(*step) } else { None }).collect()
    }

    fn succeeded(&self, step: Step) -> bool {
        self.calls.contains(&Call::Did { step, ok: true })
    }

    fn position(&self, call: &Call) -> Option<usize> {
        self.calls.iter().position(|c| c == call)
    }
}

impl WindowOps for Fake {
    fn block_signals(&mut self) -> OsResult<()> {
        self.os(Step::BlockSignals, "pthread_sigmask", Path::new("-"))
    }
    fn unblock_signals(&mut self) {
        self.calls.push(Call::UnblockSignals);
    }
    fn write_marker(&mut self, name: &str, _: &Path) -> Result<()> {
        let i = name.strip_prefix('t').and_then(|n| n.parse().ok()).unwrap();
        match self.step(Step::WriteMarker(i)) {
            true => Ok(()),
            false => Err(Error::new(ErrorKind::NoSpace, format!("cannot write the marker of {name}"))),
        }
    }
    fn remove_marker(&mut self, name: &str) {
        self.calls.push(Call::RemoveMarker(name.strip_prefix('t').and_then(|n| n.parse().ok()).unwrap()));
    }
    fn freeze(&mut self, mount_point: &Path) -> OsResult<()> {
        self.os(Step::Freeze(index(mount_point)), "FIFREEZE", mount_point)
    }
    fn thaw(&mut self, mount_point: &Path) -> OsResult<()> {
        self.os(Step::Thaw(index(mount_point)), "FITHAW", mount_point)
    }
    fn update_clone(&mut self, i: usize) -> Result<()> {
        match self.step(Step::UpdateClone(i)) {
            true => Ok(()),
            false => Err(Error::new(ErrorKind::Io, format!("t{i}: cannot clone"))),
        }
    }
}

/// `mounted[i]`: whether target `ti` is mounted (at `/mnt/ti`).
fn targets(mounted: &[bool]) -> Vec<Target> {
    mounted
        .iter()
        .enumerate()
        .map(|(i, m)| Target { name: format!("t{i}"), mount_point: m.then(|| PathBuf::from(format!("/mnt/t{i}"))) })
        .collect()
}

/// What must hold after any run, whatever failed.
fn check_invariants(fake: &Fake, mounted: &[bool], result: &Result<WindowTimes>) {
    let steps = fake.steps();
    let calls = &fake.calls;
    // Signals: blocked first; unblocked last, once, if they were blocked.
    assert_eq!(steps.first(), Some(&Step::BlockSignals), "{calls:?}");
    if !fake.succeeded(Step::BlockSignals) {
        assert_eq!(calls.len(), 1, "went on without blocking signals: {calls:?}");
        return;
    }
    assert_eq!(calls.last(), Some(&Call::UnblockSignals), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| **c == Call::UnblockSignals).count(), 1, "{calls:?}");
    let first_failure = calls.iter().position(|c| matches!(c, Call::Did { ok: false, .. }));
    for (i, m) in mounted.iter().enumerate() {
        let freeze = fake.position(&Call::Did { step: Step::Freeze(i), ok: true });
        let thaws: Vec<usize> =
            (0..calls.len()).filter(|&k| matches!(calls[k], Call::Did { step: Step::Thaw(t), .. } if t == i)).collect();
        let marker = steps.iter().position(|s| *s == Step::WriteMarker(i));
        let removed: Vec<usize> = (0..calls.len()).filter(|&k| calls[k] == Call::RemoveMarker(i)).collect();
        if !m {
            assert!(marker.is_none() && freeze.is_none() && thaws.is_empty(), "unmounted t{i} touched: {calls:?}");
            continue;
        }
        // Every successful freeze: exactly one thaw, after it; none otherwise.
        match freeze {
            Some(f) => {
                assert_eq!(thaws.len(), 1, "t{i} frozen, thawed {} times: {calls:?}", thaws.len());
                assert!(thaws[0] > f, "{calls:?}");
                // Its marker was written first and is removed after the thaw.
                assert!(fake.succeeded(Step::WriteMarker(i)), "t{i} frozen without a marker: {calls:?}");
                assert!(removed.len() == 1 && removed[0] > thaws[0], "t{i}'s marker: {calls:?}");
            }
            None => assert!(thaws.is_empty(), "t{i} thawed but never frozen: {calls:?}"),
        }
        // Every marker attempted is removed exactly once.
        if marker.is_some() {
            assert_eq!(removed.len(), 1, "t{i}'s marker removed {} times: {calls:?}", removed.len());
        } else {
            assert!(removed.is_empty(), "{calls:?}");
        }
    }
    // Nothing frozen or marked after a failure, nothing copied after one,
    // and nothing copied before every mounted target is frozen.
    if let Some(f) = first_failure {
        assert!(
            !calls[f + 1..].iter().any(|c| matches!(
                c,
                Call::Did { step: Step::Freeze(_) | Step::WriteMarker(_) | Step::UpdateClone(_), .. }
            )),
            "went on after a failure: {calls:?}"
        );
    }
    let last_freeze = steps.iter().rposition(|s| matches!(s, Step::Freeze(_)));
    let first_copy = steps.iter().position(|s| matches!(s, Step::UpdateClone(_)));
    if let (Some(f), Some(c)) = (last_freeze, first_copy) {
        assert!(f < c, "copied before everything was frozen: {calls:?}");
    }
    let copies: Vec<Step> = steps.iter().copied().filter(|s| matches!(s, Step::UpdateClone(_))).collect();
    if first_failure.is_none() {
        assert!(result.is_ok(), "{result:?}");
        let all: Vec<Step> = (0..mounted.len()).map(Step::UpdateClone).collect();
        assert_eq!(copies, all, "{calls:?}");
        // Thawed in the order frozen.
        let thawed: Vec<Step> = steps.iter().copied().filter(|s| matches!(s, Step::Thaw(_))).collect();
        let froze: Vec<Step> =
            steps.iter().filter_map(|s| if let Step::Freeze(i) = s { Some(Step::Thaw(*i)) } else { None }).collect();
        assert_eq!(thawed, froze);
    } else {
        assert!(result.is_err(), "a step failed but the window succeeded: {calls:?}");
    }
}

fn run_fake(mounted: &[bool], fail: &[Step]) -> (Fake, Result<WindowTimes>) {
    let mut fake = Fake::new(fail.iter().copied());
    let r = run(&mut fake, &targets(mounted));
    check_invariants(&fake, mounted, &r);
    (fake, r)
}

fn err(r: Result<WindowTimes>) -> Error {
    r.expect_err("the window should fail")
}

#[test]
fn a_clean_window_freezes_all_copies_all_then_thaws_all() {
    let (fake, r) = run_fake(&[true, false, true], &[]);
    use Call::*;
    use Step::*;
    let ok = |step| Call::Did { step, ok: true };
    assert_eq!(
        fake.calls,
        vec![
            ok(BlockSignals),
            ok(WriteMarker(0)),
            ok(Freeze(0)),
            ok(WriteMarker(2)),
            ok(Freeze(2)),
            ok(UpdateClone(0)),
            ok(UpdateClone(1)),
            ok(UpdateClone(2)),
            ok(Thaw(0)),
            ok(Thaw(2)),
            RemoveMarker(0),
            RemoveMarker(2),
            UnblockSignals,
        ]
    );
    assert!(r.is_ok());
}

#[test]
fn nothing_mounted_freezes_nothing_and_reports_no_frozen_time() {
    let (fake, r) = run_fake(&[false, false], &[]);
    assert_eq!(fake.steps(), vec![Step::BlockSignals, Step::UpdateClone(0), Step::UpdateClone(1)]);
    assert_eq!(r.unwrap().frozen_us, 0);
}

#[test]
fn a_failed_freeze_of_the_first_middle_or_last_target_thaws_the_others_and_copies_nothing() {
    for failing in 0..3 {
        let (fake, r) = run_fake(&[true, true, true], &[Step::Freeze(failing)]);
        let e = err(r);
        assert!(e.message.starts_with(&format!("cannot freeze t{failing} at /mnt/t{failing}")), "{}", e.message);
        assert!(e.message.ends_with("nothing was changed, retry when the filesystem is idle"), "{}", e.message);
        assert_eq!(e.kind, ErrorKind::Busy);
        assert!(!fake.steps().iter().any(|s| matches!(s, Step::UpdateClone(_))));
        let thawed: Vec<Step> = fake.steps().into_iter().filter(|s| matches!(s, Step::Thaw(_))).collect();
        assert_eq!(thawed, (0..failing).map(Step::Thaw).collect::<Vec<_>>(), "{:?}", fake.calls);
    }
}

#[test]
fn a_freeze_that_meets_a_shut_down_filesystem_names_it() {
    for (errno, words) in [(libc::EIO, "was shut down by the kernel"), (libc::EROFS, "read-only after an error")] {
        let mut fake = Fake::new([Step::Freeze(1)]);
        fake.errno = errno;
        let mounted = [true, true];
        let r = run(&mut fake, &targets(&mounted));
        check_invariants(&fake, &mounted, &r);
        let e = err(r);
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.message.starts_with("cannot snapshot t1: "), "{}", e.message);
        assert!(e.message.contains(words), "{}", e.message);
        assert!(e.message.ends_with("; nothing was changed"), "{}", e.message);
    }
}

#[test]
fn a_failed_clone_update_thaws_everything_and_is_the_error() {
    for failing in 0..3 {
        let (fake, r) = run_fake(&[true, false, true], &[Step::UpdateClone(failing)]);
        assert_eq!(err(r).message, format!("t{failing}: cannot clone"));
        assert!(fake.succeeded(Step::Thaw(0)) && fake.succeeded(Step::Thaw(2)), "{:?}", fake.calls);
    }
}

#[test]
fn a_failed_thaw_is_the_error_and_the_others_still_thaw_once() {
    for failing in [0, 2] {
        let (fake, r) = run_fake(&[true, true, true], &[Step::Thaw(failing)]);
        let e = err(r);
        assert!(e.message.starts_with(&format!("cannot thaw: FITHAW /mnt/t{failing}")), "{}", e.message);
        let thawed: Vec<Step> = fake.steps().into_iter().filter(|s| matches!(s, Step::Thaw(_))).collect();
        assert_eq!(thawed, vec![Step::Thaw(0), Step::Thaw(1), Step::Thaw(2)]);
    }
}

#[test]
fn the_first_error_wins_over_failing_thaws_on_the_way_out() {
    let (_, r) = run_fake(&[true, true, true], &[Step::UpdateClone(1), Step::Thaw(0), Step::Thaw(1)]);
    assert_eq!(err(r).message, "t1: cannot clone");
}

#[test]
fn a_failed_marker_write_freezes_nothing_more_and_removes_what_it_may_have_left() {
    let (fake, r) = run_fake(&[true, true, true], &[Step::WriteMarker(1)]);
    assert_eq!(err(r).message, "cannot write the marker of t1");
    assert!(!fake.steps().contains(&Step::Freeze(1)));
    assert!(fake.calls.contains(&Call::RemoveMarker(1)), "{:?}", fake.calls);
}

#[test]
fn signals_that_cannot_be_blocked_stop_the_window_before_it_starts() {
    let (fake, r) = run_fake(&[true], &[Step::BlockSignals]);
    assert!(err(r).message.starts_with("cannot block signals"));
    assert_eq!(fake.calls.len(), 1);
}

/// A fake whose clone update panics: the window must still thaw.
struct Panics(Fake);

impl WindowOps for Panics {
    fn block_signals(&mut self) -> OsResult<()> {
        self.0.block_signals()
    }
    fn unblock_signals(&mut self) {
        self.0.unblock_signals()
    }
    fn write_marker(&mut self, name: &str, mp: &Path) -> Result<()> {
        self.0.write_marker(name, mp)
    }
    fn remove_marker(&mut self, name: &str) {
        self.0.remove_marker(name)
    }
    fn freeze(&mut self, mp: &Path) -> OsResult<()> {
        self.0.freeze(mp)
    }
    fn thaw(&mut self, mp: &Path) -> OsResult<()> {
        self.0.thaw(mp)
    }
    fn update_clone(&mut self, _: usize) -> Result<()> {
        panic!("a bug while frozen")
    }
}

#[test]
fn a_panic_while_frozen_still_thaws_removes_markers_and_unblocks_signals() {
    let mut p = Panics(Fake::new([]));
    let mounted = [true, true];
    let ts = targets(&mounted);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut p, &ts)));
    assert!(caught.is_err());
    use Call::*;
    let tail: Vec<Call> = p.0.calls[p.0.calls.len() - 5..].to_vec();
    let ok = |step| Call::Did { step, ok: true };
    assert_eq!(tail, vec![ok(Step::Thaw(0)), ok(Step::Thaw(1)), RemoveMarker(0), RemoveMarker(1), UnblockSignals]);
}

fn any_step(n: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::BlockSignals),
        (0..n).prop_map(Step::WriteMarker),
        (0..n).prop_map(Step::Freeze),
        (0..n).prop_map(Step::UpdateClone),
        (0..n).prop_map(Step::Thaw),
    ]
}

proptest! {
    /// Any targets, any mix mounted, any steps failing (several at once:
    /// a thaw on the way out may fail too): the invariants hold, and the
    /// error is the first failure's.
    #[test]
    fn the_window_keeps_its_order_whatever_fails(
        (mounted, fail, errno) in (1usize..6).prop_flat_map(|n| (
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(any_step(n), 0..4),
            prop_oneof![Just(libc::EBUSY), Just(libc::EIO), Just(libc::EROFS), Just(libc::ENOENT)],
        ))
    ) {
        let mut fake = Fake::new(fail.iter().copied());
        fake.errno = errno;
        let r = run(&mut fake, &targets(&mounted));
        check_invariants(&fake, &mounted, &r);
        let first = fake.calls.iter().find_map(|c| match c {
            Call::Did { step, ok: false } => Some(*step),
            _ => None,
        });
        match (first, &r) {
            (None, Ok(_)) => {}
            (Some(Step::UpdateClone(i)), Err(e)) => prop_assert_eq!(&e.message, &format!("t{i}: cannot clone")),
            (Some(Step::WriteMarker(i)), Err(e)) => {
                prop_assert_eq!(&e.message, &format!("cannot write the marker of t{i}"))
            }
            (Some(Step::Freeze(i)), Err(e)) => prop_assert!(e.message.starts_with("cannot ") && e.message.contains(&format!("t{i}")), "{}", e.message),
            (Some(Step::Thaw(i)), Err(e)) => prop_assert!(e.message.starts_with(&format!("cannot thaw: FITHAW /mnt/t{i}")), "{}", e.message),
            (Some(Step::BlockSignals), Err(e)) => prop_assert!(e.message.starts_with("cannot block signals")),
            (first, r) => prop_assert!(false, "first failure {:?}, result {:?}", first, r),
        }
    }
}
