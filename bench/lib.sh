# bench/lib.sh -- shared pieces of the benchmark scripts (sourced, not run).
#
# The caller sets W (its `mktemp -d` work directory) and SUBVOL (the binary),
# and may set POOLS (pool directories to `pool umount --force` on teardown)
# and RES (a results file printed when the script fails). bench_teardown
# releases everything the script created below W, in the order that cannot
# hang: thaw, unmount pools through subvol, unmount the rest, detach loops,
# then delete W.

bench_now() { date +%s%N; }
# Seconds since a bench_now stamp, 3 decimals.
bench_s_since() { awk -v a="$1" -v b="$(bench_now)" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
bench_dropc() { sync; echo 3 >/proc/sys/vm/drop_caches; }
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
