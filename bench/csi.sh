#!/usr/bin/env bash
# bench/csi.sh -- what the CSI driver's gRPC layer adds to subvol's own
# operations.
#
# One run, one host, everything in one `mktemp -d` directory under TMPBASE:
# a backing-image pool (XFS, reflink=1, on a loop device with direct I/O)
# and `subvol csi` serving it on a Unix socket. For each of RUNS rounds, on
# a SIZE_GIB GiB XFS subvolume holding DATA_GIB GiB written from
# /dev/urandom (mounted while it is snapshotted, so the snapshot freezes):
#   - through the driver: CreateVolume, CreateSnapshot, and a restore
#     (CreateVolume from the snapshot), each timed as the client sees the
#     call (examples/csi_call.rs: one connection per call, the round trip
#     of the call alone), and Probe, a call that only opens the pool: the
#     fixed cost of a call through the driver,
#   - with the CLI: `subvol create`, `subvol snapshot`, `subvol clone`
#     (the restore), each the wall time of the command.
# The driver's CreateVolume also records the CSI name (a property: one more
# locked metadata write), and its restore is the same clone.
#
# Prints a markdown table of medians on stdout, progress on stderr.
#
# Usage (as root):   bench/csi.sh               (~2 min)
# Environment:
#   SUBVOL     subvol binary (default: target/release/subvol of this repo,
#              built with `cargo build --release` if it is missing)
#   RUNS       rounds (default 5; medians)
#   SIZE_GIB   volume size (default 10)
#   DATA_GIB   data written into it (default 2)
#   TMPBASE    where the temporary directory is made (default /var/tmp)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=csi.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
RUNS=${RUNS:-5}
SIZE_GIB=${SIZE_GIB:-10}
DATA_GIB=${DATA_GIB:-2}
TMPBASE=${TMPBASE:-/var/tmp}
need_posint RUNS SIZE_GIB DATA_GIB

bench_require mkfs.xfs python3
SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"
CALL=$REPO/target/release/examples/csi_call
if [ ! -x "$CALL" ]; then
    note "building $CALL"
    (cd "$REPO" && cargo build --release -p subvol-csi --example csi_call) >&2
fi
bench_need_disk $((DATA_GIB * 2 + 4))

bench_workdir csi
POOL=$W/pool
POOLS=$POOL
SOCK=$W/csi.sock
DPID=
bench_on_exit() { if [ -n "$DPID" ]; then kill -TERM "$DPID" 2>/dev/null; wait "$DPID" 2>/dev/null; fi; }

note "work dir $W"
"$SUBVOL" pool init "$POOL" --backing-image "$((SIZE_GIB * 3))G" >&2
"$SUBVOL" --pool "$POOL" csi --endpoint "unix://$SOCK" --node-id bench 2>/dev/null &
DPID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || die "the driver did not start"

SIZE=$((SIZE_GIB << 30))
# fill NAME: mounts NAME and writes DATA_GIB GiB into it.
fill() {
    local mp
    mp=$(sv mount "$1" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["mount_point"])')
    dd if=/dev/urandom of="$mp/data" bs=16M count=$((DATA_GIB * 64)) conv=fsync status=none
}
# call ARGS: one driver call; prints its id, records its milliseconds as $MS.
call() {
    local out
    out=$("$CALL" "$SOCK" "$@")
    MS=${out#*$'\t'}
    ID=${out%%$'\t'*}
}
# cli ARGS: one subvol command, its wall time in milliseconds as $MS.
cli() {
    local t
    t=$(now)
    sv "$@" >/dev/null
    MS=$(ms_since "$t")
}

for run in $(seq "$RUNS"); do
    note "round $run of $RUNS: through the driver"
    call probe
    rec driver probe "$MS"
    call create "bench-$run" "$SIZE"
    rec driver create "$MS"
    vol=$ID
    fill "$vol"
    call snapshot "$vol" "snap-$run"
    rec driver snapshot "$MS"
    snap=$ID
    call restore "restore-$run" "$snap" "$SIZE"
    rec driver restore "$MS"
    restored=$ID
    sv umount "$vol" >/dev/null
    for v in "$vol" "$restored"; do call delete-volume "$v"; done
    call delete-snapshot "$snap"

    note "round $run of $RUNS: with the CLI"
    cli create "cli-$run" --size "${SIZE_GIB}G"
    rec cli create "$MS"
    fill "cli-$run"
    cli snapshot "cli-$run@s"
    rec cli snapshot "$MS"
    cli clone "cli-$run@s" "cli-restore-$run"
    rec cli restore "$MS"
    sv umount "cli-$run" >/dev/null
    sv delete "cli-$run" --recursive >/dev/null
    sv delete "cli-restore-$run" >/dev/null
done

echo "### CSI driver against the CLI ($SIZE_GIB GiB XFS volume, $DATA_GIB GiB of data, median of $RUNS)"
echo
echo "$(bench_machine); pool: XFS in a backing image on $(df --output=fstype "$TMPBASE" | tail -1)"
echo
python3 - "$RES" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
med = {}
for how, op, ms in rows:
    med.setdefault((how, op), []).append(float(ms))
print("| operation | driver (ms) | CLI (ms) | driver - CLI (ms) |")
print("|---|---:|---:|---:|")
for op, what in [("create", "CreateVolume / subvol create"), ("snapshot", "CreateSnapshot / subvol snapshot (mounted)"), ("restore", "CreateVolume from the snapshot / subvol clone")]:
    d, c = statistics.median(med[("driver", op)]), statistics.median(med[("cli", op)])
    print(f"| {what} | {d:.1f} | {c:.1f} | {d - c:+.1f} |")
print(f"| Probe (opens the pool, nothing else) | {statistics.median(med[('driver', 'probe')]):.1f} | | |")
PY
bench_notes
