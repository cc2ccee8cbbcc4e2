#!/usr/bin/env bash
# bench/scrub.sh -- what manifests and scrubs cost, measured on the product.
#
# One run, one host, everything in one `mktemp -d` directory under TMPBASE:
# a backing-image pool (`subvol pool init --backing-image`: XFS reflink=1 in
# a sparse file on a loop device with direct I/O) and, for the peer, a btrfs
# filesystem in a sparse file on a loop device with direct I/O.
#
#   1. Chunk size: the chunk_sizes example (crates/subvol-pool/examples) on a
#      SIZE_GIB GiB raw subvolume of random data: hashing speed, manifest size,
#      the cost of one 4 KiB change and of a 1% change in 4 KiB writes, for
#      64 KiB, 256 KiB and 1 MiB chunks.
#   2. Manifests at snapshot time: per pattern (4k, 1m) and RUNS times, 1% of
#      the image rewritten (fio, random writes at distinct offsets, O_DIRECT),
#      then `subvol snapshot` (its wall time, and its own total_us), then the
#      background build it started, from the manifest's provenance (`info
#      --json`: bytes_read, chunks_hashed, build_us) and its wall time from
#      the snapshot's return until the manifest is there.
#   3. Scrub throughput: `subvol scrub NAME@base` of the full image against
#      `dd if=IMAGE iflag=direct bs=1M` of the same image and `btrfs scrub
#      start -B` of the same bytes on the btrfs host; RUNS times, cold.
#   4. Many snapshots: a second raw subvolume of SIZE_GIB GiB, a snapshot,
#      then MANY more snapshots each after MANY_MIB MiB of 1 MiB random
#      writes; RUNS times, cold, the scrub of the first snapshot alone and of
#      all of them (bytes read, time).
#
# Before every timed command: cold caches (sync; drop_caches) and a settled
# host (no block device wrote for 2 s). Prints markdown tables (medians) on
# stdout, progress on stderr.
#
# Usage (as root):   bench/scrub.sh             (~10 min)
#                    QUICK=1 bench/scrub.sh     (smoke run: 1 GiB, 1 run, 10 snapshots)
# Environment: SUBVOL (binary; default target/release/subvol, built if
# missing), RUNS (3), SIZE_GIB (4), MANY (100), MANY_MIB (10), PARTS
# ("1 2 3 4"), TMPBASE (/var/tmp), FIO_WAIT (900).

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=scrub.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
if [ "${QUICK:-0}" = 1 ]; then
    : "${SIZE_GIB:=1}" "${RUNS:=1}" "${MANY:=10}"
fi
RUNS=${RUNS:-3}
SIZE_GIB=${SIZE_GIB:-4}
MANY=${MANY:-100}
MANY_MIB=${MANY_MIB:-10}
PARTS=${PARTS:-1 2 3 4}
TMPBASE=${TMPBASE:-/var/tmp}
FIO_WAIT=${FIO_WAIT:-900}

bench_require fio python3 losetup findmnt mkfs.btrfs btrfs jq cargo
need_posint RUNS SIZE_GIB MANY MANY_MIB
SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"
bench_need_disk $((SIZE_GIB * 5 + 4))
SIZE_B=$((SIZE_GIB << 30))
CHG_MIB=$((SIZE_B / 100 >> 20))

bench_workdir scrub
POOL=$W/pool
POOLS=$POOL
BT=$W/btrfs
BTIMG=$W/btrfs.img

# Cold caches on a quiet host.
cold() {
    dropc
    bench_settle
}
# fill IMAGE: random data over all of it.
fill() {
    fio --name=fill --filename="$1" --rw=write --bs=1M --size="$SIZE_B" --direct=1 --refill_buffers \
        --ioengine=libaio --iodepth=16 --end_fsync=1 --output-format=terse >/dev/null
}
# change IMAGE BS MIB SEED: MIB MiB of random BS-sized O_DIRECT writes at
# distinct random offsets.
change() {
    fio --name=chg --filename="$1" --ioengine=psync --rw=randwrite --bs="$2" --size="$SIZE_B" \
        --io_size="${3}M" --direct=1 --refill_buffers --randseed="$4" --fsync_on_close=1 \
        --output-format=terse >/dev/null
}
# wait_manifest NAME@SNAP: until the background build left its manifest.
wait_manifest() {
    local i
    for i in $(seq 1 6000); do
        [ "$(sv info "$1" --json | jq -r .integrity.manifest)" = present ] && return 0
        sleep 0.05
    done
    die "no manifest for $1 after 300 s"
}

note "workdir $W; subvol $SUBVOL; image ${SIZE_GIB} GiB, 1% = ${CHG_MIB} MiB, runs $RUNS"
"$SUBVOL" pool init "$POOL" --backing-image "$((SIZE_GIB * 3 + 4))G" >/dev/null
wait_quiet setup
sv create v --size "${SIZE_GIB}G" --fs raw >/dev/null
IMG=$(image_of "$POOL" v)
note "filling v with random data"
fill "$IMG"
cold
t=$(now)
sv snapshot v@base >/dev/null
wait_manifest v@base
rec base all wall "$(s_since "$t")"
rec base all build_us "$(sv info v@base --json | jq .integrity.details.build_us)"
rec base all bytes_read "$(sv info v@base --json | jq .integrity.details.bytes_read)"

CHUNKS_OUT=$W/chunks.md
if has_part 1; then
    note "part 1: chunk sizes"
    (cd "$REPO" && cargo build -q --release -p subvol-pool --example chunk_sizes) >&2
    cold
    "$REPO/target/release/examples/chunk_sizes" "$IMG" >"$CHUNKS_OUT"
fi

if has_part 2; then
    SEED=5000
    for p in 4k 1m; do
        for r in $(seq 1 "$RUNS"); do
            wait_quiet "manifests $p"
            SEED=$((SEED + 1))
            note "part 2: $p run $r: ${CHG_MIB} MiB changed, snapshot, background manifest"
            change "$IMG" "$p" "$CHG_MIB" "$SEED"
            cold
            t=$(now)
            us=$(sv snapshot "v@$p-$r" --json | jq '.[0].total_us')
            rec "$p" snapshot wall "$(s_since "$t")"
            rec "$p" snapshot total_us "$us"
            t=$(now)
            wait_manifest "v@$p-$r"
            rec "$p" manifest wall "$(s_since "$t")"
            d=$(sv info "v@$p-$r" --json | jq -c .integrity.details)
            for k in bytes_read chunks_hashed chunks_copied build_us; do
                rec "$p" manifest "$k" "$(jq ".$k" <<<"$d")"
            done
        done
    done
fi

if has_part 3; then
    truncate -s "$((SIZE_GIB + 2))G" "$BTIMG"
    mkfs.btrfs -q -f "$BTIMG" >/dev/null
    mkdir -p "$BT"
    mount "$(losetup --find --show --direct-io=on "$BTIMG")" "$BT"
    cp --reflink=never --sparse=always "$(image_of "$POOL" v@base)" "$BT/img"
    sync -f "$BT"
    for r in $(seq 1 "$RUNS"); do
        wait_quiet "scrub throughput"
        note "part 3: scrub vs dd vs btrfs scrub, run $r"
        cold
        j=$(sv scrub v@base --json)
        rec full scrub wall "$(jq '.duration_us / 1e6' <<<"$j")"
        rec full scrub bytes_read "$(jq .bytes_read <<<"$j")"
        cold
        t=$(now)
        dd if="$(image_of "$POOL" v@base)" of=/dev/null bs=1M iflag=direct status=none
        rec full dd wall "$(s_since "$t")"
        cold
        t=$(now)
        btrfs scrub start -B "$BT" >/dev/null
        rec full btrfs wall "$(s_since "$t")"
    done
fi

if has_part 4; then
    wait_quiet "many snapshots"
    note "part 4: $MANY snapshots of w, ${MANY_MIB} MiB of 1 MiB writes apart"
    sv create w --size "${SIZE_GIB}G" --fs raw >/dev/null
    WIMG=$(image_of "$POOL" w)
    fill "$WIMG"
    sv snapshot w@s0 >/dev/null
    for i in $(seq 1 "$MANY"); do
        change "$WIMG" 1m "$MANY_MIB" "$((9000 + i))"
        sv snapshot "w@s$i" >/dev/null
    done
    wait_manifest "w@s$MANY"
    for i in $(seq 1 "$MANY"); do
        rec many build bytes_read "$(sv info "w@s$i" --json | jq .integrity.details.bytes_read)"
    done
    # One snapshot, then all of them, alternately (drift lands on both).
    for r in $(seq 1 "$RUNS"); do
        wait_quiet "many snapshots, run $r"
        note "part 4: scrub of w@s0, then of all $((MANY + 1)) snapshots, run $r"
        cold
        j=$(sv scrub w@s0 --json)
        rec many one wall "$(jq '.duration_us / 1e6' <<<"$j")"
        rec many one bytes_read "$(jq .bytes_read <<<"$j")"
        cold
        j=$(sv scrub w --json)
        rec many all wall "$(jq '.duration_us / 1e6' <<<"$j")"
        rec many all bytes_read "$(jq .bytes_read <<<"$j")"
        rec many all snapshots "$(jq '.snapshots | length' <<<"$j")"
        rec many all clean "$(jq 'if .clean then 1 else 0 end' <<<"$j")"
    done
fi

note "done; writing the report"
{
    echo "# bench/scrub.sh $(date -Is)"
    echo
    echo "host: $(bench_machine); TMPBASE $TMPBASE on $(findmnt -n -o FSTYPE -T "$TMPBASE");" \
        "$("$SUBVOL" --version); image ${SIZE_GIB} GiB of random data; RUNS=$RUNS; MANY=$MANY x ${MANY_MIB} MiB"
    echo
    if [ -s "$CHUNKS_OUT" ]; then
        echo "## Chunk size (crates/subvol-pool/examples/chunk_sizes.rs, on v's image)"
        echo
        cat "$CHUNKS_OUT"
        echo
    fi
    python3 - "$RES" "$SIZE_B" "$MANY" "$MANY_MIB" <<'PY'
import sys, statistics
from collections import defaultdict
res, size, many, many_mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
d = defaultdict(list)
for line in open(res):
    sec, case, metric, val = line.rstrip("\n").split("\t")
    d[(sec, case, metric)].append(float(val))
def med(*k):
    v = d.get(k)
    return statistics.median(v) if v else None
MiB = 1 << 20
b = med("base", "all", "build_us")
print("## Manifests at snapshot time (medians)")
print()
print(f"The base's manifest (full build, every chunk read): {med('base', 'all', 'bytes_read') / MiB:,.0f} MiB read in {b / 1e6:.2f} s "
      f"({med('base', 'all', 'bytes_read') / b:,.0f} MB/s).")
print()
print("| 1% changed as | snapshot (wall, as shipped) | snapshot total_us | manifest build (build_us) | manifest ready after snapshot (wall) | bytes read | chunks hashed / copied |")
print("|---|---:|---:|---:|---:|---:|---|")
for p in ("4k", "1m"):
    if med(p, "snapshot", "wall") is None:
        continue
    print(f"| {p} random writes | {med(p, 'snapshot', 'wall') * 1e3:.0f} ms | {med(p, 'snapshot', 'total_us') / 1e3:.0f} ms | "
          f"{med(p, 'manifest', 'build_us') / 1e3:.0f} ms | {med(p, 'manifest', 'wall') * 1e3:.0f} ms | "
          f"{med(p, 'manifest', 'bytes_read') / MiB:,.1f} MiB | {med(p, 'manifest', 'chunks_hashed'):,.0f} / {med(p, 'manifest', 'chunks_copied'):,.0f} |")
print()
if med("full", "scrub", "wall"):
    s, dd, bt = med("full", "scrub", "wall"), med("full", "dd", "wall"), med("full", "btrfs", "wall")
    print("## Scrub throughput (one snapshot, the whole image; medians)")
    print()
    print("| what | wall s | MiB/s | vs dd |")
    print("|---|---:|---:|---:|")
    print(f"| subvol scrub v@base (idle I/O class) | {s:.2f} | {size / MiB / s:,.0f} | {dd / s:.2f}x |")
    print(f"| dd iflag=direct bs=1M of the same image | {dd:.2f} | {size / MiB / dd:,.0f} | 1.00x |")
    print(f"| btrfs scrub start -B (same bytes, btrfs host) | {bt:.2f} | {size / MiB / bt:,.0f} | {dd / bt:.2f}x |")
    print()
if med("many", "one", "wall"):
    o, a = med("many", "one", "wall"), med("many", "all", "wall")
    ob, ab = med("many", "one", "bytes_read"), med("many", "all", "bytes_read")
    print(f"## Many snapshots sharing most blocks ({many} snapshots, {many_mib} MiB of 1 MiB writes apart)")
    print()
    print("| scrub of | wall s | bytes read | vs one |")
    print("|---|---:|---:|---:|")
    print(f"| one snapshot | {o:.2f} | {ob / MiB:,.0f} MiB | 1.00x |")
    print(f"| {int(med('many', 'all', 'snapshots'))} snapshots | {a:.2f} | {ab / MiB:,.0f} MiB | {a / o:.2f}x time, {ab / ob:.2f}x bytes |")
    print()
    print(f"Each snapshot's manifest read {med('many', 'build', 'bytes_read') / MiB:.1f} MiB (median) when it was built; "
          f"the scrub of all found {'no damage' if med('many', 'all', 'clean') == 1 else 'DAMAGE'}.")
    print()
print("## Raw (every run)")
print()
print("```")
for (sec, case, metric), v in sorted(d.items()):
    print(f"{sec:5} {case:9} {metric:14} " + " ".join(f"{x:g}" for x in v))
print("```")
PY
    bench_notes
}
