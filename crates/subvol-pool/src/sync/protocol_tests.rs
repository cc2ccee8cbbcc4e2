//! The protocol against in-memory sides: which base it picks, which holds
//! it leaves on every way out, and that a retry after any failure ends
//! where one clean run would.

use super::*;
use crate::sync::fake::{Fake, Op};

fn pair() -> (Fake, Fake) {
    (Fake::new("db"), Fake::new("backup:/srv/pool:db"))
}

fn run(src: &Fake, dst: &Fake) -> Result<SyncReport> {
    replicate(src, dst, &SyncOptions::default(), &|_, _| {})
}

/// The steady state of a pair: one snapshot held `sync` on each side,
/// the same one, and no other hold anywhere.
#[track_caller]
fn settled(src: &Fake, dst: &Fake) -> String {
    let (s, d) = (src.held(SYNC_TAG), dst.held(SYNC_TAG));
    assert_eq!((s.len(), d.len()), (1, 1), "held: source {s:?}, destination {d:?}");
    assert_eq!(s[0].split('@').nth(1), d[0].split('@').nth(1), "not the same snapshot");
    assert_eq!(src.all_holds().len() + dst.all_holds().len(), 2, "{:?} {:?}", src.all_holds(), dst.all_holds());
    s[0].clone()
}

#[test]
fn first_sync_is_full_and_the_next_builds_on_it() {
    let (src, dst) = pair();
    let first = run(&src, &dst).unwrap();
    assert_eq!(first.base, None);
    assert_eq!(first.name, "backup:/srv/pool:db");
    assert!(first.snapshot.starts_with("db@sync-") && first.snapshot == first.sent.name, "{first:?}");
    assert!(first.stream_bytes > 1 << 20, "{}", first.stream_bytes);
    assert_eq!(settled(&src, &dst), first.sent.name);
    let second = run(&src, &dst).unwrap();
    assert_eq!(second.base.as_deref(), Some(first.sent.name.as_str()), "not built on the common snapshot");
    assert_eq!(settled(&src, &dst), second.sent.name, "the hold did not move to the new base");
    assert_eq!(dst.names().len(), 2);
}

#[test]
fn the_base_is_the_newest_snapshot_both_hold_by_guid() {
    let (src, dst) = pair();
    // Listed out of order; the destination calls the shared ones otherwise.
    src.add("c", 3, 30);
    src.add("a", 1, 10);
    src.add("b", 2, 20);
    src.add("d", 4, 40);
    dst.add("mine-a", 1, 1);
    dst.add("mine-b", 2, 2);
    let r = run(&src, &dst).unwrap();
    assert_eq!(r.base.as_deref(), Some("db@b"));
    // Held during the transfer, released after: neither keeps a hold.
    assert!(src.all_holds().iter().all(|(n, _)| n == &r.sent.name), "{:?}", src.all_holds());
    assert_eq!(dst.held(SYNC_TAG), vec![r.snapshot.clone()]);
}

#[test]
fn a_guid_listed_twice_or_no_common_snapshot_is_refused_before_anything_changes() {
    let (src, dst) = pair();
    src.add("a", 1, 1);
    dst.add("a", 1, 1);
    dst.add("a-copy", 1, 2);
    let e = run(&src, &dst).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Corrupt);
    assert!(e.message.starts_with("backup:/srv/pool:db: db@a, db@a-copy share the guid"), "{}", e.message);
    assert_eq!((src.names().len(), src.all_holds().len(), dst.all_holds().len()), (1, 0, 0));

    let (src, dst) = pair();
    src.add("a", 1, 1);
    dst.add("other", 9, 1);
    let e = run(&src, &dst).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Busy);
    assert_eq!(e.message, "backup:/srv/pool:db has snapshots but none in common with db; receive into a new name");
    assert_eq!(src.names().len(), 1, "a snapshot was taken for nothing");
}

#[test]
fn a_failed_transfer_removes_the_unsent_snapshot_keeps_the_base_and_a_retry_settles() {
    for (side_fails, op, kind) in [
        (true, Op::Receive, ErrorKind::Busy),
        (true, Op::ReceiveEarly, ErrorKind::NoSpace),
        (false, Op::Send, ErrorKind::NotFound),
    ] {
        let (src, dst) = pair();
        let base = run(&src, &dst).unwrap().sent.name;
        let before = src.names();
        if side_fails {
            dst.fail(op, kind)
        } else {
            src.fail(op, kind)
        }
        let e = run(&src, &dst).unwrap_err();
        assert_eq!(e.kind, kind, "{op:?}: the other side's consequence was reported: {}", e.message);
        assert_eq!(src.names(), before, "{op:?}: the unsent snapshot stayed");
        assert_eq!(settled(&src, &dst), base, "{op:?}: the base lost its hold");
        dst.heal();
        src.heal();
        let r = run(&src, &dst).unwrap();
        assert_eq!(r.base.as_deref(), Some(base.as_str()));
        assert_eq!(settled(&src, &dst), r.sent.name);
    }
}

#[test]
fn a_lost_acknowledgement_keeps_what_arrived_and_the_retry_builds_on_it() {
    let (src, dst) = pair();
    run(&src, &dst).unwrap();
    dst.fail(Op::ReceiveThenFail, ErrorKind::Io);
    let e = run(&src, &dst).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    let arrived = dst.names().last().cloned().unwrap();
    assert!(
        src.names().iter().any(|n| n.split('@').nth(1) == arrived.split('@').nth(1)),
        "the arrived snapshot was deleted"
    );
    assert_eq!(src.all_holds().len(), 1, "the unconfirmed snapshot kept its hold: {:?}", src.all_holds());
    dst.heal();
    let r = run(&src, &dst).unwrap();
    assert_eq!(r.base.as_deref().and_then(|b| b.split('@').nth(1)), arrived.split('@').nth(1));
    settled(&src, &dst);
}

#[test]
fn a_failed_hold_after_arrival_is_settled_by_the_retry() {
    let (src, dst) = pair();
    run(&src, &dst).unwrap();
    // The base is held already, so the only hold asked of the destination
    // is the new snapshot's.
    dst.fail(Op::Hold, ErrorKind::Io);
    assert_eq!(run(&src, &dst).unwrap_err().kind, ErrorKind::Io);
    dst.heal();
    let r = run(&src, &dst).unwrap();
    assert_eq!(settled(&src, &dst), r.sent.name);
    assert_eq!(src.names().len(), 3);
}

#[test]
fn an_unheld_base_is_held_while_it_is_built_on() {
    let (src, dst) = pair();
    run(&src, &dst).unwrap();
    let base = src.held(SYNC_TAG).remove(0);
    src.release(&base, SYNC_TAG).unwrap();
    dst.release(&dst.held(SYNC_TAG).remove(0), SYNC_TAG).unwrap();
    dst.fail(Op::Receive, ErrorKind::Busy);
    run(&src, &dst).unwrap_err();
    // Still the common base after the failure: it keeps the hold it got.
    assert_eq!(settled(&src, &dst), base);
}

#[test]
fn snapshot_names_taken_within_the_second_get_a_suffix() {
    let (src, dst) = pair();
    src.take_names(2);
    let r = run(&src, &dst).unwrap();
    assert!(r.sent.name.ends_with(".2"), "{}", r.sent.name);
    assert!(r.snapshot.ends_with(".2"), "{}", r.snapshot);
}

#[test]
fn a_base_another_destination_needs_keeps_its_hold_on_the_source() {
    let (src, dst) = pair();
    let first = run(&src, &dst).unwrap().sent;
    let opts = SyncOptions { keep_on_source: vec![first.guid], ..SyncOptions::default() };
    let r = replicate(&src, &dst, &opts, &|_, _| {}).unwrap();
    let mut held = src.held(SYNC_TAG);
    held.sort();
    let mut expected = vec![first.name, r.sent.name];
    expected.sort();
    assert_eq!(held, expected);
    assert_eq!(dst.held(SYNC_TAG), vec![r.snapshot]);
}

#[test]
fn an_old_base_that_cannot_be_released_is_a_warning() {
    let (src, dst) = pair();
    run(&src, &dst).unwrap();
    dst.fail(Op::Release, ErrorKind::Io);
    let r = run(&src, &dst).unwrap();
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(r.warnings[0].starts_with("the old base stays held: backup:/srv/pool:db"), "{:?}", r.warnings);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1));
}

#[test]
fn the_report_serializes_as_sync_always_printed_it() {
    let (src, dst) = pair();
    let r = run(&src, &dst).unwrap();
    let json = serde_json::to_value(&r).unwrap();
    let mut keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["base", "name", "seconds", "snapshot", "stream_bytes"]);
}

#[test]
fn bad_options_are_refused_before_anything_changes() {
    let (src, dst) = pair();
    for opts in [
        SyncOptions { zstd_level: Some(20), ..SyncOptions::default() },
        SyncOptions { bwlimit: Some(0), ..SyncOptions::default() },
    ] {
        assert_eq!(replicate(&src, &dst, &opts, &|_, _| {}).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
    assert!(src.names().is_empty());
}
