# shellcheck shell=bash
# bench/lib.sh -- what the benchmark scripts share (sourced, not run).
#
# The caller sets BENCH_NAME (its file name, for messages) and TMPBASE, gets
# SUBVOL (the binary) from bench_subvol and W (its `mktemp -d` work
# directory), RES (results.tsv) and NOTES (notes.txt) from bench_workdir. It
# may set POOL (the pool `sv` works on), POOLS (pool directories to `pool
# umount --force` on teardown), BENCH_S_DECIMALS (s_since's precision,
# default 3) and FIO_WAIT (wait_quiet's budget, default 900 s), and define
# bench_on_exit (run first on exit: stop its background processes).
# bench_teardown releases everything the script created below W, in the
# order that cannot hang: thaw, unmount pools through subvol, unmount the
# rest, detach loops, then delete W.

: "${BENCH_NAME:=${0##*/}}"

# ---------------------------------------------------------------- messages, checks
die() { echo "$BENCH_NAME: $*" >&2; exit 1; }
note() { echo "== $(date +%T) $*" >&2; }

# bench_require TOOL...: root, and every TOOL on PATH.
bench_require() {
    local t
    [ "$(id -u)" = 0 ] || die "run as root (loop devices and mounts)"
    for t in "$@"; do command -v "$t" >/dev/null || die "$t is not installed"; done
}
# need_uint VAR...: each variable holds a whole number (0 allowed).
need_uint() {
    local v
    for v in "$@"; do case ${!v} in '' | *[!0-9]*) die "$v must be a non-negative integer" ;; esac; done
}
# need_posint VAR...: each variable holds a whole number above 0.
need_posint() {
    local v
    for v in "$@"; do case ${!v} in '' | *[!0-9]* | 0) die "$v must be a positive integer" ;; esac; done
}
# bench_need_disk [GIB]: TMPBASE is on a disk filesystem (on tmpfs the numbers
# would measure memory, and loop direct I/O may not be available at all) with
# at least GIB GiB free.
bench_need_disk() {
    local need=${1:-0} avail
    [ "$(stat -f -c %T "$TMPBASE")" != tmpfs ] || die "$TMPBASE is tmpfs; set TMPBASE to a directory on disk"
    avail=$(($(df -k --output=avail "$TMPBASE" | tail -1) / 1048576))
    [ "$avail" -ge "$need" ] || die "$TMPBASE has $avail GiB free, need about $need GiB"
}
# has_part N: N is one of the words of PARTS.
has_part() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

# ---------------------------------------------------------------- time, results
now() { date +%s%N; }
# s_since STAMP / ms_since STAMP: seconds (BENCH_S_DECIMALS decimals, default
# 3) / milliseconds (3 decimals) since a `now` stamp.
bench_since() { awk -v a="$1" -v b="$(now)" -v u="$2" -v d="$3" 'BEGIN { printf "%." d "f", (b - a) / u }'; }
s_since() { bench_since "$1" 1e9 "${BENCH_S_DECIMALS:-3}"; }
ms_since() { bench_since "$1" 1e6 3; }
# rec COLUMN...: one tab-separated line of results in RES.
rec() {
    local IFS=$'\t'
    printf '%s\n' "$*" >>"$RES"
}

# bench_notes: NOTES, if any, as the report's closing "Notes:" list.
bench_notes() {
    if [ -s "$NOTES" ]; then
        echo
        echo "Notes:"
        sed 's/^/- /' "$NOTES"
    fi
}

# ---------------------------------------------------------------- the host
dropc() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# Waits (at most $1 s, default 60) until no block device has written for
# two seconds in a row: the filesystems' deferred work from the previous step
# (freeing extents of deleted files, log checkpoints) then does not land in
# the next measurement, whichever tool it measures.
bench_settle() {
    local max=${1:-60} quiet=0 i prev cur
    # %.0f: mawk would print a sum above 2^31 as 1.47e+10, hiding small writes.
    prev=$(awk '{ w += $10 } END { printf "%.0f\n", w }' /proc/diskstats)
    for ((i = 0; i < max && quiet < 2; i++)); do
        sleep 1
        cur=$(awk '{ w += $10 } END { printf "%.0f\n", w }' /proc/diskstats)
        if [ "$cur" = "$prev" ]; then quiet=$((quiet + 1)); else quiet=0; fi
        prev=$cur
    done
    [ "$quiet" -ge 2 ] || echo "bench_settle: the disks kept writing for ${max}s; measuring anyway" >&2
}
# Extents of a file as FIEMAP reports them (holes not counted).
extents() { xfs_io -r -c fiemap "$1" | awk 'NR > 1 && !/hole/' | wc -l; }
# loop_desc /dev/loopN -> "loopN dio=1 lbs=4096"
loop_desc() {
    local n=${1#/dev/}
    echo "$n dio=$(cat "/sys/block/$n/loop/dio") lbs=$(cat "/sys/block/$n/queue/logical_block_size")"
}
# "2 CPUs (model), 23 GiB RAM, kernel 6.1.0"
bench_machine() {
    echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
}

FIO_WAITED=0
# wait_quiet WHAT: waits (up to FIO_WAIT s in all) while a fio that is not
# ours is running; says so in NOTES.
wait_quiet() {
    local waited=0
    while pgrep -x fio >/dev/null; do
        if [ "$FIO_WAITED" -ge "${FIO_WAIT:-900}" ]; then
            note "another fio is still running; measuring anyway"
            echo "another fio process was running during $1" >>"$NOTES"
            return
        fi
        [ $waited = 0 ] && note "another fio is running (pid $(pgrep -x fio | tr '\n' ' ')); waiting"
        sleep 30
        waited=$((waited + 30))
        FIO_WAITED=$((FIO_WAITED + 30))
    done
    [ $waited = 0 ] || echo "waited ${waited}s for other fio processes before $1" >>"$NOTES"
}

# ---------------------------------------------------------------- subvol
# The subvol binary: $SUBVOL, else target/release/subvol of this repo
# (built if missing). Prints its absolute path.
bench_subvol() {
    local repo=$1 bin=${SUBVOL:-}
    if [ -z "$bin" ]; then
        bin=$repo/target/release/subvol
        if [ ! -x "$bin" ]; then
            echo "== $(date +%T) building $bin" >&2
            (cd "$repo" && cargo build --release) >&2
        fi
    fi
    [ -x "$bin" ] || { echo "no subvol binary at $bin" >&2; return 1; }
    readlink -f "$bin"
}
sv() { "$SUBVOL" --pool "$POOL" "$@"; }
# info_field POOL NAME FIELD: one field of `subvol info --json` (null: empty).
info_field() {
    "$SUBVOL" --pool "$1" info "$2" --json |
        python3 -c 'import json, sys; v = json.load(sys.stdin)[sys.argv[1]]; print("" if v is None else v)' "$3"
}
image_of() { info_field "$1" "$2" image; }       # image_of POOL NAME
mount_point() { info_field "$1" "$2" mount_point; } # mount_point POOL NAME

# ---------------------------------------------------------------- work directory
# bench_workdir TAG: makes W ($TMPBASE/subvol-TAGbench.XXXXXX) with an empty
# RES and NOTES, and sets the traps that release it on exit, Ctrl-C or TERM.
bench_workdir() {
    W=$(mktemp -d "$TMPBASE/subvol-${1}bench.XXXXXX")
    RES=$W/results.tsv
    NOTES=$W/notes.txt
    : >"$RES"
    : >"$NOTES"
    trap bench_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
# The EXIT trap: the script's bench_on_exit, the raw results if it failed,
# then bench_teardown. Exits non-zero if anything was left behind.
bench_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    cd /
    if declare -F bench_on_exit >/dev/null; then bench_on_exit; fi
    if [ "$rc" != 0 ] && [ -s "$RES" ]; then
        echo "$BENCH_NAME: failed (exit $rc); raw results so far:" >&2
        cat "$RES" >&2
    fi
    if ! bench_teardown; then
        echo "$BENCH_NAME: left $W behind" >&2
        [ "$rc" != 0 ] || rc=1
    fi
    exit "$rc"
}

bench_mounts_below() {
    findmnt -rn -o TARGET | awk -v w="$W" 'index($0, w "/") == 1' | sort -r
}

bench_loops_below() {
    local f b
    for f in /sys/block/loop*/loop/backing_file; do
        [ -r "$f" ] || continue
        b=$(cat "$f" 2>/dev/null) || continue
        case $b in "$W"/*) f=${f#/sys/block/}; echo "/dev/${f%%/*}" ;; esac
    done
}

# Releases and deletes everything under $W. Returns non-zero (and keeps W)
# if something could not be released.
bench_teardown() {
    local m d i
    cd /
    [ -n "${W:-}" ] && [ -d "$W" ] || return 0
    for m in $(bench_mounts_below); do fsfreeze -u "$m" >/dev/null 2>&1; done
    for m in ${POOLS:-}; do
        if mountpoint -q "$m" 2>/dev/null; then
            "$SUBVOL" pool umount "$m" --force >/dev/null 2>&1
        fi
    done
    for m in $(bench_mounts_below); do umount "$m" 2>/dev/null || umount -l "$m"; done
    for i in 1 2 3 4 5 6; do
        d=$(bench_loops_below)
        [ -z "$d" ] && break
        for m in $d; do losetup -d "$m" 2>/dev/null; done
        sleep 0.5
    done
    if [ -n "$(bench_mounts_below)" ] || [ -n "$(bench_loops_below)" ]; then
        echo "could not release everything under $W:" >&2
        bench_mounts_below >&2
        bench_loops_below >&2
        return 1
    fi
    chattr -R -i "$W" 2>/dev/null
    rm -rf --one-file-system "$W"
}
