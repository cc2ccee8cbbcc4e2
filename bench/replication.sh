#!/usr/bin/env bash
# bench/replication.sh -- what incremental replication costs, next to its peers.
#
# One run, one host, everything in one `mktemp -d` directory under TMPBASE:
#   - pool A (source) and pool B (destination), each a backing-image pool
#     (`subvol pool init --backing-image`: XFS reflink=1 in a sparse file on a
#     loop device with direct I/O), side by side on the same host disk;
#   - as the peer, a btrfs filesystem in a sparse file on a loop device with
#     direct I/O, with a source subvolume `src` and a destination dir `dst`.
#
# A raw subvolume of SIZE_GIB GiB (default 4) is filled with random data and
# snapshotted (v@base); the base is replicated to pool B (`subvol send |
# subvol receive`), to btrfs (a file holding the same bytes in subvolume src,
# snapshot -r, `btrfs send | btrfs receive` into dst) and, for rsync, copied
# to pool B's XFS as a plain file. Then, for each pattern (4k, 1m) and RUNS
# times: CHANGE_PCT % of the image (default 1 % = 40 MiB) is rewritten with
# random data as random 4 KiB or 1 MiB O_DIRECT writes at distinct offsets
# (fio, fixed seed, so the btrfs file gets exactly the same change; the two
# snapshots' hashes are compared), both sides are snapshotted, and, each
# time with cold caches (sync; drop_caches) on a settled host (no device
# writes for 2 s, so deferred work of the previous step is not measured):
#   - subvol send NAME@NEW --from NAME@PREV | subvol --pool B receive NAME
#     (byte-exactness checked: sha256 of the received snapshot image against
#     the source snapshot image; the receiver's content-root check, its
#     time and the bytes it read back, from SUBVOL_TRACE),
#   - btrfs send -p PREV NEW | btrfs receive dst,
#   - subvol send --from > /dev/null (the sender alone),
#   - rsync --inplace --no-whole-file NEW-IMAGE COPY-OF-BASE (on pool B's XFS).
# Every run starts from the base snapshot, which the destinations hold: after
# a run the sources, the destinations and the rsync copy are reset to the
# base (untimed), so each run changes the same image (about 2 x the changed
# 4 KiB ranges in extents for the 4k pattern, a few dozen for 1m).
# Stream bytes are counted separately (`... send | wc -c`), not in the timed
# pipe.
#
# Chained steady state (part `chained`): what an hourly replication costs as
# the image's history grows. From the base, CHAINED_ROUNDS (default 20)
# rounds each change CHANGE_PCT % in random 4 KiB writes (the same on the
# btrfs file), take a snapshot on each side (timed, warm: as a user runs it)
# and replicate it incrementally from the previous round's snapshot (timed,
# cold), snapshots kept. Per round: the live image's and the received
# image's extent counts, snapshot time (subvol, btrfs), increment time
# (subvol, btrfs), subvol's phase times (SUBVOL_TRACE), how long the
# background manifest build after subvol's snapshot ran (the pipe waits for
# it), byte-exactness of every round (sha256 of both sides). Peak RSS of each side comes from /usr/bin/time -v. Full copies
# (cp --reflink=never --sparse=always to pool B's XFS, full subvol send |
# receive, full subvol send > /dev/null) are measured RUNS times, cold, next
# to the device's sequential read rate (dd iflag=direct bs=1M and fio
# libaio iodepth 16 of the base snapshot image, cold).
#
# Prints markdown tables of medians, and the targets, on stdout; progress on
# stderr; raw per-run figures go to the table's "raw" section.
#
# Usage (as root):   bench/replication.sh            (~10-15 min)
#                    QUICK=1 bench/replication.sh    (smoke run, 1 GiB, 1 run)
# Environment:
#   SUBVOL      subvol binary (default: target/release/subvol of this repo,
#               built with `cargo build --release` if it is missing)
#   RUNS        runs per measurement (default 3; medians are reported)
#   SIZE_GIB    image size in GiB (default 4)
#   FULL_RUNS   runs of the full-copy measurements (default RUNS)
#   CHANGE_PCT  percent of the image changed per run (default 1)
#   PATTERNS    write sizes of the change (default "4k 1m")
#   TMPBASE     where the temporary directory is made (default /var/tmp)
#   FIO_WAIT    seconds to wait for other fio processes to finish before
#               measuring (default 900)
#   PARTS       which parts run (default "full incremental chained")
#   CHAINED_ROUNDS  rounds of the chained part (default 20)
#   QUICK=1     smoke run: SIZE_GIB=1 RUNS=1 CHAINED_ROUNDS=3 (explicit
#               values win)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=replication.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    : "${SIZE_GIB:=1}" "${RUNS:=1}" "${CHAINED_ROUNDS:=3}"
fi
PARTS=${PARTS:-full incremental chained}
CHAINED_ROUNDS=${CHAINED_ROUNDS:-20}
RUNS=${RUNS:-3}
FULL_RUNS=${FULL_RUNS:-$RUNS}
SIZE_GIB=${SIZE_GIB:-4}
CHANGE_PCT=${CHANGE_PCT:-1}
PATTERNS=${PATTERNS:-4k 1m}
TMPBASE=${TMPBASE:-/var/tmp}
FIO_WAIT=${FIO_WAIT:-900}

bench_require fio python3 losetup findmnt mkfs.btrfs btrfs rsync sha256sum xfs_io cp jq
[ -x /usr/bin/time ] || die "/usr/bin/time is not installed (apt-get install time)"
need_posint RUNS FULL_RUNS SIZE_GIB CHANGE_PCT CHAINED_ROUNDS
for p in $PARTS; do case $p in full | incremental | chained) ;; *) die "PARTS are full, incremental and/or chained: $p" ;; esac; done
for p in $PATTERNS; do case $p in 4k | 1m) ;; *) die "PATTERNS are 4k and/or 1m: $p" ;; esac; done

SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"

# Peak: the image in A, in B (received + rsync copy + one full copy or full
# receive) and twice on btrfs (src and dst), + slack.
bench_need_disk $((SIZE_GIB * 6 + 4))

SIZE_B=$((SIZE_GIB << 30))
CHG_B=$((SIZE_B * CHANGE_PCT / 100 / 1048576 * 1048576))
CHG_MIB=$((CHG_B / 1048576))

bench_workdir repl
PA=$W/poolA
PB=$W/poolB
POOLS="$PA $PB"
BHOST=$PB/bench-host
# Full receives land in a pool of their own on B's filesystem: pool B
# already has v@base, and a pool holds each snapshot guid once.
PF=$BHOST/full-pool
BT=$W/btrfs
BTIMG=$W/btrfs.img

sva() { "$SUBVOL" --pool "$PA" "$@"; }
svb() { "$SUBVOL" --pool "$PB" "$@"; }

# ---------------------------------------------------------------- helpers
# Results: rec SECTION CASE METRIC VALUE.
# Cold caches on a quiet host (see bench_settle).
cold() {
    dropc
    bench_settle
}
# Peak RSS in MiB from a /usr/bin/time -v report.
rss_mib() { awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$1"; }
hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# change FILE PATTERN SEED: rewrites CHG_MIB MiB of FILE with random data in
# PATTERN-sized O_DIRECT writes at distinct random offsets (deterministic for
# a given seed: the same offsets and bytes on every file; another seed,
# other offsets: fio ignores randseed for offsets unless randrepeat=0).
change() {
    fio --name=chg --filename="$1" --ioengine=psync --rw=randwrite --bs="$2" \
        --size="$SIZE_B" --io_size="${CHG_MIB}M" --direct=1 --refill_buffers \
        --randrepeat=0 --randseed="$3" --fsync_on_close=1 --output-format=terse >/dev/null
}

# timed_pipe SECTION CASE SENDER_CMD -- RECEIVER_CMD: cold caches, then
# SENDER | RECEIVER under /usr/bin/time -v each; records wall, rss_send,
# rss_recv.
timed_pipe() {
    local sec=$1 case=$2 t i
    shift 2
    local snd=() rcv=()
    while [ "$1" != -- ]; do snd+=("$1"); shift; done
    shift
    rcv=("$@")
    cold
    t=$(now)
    set +e
    /usr/bin/time -v -o "$W/rss.send" "${snd[@]}" |
        /usr/bin/time -v -o "$W/rss.recv" "${rcv[@]}" >"$W/pipe.out" 2>&1
    local st=("${PIPESTATUS[@]}")
    set -e
    rec "$sec" "$case" wall "$(s_since "$t")"
    [ "${st[0]}" = 0 ] && [ "${st[1]}" = 0 ] || {
        cat "$W/pipe.out" >&2
        die "$sec/$case: pipe failed (${st[*]})"
    }
    rec "$sec" "$case" rss_send "$(rss_mib "$W/rss.send")"
    rec "$sec" "$case" rss_recv "$(rss_mib "$W/rss.recv")"
}
# timed_one SECTION CASE CMD...: cold caches, then CMD under /usr/bin/time -v.
timed_one() {
    local sec=$1 case=$2 t
    shift 2
    cold
    t=$(now)
    /usr/bin/time -v -o "$W/rss.one" "$@" >"$W/one.out" 2>&1 || {
        cat "$W/one.out" >&2
        die "$sec/$case: $* failed"
    }
    rec "$sec" "$case" wall "$(s_since "$t")"
    rec "$sec" "$case" rss "$(rss_mib "$W/rss.one")"
}
# verify SECTION CASE HASH FILE: byte-exactness of FILE against the sha256
# of the source image.
verify() {
    local b
    b=$(hash_of "$4")
    if [ "$3" = "$b" ]; then
        rec "$1" "$2" exact 1
    else
        rec "$1" "$2" exact 0
        echo "MISMATCH $1/$2: $4 ($b) differs from the source ($3)" >>"$NOTES"
        note "MISMATCH $1/$2: $4"
    fi
}

# ---------------------------------------------------------------- setup
note "workdir $W; subvol $SUBVOL; image ${SIZE_GIB} GiB, change ${CHG_MIB} MiB, runs $RUNS"
POOL_GIB=$((SIZE_GIB * 4 + 4))
"$SUBVOL" pool init "$PA" --backing-image "$((SIZE_GIB * 2 + 4))G" >/dev/null
"$SUBVOL" pool init "$PB" --backing-image "${POOL_GIB}G" >/dev/null
mkdir -p "$BHOST" "$BT"
"$SUBVOL" pool init "$PF" >/dev/null
truncate -s "$((SIZE_GIB * 3 + 4))G" "$BTIMG"
mkfs.btrfs -q -f "$BTIMG" >/dev/null
BTDEV=$(losetup --find --show --direct-io=on "$BTIMG")
mount "$BTDEV" "$BT"
btrfs -q subvolume create "$BT/src" >/dev/null
mkdir -p "$BT/snaps" "$BT/dst"

wait_quiet setup
note "filling a ${SIZE_GIB} GiB raw subvolume with random data"
sva create v --size "${SIZE_GIB}G" --fs raw >/dev/null
IMG=$(image_of "$PA" v)
fio --name=fill --filename="$IMG" --rw=write --bs=1M --size="$SIZE_B" --direct=1 --refill_buffers \
    --ioengine=libaio --iodepth=16 --end_fsync=1 --output-format=terse >/dev/null
sva snapshot v@base >/dev/null
BASE_IMG=$(image_of "$PA" v@base)
BASE_HASH=$(hash_of "$BASE_IMG")
cp --reflink=never --sparse=always "$BASE_IMG" "$BT/src/img"
sync -f "$BT"
btrfs -q subvolume snapshot -r "$BT/src" "$BT/snaps/base" >/dev/null
cp --reflink=never --sparse=always "$BASE_IMG" "$BHOST/rsync.img"
sync -f "$BHOST"

note "initial full replication of the base (subvol, btrfs)"
timed_pipe init subvol "$SUBVOL" --pool "$PA" send v@base -- "$SUBVOL" --pool "$PB" receive v
verify init subvol "$BASE_HASH" "$(image_of "$PB" v@base)"
timed_pipe init btrfs btrfs -q send "$BT/snaps/base" -- btrfs -q receive "$BT/dst"
verify init btrfs "$BASE_HASH" "$BT/dst/base/img"

# ---------------------------------------------------------------- device read rate and full copies
has_part full || FULL_RUNS=0
wait_quiet "full copies"
note "device sequential read rate and full copies"
for r in $(seq 1 "$FULL_RUNS"); do
    note "full copies, run $r"
    cold
    t=$(now)
    dd if="$BASE_IMG" of=/dev/null bs=1M iflag=direct status=none
    rec full "dd iflag=direct bs=1M (device read)" wall "$(s_since "$t")"
    cold
    t=$(now)
    fio --name=seqread --filename="$BASE_IMG" --rw=read --bs=1M --direct=1 --ioengine=libaio \
        --iodepth=16 --size="$SIZE_B" --output-format=terse >/dev/null
    rec full "fio read bs=1M qd16 direct (device read)" wall "$(s_since "$t")"

    timed_one full "subvol send (full) > /dev/null" sh -c '"$1" --pool "$2" send v@base >/dev/null' sh "$SUBVOL" "$PA"

    timed_one full "cp --reflink=never --sparse=always (+sync)" \
        sh -c 'cp --reflink=never --sparse=always "$1" "$2" && sync -f "$2"' sh "$BASE_IMG" "$BHOST/full.img"
    rm -f "$BHOST/full.img"

    timed_pipe full "subvol send | receive (full)" "$SUBVOL" --pool "$PA" send v@base -- env SUBVOL_TRACE=1 "$SUBVOL" --pool "$PF" receive full
    rec full "content-root check" verify_s "$(awk '$2 == "trace" && $3 == "receive" && $4 == "verify" { s += $5 } END { printf "%.3f", s / 1000 }' "$W/pipe.out")"
    verify full "subvol send | receive (full)" "$BASE_HASH" "$(image_of "$PF" full@base)"
    "$SUBVOL" --pool "$PF" delete full --recursive --force >/dev/null
done

# ---------------------------------------------------------------- incremental
# Every run starts from the base: the source subvolume, the btrfs source
# subvolume and the rsync copy are reset to it, and the destinations drop
# what the previous run sent (untimed), so each run changes the same image.
reset_to_base() { # reset_to_base NEW
    local pre
    pre=$(sva rollback v@base --json | jq -r .pre_rollback)
    sva delete "$pre" >/dev/null
    sva delete "v@$1" >/dev/null
    svb delete "v@$1" >/dev/null
    pre=$(svb rollback v@base --json | jq -r .pre_rollback)
    svb delete "$pre" >/dev/null
    btrfs -q subvolume delete "$BT/dst/$1" "$BT/snaps/$1" "$BT/src" >/dev/null
    btrfs -q subvolume snapshot "$BT/snaps/base" "$BT/src" >/dev/null
    cp --reflink=always "$BHOST/rsync-base.img" "$BHOST/rsync.img"
    sync
}
cp --reflink=always "$BHOST/rsync.img" "$BHOST/rsync-base.img"
SEED=4242
has_part incremental || PATTERNS=""
for p in $PATTERNS; do
    for r in $(seq 1 "$RUNS"); do
        wait_quiet "incremental $p"
        NEW=$p-$r
        SEED=$((SEED + 1))
        note "incremental $p run $r: change ${CHG_MIB} MiB ($p writes), base -> $NEW"
        change "$IMG" "$p" "$SEED"
        change "$BT/src/img" "$p" "$SEED"
        sync -f "$BT"
        sva snapshot "v@$NEW" >/dev/null
        btrfs -q subvolume snapshot -r "$BT/src" "$BT/snaps/$NEW" >/dev/null
        SRC=$(image_of "$PA" "v@$NEW")
        SRC_HASH=$(hash_of "$SRC")
        # The peers' results are checked once per pattern (hashing 4 GiB
        # cold costs seconds); subvol's on every run.
        if [ "$r" = 1 ] && [ "$(hash_of "$BT/snaps/$NEW/img")" != "$SRC_HASH" ]; then
            echo "the btrfs file differs from the subvol image after the same change ($p run $r)" >>"$NOTES"
        fi
        rec "$p" info extents "$(extents "$SRC")"
        rec "$p" info ranges "$(sva send --estimate "v@$NEW" --from v@base --json | jq -r .ranges)"
        rec "$p" info estimate "$(sva send --estimate "v@$NEW" --from v@base --json | jq -r .data_bytes)"

        note "  streams sizes and timed runs"
        # Stream sizes, outside the timed runs.
        rec "$p" subvol stream "$(sva send "v@$NEW" --from v@base | wc -c)"
        rec "$p" btrfs stream "$(btrfs -q send -p "$BT/snaps/base" "$BT/snaps/$NEW" | wc -c)"

        timed_pipe "$p" subvol "$SUBVOL" --pool "$PA" send "v@$NEW" --from v@base -- env SUBVOL_TRACE=1 "$SUBVOL" --pool "$PB" receive v
        verify "$p" subvol "$SRC_HASH" "$(image_of "$PB" "v@$NEW")"
        # Of which the receiver's content-root check (reading back the
        # chunks the records touched).
        rec "$p" subvol verify_s "$(awk '$2 == "trace" && $3 == "receive" && $4 == "verify" { s += $5 } END { printf "%.3f", s / 1000 }' "$W/pipe.out")"
        rec "$p" subvol verify_read "$(sed -n 's/.*content root verified: [0-9]* chunks read (\([0-9]*\) bytes).*/\1/p' "$W/pipe.out" | head -n1)"

        # The sender alone (where the pipe's time goes).
        timed_one "$p" sendonly sh -c '"$1" --pool "$2" send "v@$3" --from v@base >/dev/null' sh "$SUBVOL" "$PA" "$NEW"

        timed_pipe "$p" btrfs btrfs -q send -p "$BT/snaps/base" "$BT/snaps/$NEW" -- btrfs -q receive "$BT/dst"
        [ "$r" = 1 ] && verify "$p" btrfs "$SRC_HASH" "$BT/dst/$NEW/img"

        # --ignore-times: the copy may have the source's size and mtime,
        # and rsync's quick check would then skip the file.
        timed_one "$p" rsync rsync --inplace --no-whole-file --ignore-times --stats "$SRC" "$BHOST/rsync.img"
        rec "$p" rsync stream "$(awk -F': ' '/^Total bytes sent/ { gsub(/,/, "", $2); print $2 + 0 }' "$W/one.out")"
        rec "$p" rsync literal "$(awk -F': ' '/^Literal data/ { gsub(/,/, "", $2); print $2 + 0 }' "$W/one.out")"
        [ "$r" = 1 ] && verify "$p" rsync "$SRC_HASH" "$BHOST/rsync.img"
        note "  reset to the base"
        reset_to_base "$NEW"
    done
done

# ---------------------------------------------------------------- chained
# Rounds on top of each other, snapshots kept, as a user replicating every
# hour runs it. Both sides start at the base.
# trace_ms FILE OP PHASE: the ms of one SUBVOL_TRACE phase (0 if absent).
trace_ms() { awk -v op="$2" -v ph="$3" '$2 == "trace" && $3 == op && $4 == ph { s += $5 } END { printf "%.1f", s + 0 }' "$1"; }
if has_part chained; then
    PREV=base
    for r in $(seq 1 "$CHAINED_ROUNDS"); do
        wait_quiet "chained round $r"
        NEW=c$r
        SEED=$((SEED + 1))
        note "chained round $r/$CHAINED_ROUNDS: change ${CHG_MIB} MiB (4k writes), $PREV -> $NEW"
        change "$IMG" 4k "$SEED"
        change "$BT/src/img" 4k "$SEED"
        sync -f "$BT"
        rec chained "$r" extents_live "$(extents "$IMG")"
        bench_settle
        t=$(now)
        SUBVOL_TRACE=1 sva snapshot "v@$NEW" >/dev/null 2>"$W/snap.trace"
        rec chained "$r" snap_subvol "$(ms_since "$t")"
        t=$(now)
        btrfs -q subvolume snapshot -r "$BT/src" "$BT/snaps/$NEW" >/dev/null
        rec chained "$r" snap_btrfs "$(ms_since "$t")"
        SRC=$(image_of "$PA" "v@$NEW")
        # The manifest builder that the snapshot started (in the background,
        # at idle I/O priority) is the snapshot's cost, not the increment's:
        # its time is recorded, and the pipe starts when it is done.
        t=$(now)
        while pgrep -f -- "--pool $PA build-manifests" >/dev/null; do sleep 0.2; done
        rec chained "$r" build_bg "$(s_since "$t")"
        cold
        t=$(now)
        set +e
        SUBVOL_TRACE=1 "$SUBVOL" --pool "$PA" send "v@$NEW" --from "v@$PREV" 2>"$W/send.trace" |
            SUBVOL_TRACE=1 "$SUBVOL" --pool "$PB" receive v >/dev/null 2>"$W/recv.trace"
        st=("${PIPESTATUS[@]}")
        set -e
        rec chained "$r" incr_subvol "$(s_since "$t")"
        [ "${st[0]}" = 0 ] && [ "${st[1]}" = 0 ] || {
            cat "$W/send.trace" "$W/recv.trace" >&2
            die "chained round $r: subvol send | receive failed (${st[*]})"
        }
        for ph in plan data; do rec chained "$r" "send_$ph" "$(trace_ms "$W/send.trace" send "$ph")"; done
        for ph in check setup apply sync publish follow; do rec chained "$r" "recv_$ph" "$(trace_ms "$W/recv.trace" receive "$ph")"; done
        cold
        t=$(now)
        btrfs -q send -p "$BT/snaps/$PREV" "$BT/snaps/$NEW" 2>/dev/null | btrfs -q receive "$BT/dst" >/dev/null 2>&1
        rec chained "$r" incr_btrfs "$(s_since "$t")"
        GOT=$(image_of "$PB" "v@$NEW")
        rec chained "$r" extents_received "$(extents "$GOT")"
        SRC_HASH=$(hash_of "$SRC")
        if [ "$(hash_of "$GOT")" = "$SRC_HASH" ] && [ "$(hash_of "$BT/dst/$NEW/img")" = "$SRC_HASH" ]; then
            rec chained "$r" exact 1
        else
            rec chained "$r" exact 0
            echo "MISMATCH chained round $r: v@$NEW differs between source, pool B and btrfs" >>"$NOTES"
        fi
        PREV=$NEW
    done
fi

# ---------------------------------------------------------------- report
note "done; writing the report"
{
    echo "# bench/replication.sh $(date -Is)"
    echo
    echo "host: $(nproc) vCPU, $(free -g | awk '/^Mem/ { print $2 }') GiB RAM, kernel $(uname -r);" \
        "TMPBASE $TMPBASE on $(findmnt -n -o FSTYPE -T "$TMPBASE") ($(findmnt -n -o SOURCE -T "$TMPBASE"));" \
        "$("$SUBVOL" --version 2>/dev/null || echo subvol), $(btrfs --version | head -1), $(rsync --version | head -1 | awk '{ print $1, $2, $3 }')"
    echo "image ${SIZE_GIB} GiB random data; change ${CHG_MIB} MiB (${CHG_B} B) per run; RUNS=$RUNS; cold caches (sync; drop_caches) and a settled host (no device writes for 2 s) before every timed command"
    echo
    python3 - "$RES" "$CHG_B" "$SIZE_B" "$PATTERNS" "$PARTS" <<'PY'
import sys, statistics
from collections import defaultdict
res, chg, size, patterns, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(), sys.argv[5].split()
d = defaultdict(list)
for line in open(res):
    sec, case, metric, val = line.rstrip("\n").split("\t")
    d[(sec, case, metric)].append(float(val))
def med(sec, case, metric):
    v = d.get((sec, case, metric))
    return statistics.median(v) if v else None
def f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)
def allok(sec, case):
    v = d.get((sec, case, "exact"))
    if not v:
        return "-"
    return "yes" if all(x == 1 for x in v) else f"NO ({int(sum(1 for x in v if x != 1))}/{len(v)} differ)"
GiB = 1 << 30
full_names = [
    "dd iflag=direct bs=1M (device read)",
    "fio read bs=1M qd16 direct (device read)",
    "subvol send (full) > /dev/null",
    "cp --reflink=never --sparse=always (+sync)",
    "subvol send | receive (full)",
]
print("## Full copy and device read rate (medians)")
print()
print("| what | wall s | GiB/s | peak RSS MiB (send / recv) | byte-exact |")
print("|---|---:|---:|---|---|")
for n in (full_names if "full" in parts else []):
    w = med("full", n, "wall")
    rs = med("full", n, "rss") if med("full", n, "rss") is not None else None
    rss = f(rs, "{:.1f}") if rs is not None else (f(med("full", n, "rss_send"), "{:.1f}") + " / " + f(med("full", n, "rss_recv"), "{:.1f}") if med("full", n, "rss_send") is not None else "-")
    print(f"| {n} | {f(w)} | {f(size / GiB / w if w else None, '{:.2f}')} | {rss} | {allok('full', n)} |")
if med("full", "content-root check", "verify_s") is not None:
    print(f"| (of which the receiver's content-root check) | {f(med('full', 'content-root check', 'verify_s'))} | - | - | - |")
for c, label in (("subvol", "subvol send | receive"), ("btrfs", "btrfs send | receive")):
    w = med("init", c, "wall")
    print(f"| initial full {label} (once) | {f(w)} | {f(size / GiB / w if w else None, '{:.2f}')} | "
          f"{f(med('init', c, 'rss_send'), '{:.1f}')} / {f(med('init', c, 'rss_recv'), '{:.1f}')} | {allok('init', c)} |")
print()
targets = []
dd = med("full", full_names[0], "wall"); fr = med("full", full_names[1], "wall"); sw = med("full", full_names[2], "wall")
if dd and sw:
    ratio = dd / sw
    targets.append(("full send >= 0.8x device sequential read (dd iflag=direct)", f"{ratio:.2f}x", ratio >= 0.8))
if fr and sw:
    ratio = fr / sw
    targets.append(("full send >= 0.8x device sequential read (fio qd16)", f"{ratio:.2f}x", ratio >= 0.8))
for p in patterns:
    print(f"## Incremental, {chg // (1 << 20)} MiB changed in {p} random writes (medians of {len(d.get((p, 'subvol', 'wall'), []))} runs)")
    print()
    print(f"extents of the new snapshot image: {f(med(p, 'info', 'extents'), '{:.0f}')}; changed ranges (send --estimate): {f(med(p, 'info', 'ranges'), '{:.0f}')}; "
          f"subvol send --estimate data_bytes: {f(med(p, 'info', 'estimate'), '{:.0f}')}")
    print()
    print("| tool | wall s | stream bytes | stream / changed | peak RSS MiB send / recv | byte-exact (subvol: every run; peers: first run) |")
    print("|---|---:|---:|---:|---|---|")
    for c, label in (("subvol", "subvol send --from \\| subvol receive"), ("btrfs", "btrfs send -p \\| btrfs receive"),
                     ("sendonly", "(subvol send --from > /dev/null: the sender alone)"),
                     ("rsync", "rsync --inplace --no-whole-file")):
        w = med(p, c, "wall"); s = med(p, c, "stream")
        if c == "sendonly":
            print(f"| {label} | {f(w)} | - | - | {f(med(p, c, 'rss'), '{:.1f}')} | - |")
            continue
        if c == "rsync":
            rss = f(med(p, c, "rss"), "{:.1f}") + " (all processes' max)"
            lit = med(p, c, "literal")
            sb = f"{s:,.0f} (literal {lit:,.0f})" if s is not None and lit is not None else "-"
        else:
            rss = f(med(p, c, "rss_send"), "{:.1f}") + " / " + f(med(p, c, "rss_recv"), "{:.1f}")
            sb = f"{s:,.0f}" if s is not None else "-"
        print(f"| {label} | {f(w)} | {sb} | {f(s / chg if s else None, '{:.3f}')} | {rss} | {allok(p, c)} |")
    vs, vr = med(p, "subvol", "verify_s"), med(p, "subvol", "verify_read")
    if vs is not None:
        print(f"| (of which the receiver's content-root check: {f(vr / (1 << 20) if vr is not None else None, '{:.0f}')} MiB read back) | {f(vs)} | - | - | - | - |")
    cw = med("full", full_names[3], "wall"); fw = med("full", full_names[4], "wall")
    print(f"| full copy: cp --reflink=never --sparse=always | {f(cw)} | {size:,} | {size / chg:.1f} | {f(med('full', full_names[3], 'rss'), '{:.1f}')} | - |")
    print(f"| full copy: subvol send \\| receive | {f(fw)} | - | - | {f(med('full', full_names[4], 'rss_send'), '{:.1f}')} / {f(med('full', full_names[4], 'rss_recv'), '{:.1f}')} | {allok('full', full_names[4])} |")
    print()
    sw, bw, rw = med(p, "subvol", "wall"), med(p, "btrfs", "wall"), med(p, "rsync", "wall")
    ss = med(p, "subvol", "stream")
    if ss:
        targets.append((f"{p}: stream bytes <= 1.05x changed", f"{ss / chg:.3f}x", ss <= 1.05 * chg))
    if sw and bw:
        targets.append((f"{p}: time <= btrfs send/receive", f"{sw:.3f} s vs {bw:.3f} s ({bw / sw:.2f}x)", sw <= bw))
    if sw and rw:
        targets.append((f"{p}: >= 20x faster than rsync", f"{rw / sw:.1f}x", rw / sw >= 20))
    rs = [x for k in ("rss_send", "rss_recv") for x in d.get((p, "subvol", k), [])]
    if rs:
        targets.append((f"{p}: subvol RSS < 100 MiB (max of all runs, send and receive)", f"{max(rs):.1f} MiB", max(rs) < 100))
rounds = sorted({int(c) for (sec, c, m) in d if sec == "chained"})
if rounds:
    one = lambda r, m: (d.get(("chained", str(r), m)) or [None])[0]
    print(f"## Chained steady state: {len(rounds)} rounds of {chg // (1 << 20)} MiB in random 4 KiB writes, snapshots kept")
    print()
    print("| round | extents live / received | snapshot ms subvol / btrfs | manifest build s (background) | increment s subvol / btrfs | subvol / btrfs | send plan ms | recv check / setup / follow ms | byte-exact |")
    print("|---:|---|---|---:|---|---:|---:|---|---|")
    for r in rounds:
        si, bi = one(r, "incr_subvol"), one(r, "incr_btrfs")
        print(f"| {r} | {f(one(r, 'extents_live'), '{:.0f}')} / {f(one(r, 'extents_received'), '{:.0f}')} | "
              f"{f(one(r, 'snap_subvol'), '{:.0f}')} / {f(one(r, 'snap_btrfs'), '{:.0f}')} | {f(one(r, 'build_bg'), '{:.1f}')} | {f(si)} / {f(bi)} | "
              f"{f(si / bi if si and bi else None, '{:.2f}x')} | {f(one(r, 'send_plan'), '{:.0f}')} | "
              f"{f(one(r, 'recv_check'), '{:.0f}')} / {f(one(r, 'recv_setup'), '{:.0f}')} / {f(one(r, 'recv_follow'), '{:.0f}')} | "
              f"{'yes' if one(r, 'exact') == 1 else 'NO'} |")
    print()
    first, last = rounds[0], rounds[-1]
    s1, sn, bn = one(first, "incr_subvol"), one(last, "incr_subvol"), one(last, "incr_btrfs")
    snap_n = one(last, "snap_subvol")
    if s1 and sn:
        targets.append((f"chained: round {last} increment (snapshot excluded) <= 1.2x round {first}", f"{sn:.3f} s vs {s1:.3f} s ({sn / s1:.2f}x)", sn <= 1.2 * s1))
    if sn and bn:
        targets.append((f"chained: round {last} increment <= 0.8x btrfs's", f"{sn:.3f} s vs {bn:.3f} s ({sn / bn:.2f}x)", sn <= 0.8 * bn))
    if snap_n is not None:
        targets.append((f"chained: round {last} snapshot < 100 ms", f"{snap_n:.0f} ms at {f(one(last, 'extents_live'), '{:.0f}')} extents", snap_n < 100))
    targets.append(("chained: every round byte-exact", "yes" if all(one(r, "exact") == 1 for r in rounds) else "NO", all(one(r, "exact") == 1 for r in rounds)))
rs = [x for k in ("rss_send", "rss_recv") for x in d.get(("full", full_names[4], k), []) + d.get(("init", "subvol", k), [])]
rs += d.get(("full", full_names[2], "rss"), [])
if rs:
    targets.append(("full send/receive: subvol RSS < 100 MiB (max)", f"{max(rs):.1f} MiB", max(rs) < 100))
print("## Targets")
print()
print("| target | measured | met |")
print("|---|---|---|")
for t, m, ok in targets:
    print(f"| {t} | {m} | {'yes' if ok else 'NO'} |")
print()
print("## Raw (every run)")
print()
print("```")
for (sec, case, metric), v in sorted(d.items()):
    print(f"{sec:6} {case:45} {metric:9} " + " ".join(f"{x:g}" for x in v))
print("```")
PY
    bench_notes
}
