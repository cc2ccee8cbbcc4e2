#!/usr/bin/env bash
# bench/encryption.sh -- what encrypting a subvolume (ext4 + fscrypt) costs.
#
# Builds two throw-away backing-image pools in a temporary directory. In
# pool A it creates two ext4 subvolumes of SUBVOL_SIZE, one plain ("plain")
# and one encrypted with a key file ("crypt", unlocked), and runs the same
# four fio jobs on a FILE_SIZE file in each:
#   seq write 1 MiB, seq read 1 MiB, random write 4 KiB, random read 4 KiB
# Buffered I/O (psync), not O_DIRECT: fscrypt does direct I/O only with
# inline encryption, and without it ext4 quietly turns O_DIRECT on encrypted
# files into buffered I/O, so direct=1 would compare different paths. Every
# job starts with cold caches (sync; drop_caches), writes end with an fsync
# (encryption happens at writeback), and each job moves a fixed amount of
# data (FILE_SIZE sequential, RAND_SIZE random), timed by the wall clock
# around fio. Plain and encrypted runs alternate which goes first.
#
# Then, for each subvolume: a BASE_SIZE file is written and snapshotted
# (@base) and sent in full to pool B; RUNS times, CHANGE_SIZE of it is
# rewritten with random 4 KiB writes (fio, fixed seed, the same offsets on
# both sides), snapshotted, and `send NEW --from PREV | receive` into pool B
# is timed with cold caches; stream bytes are counted separately.
#
# Usage (as root):   bench/encryption.sh          (~5 min)
# Environment:
#   SUBVOL       subvol binary (default: target/release/subvol of this repo,
#                built with `cargo build --release` if it is missing)
#   RUNS         runs per job and side; the tables show medians (default 3)
#   FILE_SIZE    fio file and sequential amount (default 1G)
#   RAND_SIZE    amount moved by each random job (default 128M)
#   BASE_SIZE    file replicated in full first (default 512M)
#   CHANGE_SIZE  rewritten per replication run (default 32M)
#   SUBVOL_SIZE  size of each subvolume (default 3G)
#   POOL_SIZE    size of each pool's backing image (default 12G)
#   TMPBASE      where the temporary directory is made (default /var/tmp)
# Everything is created under one `mktemp -d` directory and removed on exit,
# including on errors and Ctrl-C.

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=encryption.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
RUNS=${RUNS:-3}
FILE_SIZE=${FILE_SIZE:-1G}
RAND_SIZE=${RAND_SIZE:-128M}
BASE_SIZE=${BASE_SIZE:-512M}
CHANGE_SIZE=${CHANGE_SIZE:-32M}
SUBVOL_SIZE=${SUBVOL_SIZE:-3G}
POOL_SIZE=${POOL_SIZE:-12G}
TMPBASE=${TMPBASE:-/var/tmp}

bench_require fio python3 losetup findmnt mkfs.ext4 numfmt
need_posint RUNS
[ -e /sys/fs/ext4/features/encryption ] || die "this kernel cannot encrypt ext4"

SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"
bench_need_disk 0

bench_workdir enc
POOL=$W/pool
POOLB=$W/pool-b
POOLS="$POOL $POOLB"
KEY=$W/key
bytes() { numfmt --from=iec "$1"; }

# ---------------------------------------------------------------- setup
note "pools in $W (backing images $POOL_SIZE), subvolumes plain and crypt ($SUBVOL_SIZE)"
"$SUBVOL" pool init "$POOL" --backing-image "$POOL_SIZE" >&2
"$SUBVOL" pool init "$POOLB" --backing-image "$POOL_SIZE" >&2
head -c 64 /dev/urandom >"$KEY"
chmod 600 "$KEY"
sv create plain --size "$SUBVOL_SIZE" --fs ext4 --guarantee >&2
sv create crypt --size "$SUBVOL_SIZE" --fs ext4 --guarantee --encrypt --key-file "$KEY" >&2
sv mount plain >&2
sv unlock crypt --key-file "$KEY" >&2
declare -A DIR=([plain]=$(mount_point "$POOL" plain) [crypt]=$(mount_point "$POOL" crypt))
{
    echo "machine:  $(bench_machine)"
    echo "tools:    $(fio --version), subvol $("$SUBVOL" --version | awk '{print $NF}'), $(mke2fs -V 2>&1 | head -1)"
    echo "crypto:   $(awk '/^name/ {n=$3} /^driver/ && n=="xts(aes)" {print "xts(aes) by " $3; exit}' /proc/crypto)"
    echo "tmp dir:  $W on $(findmnt -n -o FSTYPE --target "$W") ($(findmnt -n -o SOURCE --target "$W"))"
    echo "fio:      psync buffered, file=$FILE_SIZE rand=$RAND_SIZE, cold caches, fsync at the end of writes, runs=$RUNS"
} >&2

# ---------------------------------------------------------------- fio
# timed_fio DIR ARGS...: runs one fio job on DIR/fio.dat from cold caches;
# prints the wall-clock seconds it took.
timed_fio() {
    local dir=$1 t
    shift
    dropc
    t=$(now)
    fio --name=bench --filename="$dir/fio.dat" --size="$FILE_SIZE" --ioengine=psync --direct=0 \
        --output-format=terse "$@" >/dev/null
    s_since "$t"
}

declare -A ARGS=(
    [seqwrite]="--rw=write --bs=1M --end_fsync=1"
    [seqread]="--rw=read --bs=1M"
    [randwrite]="--rw=randwrite --bs=4k --io_size=$RAND_SIZE --end_fsync=1 --randrepeat=0 --norandommap"
    [randread]="--rw=randread --bs=4k --io_size=$RAND_SIZE --randrepeat=0 --norandommap"
)
declare -A MOVED=([seqwrite]=$FILE_SIZE [seqread]=$FILE_SIZE [randwrite]=$RAND_SIZE [randread]=$RAND_SIZE)

for side in plain crypt; do
    # shellcheck disable=SC2086
    timed_fio "${DIR[$side]}" ${ARGS[seqwrite]} >/dev/null # lay the file out
done
for run in $(seq 1 "$RUNS"); do
    order="plain crypt"
    [ $((run % 2)) = 0 ] && order="crypt plain"
    for job in seqwrite seqread randwrite randread; do
        for side in $order; do
            # shellcheck disable=SC2086
            secs=$(timed_fio "${DIR[$side]}" ${ARGS[$job]})
            rec io "$job" "$side" "$run" "$(bytes "${MOVED[$job]}")" "$secs"
            note "run $run/$RUNS $job $side: ${secs}s"
        done
    done
done

# ---------------------------------------------------------------- replication
# change SIDE SEED: rewrites CHANGE_SIZE of SIDE's base file with random 4 KiB
# writes at offsets from SEED (the same on both sides).
change() {
    fio --name=change --filename="${DIR[$1]}/base.dat" --size="$BASE_SIZE" --ioengine=psync --rw=randwrite \
        --bs=4k --io_size="$CHANGE_SIZE" --randseed="$2" --norandommap --end_fsync=1 --output-format=terse >/dev/null
}
for side in plain crypt; do
    fio --name=base --filename="${DIR[$side]}/base.dat" --size="$BASE_SIZE" --ioengine=psync --rw=write --bs=1M \
        --end_fsync=1 --output-format=terse >/dev/null
    sv snapshot "$side@r0" >&2
    sv send "$side@r0" | "$SUBVOL" --pool "$POOLB" receive "$side" >&2
done
for run in $(seq 1 "$RUNS"); do
    order="plain crypt"
    [ $((run % 2)) = 0 ] && order="crypt plain"
    for side in $order; do
        change "$side" "$run"
        sv snapshot "$side@r$run" >&2
        stream=$(sv send "$side@r$run" --from "$side@r$((run - 1))" | wc -c)
        bench_settle 30
        dropc
        t=$(now)
        sv send "$side@r$run" --from "$side@r$((run - 1))" | "$SUBVOL" --pool "$POOLB" receive "$side" >/dev/null
        secs=$(s_since "$t")
        rec repl send-receive "$side" "$run" "$stream" "$secs"
        note "run $run/$RUNS send|receive $side: ${secs}s, $stream stream bytes"
    done
done

# ---------------------------------------------------------------- report
python3 - "$RES" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
runs = {}
for kind, job, side, run, moved, secs in rows:
    runs.setdefault((job, side), []).append((int(moved), float(secs)))
def rate(job, v):
    moved, secs = v
    return moved / 2**20 / secs if job.startswith("seq") else moved / 4096 / secs
print()
print("| job | plain ext4 | encrypted ext4 | ratio |")
print("|---|---:|---:|---:|")
for job, label, unit in [
    ("seqwrite", "seq write 1 MiB + fsync", "MiB/s"),
    ("seqread", "seq read 1 MiB, cold", "MiB/s"),
    ("randwrite", "rand write 4 KiB + fsync", "IOPS"),
    ("randread", "rand read 4 KiB, cold", "IOPS"),
]:
    p = statistics.median(rate(job, v) for v in runs[(job, "plain")])
    c = statistics.median(rate(job, v) for v in runs[(job, "crypt")])
    print(f"| {label} ({unit}) | {p:,.0f} | {c:,.0f} | {c / p:.2f} |")
p = runs[("send-receive", "plain")]
c = runs[("send-receive", "crypt")]
ps, cs = statistics.median(s for _, s in p), statistics.median(s for _, s in c)
pb, cb = statistics.median(b for b, _ in p), statistics.median(b for b, _ in c)
print(f"| send \\| receive of the change (s) | {ps:.2f} | {cs:.2f} | {cs / ps:.2f} |")
print(f"| its stream (MiB) | {pb / 2**20:.1f} | {cb / 2**20:.1f} | {cb / pb:.2f} |")
print()
print("per run (plain, encrypted, seconds):")
for key in sorted(runs):
    if key[1] == "plain":
        a = " ".join(f"{s:.2f}" for _, s in runs[key])
        b = " ".join(f"{s:.2f}" for _, s in runs[(key[0], "crypt")])
        print(f"  {key[0]:13} plain {a}   encrypted {b}")
PY
