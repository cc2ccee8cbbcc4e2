#!/usr/bin/env bash
# bench/space.sh -- the ENOSPC guard and the cost of space accounting.
#
# One run, one host, everything in one `mktemp -d` directory under TMPBASE.
#
#  1+2. Guard under a writer at full speed. A 1 GiB backing-image pool
#     (`subvol pool init --backing-image 1G`: XFS reflink=1 in a sparse
#     file, loop device with direct I/O) holds BALLAST MiB of host ballast
#     (fallocate) and a thin 4 GiB xfs subvolume, mounted. `subvol guard
#     --interval-ms 100` runs in the background (stderr time-stamped on
#     arrival into a log); a poller samples the host's statfs every 2 ms.
#     fio writes WRITE_SIZE (default 3G) into the subvolume at full speed,
#     for each writer in WRITERS:
#       direct     bs=1M O_DIRECT libaio iodepth 16
#       buffered   bs=1M buffered psync, fsync at the end
#       buffered-capped  the same, with the subvolume's loop device's
#                  writeback capped by hand (bdi strict_limit=1,
#                  max_bytes=64M: the dirty limit the guard's margin
#                  assumes per thin subvolume)
#     Measured: when the host's headroom (free - guaranteed) crossed the
#     guard's low watermark (poller) and when the guard logged the freeze
#     (so cross -> frozen; negative when the guard froze ahead of the
#     crossing on its fill-rate horizon), the freeze call's own duration
#     (guard log), the fill rate the guard measured, the lowest host free
#     space seen, whether fio reported an error and whether the kernel log
#     shows an XFS shutdown or I/O error. After HOLD s frozen the writer is
#     sent SIGINT and the ballast deleted: the guard must thaw, the writer
#     finish; then the subvolume's XFS is checked offline (xfs_repair -n).
#     The loop device's writeback limits (bdi strict_limit / max_bytes) are
#     recorded too: the guard's margin counts 64 MiB of dirty data per thin
#     subvolume.
#  3. Guard CPU when idle: utime+stime of a guard process (from
#     /proc/PID/stat) over IDLE_SECS (default 60) on the 1 GiB pool with one
#     mounted idle subvolume, and on the pool of part 4 (100 subvolumes,
#     1,000 snapshots, none mounted).
#  4. Listing latency. A pool (backing image 8G) with NSUB (100) raw 64 MiB
#     subvolumes, each given WRITES (300) random 4 KiB writes and then NSNAP
#     (10) snapshots with WRITES_BETWEEN (50) more random 4 KiB writes before
#     each: 1,100 fragmented images. `subvol list --snapshots --json` is
#     timed the first time after building (cold page cache; `subvol
#     snapshot` already wrote each snapshot's extent map to the pool's
#     extent cache), cold (drop_caches) again, cold with the extent cache
#     deleted (so it is rebuilt from FIEMAP), and warm (hyperfine, or a
#     loop); `subvol list --json` and `subvol pool status --json` cold and
#     warm. Target: < 2 s.
#
# Prints markdown tables on stdout, progress on stderr.
#
# Usage (as root):   bench/space.sh            (~5 min, plus waiting for other fio runs)
#                    QUICK=1 bench/space.sh    (smoke run, a few minutes)
# Environment:
#   SUBVOL       subvol binary (default: target/release/subvol of this repo,
#                built with `cargo build --release` if it is missing)
#   WRITERS      writer kinds for parts 1-2 (default "direct buffered buffered-capped")
#   WRITE_SIZE   how much fio tries to write (default 3G)
#   BALLAST      host ballast in MiB, deleted to let the guard thaw (default 400)
#   HOLD         seconds the writer is held frozen before the ballast goes (default 5)
#   IDLE_SECS    seconds of idle guard CPU measurement (default 60)
#   NSUB NSNAP WRITES WRITES_BETWEEN   part 4 shape (default 100 10 300 50)
#   RUNS         cold runs per listing measurement (default 3); warm runs are 10
#   PARTS        which parts (default "1 3 4"; part 1 includes 2)
#   TMPBASE      where the temporary directory is made (default /var/tmp)
#   FIO_WAIT     seconds to wait for other fio processes to finish (default 900)
#   QUICK=1      smoke run: IDLE_SECS=10 NSUB=10 RUNS=1 HOLD=2

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    : "${IDLE_SECS:=10}" "${NSUB:=10}" "${RUNS:=1}" "${HOLD:=2}"
fi
WRITERS=${WRITERS:-direct buffered buffered-capped}
WRITE_SIZE=${WRITE_SIZE:-3G}
BALLAST=${BALLAST:-400}
HOLD=${HOLD:-5}
IDLE_SECS=${IDLE_SECS:-60}
NSUB=${NSUB:-100}
NSNAP=${NSNAP:-10}
WRITES=${WRITES:-300}
WRITES_BETWEEN=${WRITES_BETWEEN:-50}
RUNS=${RUNS:-3}
PARTS=${PARTS:-1 3 4}
TMPBASE=${TMPBASE:-/var/tmp}
FIO_WAIT=${FIO_WAIT:-900}

die() { echo "space.sh: $*" >&2; exit 1; }
note() { echo "== $(date +%T) $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (loop devices and mounts)"
for t in fio python3 losetup findmnt xfs_io xfs_repair fsfreeze jq dmesg; do
    command -v "$t" >/dev/null || die "$t is not installed"
done
for v in BALLAST HOLD IDLE_SECS NSUB NSNAP WRITES WRITES_BETWEEN RUNS; do
    case ${!v} in '' | *[!0-9]*) die "$v must be a non-negative integer" ;; esac
done
for w in $WRITERS; do case $w in direct | buffered | buffered-capped) ;; *) die "WRITERS are direct, buffered, buffered-capped: $w" ;; esac; done

SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"
[ "$(stat -f -c %T "$TMPBASE")" != tmpfs ] || die "$TMPBASE is tmpfs; set TMPBASE to a directory on disk"
AVAIL_GIB=$(($(df -k --output=avail "$TMPBASE" | tail -1) / 1048576))
[ "$AVAIL_GIB" -ge 6 ] || die "$TMPBASE has $AVAIL_GIB GiB free, need about 6 GiB"

W=$(mktemp -d "$TMPBASE/subvol-spacebench.XXXXXX")
SP=$W/small        # part 1-3: 1 GiB pool
BP=$W/big          # part 3-4: pool with many snapshots
RES=$W/results.tsv
NOTES=$W/notes.txt
: >"$RES"
: >"$NOTES"
BGPIDS=()          # guard, poller, fio: ours, killed by PID at exit

POOLS="$SP $BP"
cleanup() {
    local rc=$? m i p
    set +e
    trap - EXIT INT TERM
    cd /
    for p in "${BGPIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
    # Writers blocked on a frozen filesystem only go once it is thawed.
    for m in $(bench_mounts_below); do fsfreeze -u "$m" >/dev/null 2>&1; done
    for p in "${BGPIDS[@]}"; do
        for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    if [ "$rc" != 0 ] && [ -s "$RES" ]; then
        echo "space.sh: failed (exit $rc); raw results so far:" >&2
        cat "$RES" >&2
    fi
    bench_teardown || echo "space.sh: left $W behind" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
now() { date +%s%N; }
s_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'; }
rec() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }
dropc() { bench_dropc; }
forget() { # forget PID: drop it from BGPIDS
    local p out=()
    for p in "${BGPIDS[@]}"; do [ "$p" = "$1" ] || out+=("$p"); done
    BGPIDS=("${out[@]}")
}
# cpu_ticks PID: utime + stime (clock ticks) of a process.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
kmark() { echo "space.sh: $1" >/dev/kmsg; }
# Kernel log lines after the marker "space.sh: $1".
dmesg_since() { dmesg | awk -v m="space.sh: $1" 'index($0, m) { buf = ""; next } { buf = buf $0 "\n" } END { printf "%s", buf }'; }

FIO_WAITED=0
wait_quiet() {
    local waited=0
    while pgrep -x fio >/dev/null; do
        if [ "$FIO_WAITED" -ge "$FIO_WAIT" ]; then
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

# start_guard POOL LOG [ARGS...]: subvol guard in the background, each
# stderr line prefixed with its arrival time (epoch seconds); sets GPID.
start_guard() {
    local pool=$1 log=$2
    shift 2
    "$SUBVOL" --pool "$pool" guard "$@" 2> >(while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done >"$log") &
    GPID=$!
    BGPIDS+=("$GPID")
    local i
    for i in $(seq 1 100); do grep -q 'guard: watching' "$log" 2>/dev/null && return; sleep 0.1; done
    die "the guard did not start (log: $(cat "$log"))"
}
stop_guard() {
    kill -INT "$GPID" 2>/dev/null || true
    wait "$GPID" 2>/dev/null || true
    forget "$GPID"
    GPID=
    sleep 0.2 # let the log's reader drain
}

# ---------------------------------------------------------------- parts 1+2
POLLER=$W/poller.py
cat >"$POLLER" <<'PY'
import os, sys, time
path, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
with open(out, "w") as f:
    last = None
    while not os.path.exists(stop):
        st = os.statvfs(path)
        free = st.f_bfree * st.f_frsize
        t = time.time()
        if free != last:
            f.write(f"{t:.6f} {free}\n")
            last = free
        time.sleep(0.002)
    f.write(f"{time.time():.6f} {free}\n")
PY

guard_case() {
    local w=$1 log=$W/guard-$1.log poll=$W/poll-$1.txt fj=$W/fio-$1.json i mp dev bdi fpid t0
    note "part 1: guard vs a $w writer"
    wait_quiet "part 1 ($w)"
    fallocate -l "${BALLAST}M" "$SP/bench-ballast"
    "$SUBVOL" --pool "$SP" create t --size 4G >/dev/null
    "$SUBVOL" --pool "$SP" mount t >/dev/null
    mp=$("$SUBVOL" --pool "$SP" info t --json | jq -r .mount_point)
    dev=$(findmnt -n -o SOURCE --target "$mp")
    bdi=/sys/class/bdi/$(cat "/sys/block/${dev#/dev/}/dev")
    rec "$w" bdi strict_limit "$(cat "$bdi/strict_limit" 2>/dev/null || echo -1)"
    rec "$w" bdi max_bytes "$(cat "$bdi/max_bytes" 2>/dev/null || echo -1)"
    if [ "$w" = buffered-capped ]; then
        echo 1 >"$bdi/strict_limit"
        echo $((64 << 20)) >"$bdi/max_bytes"
        rec "$w" bdi capped_max_bytes "$(cat "$bdi/max_bytes")"
    fi
    rec "$w" host free_at_start "$(($(stat -f -c %f "$SP") * $(stat -f -c %S "$SP")))"
    sync
    rm -f "$W/poll.stop"
    python3 "$POLLER" "$SP" "$poll" "$W/poll.stop" &
    PPID_=$!
    BGPIDS+=("$PPID_")
    start_guard "$SP" "$log" --interval-ms 100
    kmark "start-$w"
    local args=(--name=w --filename="$mp/fill" --rw=write --bs=1M --size="$WRITE_SIZE" --fallocate=none
        --output-format=json --output="$fj")
    if [ "$w" = direct ]; then
        args+=(--direct=1 --ioengine=libaio --iodepth=16)
    else
        args+=(--direct=0 --ioengine=psync --end_fsync=1)
    fi
    t0=$(now)
    fio "${args[@]}" >"$W/fio-$w.err" 2>&1 &
    fpid=$!
    BGPIDS+=("$fpid")
    # Until the guard freezes, or the writer ends, or 120 s.
    for i in $(seq 1 1200); do
        grep -q 'guard: froze' "$log" && break
        kill -0 "$fpid" 2>/dev/null || break
        sleep 0.1
    done
    rec "$w" writer alive_at_freeze "$(kill -0 "$fpid" 2>/dev/null && echo 1 || echo 0)"
    sleep "$HOLD"
    if kill -0 "$fpid" 2>/dev/null; then
        rec "$w" writer alive_after_hold 1
        echo "$w writer ${HOLD} s after the first freeze: threads (state wchan): $(ps -L -o stat=,wchan:32= -p "$fpid" | tr -s ' \n' ' ')" >>"$NOTES"
        rec "$w" writer file_bytes_frozen "$(stat -c %s "$mp/fill" 2>/dev/null || echo 0)"
        kill -INT "$fpid"
    else
        rec "$w" writer alive_after_hold 0
    fi
    # Free host space: the guard should thaw on its own.
    kmark "free-$w"
    local thaws
    thaws=$(grep -c 'guard: thawed' "$log" || true)
    rm -f "$SP/bench-ballast"
    for i in $(seq 1 200); do
        [ "$(grep -c 'guard: thawed' "$log" || true)" -gt "$thaws" ] && break
        sleep 0.1
    done
    for i in $(seq 1 600); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$fpid" 2>/dev/null; then
        echo "$w writer still running 60 s after the ballast was deleted; thawing by hand" >>"$NOTES"
        stop_guard
        fsfreeze -u "$mp" 2>/dev/null || true
        kill -INT "$fpid" 2>/dev/null || true
    fi
    set +e
    wait "$fpid"
    local frc=$?
    set -e
    forget "$fpid"
    rec "$w" writer exit_code "$frc"
    rec "$w" writer wall "$(s_since "$t0")"
    [ -n "$GPID" ] && stop_guard
    touch "$W/poll.stop"
    wait "$PPID_" 2>/dev/null || true
    forget "$PPID_"
    sleep 1
    local dm
    dm=$(dmesg_since "start-$w" | grep -v 'space.sh:' || true)
    rec "$w" kernel shutdown_lines "$(printf '%s\n' "$dm" | grep -ciE 'shut ?down|shutting down' || true)"
    rec "$w" kernel ioerror_lines "$(printf '%s\n' "$dm" | grep -ciE 'I/O error|error -5|error -28|ENOSPC|Corruption|writeback error|critical space allocation' || true)"
    if [ -n "$dm" ]; then
        {
            echo "$w: kernel log during the run (first 15 lines):"
            printf '%s\n' "$dm" | head -15 | sed 's/^/    /'
        } >>"$NOTES"
    fi
    # fio's own verdict.
    python3 - "$fj" "$w" >>"$RES" <<'PY' || echo "$w: fio wrote no JSON report: $(tail -3 "$W/fio-$w.err" | tr '\n' ' ')" >>"$NOTES"
import json, sys
text = open(sys.argv[1]).read()
j = json.loads(text[text.index("{"):])["jobs"][0]
w = j["write"]
print(f"{sys.argv[2]}\tfio\terror\t{j.get('error', 0)}")
print(f"{sys.argv[2]}\tfio\tbytes\t{w['io_bytes']}")
print(f"{sys.argv[2]}\tfio\tbw_mib_s\t{w['bw_bytes'] / 1048576:.1f}")
PY
    rec "$w" fio stderr_errors "$(grep -ciE 'err=|error' "$W/fio-$w.err" || true)"
    if grep -qiE 'err=|error' "$W/fio-$w.err"; then
        echo "$w: fio stderr: $(grep -iE 'err=|error' "$W/fio-$w.err" | head -3 | tr '\n' ' ')" >>"$NOTES"
    fi
    # Timeline from the guard's log and the poller.
    python3 - "$log" "$poll" "$w" "$t0" >>"$RES" <<'PY'
import re, sys
log, poll, w, t0 = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) / 1e9
U = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
def size(s):
    m = re.match(r"([\d.]+)\s*([KMGT]?)i?B?", s)
    return float(m.group(1)) * U[m.group(2)]
low = None
events = []  # (t, kind, line)
for line in open(log):
    t, _, msg = line.partition(" ")
    t = float(t)
    m = re.search(r"\(low ([\d.]+\s*[KMGT]?i?B?), high", msg)
    if m and low is None:
        low = size(m.group(1))
    if "guard: approaching the low watermark" in msg or "guard: at the low watermark" in msg:
        events.append((t, "decide", msg))
    elif "guard: froze" in msg:
        events.append((t, "hard" if "until the high watermark" in msg else "soft", msg))
    elif "crossed while paused" in msg:
        events.append((t, "harden", msg))
    elif "guard: thawed" in msg:
        events.append((t, "thaw", msg))
samples = [(float(a), int(b)) for a, b in (l.split() for l in open(poll))]
def out(k, v):
    print(f"{w}\tguard\t{k}\t{v}")
out("low_watermark", int(low or 0))
out("freezes_soft", sum(1 for e in events if e[1] == "soft"))
out("freezes_hard", sum(1 for e in events if e[1] == "hard"))
out("hardened", sum(1 for e in events if e[1] == "harden"))
out("thaws", sum(1 for e in events if e[1] == "thaw"))
first = next((e for e in events if e[1] in ("soft", "hard")), None)
hard = next((e for e in events if e[1] in ("hard", "harden")), None)
decide = next((e for e in events if e[1] == "decide"), None)
if decide and first and first[0] >= decide[0]:
    out("decide_to_frozen_ms", round((first[0] - decide[0]) * 1000, 1))
    m = re.search(r"host free ([\d.]+\s*[KMGT]?i?B?) -", decide[2])
    if m:
        out("free_at_decision", int(size(m.group(1))))
cross = next((t for t, f in samples if low is not None and f <= low), None)
out("min_host_free", min(f for t, f in samples))
if cross is not None:
    out("t_cross_s", round(cross - t0, 4))
for name, e in (("first", first), ("hard", hard)):
    if e is None:
        continue
    out(f"{name}_t_s", round(e[0] - t0, 4))
    m = re.search(r" in ([\d.]+) ms", e[2])
    if m:
        out(f"{name}_freeze_ms", m.group(1))
    m = re.search(r"filling at ([\d.]+\s*[KMGT]?i?B?)/s", e[2])
    if m:
        out(f"{name}_rate_mib_s", round(size(m.group(1)) / (1 << 20), 1))
    if cross is not None:
        out(f"{name}_minus_cross_ms", round((e[0] - cross) * 1000, 1))
    # Host free space when the freeze was logged and its lowest value afterwards
    # (dirty data flushed by the freeze still lands).
    at = [f for t, f in samples if t <= e[0]]
    if at:
        out(f"{name}_free_at_freeze", at[-1])
    after = [f for t, f in samples if e[0] <= t <= e[0] + 3]
    if after:
        out(f"{name}_min_free_3s_after", min(after))
# The fastest fill the poller saw over windows of at least 100 ms before the
# first freeze (samples are kept when the free space changes).
best, j = 0.0, 0
end = first[0] if first else samples[-1][0]
pre = [s for s in samples if s[0] <= end]
for i in range(len(pre)):
    while j + 1 < i and pre[i][0] - pre[j + 1][0] >= 0.1:
        j += 1
    if pre[i][0] - pre[j][0] >= 0.1:
        best = max(best, (pre[j][1] - pre[i][1]) / (pre[i][0] - pre[j][0]))
out("poller_peak_rate_mib_s", round(best / (1 << 20), 1))
PY
    sed 's/^/    /' "$log" >"$W/guard-$w.indented"
    {
        echo "$w: guard log (first 12 lines):"
        head -12 "$W/guard-$w.indented"
    } >>"$NOTES"
    # Offline check of the subvolume's XFS, then drop it.
    "$SUBVOL" --pool "$SP" umount t >/dev/null 2>&1 || { fsfreeze -u "$mp" 2>/dev/null; "$SUBVOL" --pool "$SP" umount t >/dev/null; }
    local img
    img=$("$SUBVOL" --pool "$SP" info t --json | jq -r .image)
    if xfs_repair -n -f "$img" >"$W/repair-$w.out" 2>&1; then rec "$w" xfs_repair_n rc 0; else
        rec "$w" xfs_repair_n rc $?
        echo "$w: xfs_repair -n: $(grep -vE '^( +- |Phase )' "$W/repair-$w.out" | head -5 | tr '\n' ' ')" >>"$NOTES"
    fi
    "$SUBVOL" --pool "$SP" delete t --force >/dev/null
    rm -f "$SP/bench-ballast"
    sync
}

# ---------------------------------------------------------------- part 3
idle_cpu() { # idle_cpu CASE POOL
    local log=$W/guard-idle-$1.log a b t
    start_guard "$2" "$log" --interval-ms 100
    sleep 2
    a=$(cpu_ticks "$GPID")
    t=$(now)
    sleep "$IDLE_SECS"
    b=$(cpu_ticks "$GPID")
    local secs
    secs=$(s_since "$t")
    stop_guard
    local hz
    hz=$(getconf CLK_TCK)
    rec idle "$1" cpu_s "$(awk -v a="$a" -v b="$b" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')"
    rec idle "$1" wall_s "$secs"
    rec idle "$1" log_lines "$(($(wc -l <"$log") - 1))"
}

# ---------------------------------------------------------------- part 4
WRITER_PY=$W/writes.py
cat >"$WRITER_PY" <<'PY'
import os, random, sys
n, per = int(sys.argv[1]), int(sys.argv[2])
for path in sys.argv[3:]:
    fd = os.open(path, os.O_WRONLY)
    size = os.fstat(fd).st_size
    blocks = size // 4096
    for b in random.sample(range(blocks), min(n, blocks)):
        os.pwrite(fd, os.urandom(4096), b * 4096)
    os.fsync(fd)
    os.close(fd)
PY
# timed LABEL CASE CMD...: one run, wall seconds.
timed() {
    local l=$1 c=$2 t
    shift 2
    t=$(now)
    "$@" >/dev/null
    rec list "$l" "$c" "$(s_since "$t")"
}
warm() { # warm LABEL CMD...: 10 warm runs (hyperfine if present)
    local l=$1 i t
    shift
    if command -v hyperfine >/dev/null; then
        local cmd
        cmd=$(printf '%q ' "$@")
        hyperfine -N --style none --warmup 1 --runs 10 --export-json "$W/hf.json" "$cmd" >/dev/null 2>&1 ||
            hyperfine --style none --warmup 1 --runs 10 --export-json "$W/hf.json" "$cmd >/dev/null" >/dev/null
        rec list "$l" warm "$(jq '.results[0].median' "$W/hf.json")"
        rec list "$l" warm_max "$(jq '.results[0].max' "$W/hf.json")"
    else
        "$@" >/dev/null
        for i in $(seq 1 10); do
            t=$(now)
            "$@" >/dev/null
            rec list "$l" warm "$(s_since "$t")"
        done
    fi
}

# ---------------------------------------------------------------- run
note "workdir $W; subvol $SUBVOL"
case " $PARTS " in *" 1 "* | *" 3 "*)
    "$SUBVOL" pool init "$SP" --backing-image 1G >/dev/null
    rec small host size "$(($(stat -f -c %b "$SP") * $(stat -f -c %S "$SP")))"
    ;;
esac
case " $PARTS " in *" 1 "*)
    for w in $WRITERS; do guard_case "$w"; done
    ;;
esac
case " $PARTS " in *" 3 "*)
    note "part 3: idle guard CPU over ${IDLE_SECS}s (1 GiB pool, one mounted idle subvolume)"
    "$SUBVOL" --pool "$SP" create idle --size 4G >/dev/null
    "$SUBVOL" --pool "$SP" mount idle >/dev/null
    idle_cpu "1 GiB pool, 1 mounted subvolume" "$SP"
    "$SUBVOL" --pool "$SP" delete idle --force >/dev/null
    ;;
esac
if [[ " $PARTS " == *" 4 "* || " $PARTS " == *" 3 "* ]]; then
    note "part 4: building a pool of $NSUB subvolumes x $NSNAP snapshots"
    "$SUBVOL" pool init "$BP" --backing-image 8G >/dev/null
    t=$(now)
    for i in $(seq 1 "$NSUB"); do "$SUBVOL" --pool "$BP" create "s$i" --size 64M --fs raw >/dev/null; done
    rec build create_all s "$(s_since "$t")"
    imgs=()
    for i in $(seq 1 "$NSUB"); do imgs+=("$BP/subvolumes/s$i.img"); done
    [ -f "${imgs[0]}" ] || { imgs=(); for i in $(seq 1 "$NSUB"); do imgs+=("$("$SUBVOL" --pool "$BP" info "s$i" --json | jq -r .image)"); done; }
    python3 "$WRITER_PY" "$WRITES" 0 "${imgs[@]}"
    multi=1
    snap_total=0
    for r in $(seq 1 "$NSNAP"); do
        t=$(now)
        names=()
        for i in $(seq 1 "$NSUB"); do names+=("s$i@r$r"); done
        if [ $multi = 1 ] && ! "$SUBVOL" --pool "$BP" snapshot "${names[@]}" >/dev/null 2>"$W/snap.err"; then
            echo "multi-subvolume snapshot failed ($(head -1 "$W/snap.err")); one at a time" >>"$NOTES"
            multi=0
        fi
        if [ $multi = 0 ]; then
            for n in "${names[@]}"; do
                "$SUBVOL" --pool "$BP" info "$n" >/dev/null 2>&1 || "$SUBVOL" --pool "$BP" snapshot "$n" >/dev/null
            done
        fi
        rec build "snapshot_round" s "$(s_since "$t")"
        python3 "$WRITER_PY" "$WRITES_BETWEEN" 0 "${imgs[@]}"
    done
    nsnaps=$("$SUBVOL" --pool "$BP" list --snapshots --json | jq '[.[] | select(.name | contains("@"))] | length' 2>/dev/null || echo "?")
    rec build snapshots count "$nsnaps"
    # Extent counts of all images (subvolumes and snapshots).
    find "$BP" -xdev -name '*.img' -type f >"$W/images.txt"
    rec build images count "$(wc -l <"$W/images.txt")"
    rec build extents total "$(while read -r f; do xfs_io -r -c fiemap "$f" | awk 'NR > 1 && !/hole/' | wc -l; done <"$W/images.txt" | awk '{ s += $1 } END { print s }')"
    rec build cache files "$(find "$BP/.subvol/cache" -type f 2>/dev/null | wc -l)"
fi
if [[ " $PARTS " == *" 4 "* ]]; then
    note "part 4: listing latency"
    L=("$SUBVOL" --pool "$BP" list --snapshots --json)
    dropc
    timed "list --snapshots --json" "first after building (cold page cache)" "${L[@]}"
    rec build cache files_after_first_list "$(find "$BP/.subvol/cache" -type f 2>/dev/null | wc -l)"
    for r in $(seq 1 "$RUNS"); do
        dropc
        timed "list --snapshots --json" "cold page cache, extent cache filled" "${L[@]}"
    done
    for r in $(seq 1 "$RUNS"); do
        rm -rf "$BP/.subvol/cache"
        dropc
        timed "list --snapshots --json" "cold, extent cache deleted" "${L[@]}"
    done
    warm "list --snapshots --json" "${L[@]}"
    for c in "list --json" "pool status --json"; do
        # shellcheck disable=SC2086
        set -- $c
        for r in $(seq 1 "$RUNS"); do
            dropc
            timed "$c" "cold page cache" "$SUBVOL" --pool "$BP" "$@"
        done
        warm "$c" "$SUBVOL" --pool "$BP" "$@"
    done
fi
if [[ " $PARTS " == *" 3 "* ]]; then
    note "part 3: idle guard CPU over ${IDLE_SECS}s ($NSUB subvolumes, $NSNAP snapshots each, none mounted)"
    idle_cpu "$NSUB subvolumes + snapshots, none mounted" "$BP"
fi

# ---------------------------------------------------------------- report
note "done; writing the report"
{
    echo "# bench/space.sh $(date -Is)"
    echo
    echo "host: $(nproc) vCPU, $(free -g | awk '/^Mem/ { print $2 }') GiB RAM, kernel $(uname -r);" \
        "TMPBASE $TMPBASE on $(findmnt -n -o FSTYPE -T "$TMPBASE"); $("$SUBVOL" --version 2>/dev/null || echo subvol);" \
        "fio $(fio --version)"
    echo
    python3 - "$RES" "$WRITERS" "$WRITE_SIZE" "$BALLAST" "$HOLD" "$IDLE_SECS" <<'PY'
import sys, statistics
from collections import defaultdict
res, writers, wsize, ballast, hold, idle = sys.argv[1], sys.argv[2].split(), *sys.argv[3:]
d = defaultdict(list)
for line in open(res):
    a, b, c, v = line.rstrip("\n").split("\t")
    try:
        d[(a, b, c)].append(float(v))
    except ValueError:
        pass
def g(*k):
    v = d.get(k)
    return statistics.median(v) if v else None
def f(x, fmt="{:.1f}"):
    return "-" if x is None else fmt.format(x)
M = 1 << 20
targets = []
if any((w, "writer", "exit_code") in d for w in writers):
    hs = g("small", "host", "size")
    print(f"## Guard vs a writer at full speed ({f(hs / M if hs else None, '{:.0f}')} MiB host XFS, {ballast} MiB ballast, thin 4 GiB xfs subvolume, fio {wsize}, guard --interval-ms 100)")
    print()
    print("| | " + " | ".join(writers) + " |")
    print("|---|" + "---:|" * len(writers))
    rows = [
        ("loop bdi after `subvol mount`: strict_limit / max_bytes (MiB)", lambda w: f"{f(g(w,'bdi','strict_limit'),'{:.0f}')} / {f(g(w,'bdi','max_bytes') / M if g(w,'bdi','max_bytes') is not None else None,'{:.0f}')}"
            + (f" (capped by hand: 1 / {g(w,'bdi','capped_max_bytes') / M:.0f})" if g(w, 'bdi', 'capped_max_bytes') else "")),
        ("low watermark (MiB)", lambda w: f(g(w, "guard", "low_watermark") / M if g(w, "guard", "low_watermark") else None)),
        ("host free at start (MiB)", lambda w: f(g(w, "host", "free_at_start") / M if g(w, "host", "free_at_start") else None)),
        ("headroom crossed the low watermark at (s after fio start)", lambda w: f(g(w, "guard", "t_cross_s"), "{:.3f}")),
        ("first freeze logged at (s) / kind", lambda w: f(g(w, "guard", "first_t_s"), "{:.3f}") + (" / hard" if g(w, "guard", "first_t_s") == g(w, "guard", "hard_t_s") and g(w, "guard", "hard_t_s") is not None else " / soft (pause)")),
        ("host free when the guard decided to freeze (MiB)", lambda w: f(g(w, "guard", "free_at_decision") / M if g(w, "guard", "free_at_decision") is not None else None)),
        ("decision -> frozen (ms; trim first, then FIFREEZE)", lambda w: f(g(w, "guard", "decide_to_frozen_ms"))),
        ("first freeze minus crossing (ms)", lambda w: f(g(w, "guard", "first_minus_cross_ms"))),
        ("hard freeze (or pause made hard) minus crossing (ms)", lambda w: f(g(w, "guard", "hard_minus_cross_ms"))),
        ("FIFREEZE duration, first / hard (ms, guard log)", lambda w: f"{f(g(w,'guard','first_freeze_ms'))} / {f(g(w,'guard','hard_freeze_ms'))}"),
        ("fill rate measured by the guard at the first freeze (MiB/s)", lambda w: f(g(w, "guard", "first_rate_mib_s"))),
        ("fill rate at the hard freeze (MiB/s)", lambda w: f(g(w, "guard", "hard_rate_mib_s"))),
        ("peak host fill rate, 100 ms windows, poller (MiB/s)", lambda w: f(g(w, "guard", "poller_peak_rate_mib_s"))),
        ("soft pauses / hard freezes / pauses made hard / thaws", lambda w: f"{f(g(w,'guard','freezes_soft'),'{:.0f}')} / {f(g(w,'guard','freezes_hard'),'{:.0f}')} / {f(g(w,'guard','hardened'),'{:.0f}')} / {f(g(w,'guard','thaws'),'{:.0f}')}"),
        ("host free when the hard freeze / hardening was logged (MiB)", lambda w: f(g(w, "guard", "hard_free_at_freeze") / M if g(w, "guard", "hard_free_at_freeze") is not None else None)),
        ("lowest host free in the run (MiB)", lambda w: f(g(w, "guard", "min_host_free") / M if g(w, "guard", "min_host_free") is not None else None)),
        ("writer blocked (alive) after the hold", lambda w: {1.0: "yes", 0.0: "no (finished/failed)"}.get(g(w, "writer", "alive_after_hold"), "-")),
        ("fio error (JSON; 28 = ENOSPC) / error lines on stderr", lambda w: f"{f(g(w,'fio','error'),'{:.0f}')} / {f(g(w,'fio','stderr_errors'),'{:.0f}')}"),
        ("fio exit code (stopped by our SIGINT)", lambda w: f(g(w, "writer", "exit_code"), "{:.0f}")),
        ("fio bandwidth (MiB/s, whole run incl. frozen time)", lambda w: f(g(w, "fio", "bw_mib_s"))),
        ("fio bytes written (MiB)", lambda w: f(g(w, "fio", "bytes") / M if g(w, "fio", "bytes") is not None else None)),
        ("kernel log: shutdown lines / I/O-error lines", lambda w: f"{f(g(w,'kernel','shutdown_lines'),'{:.0f}')} / {f(g(w,'kernel','ioerror_lines'),'{:.0f}')}"),
        ("xfs_repair -n of the subvolume after", lambda w: {0.0: "clean"}.get(g(w, "xfs_repair_n", "rc"), f"rc {f(g(w,'xfs_repair_n','rc'),'{:.0f}')}")),
    ]
    for label, fn in rows:
        print(f"| {label} | " + " | ".join(fn(w) for w in writers) + " |")
    print()
    for w in writers:
        ok = g(w, "fio", "error") == 0 and g(w, "fio", "stderr_errors") == 0 and g(w, "kernel", "shutdown_lines") == 0 \
            and g(w, "kernel", "ioerror_lines") == 0 and g(w, "xfs_repair_n", "rc") == 0
        mf = g(w, "guard", "min_host_free")
        targets.append((f"{w} writer: no error for the writer, no XFS shutdown or writeback error, fs clean",
                        f"fio error {f(g(w, 'fio', 'error'), '{:.0f}')}, kernel error lines {f(g(w, 'kernel', 'ioerror_lines'), '{:.0f}')}, "
                        f"lowest host free {f(mf / M if mf is not None else None)} MiB", ok))
idle_cases = sorted({k[1] for k in d if k[0] == "idle"})
if idle_cases:
    print(f"## Guard CPU when idle ({idle} s, --interval-ms 100)")
    print()
    print("| pool | CPU s | % of one core | log lines |")
    print("|---|---:|---:|---:|")
    for c in idle_cases:
        cpu, wall = g("idle", c, "cpu_s"), g("idle", c, "wall_s")
        print(f"| {c} | {f(cpu, '{:.2f}')} | {f(100 * cpu / wall if cpu is not None and wall else None, '{:.2f}')} | {f(g('idle', c, 'log_lines'), '{:.0f}')} |")
    print()
if ("build", "snapshots", "count") in d:
    print(f"## Listing latency ({f(g('build','images','count'),'{:.0f}')} images: subvolumes and {f(g('build','snapshots','count'),'{:.0f}')} snapshots; "
          f"{f(g('build','extents','total'),'{:,.0f}')} extents in all)")
    print()
    rounds = d.get(("build", "snapshot_round", "s"), [])
    print(f"building: creating the subvolumes {f(g('build','create_all','s'),'{:.1f}')} s; one snapshot round (every subvolume) median {f(statistics.median(rounds) if rounds else None, '{:.2f}')} s")
    print()
    print("| command | case | median s | runs |")
    print("|---|---|---:|---:|")
    for (a, b, c), v in sorted(d.items()):
        if a != "list":
            continue
        print(f"| {b} | {c} | {statistics.median(v):.3f} | {len(v)} |")
    print()
    for (a, b, c), v in sorted(d.items()):
        if a == "list" and b in ("list --snapshots --json", "pool status --json") and c != "warm_max":
            targets.append((f"{b.split(' --json')[0]} < 2 s: {c} (median)", f"{statistics.median(v):.3f} s", statistics.median(v) < 2))
if targets:
    print("## Targets")
    print()
    print("| target | measured | met |")
    print("|---|---|---|")
    for t, m, ok in targets:
        print(f"| {t} | {m} | {'yes' if ok else 'NO'} |")
    print()
print("## Raw")
print()
print("```")
for (a, b, c), v in sorted(d.items()):
    print(f"{a:10} {b:45} {c:28} " + " ".join(f"{x:g}" for x in v))
print("```")
PY
    if [ -s "$NOTES" ]; then
        echo
        echo "Notes:"
        sed 's/^/- /' "$NOTES"
    fi
}
