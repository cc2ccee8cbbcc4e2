#!/usr/bin/env bash
# bench/discard.sh -- is mounting subvolumes with `-o discard` worth it, or
# is `subvol trim` (FITRIM on demand, or by the guard) enough?
#
# One backing-image pool (XFS, reflink=1, on a loop device with direct I/O)
# in a `mktemp -d` directory under TMPBASE, with two 4 GiB XFS subvolumes:
# `plain` (mounted with defaults) and `disc` (mounted with -o discard). For
# RUNS rounds, on each subvolume in turn (the order alternates):
#   1. write FILES files of FILE_MIB MiB (fio, buffered, fsync at the end),
#      and note the host's used bytes;
#   2. delete them (rm + sync): time, and the host bytes given back right
#      1 s later and SETTLE s after that (online discard works in the
#      background);
#   3. `subvol trim NAME`: time, and the host bytes it gave back.
# Then a file-churn job (fio: CHURN_FILES files of 16 MiB written, fsynced
# and unlinked, CHURN_LOOPS times) runs on each, to see what online discard
# costs a workload that deletes a lot.
#
# Prints markdown tables of medians on stdout, progress on stderr.
#
# Usage (as root):   bench/discard.sh            (~6 min)
#                    QUICK=1 bench/discard.sh    (smoke run)
# Environment: SUBVOL (binary), RUNS (3), FILES (64), FILE_MIB (16),
#   SETTLE (35), CHURN_FILES (64), CHURN_LOOPS (4), TMPBASE (/var/tmp).

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=discard.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    : "${RUNS:=1}" "${FILES:=16}" "${CHURN_LOOPS:=1}"
fi
RUNS=${RUNS:-3}
FILES=${FILES:-64}
FILE_MIB=${FILE_MIB:-16}
SETTLE=${SETTLE:-35}
CHURN_FILES=${CHURN_FILES:-64}
CHURN_LOOPS=${CHURN_LOOPS:-4}
TMPBASE=${TMPBASE:-/var/tmp}

bench_require fio python3 findmnt losetup
need_uint RUNS FILES FILE_MIB SETTLE CHURN_FILES CHURN_LOOPS
SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"

bench_workdir discard
POOL=$W/pool
POOLS=$POOL

host_used() { sync -f "$POOL"; df -B1 --output=used "$POOL" | tail -1 | tr -d ' '; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

note "workdir $W; subvol $SUBVOL"
sv pool init --backing-image 16G "$POOL" >/dev/null
sv create plain --size 4G --fs xfs >/dev/null
sv create disc --size 4G --fs xfs >/dev/null
sv mount plain >/dev/null
sv mount disc -o discard >/dev/null
MP_plain=$(mount_point "$POOL" plain)
MP_disc=$(mount_point "$POOL" disc)
findmnt -n -o OPTIONS "$MP_disc" | grep -q discard || die "disc is not mounted with -o discard"

round() { # NAME
    local n=$1 mp u0 u1 u2 u3 u4 t
    mp=MP_$n
    mp=${!mp}
    u0=$(host_used)
    fio --name=fill --directory="$mp" --rw=write --bs=1M --filesize="${FILE_MIB}M" --nrfiles="$FILES" \
        --file_service_type=sequential --fsync_on_close=1 --output=/dev/null
    u1=$(host_used)
    t=$(now)
    rm -f "$mp"/fill.*
    sync -f "$mp"
    rec "$n" delete_s "$(s_since "$t")"
    sleep 1
    u2=$(host_used)
    sleep "$SETTLE"
    u3=$(host_used)
    t=$(now)
    sv trim "$n" >/dev/null
    rec "$n" trim_s "$(s_since "$t")"
    u4=$(host_used)
    rec "$n" written_mib "$(mib $((u1 - u0)))"
    rec "$n" back_after_1s_mib "$(mib $((u1 - u2)))"
    rec "$n" back_after_settle_mib "$(mib $((u1 - u3)))"
    rec "$n" back_by_trim_mib "$(mib $((u3 - u4)))"
}

churn() { # NAME
    local n=$1 mp t
    mp=MP_$n
    mp=${!mp}
    t=$(now)
    fio --name=churn --directory="$mp" --rw=write --bs=1M --filesize=16M --nrfiles="$CHURN_FILES" \
        --create_on_open=1 --fsync_on_close=1 --unlink=1 --unlink_each_loop=1 --loops="$CHURN_LOOPS" \
        --output=/dev/null
    sync -f "$mp"
    rec "$n" churn_s "$(s_since "$t")"
}

for r in $(seq 1 "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then order="plain disc"; else order="disc plain"; fi
    for n in $order; do
        note "round $r: $n"
        round "$n"
    done
    for n in $order; do
        note "churn $r: $n"
        churn "$n"
    done
done

python3 - "$RES" "$FILES" "$FILE_MIB" "$SETTLE" "$CHURN_FILES" "$CHURN_LOOPS" <<'PY'
import sys, statistics, collections
res, files, fmib, settle, cfiles, cloops = sys.argv[1:]
d = collections.defaultdict(list)
for line in open(res):
    n, k, v = line.rstrip("\n").split("\t")
    d[(n, k)].append(float(v))
m = lambda n, k: statistics.median(d[(n, k)]) if d[(n, k)] else float("nan")
print(f"## -o discard vs subvol trim ({files} files x {fmib} MiB written then deleted; medians of {len(d[('plain','delete_s')])})")
print()
print("| mount | written (host MiB) | rm + sync | host MiB back 1 s after | back %s s after that (total) | back by `subvol trim` after that | trim time | churn job (%s x 16 MiB, %s loops) |" % (settle, cfiles, cloops))
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for n, label in (("plain", "defaults"), ("disc", "-o discard")):
    print(f"| {label} | {m(n,'written_mib'):.0f} | {m(n,'delete_s'):.3f} s | {m(n,'back_after_1s_mib'):.0f} | {m(n,'back_after_settle_mib'):.0f} | {m(n,'back_by_trim_mib'):.0f} | {m(n,'trim_s'):.3f} s | {m(n,'churn_s'):.2f} s |")
print()
print(f"churn time -o discard / defaults: {m('disc','churn_s') / m('plain','churn_s'):.2f}x; rm + sync: {m('disc','delete_s') / m('plain','delete_s'):.2f}x")
PY
