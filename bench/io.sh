#!/usr/bin/env bash
# bench/io.sh -- I/O throughput inside a subvolume compared with the pool's
# own filesystem.
#
# Builds a throw-away backing-image pool in a temporary directory, creates and
# mounts one XFS subvolume in it, and runs the same four fio jobs
#   seq write 1 MiB, seq read 1 MiB, random write 4 KiB, random read 4 KiB
#   (libaio, O_DIRECT, queue depth 16, time based)
# on a file in a plain directory of the pool's XFS ("host") and on a file
# inside the mounted subvolume ("subvolume"). Host and subvolume runs of each
# job alternate, so slow drift of the machine hits both sides alike. Prints
# the median of RUNS runs for each side and the ratio subvolume/host.
#
# Usage (as root):   bench/io.sh
# Environment:
#   SUBVOL      subvol binary (default: target/release/subvol of this repo,
#               built with `cargo build --release` if it is missing)
#   RUNTIME     seconds per fio job (default 20)
#   RAMP        fio ramp time in seconds, not counted (default 2)
#   RUNS        runs per job and side; the table shows the median (default 3)
#   FILE_SIZE   size of the test file on each side (default 4G)
#   SUBVOL_SIZE size of the subvolume (default 8G)
#   POOL_SIZE   size of the pool's sparse backing image (default 24G)
#   IODEPTH     fio iodepth (default 16)
#   TMPBASE     where the temporary directory is made (default /var/tmp)
#   KEEP_JSON   if set, a directory to copy every fio JSON report into
# Everything is created under one `mktemp -d` directory and removed on exit,
# including on errors and Ctrl-C.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=io.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
RUNTIME=${RUNTIME:-20}
RAMP=${RAMP:-2}
RUNS=${RUNS:-3}
FILE_SIZE=${FILE_SIZE:-4G}
SUBVOL_SIZE=${SUBVOL_SIZE:-8G}
POOL_SIZE=${POOL_SIZE:-24G}
IODEPTH=${IODEPTH:-16}
TMPBASE=${TMPBASE:-/var/tmp}
KEEP_JSON=${KEEP_JSON:-}
NAME=iobench

bench_require fio python3 losetup findmnt mkfs.xfs
need_posint RUNS RUNTIME

SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"
bench_need_disk 0 # not tmpfs; no size check

bench_workdir io
POOL=$W/pool
POOLS=$POOL
HOSTDIR=$POOL/bench-host
SVMNT=
bench_on_exit() { if [ -n "$SVMNT" ]; then sv umount "$NAME" >/dev/null 2>&1; fi; }

# ---------------------------------------------------------------- setup
note "pool in $W (backing image $POOL_SIZE), subvolume $NAME ($SUBVOL_SIZE)"
"$SUBVOL" pool init "$POOL" --backing-image "$POOL_SIZE" >&2
sv create "$NAME" --size "$SUBVOL_SIZE" >&2
sv mount "$NAME" >&2
SVMNT=$(mount_point "$POOL" "$NAME")
[ -n "$SVMNT" ] && mountpoint -q "$SVMNT" || die "subvolume $NAME did not mount"
mkdir -p "$HOSTDIR"

HOSTDEV=$(findmnt -n -o SOURCE --target "$POOL")
SVDEV=$(findmnt -n -o SOURCE --target "$SVMNT")
describe_loop() { # /dev/loopN -> "loopN dio=1 lbs=512 sched=none nr_requests=128"
    local q=/sys/block/${1#/dev/}/queue
    echo "$(loop_desc "$1") sched=$(sed 's/.*\[\(.*\)\].*/\1/' "$q/scheduler") nr_requests=$(cat "$q/nr_requests")"
}

xfs_sectsz() { xfs_info "$1" 2>/dev/null | grep -o 'sectsz=[0-9]*' | head -1; }

{
    echo "machine:   $(bench_machine)"
    echo "tools:     $(fio --version), subvol $("$SUBVOL" --version | awk '{print $NF}'), $(mkfs.xfs -V)"
    echo "tmp dir:   $W on $(findmnt -n -o FSTYPE --target "$W") ($(findmnt -n -o SOURCE --target "$W"))"
    echo "host:      $HOSTDIR  (pool XFS $(xfs_sectsz "$POOL") on $(describe_loop "$HOSTDEV"))"
    echo "subvolume: $SVMNT  (XFS $(xfs_sectsz "$SVMNT") on $(describe_loop "$SVDEV"))"
    echo "fio:       libaio direct=1 iodepth=$IODEPTH file=$FILE_SIZE runtime=${RUNTIME}s ramp=${RAMP}s runs=$RUNS"
} >&2

# ---------------------------------------------------------------- fio
# fio_json OUT DIR ARGS...: runs one fio job on DIR/fio.dat, JSON report in OUT.
fio_json() {
    local out=$1 dir=$2
    shift 2
    fio --name=bench --filename="$dir/fio.dat" --size="$FILE_SIZE" \
        --ioengine=libaio --direct=1 --iodepth="$IODEPTH" \
        --group_reporting --output-format=json --output="$out" "$@" >/dev/null
    if [ -n "$KEEP_JSON" ]; then mkdir -p "$KEEP_JSON" && cp "$out" "$KEEP_JSON/"; fi
}
# metric FILE DIR KEY: one number out of a fio JSON report (DIR = read|write).
metric() {
    python3 - "$@" <<'PY'
import json, sys
path, ddir, key = sys.argv[1:]
with open(path) as f:
    text = f.read()
# fio may print warnings before the JSON document.
job = json.loads(text[text.index("{"):])["jobs"][0][ddir]
print(job["bw_bytes"] / 2**20 if key == "mib" else job[key])
PY
}

declare -A RW=([seqwrite]=write [seqread]=read [randwrite]=randwrite [randread]=randread)
declare -A BS=([seqwrite]=1M [seqread]=1M [randwrite]=4k [randread]=4k)
JOBS="seqwrite seqread randwrite randread"

# Lay the test file out once per side with one sequential pass, so every
# measured job works on allocated blocks (no first-write allocation, no
# unwritten extents) in the subvolume's XFS and in the image file beneath it.
for side in host subvolume; do
    dir=$HOSTDIR
    [ $side = subvolume ] && dir=$SVMNT
    fio_json "$W/layout-$side.json" "$dir" --rw=write --bs=1M --end_fsync=1
    rec layout "$side" 0 "$(metric "$W/layout-$side.json" write mib)"
    note "layout $side: $(metric "$W/layout-$side.json" write mib | xargs printf '%.0f') MiB/s (first write of $FILE_SIZE)"
done

for run in $(seq 1 "$RUNS"); do
    # Alternate which side goes first from one run to the next.
    order="host subvolume"
    [ $((run % 2)) = 0 ] && order="subvolume host"
    for job in $JOBS; do
        for side in $order; do
            dir=$HOSTDIR
            [ $side = subvolume ] && dir=$SVMNT
            sync
            out=$W/$job-$side-$run.json
            fio_json "$out" "$dir" --rw="${RW[$job]}" --bs="${BS[$job]}" \
                --time_based --runtime="$RUNTIME" --ramp_time="$RAMP" \
                --randrepeat=0 --norandommap
            case $job in seq*) key=mib ;; *) key=iops ;; esac
            case $job in *write) ddir=write ;; *) ddir=read ;; esac
            val=$(metric "$out" $ddir $key)
            rec "$job" "$side" "$run" "$val"
            note "run $run/$RUNS $job $side: $(printf '%.0f' "$val") $([ $key = mib ] && echo MiB/s || echo IOPS)"
        done
    done
done

# ---------------------------------------------------------------- report
python3 - "$RES" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
vals = {}
for job, side, run, v in rows:
    vals.setdefault((job, side), []).append(float(v))
labels = [
    ("seqwrite", "seq write 1 MiB", "MiB/s"),
    ("seqread", "seq read 1 MiB", "MiB/s"),
    ("randwrite", "rand write 4 KiB", "IOPS"),
    ("randread", "rand read 4 KiB", "IOPS"),
]
print()
print("| job | host | subvolume | ratio |")
print("|---|---:|---:|---:|")
for key, label, unit in labels:
    h = statistics.median(vals[(key, "host")])
    s = statistics.median(vals[(key, "subvolume")])
    print(f"| {label} ({unit}) | {h:,.0f} | {s:,.0f} | {s / h:.2f} |")
print()
print("per run (host and subvolume runs of one job ran back to back):")
for key, label, unit in labels:
    for side in ("host", "subvolume"):
        runs = " ".join(f"{v:.0f}" for v in vals[(key, side)])
        print(f"  {label:17} {side:9} {runs}")
    pairs = zip(vals[(key, "subvolume")], vals[(key, "host")])
    print(f"  {label:17} {'ratio':9} " + " ".join(f"{s / h:.2f}" for s, h in pairs))
h, s = vals[("layout", "host")][0], vals[("layout", "subvolume")][0]
print(f"layout (first write of the file, 1 run): host {h:.0f} MiB/s, subvolume {s:.0f} MiB/s, ratio {s / h:.2f}")
PY
