#!/usr/bin/env bash
# bench/snapshot.sh -- what a snapshot costs, next to its peers.
#
# Snapshot time as an image accumulates extents over many rounds of
# changes (one snapshot per round, beside btrfs's) is measured by the
# chained part of bench/replication.sh (PARTS=chained), which also
# replicates each round.
#
# One run, one host, everything in one `mktemp -d` directory under TMPBASE:
# a backing-image pool (XFS, reflink=1, on a loop device with direct I/O) and,
# as the peer, a btrfs filesystem in a sparse file on a loop device with
# direct I/O. Three parts:
#
#  1. Latency. For images of SIZES GiB (default 1 4 16), each with a file
#     filling FILL_PCT % of the subvolume's XFS, idle and under write load:
#       - `subvol snapshot` of the MOUNTED subvolume: wall time of the
#         command, its reported total_us and the frozen window (frozen_us),
#       - `cp --reflink=always` of the same image file on the pool's XFS
#         (the plain clone of the same extents, not consistent),
#       - `btrfs subvolume snapshot -r` of a btrfs subvolume holding a file
#         of the same size on the btrfs host.
#     Write load = fio randwrite 4 KiB, O_DIRECT, iodepth 16, on the data
#     file (inside the subvolume; inside the btrfs subvolume for btrfs),
#     started WARMUP s before the timed operation and stopped right after
#     it; its worst write latency ("stall") is what a writer saw. Under load
#     each XFS measurement gets a freshly made and filled subvolume, since
#     every snapshot or clone under load fragments the image (part 2).
#  2. Fragmented images. A 4 GiB subvolume whose image is fragmented to
#     about FRAG_TARGETS extents (default 20000 100000) by 4 KiB random
#     writes inside the mounted subvolume while the image shares its blocks
#     with a reflink copy (so every write lands in a new host block).
#     subvol snapshot (total, frozen) vs cp --reflink, idle, under a light
#     load (LIGHT_IOPS) and under the full-speed writer.
#  3. Price after a snapshot. fio randwrite 4 KiB direct iodepth 16 inside
#     a freshly made, mounted subvolume (2 GiB file in 4 GiB): RUNTIME s
#     without a snapshot, RUNTIME s right after one, RUNTIME/2 s after that
#     snapshot is deleted again; image extents and pool space at each step;
#     with XFS extent size hints on the image (HINTS, default: none cow4k
#     cow1m cow16m ext1m). cowN sets the CoW extent size hint (xfs_io
#     cowextsize) on the image after create; extN the extent size hint
#     (xfs_io extsize), which XFS only accepts on a file without extents:
#     `subvol create --extent-hint N` (every other variant gets
#     --extent-hint 0). "default" is a plain `subvol create`, whatever it
#     sets.
#  Where `perf trace` works, one extra snapshot per case of parts 1 and 2 is
#  traced (ioctls only) to split its time into phases.
#
# Prints markdown tables of medians and ratios on stdout, progress on stderr.
#
# Usage (as root):   bench/snapshot.sh            (~20-25 min)
#                    QUICK=1 bench/snapshot.sh    (smoke run, a few minutes)
# Environment:
#   SUBVOL        subvol binary (default: target/release/subvol of this repo,
#                 built with `cargo build --release` if it is missing)
#   RUNS          runs per measurement in parts 1 and 2 (default 5; median)
#   SIZES         image sizes in GiB for part 1 (default "1 4 16")
#   FILL_PCT      how much of each subvolume the data file fills (default 80)
#   WARMUP        seconds the writer runs before a timed operation (default 1)
#   LIGHT_IOPS    part 2 also runs under a writer limited to this many IOPS
#                 (default 1000; 0 = skip)
#   FRAG_TARGETS  extent counts for part 2 (default "20000 100000")
#   RUNTIME       seconds per fio run in part 3 (default 20)
#   PRICE_RUNS    runs per hint in part 3 (default 1; each is 2.5 x RUNTIME)
#   HINTS         hint variants for part 3 (default "none cow4k cow1m cow16m ext1m";
#                 any of default, none, cowN, extN, extN+cowM with N, M in
#                 k/m units)
#   PARTS         which parts to run (default "1 2 3")
#   TMPBASE       where the temporary directory is made (default /var/tmp)
#   FIO_WAIT      seconds to wait for other fio processes to finish before
#                 measuring (default 900)
#   QUICK=1       smoke run: SIZES=1 RUNS=1 FRAG_TARGETS=20000 RUNTIME=5
#                 PRICE_RUNS=1 HINTS="none cow4k ext1m" (explicit values win)

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=snapshot.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    : "${SIZES:=1}" "${RUNS:=1}" "${FRAG_TARGETS:=20000}" "${RUNTIME:=5}" "${PRICE_RUNS:=1}"
    : "${HINTS:=none cow4k ext1m}"
fi
RUNS=${RUNS:-5}
SIZES=${SIZES:-1 4 16}
FILL_PCT=${FILL_PCT:-80}
WARMUP=${WARMUP:-1}
FRAG_TARGETS=${FRAG_TARGETS:-20000 100000}
RUNTIME=${RUNTIME:-20}
PRICE_RUNS=${PRICE_RUNS:-1}
HINTS=${HINTS:-none cow4k cow1m cow16m ext1m}
PARTS=${PARTS:-1 2 3}
TMPBASE=${TMPBASE:-/var/tmp}
FIO_WAIT=${FIO_WAIT:-900}
LIGHT_IOPS=${LIGHT_IOPS:-1000}
IODEPTH=16
FRAG_GIB=4              # part 2 image size
PRICE_GIB=4             # part 3 image size
PRICE_FILE_MIB=2048     # part 3 data file

bench_require fio python3 losetup findmnt mkfs.xfs mkfs.btrfs btrfs xfs_io fstrim cp
need_posint RUNS PRICE_RUNS RUNTIME
need_uint LIGHT_IOPS
for s in $SIZES; do case $s in *[!0-9]* | 0) die "SIZES are whole GiB: $s" ;; esac; done

SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"

MAXS=0
for s in $SIZES; do [ "$s" -gt "$MAXS" ] && MAXS=$s; done
[ "$MAXS" -lt "$FRAG_GIB" ] && MAXS=$FRAG_GIB
# Peak: the largest image's data on the pool and the same on btrfs, + slack
# (ensure_space trims the pool before each fill when the disk runs short).
bench_need_disk $((MAXS * FILL_PCT * 2 / 100 + 8))
POOL_SIZE=$((MAXS * 2 + 16))G
BTRFS_SIZE=$((MAXS * 2 + 8))G

bench_workdir snap
POOL=$W/pool
POOLS=$POOL
HOSTDIR=$POOL/bench-host
BT=$W/btrfs
BTIMG=$W/btrfs.img
WPID=
bench_on_exit() {
    if [ -n "$WPID" ]; then kill -INT "$WPID" 2>/dev/null; wait "$WPID" 2>/dev/null; fi
    if declare -F bench_on_exit_tracefs >/dev/null; then bench_on_exit_tracefs; fi
}

# ---------------------------------------------------------------- helpers
# Results: rec PART CASE METRIC VALUE.
pool_used_mib() { echo $(($(df -k --output=used "$POOL" | tail -1) / 1024)); }

# part_note PART: when a part starts and how busy the machine is.
part_note() { echo "part $1 started $(date +%T), load average $(cut -d' ' -f1-3 /proc/loadavg)" >>"$NOTES"; }
host_free_mib() { echo $(($(df -k --output=avail "$TMPBASE" | tail -1) / 1024)); }
# ensure_space MIB: before writing MIB more, make sure the disk under TMPBASE
# (shared with others) keeps 4 GiB free: trim what the pool and the btrfs
# host freed (their sparse images only shrink when trimmed), or give up.
ensure_space() {
    local want=$(($1 + 4096))
    [ "$(host_free_mib)" -ge "$want" ] && return 0
    fstrim "$POOL" 2>/dev/null || true
    mountpoint -q "$BT" && { fstrim "$BT" 2>/dev/null || true; }
    [ "$(host_free_mib)" -ge "$want" ] ||
        die "only $(host_free_mib) MiB free under $TMPBASE, need $want MiB; stopping before the disk fills"
}
# fill FILE MIB: writes a data file sequentially (1 MiB direct writes).
fill() {
    ensure_space "$2"
    fio --name=fill --filename="$1" --size="$2"M --rw=write --bs=1M --direct=1 \
        --ioengine=libaio --iodepth=16 --end_fsync=1 --output-format=terse >/dev/null
}
# start_writer FILE OUT: fio randwrite 4k direct on FILE until stop_writer;
# at most WRITER_IOPS IOPS if that is set.
WRITER_IOPS=
start_writer() {
    fio --name=writer --filename="$1" --rw=randwrite --bs=4k --direct=1 --ioengine=libaio \
        --iodepth=$IODEPTH --time_based --runtime=36000 --randrepeat=0 --norandommap \
        ${WRITER_IOPS:+--rate_iops=$WRITER_IOPS} \
        --output-format=json --output="$2" >/dev/null 2>&1 &
    WPID=$!
}
stop_writer() {
    kill -INT "$WPID"
    wait "$WPID" || true
    WPID=
}
# fio_metric OUT: "IOPS MAX_LATENCY_MS" of a fio JSON report.
fio_metric() {
    python3 - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
w = json.loads(text[text.index("{"):])["jobs"][0]["write"]
print(f'{w["iops"]:.0f} {w["lat_ns"]["max"] / 1e6:.3f}')
PY
}
# snap_json FILE: "total_ms frozen_ms extents frozen_copy_bytes" of `subvol snapshot --json`.
snap_json() {
    python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[0]
print(f'{r["total_us"] / 1000:.3f} {r["frozen_us"] / 1000:.3f} {r["extents"]} {r["frozen_copy_bytes"]}')
PY
}

# timed_snapshot PART CASE NAME SNAP: subvol snapshot, recorded as sv_*.
timed_snapshot() {
    local t j
    j=$W/snap.json
    t=$(now)
    sv snapshot "$3@$4" --json >"$j"
    rec "$1" "$2" sv_wall "$(ms_since "$t")"
    read -r total frozen ext fcb < <(snap_json "$j")
    rec "$1" "$2" sv_total "$total"
    rec "$1" "$2" sv_frozen "$frozen"
    rec "$1" "$2" sv_ext "$ext"
    rec "$1" "$2" sv_fcb "$fcb"
}
# traced_snapshot PART CASE NAME SNAP: one extra snapshot under `perf trace
# -e ioctl` (in-kernel tracing, no ptrace stops), to split its time into
# phases: the pre-clone (FICLONE), mapping the clone (FIEMAP), the FIFREEZE
# call, mapping the source and re-cloning while frozen, FITHAW. Writers are
# blocked from the start of FIFREEZE to the end of FITHAW ("window"), which
# is longer than the reported frozen_us (that starts after FIFREEZE returns).
traced_snapshot() {
    local j=$W/snap.json pt=$W/perf.txt
    perf trace -e ioctl -o "$pt" -- "$SUBVOL" --pool "$POOL" snapshot "$3@$4" --json >"$j"
    python3 - "$pt" "$j" "$1" "$2" >>"$RES" <<'PY'
import json, re, sys
pt, j, part, case = sys.argv[1:]
kinds = [
    ("ficlonerange", r"FICLONERANGE|CLONE_RANGE|0x94, 0xd,"),
    ("ficlone", r"FICLONE|BTRFS_IOC_CLONE\b|0x94, 0x9,"),
    ("fiemap", r"FIEMAP|0x66, 0xb,"),
    ("freeze", r"FIFREEZE|0x58, 0x77,"),
    ("thaw", r"FITHAW|0x58, 0x78,"),
]
calls = []
for line in open(pt):
    m = re.match(r"\s*([\d.]+)\s+\(\s*([\d.]+) ms\):.*?ioctl\((.*)", line)
    if not m:
        continue
    # perf occasionally pairs an exit with a lost entry: a "negative" duration.
    if float(m.group(2)) > 1e7:
        continue
    for k, rx in kinds:
        if re.search(rx, m.group(3)):
            calls.append((k, float(m.group(1)), float(m.group(2))))
            break
fz = next((c for c in calls if c[0] == "freeze"), None)
th = next((c for c in calls if c[0] == "thaw"), None)
fc = next((c for c in calls if c[0] == "ficlone"), None)
if fz is None or th is None or fc is None:
    sys.exit(0)
def total(kind, before=None, after=None):
    return sum(d for k, t, d in calls if k == kind and (before is None or t < before) and (after is None or t >= after))
out = {
    "t_ficlone": fc[2],
    # From the end of the pre-clone to FIFREEZE: mapping the clone.
    "t_map_clone": fz[1] - (fc[1] + fc[2]),
    "t_freeze": fz[2],
    "t_map_src": total("fiemap", after=fz[1]),
    "t_reclone": total("ficlonerange", after=fz[1]),
    "t_reclone_n": sum(1 for k, t, d in calls if k == "ficlonerange" and t >= fz[1]),
    "t_thaw": th[2],
    "t_window": th[1] + th[2] - fz[1],
}
r = json.load(open(j))[0]
out["t_frozen_rep"] = r["frozen_us"] / 1000
out["t_total_rep"] = r["total_us"] / 1000
for k, v in out.items():
    print(f"{part}\t{case}\t{k}\t{v:.3f}")
PY
    sv delete "$3@$4" >/dev/null
}
# timed_clone PART CASE IMAGE: cp --reflink=always, recorded as cp.
timed_clone() {
    local t
    t=$(now)
    cp --reflink=always "$3" "$HOSTDIR/clone.img"
    rec "$1" "$2" cp "$(ms_since "$t")"
}
drop_clone() { rm -f "$HOSTDIR/clone.img"; }
# timed_btrfs PART CASE SUBVOL: btrfs subvolume snapshot -r, recorded as bt.
timed_btrfs() {
    local t
    t=$(now)
    btrfs -q subvolume snapshot -r "$3" "$BT/snap" >/dev/null
    rec "$1" "$2" bt "$(ms_since "$t")"
}
drop_btrfs_snap() {
    btrfs -q subvolume delete -c "$BT/snap" >/dev/null
    btrfs -q subvolume sync "$BT" >/dev/null 2>&1 || true
}
# loaded PART CASE PREFIX FILE CMD...: runs CMD while a writer writes FILE,
# records the writer's IOPS and worst latency as PREFIX_wiops/PREFIX_stall.
loaded() {
    local part=$1 case=$2 prefix=$3 file=$4 out=$W/writer.json iops lat
    shift 4
    start_writer "$file" "$out"
    sleep "$WARMUP"
    "$@"
    stop_writer
    read -r iops lat < <(fio_metric "$out")
    rec "$part" "$case" "${prefix}_wiops" "$iops"
    rec "$part" "$case" "${prefix}_stall" "$lat"
}

HAVE_PERF=0
# `perf trace` mounts tracefs when it is not mounted; the machine is left
# as it was found, so it is unmounted again on exit in that case.
tracefs_was_mounted=0
mountpoint -q /sys/kernel/tracing && tracefs_was_mounted=1
if command -v perf >/dev/null && perf trace -e ioctl -o /dev/null -- true >/dev/null 2>&1; then HAVE_PERF=1; fi
bench_on_exit_tracefs() {
    if [ "$tracefs_was_mounted" = 0 ] && mountpoint -q /sys/kernel/tracing; then
        umount /sys/kernel/tracing 2>/dev/null || true
    fi
}
# traced PART CASE NAME SNAP: a traced extra snapshot if perf can trace.
traced() { if [ $HAVE_PERF = 1 ]; then traced_snapshot "$@"; fi; }

# ---------------------------------------------------------------- setup
wait_quiet setup
note "work dir $W; pool backing image $POOL_SIZE, btrfs image $BTRFS_SIZE"
"$SUBVOL" pool init "$POOL" --backing-image "$POOL_SIZE" >&2
mkdir -p "$HOSTDIR" "$BT"
truncate -s "$BTRFS_SIZE" "$BTIMG"
mkfs.btrfs -q -f "$BTIMG" >/dev/null
BTDEV=$(losetup -f --show --direct-io=on --sector-size 4096 "$BTIMG")
mount "$BTDEV" "$BT"
POOLDEV=$(findmnt -n -o SOURCE --target "$POOL")

{
    echo "machine: $(bench_machine)"
    echo "tools: $(fio --version), subvol $("$SUBVOL" --version | awk '{print $NF}'), $(mkfs.xfs -V), $(btrfs --version | head -1)"
    echo "work dir: $W on $(findmnt -n -o FSTYPE --target "$W") ($(findmnt -n -o SOURCE --target "$W"))"
    echo "pool: XFS reflink=1 on $(loop_desc "$POOLDEV"); btrfs host: $(loop_desc "$BTDEV")"
    echo "settings: RUNS=$RUNS SIZES='$SIZES' FILL_PCT=$FILL_PCT WARMUP=${WARMUP}s FRAG_TARGETS='$FRAG_TARGETS' RUNTIME=${RUNTIME}s PRICE_RUNS=$PRICE_RUNS HINTS='$HINTS'"
    echo "writer: fio randwrite bs=4k direct=1 libaio iodepth=$IODEPTH"
    echo "command: QUICK=$QUICK RUNS=$RUNS bench/snapshot.sh (SUBVOL=$SUBVOL)"
} >"$W/machine.txt"
cat "$W/machine.txt" >&2
T_START=$(date +%s)

# order RUN A B...: the arguments, rotated by RUN-1 (A B C, B C A, C A B, ...).
order() {
    local r=$1 n i
    shift
    n=$#
    for i in $(seq 0 $((n - 1))); do
        local k=$(((i + r - 1) % n + 1))
        echo "${!k}"
    done
}

# ---------------------------------------------------------------- part 1
# fresh_xfs NAME GIB MIB: a new subvolume NAME with a MIB data file; sets mp, img.
fresh_xfs() {
    sv delete "$1" --recursive --force >/dev/null 2>&1 || true
    sv create "$1" --size "$2G" >/dev/null
    sv mount "$1" >/dev/null
    mp=$(mount_point "$POOL" "$1")
    img=$(image_of "$POOL" "$1")
    fill "$mp/data" "$3"
    sync
}
if has_part 1; then
    wait_quiet "part 1"
    part_note 1
    for S in $SIZES; do
        name=lat$S
        mib=$((S * 1024 * FILL_PCT / 100))
        note "part 1: ${S} GiB subvolume, ${mib} MiB data file (and the same on btrfs)"
        fresh_xfs "$name" "$S" "$mib"
        btrfs -q subvolume create "$BT/vol" >/dev/null
        fill "$BT/vol/data" "$mib"
        sync
        rec p1 "$S" ext_before "$(extents "$img")"
        if [ "$S" = "${SIZES%% *}" ]; then
            echo "images as subvol creates them: $(xfs_io -r -c extsize "$img" | awk '{print "extsize=" $1}')" \
                "$(xfs_io -r -c cowextsize "$img" | awk '{print "cowextsize=" $1}')" >>"$NOTES"
        fi
        for r in $(seq 1 "$RUNS"); do
            # Alternate the order of the peers from run to run.
            for op in $(order "$r" sv cp bt); do
                sync
                case $op in
                sv) timed_snapshot p1 "$S idle" "$name" "r$r"; sv delete "$name@r$r" >/dev/null ;;
                cp) timed_clone p1 "$S idle" "$img"; drop_clone ;;
                bt) timed_btrfs p1 "$S idle" "$BT/vol"; drop_btrfs_snap ;;
                esac
            done
        done
        traced p1 "$S idle" "$name" tr
        note "part 1: ${S} GiB idle done; under load"
        # Under load every snapshot or clone leaves the image more fragmented
        # (the writer's next writes land in new host blocks), so each XFS
        # measurement starts from a freshly made and filled subvolume: this
        # part shows the effect of size, part 2 the effect of fragmentation.
        for r in $(seq 1 "$RUNS"); do
            for op in $(order "$r" sv cp bt); do
                case $op in
                sv)
                    fresh_xfs "$name" "$S" "$mib"
                    loaded p1 "$S load" sv "$mp/data" timed_snapshot p1 "$S load" "$name" "l$r"
                    rec p1 "$S load" sv_ext_after "$(extents "$img")"
                    ;;
                cp)
                    fresh_xfs "$name" "$S" "$mib"
                    loaded p1 "$S load" cp "$mp/data" timed_clone p1 "$S load" "$img"
                    rec p1 "$S load" cp_ext "$(extents "$img")"
                    drop_clone
                    ;;
                bt)
                    sync
                    loaded p1 "$S load" bt "$BT/vol/data" timed_btrfs p1 "$S load" "$BT/vol"
                    drop_btrfs_snap
                    ;;
                esac
            done
        done
        if [ $HAVE_PERF = 1 ]; then
            fresh_xfs "$name" "$S" "$mib"
            loaded p1 "$S load" tr "$mp/data" traced p1 "$S load" "$name" trl
        fi
        sv delete "$name" --recursive --force >/dev/null
        btrfs -q subvolume delete -c "$BT/vol" >/dev/null
        btrfs -q subvolume sync "$BT" >/dev/null 2>&1 || true
        fstrim "$POOL"
        fstrim "$BT"
    done
fi

# ---------------------------------------------------------------- part 2
if has_part 2; then
    wait_quiet "part 2"
    part_note 2
    name=frag
    mib=$((FRAG_GIB * 1024 * 85 / 100))
    note "part 2: ${FRAG_GIB} GiB subvolume, ${mib} MiB data file"
    fresh_xfs "$name" "$FRAG_GIB" "$mib"
    for target in $FRAG_TARGETS; do
        # Share every block with a reflink copy; then each 4 KiB write inside
        # the subvolume lands in a new host block: about +2 extents a write.
        cp --reflink=always "$img" "$HOSTDIR/base.img"
        n=$(extents "$img")
        i=0
        t=$(now)
        while [ "$n" -lt $((target * 97 / 100)) ] && [ $i -lt 10 ]; do
            ios=$(((target - n) / 2 + 256))
            fio --name=frag --filename="$mp/data" --rw=randwrite --bs=4k --direct=1 \
                --ioengine=libaio --iodepth=$IODEPTH --io_size=$((ios * 4))k --randrepeat=0 \
                --output-format=terse >/dev/null
            n=$(extents "$img")
            i=$((i + 1))
        done
        rm -f "$HOSTDIR/base.img"
        note "part 2: image has $n extents (target $target) after $(ms_since "$t") ms of random writes"
        rec p2 "$target" ext_made "$n"
        for r in $(seq 1 "$RUNS"); do
            for op in $(order "$r" cp sv); do
                sync
                case $op in
                cp)
                    rec p2 "$target idle" cp_ext "$(extents "$img")"
                    timed_clone p2 "$target idle" "$img"
                    drop_clone
                    ;;
                sv)
                    timed_snapshot p2 "$target idle" "$name" "i$target-$r"
                    sv delete "$name@i$target-$r" >/dev/null
                    ;;
                esac
            done
        done
        traced p2 "$target idle" "$name" "tr$target"
        # Light load first (LIGHT_IOPS), then full speed: the image fragments
        # further with every operation under load.
        for mode in light load; do
            if [ $mode = light ]; then
                [ "$LIGHT_IOPS" -gt 0 ] || continue
                WRITER_IOPS=$LIGHT_IOPS
            fi
            for r in $(seq 1 "$RUNS"); do
                for op in $(order "$r" cp sv); do
                    sync
                    case $op in
                    cp)
                        loaded p2 "$target $mode" cp "$mp/data" timed_clone p2 "$target $mode" "$img"
                        rec p2 "$target $mode" cp_ext "$(extents "$img")"
                        drop_clone
                        ;;
                    sv)
                        loaded p2 "$target $mode" sv "$mp/data" timed_snapshot p2 "$target $mode" "$name" "$mode$target-$r"
                        sv delete "$name@$mode$target-$r" >/dev/null
                        ;;
                    esac
                done
            done
            if [ $HAVE_PERF = 1 ]; then
                loaded p2 "$target $mode" tr "$mp/data" traced p2 "$target $mode" "$name" "tr$mode$target"
            fi
            WRITER_IOPS=
        done
        n=$(extents "$img")
        rec p2 "$target" ext_end "$n"
        note "part 2: $target done; image now has $n extents"
    done
    sv delete "$name" --recursive --force >/dev/null
    fstrim "$POOL"
fi

# ---------------------------------------------------------------- part 3
# hint_bytes 1m -> 1048576
hint_bytes() { numfmt --from=iec "$(echo "$1" | tr a-z A-Z)"; }
# price_fio OUT SECONDS: the part 3 random-write job on $mp/data.
price_fio() {
    fio --name=price --filename="$mp/data" --rw=randwrite --bs=4k --direct=1 --ioengine=libaio \
        --iodepth=$IODEPTH --time_based --runtime="$2" --randrepeat=0 --norandommap \
        --output-format=json --output="$1" >/dev/null
}
if has_part 3; then
    wait_quiet "part 3"
    part_note 3
    # A fresh subvolume per run and hint (hints alternate within a run), so
    # "no snapshot" always means a never-snapshotted image.
    for r in $(seq 1 "$PRICE_RUNS"); do
        for h in $HINTS; do
            name=price
            ext=
            cow=
            case $h in
            none | default) ;;
            ext*+cow*) ext=${h%%+*}; ext=${ext#ext}; cow=${h#*+cow} ;;
            ext*) ext=${h#ext} ;;
            cow*) cow=${h#cow} ;;
            *) die "unknown hint variant $h" ;;
            esac
            note "part 3: run $r, hint $h: ${PRICE_GIB} GiB subvolume, ${PRICE_FILE_MIB} MiB data file"
            if [ $h = default ]; then
                # Whatever `subvol create` does by itself.
                sv create "$name" --size "${PRICE_GIB}G" >/dev/null
            else
                sv create "$name" --size "${PRICE_GIB}G" --extent-hint "$(hint_bytes "${ext:-0}")" >/dev/null
            fi
            img=$(image_of "$POOL" "$name")
            if [ -n "$cow" ]; then xfs_io -c "cowextsize $(hint_bytes "$cow")" "$img"; fi
            if [ "$r" = 1 ]; then
                echo "hint $h: image $(xfs_io -r -c extsize "$img" | awk '{print "extsize=" $1}')" \
                    "$(xfs_io -r -c cowextsize "$img" | awk '{print "cowextsize=" $1}')" >>"$NOTES"
            fi
            sv mount "$name" >/dev/null
            mp=$(mount_point "$POOL" "$name")
            fill "$mp/data" "$PRICE_FILE_MIB"
            sync
            rec p3 "$h" ext_fill "$(extents "$img")"
            out=$W/price.json
            price_fio "$out" "$RUNTIME"
            read -r base _ < <(fio_metric "$out")
            rec p3 "$h" iops_base "$base"
            rec p3 "$h" ext_mid "$(extents "$img")"
            timed_snapshot p3 "$h" "$name" snap
            used0=$(pool_used_mib)
            price_fio "$out" "$RUNTIME"
            read -r snap _ < <(fio_metric "$out")
            rec p3 "$h" iops_snap "$snap"
            rec p3 "$h" growth_mib $(($(pool_used_mib) - used0))
            rec p3 "$h" ext_after "$(extents "$img")"
            # The snapshot gone, are writes back to full speed?
            sv delete "$name@snap" >/dev/null
            sync
            price_fio "$out" $(((RUNTIME + 1) / 2))
            read -r del _ < <(fio_metric "$out")
            rec p3 "$h" iops_del "$del"
            rec p3 "$h" ratio_snap "$(awk -v a="$snap" -v b="$base" 'BEGIN { printf "%.4f", a / b }')"
            rec p3 "$h" ratio_del "$(awk -v a="$del" -v b="$base" 'BEGIN { printf "%.4f", a / b }')"
            rec p3 "$h" ext_del "$(extents "$img")"
            note "part 3: $h run $r: $base IOPS without, $snap IOPS after a snapshot, $del after deleting it"
            sv delete "$name" --recursive --force >/dev/null
        done
        fstrim "$POOL"
    done
fi
T_END=$(date +%s)
echo "measuring took $((T_END - T_START)) s, load average at the end $(cut -d' ' -f1-3 /proc/loadavg)" >>"$NOTES"

# ---------------------------------------------------------------- report
python3 - "$RES" "$W/machine.txt" "$NOTES" "$SIZES" "$FRAG_TARGETS" "$HINTS" <<'PY'
import statistics, sys
res, machine, notes, sizes, targets, hints = sys.argv[1:]
vals = {}
for line in open(res):
    if not line.strip():
        continue
    part, case, metric, v = line.rstrip("\n").split("\t")
    vals.setdefault((part, case, metric), []).append(float(v))

def med(part, case, metric):
    v = vals.get((part, case, metric))
    return statistics.median(v) if v else None

def f(x, fmt="{:,.1f}"):
    return "-" if x is None else fmt.format(x)

def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"

print(open(machine).read().rstrip())
print()
if any(k[0] == "p1" for k in vals):
    print("### Snapshot latency (ms, medians)")
    print()
    print("| image | load | subvol wall | subvol total | frozen | cp --reflink | btrfs snap -r "
          "| subvol wall/cp | subvol wall/btrfs | frozen/cp | image extents: snapshot / cp |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in sizes.split():
        for load in ("idle", "load"):
            c = f"{s} {load}"
            if (("p1", c, "cp")) not in vals:
                continue
            w, t, fr = med("p1", c, "sv_wall"), med("p1", c, "sv_total"), med("p1", c, "sv_frozen")
            cp, bt = med("p1", c, "cp"), med("p1", c, "bt")
            print(f"| {s} GiB | {load} | {f(w)} | {f(t)} | {f(fr, '{:,.2f}')} | {f(cp)} | {f(bt)} "
                  f"| {ratio(w, cp)} | {ratio(w, bt)} | {ratio(fr, cp)} "
                  f"| {f(med('p1', c, 'sv_ext'), '{:,.0f}')} / {f(med('p1', c, 'cp_ext'), '{:,.0f}')} |")
    print()
    print("Under load: the writer's IOPS and its worst write latency (ms) in the window around each operation")
    print()
    print("| image | subvol: IOPS / worst lat | cp --reflink: IOPS / worst lat | btrfs: IOPS / worst lat "
          "| image extents before -> after the op: snapshot / cp |")
    print("|---|---:|---:|---:|---:|")
    for s in sizes.split():
        c = f"{s} load"
        if ("p1", c, "cp") not in vals:
            continue
        cells = [f"{f(med('p1', c, p + '_wiops'), '{:,.0f}')} / {f(med('p1', c, p + '_stall'))}" for p in ("sv", "cp", "bt")]
        print(f"| {s} GiB | " + " | ".join(cells) +
              f" | {f(med('p1', s, 'ext_before'), '{:,.0f}')} -> {f(med('p1', c, 'sv_ext_after'), '{:,.0f}')}"
              f" / {f(med('p1', c, 'cp_ext'), '{:,.0f}')} |")
    print()
if any(k[0] == "p2" for k in vals):
    print("### Fragmented 4 GiB image (ms, medians)")
    print()
    print("| extents | load | extents (cp / snapshot) | cp --reflink | subvol wall | subvol total | frozen "
          "| re-cloned frozen (MiB) | total/cp | frozen/cp | writer worst lat: cp / subvol |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tg in targets.split():
        for load in ("idle", "light", "load"):
            c = f"{tg} {load}"
            if ("p2", c, "cp") not in vals:
                continue
            cp, w, t, fr = (med("p2", c, m) for m in ("cp", "sv_wall", "sv_total", "sv_frozen"))
            fcb = med("p2", c, "sv_fcb")
            stall = "-" if load == "idle" else f"{f(med('p2', c, 'cp_stall'))} / {f(med('p2', c, 'sv_stall'))}"
            print(f"| ~{int(tg):,} | {load} | {f(med('p2', c, 'cp_ext'), '{:,.0f}')} / {f(med('p2', c, 'sv_ext'), '{:,.0f}')} "
                  f"| {f(cp)} | {f(w)} | {f(t)} | {f(fr, '{:,.2f}')} | {f(None if fcb is None else fcb / 2**20)} "
                  f"| {ratio(t, cp)} | {ratio(fr, cp)} | {stall} |")
    print()
    print("Targets:")
    for tg in targets.split():
        for load in ("idle", "light", "load"):
            c = f"{tg} {load}"
            if ("p2", c, "cp") not in vals:
                continue
            cp, t, fr = med("p2", c, "cp"), med("p2", c, "sv_total"), med("p2", c, "sv_frozen")
            checks = [f"total {t:.1f} ms <= 1.2 x cp {cp:.1f} ms: {'yes' if t <= 1.2 * cp else 'NO'}"]
            if int(tg) <= 20000:
                checks.append(f"frozen (reported) {fr:.1f} ms < 50 ms: {'yes' if fr < 50 else 'NO'}")
            else:
                checks.append(f"frozen (reported) {fr:.1f} ms <= cp/4 {cp / 4:.1f} ms: {'yes' if fr <= cp / 4 else 'NO'}")
            win = med("p2", c, "t_window")
            if win is not None:
                checks.append(f"traced run: writers blocked from FIFREEZE to FITHAW {win:.1f} ms"
                              f" (FIFREEZE call {med('p2', c, 't_freeze'):.1f} ms), pre-clone FICLONE {med('p2', c, 't_ficlone'):.1f} ms")
            print(f"- ~{int(tg):,} extents, {load}: " + "; ".join(checks))
    print()
if any(k[0] == "p3" for k in vals):
    print("### Random 4 KiB writes after a snapshot, with XFS hints on the image (medians)")
    print()
    print("Ratios are medians of the per-run ratios (each run compares IOPS on one image).")
    print()
    print("| hint | IOPS, no snapshot | IOPS, after snapshot | ratio | IOPS, snapshot deleted | ratio "
          "| extents: filled / before snapshot / after / after deleted-phase "
          "| pool growth in the post-snapshot run (MiB) | snapshot total / frozen (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for h in hints.split():
        if ("p3", h, "iops_base") not in vals:
            continue
        b, s, d = med("p3", h, "iops_base"), med("p3", h, "iops_snap"), med("p3", h, "iops_del")
        e = " / ".join(f(med("p3", h, m), "{:,.0f}") for m in ("ext_fill", "ext_mid", "ext_after", "ext_del"))
        rs, rd = med("p3", h, "ratio_snap"), med("p3", h, "ratio_del")
        print(f"| {h} | {f(b, '{:,.0f}')} | {f(s, '{:,.0f}')} | {f(rs, '{:.2f}')} | {f(d, '{:,.0f}')} | {f(rd, '{:.2f}')} | {e} "
              f"| {f(med('p3', h, 'growth_mib'), '{:,.0f}')} | {f(med('p3', h, 'sv_total'))} / {f(med('p3', h, 'sv_frozen'))} |")
    print()
if any(k[2] == "t_window" for k in vals):
    print("### Where a snapshot's time goes (one extra run under `perf trace -e ioctl`, ms)")
    print()
    print("Writers are blocked from the start of FIFREEZE to the end of FITHAW (\"window\"); on XFS the")
    print("pre-clone (FICLONE) blocks writes to the image as well, for its whole duration.")
    print()
    print("| case | FICLONE (pre-clone) | FIEMAP clone | FIFREEZE call | FIEMAP source (frozen) "
          "| re-clone (frozen): n / ms | FITHAW | window | reported frozen | reported total | writer worst lat |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for part, label in (("p1", "GiB"), ("p2", "extents")):
        cases = sorted({k[1] for k in vals if k[0] == part and k[2] == "t_window"},
                       key=lambda c: (int(c.split()[0]), c.split()[1]))
        for c in cases:
            g = lambda m: med(part, c, m)
            n, load = c.split()
            name = f"{n} GiB {load}" if part == "p1" else f"~{int(n):,} extents {load}"
            print(f"| {name} | {f(g('t_ficlone'))} | {f(g('t_map_clone'))} | {f(g('t_freeze'))} | {f(g('t_map_src'))} "
                  f"| {f(g('t_reclone_n'), '{:,.0f}')} / {f(g('t_reclone'))} | {f(g('t_thaw'), '{:.2f}')} | {f(g('t_window'))} "
                  f"| {f(g('t_frozen_rep'))} | {f(g('t_total_rep'))} | {f(g('tr_stall'))} |")
    print()
print("Raw values (all runs):")
for (part, case, metric), v in sorted(vals.items()):
    print(f"  {part} {case:14} {metric:10} " + " ".join(f"{x:g}" for x in v))
n = open(notes).read().strip()
if n:
    print()
    print("Notes:")
    for line in n.splitlines():
        print(f"  {line}")
PY
