#!/usr/bin/env bash
# bench/space.sh -- the ENOSPC guard and the cost of space accounting.
#
# One run, one host, everything in one `mktemp -d` directory under TMPBASE.
#
#  1+2. The guard as shipped, under writers at full speed. Nothing here sets
#     what the product does not set itself: the script refuses to run if
#     its own source writes into /sys/class/bdi (or another writeback knob),
#     and fails if, after `subvol mount`, a thin subvolume's loop device does
#     not carry the dirty cap the product sets on every attach (bdi
#     strict_limit 1, max_bytes 64 MiB; both recorded, with `subvol info
#     --json` .attachments[0].writeback_cap_bytes).
#     For each writer kind in WRITERS and each N in NSUBS: a fresh
#     backing-image pool (`subvol pool init --backing-image`, sized for N)
#     with N thin 4 GiB xfs subvolumes, mounted, and host ballast
#     (fallocate) that leaves about the guard's low watermark plus half the
#     data free. `subvol guard` runs in the background with its defaults (no
#     flags; stderr time-stamped on arrival into a log); a poller samples
#     the host's statfs every 2 ms. One fio process starts N writers
#     together, one per subvolume, WRITE_SIZE each:
#       direct     bs=1M O_DIRECT libaio iodepth 16
#       buffered   bs=1M buffered psync, fsync at the end
#     The guard must freeze them; after HOLD s the ballast is deleted and
#     every writer must finish on its own (the guard thaws). Measured: the
#     writers' aggregate speed (fio), the fill rates the guard logged, its
#     decision -> all frozen time, the lowest host free space the poller
#     saw, writer errors, kernel-log error lines naming this pool's loop
#     devices, and xfs_repair -n of every subvolume afterwards.
#     Pool size for N: N x WRITE_SIZE + the expected low watermark (max(1%,
#     64 MiB) + 81 MiB per thin subvolume + RATE_EST MiB/s x REACT_MS, at
#     most a quarter of the capacity) + the thaw gap + a quarter of the data
#     + 512 MiB, plus 4% for the host XFS.
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
# Usage (as root):   bench/space.sh            (~10 min, plus waiting for other fio runs)
#                    PARTS=1 bench/space.sh    (parts 1+2 only)
#                    QUICK=1 bench/space.sh    (smoke run, a few minutes)
# Environment:
#   SUBVOL       subvol binary (default: target/release/subvol of this repo,
#                built with `cargo build --release` if it is missing)
#   WRITERS      writer kinds for parts 1-2 (default "buffered direct")
#   NSUBS        subvolume counts for parts 1-2 (default "1 3 10")
#   WRITE_SIZE   how much each fio writer writes (default 1G)
#   RATE_EST REACT_MS  the fill rate (MiB/s, default 1024) and reaction
#                (ms, default 300) pool sizes and ballast assume for the
#                watermark (lower: the writers are caught later)
#   KEEP_LOGS    a directory to copy parts 1-2's guard logs, poller samples
#                and fio reports into (default: none, they go with W)
#   HOLD         seconds the writers are held frozen before the ballast goes (default 5)
#   IDLE_SECS    seconds of idle guard CPU measurement (default 60)
#   NSUB NSNAP WRITES WRITES_BETWEEN   part 4 shape (default 100 10 300 50)
#   RUNS         cold runs per listing measurement (default 3); warm runs are 10
#   PARTS        which parts (default "1 3 4"; part 1 includes 2)
#   TMPBASE      where the temporary directory is made (default /var/tmp)
#   FIO_WAIT     seconds to wait for other fio processes to finish (default 900)
#   QUICK=1      smoke run: IDLE_SECS=10 NSUB=10 RUNS=1 HOLD=2

set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=space.sh
BENCH_S_DECIMALS=4 # s_since: listings take milliseconds
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    : "${IDLE_SECS:=10}" "${NSUB:=10}" "${RUNS:=1}" "${HOLD:=2}"
fi
WRITERS=${WRITERS:-buffered direct}
NSUBS=${NSUBS:-1 3 10}
WRITE_SIZE=${WRITE_SIZE:-1G}
RATE_EST=${RATE_EST:-1024}
REACT_MS=${REACT_MS:-300}
KEEP_LOGS=${KEEP_LOGS:-}
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

bench_require fio python3 losetup findmnt xfs_io xfs_repair fsfreeze jq dmesg
need_uint RATE_EST REACT_MS HOLD IDLE_SECS NSUB NSNAP WRITES WRITES_BETWEEN RUNS
for w in $WRITERS; do case $w in direct | buffered) ;; *) die "WRITERS are direct, buffered: $w" ;; esac; done
for n in $NSUBS; do case $n in '' | *[!0-9]* | 0) die "NSUBS are positive integers: $n" ;; esac; done
case $WRITE_SIZE in *[!0-9GgMm]* | '') die "WRITE_SIZE is a number of bytes, or with M or G: $WRITE_SIZE" ;; esac
# Measure the product as shipped: this script must not set any writeback
# limit itself. Fails if its own source or bench/lib.sh writes into
# /sys/class/bdi, a bdi knob, /sys/block or /proc/sys/vm/dirty* (this check's
# own line excluded).
KNOBS='(/sys/class/bdi|/sys/block/[^[:space:]]*/queue|/proc/sys/vm/dirty|strict_limit|max_bytes|min_bytes|max_ratio|min_ratio)'
SELF_WRITES=$(grep -nE "((>>?|tee( -a)?|of=)[[:space:]]*[\"']?[^[:space:]\"';|&]*$KNOBS|open\\([^)]*$KNOBS[^)]*[\"'][wa])" "${BASH_SOURCE[0]}" "$REPO/bench/lib.sh" | grep -vE '# self-check$|^[^:]+:[0-9]+:[[:space:]]*#' || true) # self-check
[ -z "$SELF_WRITES" ] || die "this script writes a writeback setting the product does not make: $SELF_WRITES"

SUBVOL=$(bench_subvol "$REPO") || die "no subvol binary"
bench_need_disk 6

BGPIDS=()          # guard, poller, fio: ours, killed by PID at exit
bench_workdir space
SP=$W/small        # part 1-3: 1 GiB pool
BP=$W/big          # part 3-4: pool with many snapshots
POOLS="$SP $BP"
bench_on_exit() {
    local m i p
    for p in "${BGPIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
    # Writers blocked on a frozen filesystem only go once it is thawed.
    for m in $(bench_mounts_below); do fsfreeze -u "$m" >/dev/null 2>&1; done
    for p in "${BGPIDS[@]}"; do
        for i in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
}

# ---------------------------------------------------------------- helpers
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

# size_mib SIZE: 3G / 512M / 1048576 -> MiB.
size_mib() {
    case $1 in
    *[Gg]) echo $((${1%[Gg]} * 1024)) ;;
    *[Mm]) echo $((${1%[Mm]})) ;;
    *) echo $(($1 >> 20)) ;;
    esac
}
WS_MIB=$(size_mib "$WRITE_SIZE")
# What the guard's low watermark will be, roughly (crates/subvol-core/src/
# space.rs guard_low_watermark): base max(1% of capacity, 64 MiB), plus per
# mounted thin subvolume 64 MiB dirty cap + 1 MiB extent hint + 16 MiB
# metadata flush, plus peak fill rate x (sample gap + freeze time), which the
# product bounds by a quarter of the capacity. RATE_EST MiB/s x REACT_MS.
low_est_mib() { # low_est_mib N CAPACITY_MIB
    local base=$(($2 / 100)) burst=$((RATE_EST * REACT_MS / 1000))
    [ "$base" -ge 64 ] || base=64
    [ "$burst" -le $(($2 / 4)) ] || burst=$(($2 / 4))
    echo $((base + $1 * 81 + burst))
}
# Host size for N writers of WS_MIB each: all the data, the low watermark,
# the thaw gap (high = low + max(5% of capacity, 128 MiB)) and a slack of a
# quarter of the data + 512 MiB (XFS's own metadata, the watermark rising
# with the fill rate the guard measures), so every writer can finish once
# the ballast is gone; plus 4% for the host XFS's log and metadata.
pool_size_mib() { # pool_size_mib N
    local data=$(($1 * WS_MIB)) c=0 i
    for i in 1 2 3 4; do # the watermark depends on the capacity: iterate
        local hi=$((c / 20))
        [ "$hi" -ge 128 ] || hi=128
        c=$(((data + $(low_est_mib "$1" "$c") + hi + data / 4 + 512) * 104 / 100))
    done
    echo "$c"
}

# guard_case KIND N: N thin 4G xfs subvolumes in a fresh backing-image pool,
# one fio writer each, all started together, against `subvol guard` as
# users run it (no flags).
guard_case() {
    local w=$1 n=$2 c="$1 x$2" tag=$1-$2
    local P=$W/pool-$tag log=$W/guard-$tag.log poll=$W/poll-$tag.txt fj=$W/fio-$tag.json
    local i mp dev mm fpid t0 psize free_mib low_mib ballast_mib names=() mps=() devs=()
    note "part 1: guard vs $n $w writer(s)"
    wait_quiet "part 1 ($c)"
    psize=$(pool_size_mib "$n")
    "$SUBVOL" pool init "$P" --backing-image "${psize}M" >/dev/null
    POOLS="$POOLS $P"
    rec "$c" host size "$(($(stat -f -c %b "$P") * $(stat -f -c %S "$P")))"
    for i in $(seq 1 "$n"); do
        names+=("t$i")
        "$SUBVOL" --pool "$P" create "t$i" --size 4G >/dev/null
        "$SUBVOL" --pool "$P" mount "t$i" >/dev/null
    done
    # The product must have capped each thin subvolume's dirty page cache
    # on attach; nothing in this script sets it (checked at the start).
    local caps_ok=1 sl mb jb
    for i in $(seq 1 "$n"); do
        mp=$(mount_point "$P" "t$i")
        dev=$(findmnt -n -o SOURCE --target "$mp")
        mm=$(cat "/sys/block/${dev#/dev/}/dev")
        mps+=("$mp")
        devs+=("${dev#/dev/}")
        sl=$(cat "/sys/class/bdi/$mm/strict_limit" 2>/dev/null || echo -1)
        mb=$(cat "/sys/class/bdi/$mm/max_bytes" 2>/dev/null || echo -1)
        jb=$("$SUBVOL" --pool "$P" info "t$i" --json | jq -r '.attachments[0].writeback_cap_bytes // -1')
        rec "$c" bdi strict_limit "$sl"
        rec "$c" bdi max_bytes "$mb"
        rec "$c" bdi info_writeback_cap_bytes "$jb"
        # "about 64 MiB": the kernel rounds max_bytes to its ratio units.
        if [ "$sl" != 1 ] || [ "$mb" -lt $((63 << 20)) ] || [ "$mb" -gt $((65 << 20)) ]; then
            echo "$c: t$i on $dev (bdi $mm): strict_limit $sl, max_bytes $mb after \`subvol mount\`" >>"$NOTES"
            caps_ok=0
        fi
    done
    [ "$caps_ok" = 1 ] || die "the product did not cap the dirty page cache of every thin subvolume ($c); see $NOTES"
    "$SUBVOL" --pool "$P" pool status --json >"$W/status-$tag.json"
    rec "$c" status thin_writeback_cap_bytes "$(jq -r '.thin_writeback_cap_bytes // -1' "$W/status-$tag.json")"
    # The pool's own loop device (the host XFS) and the subvolumes' ones:
    # kernel log lines are counted for these only (the machine is shared).
    local pdev
    pdev=$(findmnt -n -o SOURCE --target "$P")
    devs+=("${pdev#/dev/}")
    # Ballast: what leaves the low watermark plus half the data free, so the
    # writers must be frozen halfway; deleting it gives room for the rest.
    sync
    free_mib=$(($(stat -f -c %f "$P") * $(stat -f -c %S "$P") >> 20))
    low_mib=$(low_est_mib "$n" "$psize")
    ballast_mib=$((free_mib - low_mib - n * WS_MIB / 2))
    [ "$ballast_mib" -gt 0 ] || die "$c: no room for ballast (free $free_mib MiB, low about $low_mib MiB)"
    fallocate -l "${ballast_mib}M" "$P/bench-ballast"
    rec "$c" host ballast_mib "$ballast_mib"
    rec "$c" host low_est_mib "$low_mib"
    sync
    rec "$c" host free_at_start "$(($(stat -f -c %f "$P") * $(stat -f -c %S "$P")))"
    rm -f "$W/poll.stop"
    python3 "$POLLER" "$P" "$poll" "$W/poll.stop" &
    PPID_=$!
    BGPIDS+=("$PPID_")
    start_guard "$P" "$log"
    jq -r '"guard_pid \(.guard_pid // "-"), warnings \(.warnings // [] | length)"' \
        <("$SUBVOL" --pool "$P" pool status --json 2>/dev/null || echo '{}') >"$W/status2-$tag.txt" || true
    echo "$c: pool status with the guard running: $(cat "$W/status2-$tag.txt")" >>"$NOTES"
    kmark "start-$tag"
    local args=(--output-format=json --output="$fj" --rw=write --bs=1M --size="$WRITE_SIZE" --fallocate=none)
    if [ "$w" = direct ]; then
        args+=(--direct=1 --ioengine=libaio --iodepth=16)
    else
        args+=(--direct=0 --ioengine=psync --end_fsync=1)
    fi
    for i in $(seq 1 "$n"); do args+=(--name="t$i" --filename="${mps[$((i - 1))]}/fill"); done
    t0=$(now)
    fio "${args[@]}" >"$W/fio-$tag.err" 2>&1 &
    fpid=$!
    BGPIDS+=("$fpid")
    # Until the guard freezes, or the writers end, or 120 s.
    for i in $(seq 1 1200); do
        grep -q 'watermark: froze' "$log" && break
        kill -0 "$fpid" 2>/dev/null || break
        sleep 0.1
    done
    rec "$c" writer alive_at_freeze "$(kill -0 "$fpid" 2>/dev/null && echo 1 || echo 0)"
    sleep "$HOLD"
    if kill -0 "$fpid" 2>/dev/null; then
        rec "$c" writer alive_after_hold 1
        local bytes=0
        for m in "${mps[@]}"; do bytes=$((bytes + $(stat -c %s "$m/fill" 2>/dev/null || echo 0))); done
        rec "$c" writer file_bytes_frozen "$bytes"
    else
        rec "$c" writer alive_after_hold 0
    fi
    # Free host space: the guard must thaw on its own and the writers finish.
    kmark "free-$tag"
    rec "$c" writer t_ballast_deleted_s "$(s_since "$t0")"
    rm -f "$P/bench-ballast"
    for i in $(seq 1 3000); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$fpid" 2>/dev/null; then
        echo "$c: writers still running 300 s after the ballast was deleted; thawing by hand. Last guard lines:" >>"$NOTES"
        tail -5 "$log" | sed 's/^/    /' >>"$NOTES"
        rec "$c" writer thawed_by_hand 1
        stop_guard
        for m in "${mps[@]}"; do fsfreeze -u "$m" 2>/dev/null || true; done
    fi
    set +e
    wait "$fpid"
    local frc=$?
    set -e
    forget "$fpid"
    rec "$c" writer exit_code "$frc"
    rec "$c" writer wall "$(s_since "$t0")"
    [ -n "$GPID" ] && stop_guard
    touch "$W/poll.stop"
    wait "$PPID_" 2>/dev/null || true
    forget "$PPID_"
    sync
    sleep 1
    # Kernel log since the start marker: lines naming this pool's loop devices.
    local dm re all
    re="\\b($(IFS='|'; echo "${devs[*]}"))\\b"
    all=$(dmesg_since "start-$tag" | grep -v 'space.sh:' || true)
    dm=$(printf '%s\n' "$all" | grep -E "$re" || true)
    rec "$c" kernel error_lines "$(printf '%s\n' "$dm" | grep -ciE 'critical space allocation|writeback error|I/O error|shut ?down|shutting down|error -5|error -28|Corruption' || true)"
    rec "$c" kernel shutdown_lines "$(printf '%s\n' "$dm" | grep -ciE 'shut ?down|shutting down' || true)"
    rec "$c" kernel other_devices_error_lines "$(printf '%s\n' "$all" | grep -vE "$re" | grep -ciE 'critical space allocation|writeback error|I/O error|shut ?down|error -5|error -28' || true)"
    if [ -n "$dm" ]; then
        {
            echo "$c: kernel log lines for this pool's devices ($(IFS=' '; echo "${devs[*]}")), first 20:"
            printf '%s\n' "$dm" | head -20 | sed 's/^/    /'
        } >>"$NOTES"
    fi
    # fio's own verdict, summed over the writers.
    python3 - "$fj" "$c" "$WS_MIB" >>"$RES" <<'PY' || echo "$c: fio wrote no JSON report: $(tail -3 "$W/fio-$tag.err" | tr '\n' ' ')" >>"$NOTES"
import json, sys
text = open(sys.argv[1]).read()
jobs = json.loads(text[text.index("{"):])["jobs"]
c, ws = sys.argv[2], int(sys.argv[3]) << 20
out = lambda k, v: print(f"{c}\tfio\t{k}\t{v}")
out("jobs", len(jobs))
out("jobs_with_error", sum(1 for j in jobs if j.get("error", 0)))
out("jobs_short", sum(1 for j in jobs if j["write"]["io_bytes"] < ws))
out("bytes", sum(j["write"]["io_bytes"] for j in jobs))
out("bw_mib_s", round(sum(j["write"]["bw_bytes"] for j in jobs) / 1048576, 1))
PY
    rec "$c" fio stderr_errors "$(grep -ciE 'err=|error' "$W/fio-$tag.err" || true)"
    if grep -qiE 'err=|error' "$W/fio-$tag.err"; then
        echo "$c: fio stderr: $(grep -iE 'err=|error' "$W/fio-$tag.err" | head -3 | tr '\n' ' ')" >>"$NOTES"
    fi
    # Timeline from the guard's log and the poller.
    python3 - "$log" "$poll" "$c" "$t0" >>"$RES" <<'PY'
import re, sys
log, poll, c, t0 = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) / 1e9
U = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SZ = r"([\d.]+\s*[KMGT]?i?B?)"
def size(s):
    m = re.match(r"([\d.]+)\s*([KMGT]?)i?B?", s)
    return float(m.group(1)) * U[m.group(2)]
def out(k, v):
    print(f"{c}\tguard\t{k}\t{v}")
events = []  # (t, kind, msg)
for line in open(log):
    t, _, msg = line.rstrip("\n").partition(" ")
    t = float(t)
    if re.search(r"guard: (at|approaching) the low watermark: froze", msg):
        events.append((t, "hard" if "at the low" in msg else "soft", msg))
    elif re.search(r"guard: froze \S+ at ", msg):
        events.append((t, "one", msg))
    elif "crossed while paused" in msg:
        events.append((t, "harden", msg))
    elif "guard: thawed" in msg:
        events.append((t, "thaw", msg))
    elif "WARNING" in msg or "could not" in msg:
        events.append((t, "warn", msg))
        print(f"{c}: guard: {msg}", file=sys.stderr)
samples = [(float(a), int(b)) for a, b in (l.split() for l in open(poll))]
dec = [e for e in events if e[1] in ("hard", "soft")]
out("freezes_soft", sum(1 for e in dec if e[1] == "soft"))
out("freezes_hard", sum(1 for e in dec if e[1] == "hard"))
out("hardened", sum(1 for e in events if e[1] == "harden"))
out("thaws", sum(1 for e in events if e[1] == "thaw"))
out("warnings", sum(1 for e in events if e[1] == "warn"))
rates = [size(m.group(1)) for e in events if e[1] in ("hard", "soft", "harden")
         for m in [re.search(r"filling at " + SZ + "/s", e[2])] if m]
if rates:
    out("max_rate_mib_s", round(max(rates) / (1 << 20), 1))
lows = [size(m.group(1)) for e in events for m in [re.search(r"\(low " + SZ + ",", e[2])] if m]
if lows:
    out("low_first", int(lows[0]))
    out("low_max", int(max(lows)))
for e in dec:
    m = re.search(r"froze .* in ([\d.]+) ms:", e[2])
    if m:
        out("decide_to_frozen_ms", float(m.group(1)))  # one value per freeze
for e in events:
    if e[1] == "one":
        m = re.search(r" in ([\d.]+) ms \(", e[2])
        if m:
            out("fifreeze_ms", float(m.group(1)))
first = dec[0] if dec else None
if first:
    m = re.search(r"froze .* in ([\d.]+) ms:", first[2])
    t_dec = first[0] - (float(m.group(1)) / 1000 if m else 0)
    out("first_decision_t_s", round(t_dec - t0, 3))
    out("first_kind_hard", 1 if first[1] == "hard" else 0)
    m = re.search(r"host free " + SZ + " -", first[2])
    if m:
        out("free_at_decision", int(size(m.group(1))))
    m = re.search(r"froze (.*) in [\d.]+ ms:", first[2])
    out("first_frozen_count", len(m.group(1).split(", ")) if m and m.group(1) != "nothing" else 0)
    # Mean host fill rate from the writers' start to the decision: the
    # speed the writers reached before anything stopped them.
    s0 = [f for t, f in samples if t <= t0] or [samples[0][1]]
    sd = [f for t, f in samples if t <= t_dec]
    if sd and t_dec > t0:
        out("mean_fill_before_freeze_mib_s", round((s0[-1] - sd[-1]) / (t_dec - t0) / (1 << 20), 1))
    if lows:
        cross = next((t for t, f in samples if f <= lows[0]), None)
        if cross is not None:
            out("first_freeze_minus_cross_ms", round((first[0] - cross) * 1000, 1))
out("min_host_free", min(f for t, f in samples))
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
    if [ -n "$KEEP_LOGS" ]; then
        mkdir -p "$KEEP_LOGS"
        cp "$log" "$poll" "$fj" "$W/fio-$tag.err" "$KEEP_LOGS/" 2>/dev/null || true
    fi
    {
        echo "$c: guard log (first 14 lines):"
        head -14 "$log" | sed 's/^/    /'
    } >>"$NOTES"
    # Offline check of every subvolume's XFS, then drop the pool.
    local bad=0 img
    for i in $(seq 1 "$n"); do
        "$SUBVOL" --pool "$P" umount "t$i" >/dev/null 2>&1 || { fsfreeze -u "${mps[$((i - 1))]}" 2>/dev/null; "$SUBVOL" --pool "$P" umount "t$i" >/dev/null; }
        img=$(image_of "$P" "t$i")
        if ! xfs_repair -n -f "$img" >"$W/repair-$tag-$i.out" 2>&1; then
            bad=$((bad + 1))
            echo "$c: t$i: xfs_repair -n: $(grep -vE '^( +- |Phase )' "$W/repair-$tag-$i.out" | head -5 | tr '\n' ' ')" >>"$NOTES"
        fi
    done
    rec "$c" xfs_repair_n unclean "$bad"
    rec "$c" xfs_repair_n checked "$n"
    for i in $(seq 1 "$n"); do "$SUBVOL" --pool "$P" delete "t$i" --force >/dev/null; done
    "$SUBVOL" pool umount "$P" --force >/dev/null 2>&1 || true
    for i in $(seq 1 20); do mountpoint -q "$P" 2>/dev/null || break; sleep 0.5; done
    rm -rf --one-file-system "$P" "$P.img"
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
if has_part 3; then
    "$SUBVOL" pool init "$SP" --backing-image 1G >/dev/null
    rec small host size "$(($(stat -f -c %b "$SP") * $(stat -f -c %S "$SP")))"
fi
if has_part 1; then
    for n in $NSUBS; do
        for w in $WRITERS; do guard_case "$w" "$n"; done
    done
fi
if has_part 3; then
    note "part 3: idle guard CPU over ${IDLE_SECS}s (1 GiB pool, one mounted idle subvolume)"
    "$SUBVOL" --pool "$SP" create idle --size 4G >/dev/null
    "$SUBVOL" --pool "$SP" mount idle >/dev/null
    idle_cpu "1 GiB pool, 1 mounted subvolume" "$SP"
    "$SUBVOL" --pool "$SP" delete idle --force >/dev/null
fi
if has_part 4 || has_part 3; then
    note "part 4: building a pool of $NSUB subvolumes x $NSNAP snapshots"
    "$SUBVOL" pool init "$BP" --backing-image 8G >/dev/null
    t=$(now)
    for i in $(seq 1 "$NSUB"); do "$SUBVOL" --pool "$BP" create "s$i" --size 64M --fs raw >/dev/null; done
    rec build create_all s "$(s_since "$t")"
    imgs=()
    for i in $(seq 1 "$NSUB"); do imgs+=("$BP/subvolumes/s$i.img"); done
    [ -f "${imgs[0]}" ] || { imgs=(); for i in $(seq 1 "$NSUB"); do imgs+=("$(image_of "$BP" "s$i")"); done; }
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
    rec build extents total "$(while read -r f; do extents "$f"; done <"$W/images.txt" | awk '{ s += $1 } END { print s }')"
    rec build cache files "$(find "$BP/.subvol/cache" -type f 2>/dev/null | wc -l)"
fi
if has_part 4; then
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
    for c in "list --json" "pool status --json" "metrics"; do
        # shellcheck disable=SC2086
        set -- $c
        for r in $(seq 1 "$RUNS"); do
            dropc
            timed "$c" "cold page cache" "$SUBVOL" --pool "$BP" "$@"
        done
        warm "$c" "$SUBVOL" --pool "$BP" "$@"
    done
fi
if has_part 3; then
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
    python3 - "$RES" "$WRITERS" "$WRITE_SIZE" "$NSUBS" "$HOLD" "$IDLE_SECS" <<'PY'
import sys, statistics
from collections import defaultdict
res, writers, wsize, nsubs, hold, idle = sys.argv[1], sys.argv[2].split(), *sys.argv[3:]
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
def gmin(*k):
    v = d.get(k)
    return min(v) if v else None
def gmax(*k):
    v = d.get(k)
    return max(v) if v else None
def gfirst(*k):
    v = d.get(k)
    return v[0] if v else None
def mib(x, fmt="{:.1f}"):
    return f(x / M if x is not None else None, fmt)
cases = [f"{w} x{n}" for n in nsubs.split() for w in writers if (f"{w} x{n}", "writer", "exit_code") in d]
if cases:
    print(f"## Guard vs writers at full speed (N thin 4 GiB xfs subvolumes, one fio writer each, {wsize} each, started together; `subvol guard` with its defaults)")
    print()
    print("| | " + " | ".join(cases) + " |")
    print("|---|" + "---:|" * len(cases))
    def bdi(c):
        sl0, sl1 = gmin(c, "bdi", "strict_limit"), gmax(c, "bdi", "strict_limit")
        mb0, mb1 = gmin(c, "bdi", "max_bytes"), gmax(c, "bdi", "max_bytes")
        sl = f(sl0, "{:.0f}") if sl0 == sl1 else f"{f(sl0, '{:.0f}')}-{f(sl1, '{:.0f}')}"
        mb = mib(mb0) if mb0 == mb1 else f"{mib(mb0)}-{mib(mb1)}"
        return f"{sl} / {mb}"
    rows = [
        ("host XFS size / ballast (MiB)", lambda c: f"{mib(g(c, 'host', 'size'), '{:,.0f}')} / {f(g(c, 'host', 'ballast_mib'), '{:,.0f}')}"),
        ("loop bdi after `subvol mount`, every subvolume: strict_limit / max_bytes (MiB)", bdi),
        ("`subvol info` writeback_cap_bytes (MiB, min)", lambda c: mib(gmin(c, "bdi", "info_writeback_cap_bytes"))),
        ("writers' aggregate speed, fio (MiB/s, whole run incl. frozen time)", lambda c: f(g(c, "fio", "bw_mib_s"))),
        ("host fill rate, fio start -> first freeze decision, mean (MiB/s, poller)", lambda c: f(g(c, "guard", "mean_fill_before_freeze_mib_s"))),
        ("peak host fill rate, 100 ms windows before the first freeze (MiB/s, poller)", lambda c: f(g(c, "guard", "poller_peak_rate_mib_s"))),
        ("highest fill rate the guard logged (MiB/s)", lambda c: f(g(c, "guard", "max_rate_mib_s"))),
        ("low watermark at the first freeze / highest logged (MiB)", lambda c: f"{mib(g(c, 'guard', 'low_first'), '{:.0f}')} / {mib(g(c, 'guard', 'low_max'), '{:.0f}')}"),
        ("first freeze: s after fio start / kind / subvolumes frozen", lambda c: f"{f(g(c, 'guard', 'first_decision_t_s'), '{:.2f}')} / {({1.0: 'hard', 0.0: 'pause'}).get(g(c, 'guard', 'first_kind_hard'), '-')} / {f(g(c, 'guard', 'first_frozen_count'), '{:.0f}')}"),
        ("host free when the guard decided (MiB)", lambda c: mib(g(c, "guard", "free_at_decision"), "{:.0f}")),
        ("decision -> all frozen, first / slowest (ms)", lambda c: f"{f(gfirst(c, 'guard', 'decide_to_frozen_ms'))} / {f(gmax(c, 'guard', 'decide_to_frozen_ms'))}"),
        ("FIFREEZE of one subvolume, slowest (ms)", lambda c: f(gmax(c, "guard", "fifreeze_ms"))),
        ("pauses / hard freezes / pauses made hard / thaws", lambda c: "/".join(f(g(c, "guard", k), "{:.0f}") for k in ("freezes_soft", "freezes_hard", "hardened", "thaws")).replace("/", " / ")),
        ("smallest host free = headroom seen by the 2 ms poller (MiB)", lambda c: mib(g(c, "guard", "min_host_free"))),
        ("writers blocked after the hold", lambda c: {1.0: "yes", 0.0: "no"}.get(g(c, "writer", "alive_after_hold"), "-")),
        ("writers with an error / short of WRITE_SIZE / fio exit code", lambda c: f"{f(g(c, 'fio', 'jobs_with_error'), '{:.0f}')} / {f(g(c, 'fio', 'jobs_short'), '{:.0f}')} / {f(g(c, 'writer', 'exit_code'), '{:.0f}')}" + (" (thawed by hand)" if g(c, "writer", "thawed_by_hand") else "")),
        ("fio bytes written, all writers (MiB)", lambda c: mib(g(c, "fio", "bytes"), "{:,.0f}")),
        ("kernel log error lines, this pool's loop devices (of which shutdown)", lambda c: f"{f(g(c, 'kernel', 'error_lines'), '{:.0f}')} ({f(g(c, 'kernel', 'shutdown_lines'), '{:.0f}')})"),
        ("xfs_repair -n after: unclean / checked", lambda c: f"{f(g(c, 'xfs_repair_n', 'unclean'), '{:.0f}')} / {f(g(c, 'xfs_repair_n', 'checked'), '{:.0f}')}"),
    ]
    for label, fn in rows:
        print(f"| {label} | " + " | ".join(fn(c) for c in cases) + " |")
    print()
    for c in cases:
        ok = all(g(c, *k) == 0 for k in (("fio", "jobs_with_error"), ("fio", "jobs_short"), ("fio", "stderr_errors"), ("writer", "exit_code"),
                                          ("kernel", "error_lines"), ("xfs_repair_n", "unclean")))
        ok = ok and not g(c, "writer", "thawed_by_hand")
        targets.append((f"{c}: writers finish without error, no kernel error on the pool's devices, every fs clean",
                        f"writer errors {f(g(c, 'fio', 'jobs_with_error'), '{:.0f}')}, kernel error lines {f(g(c, 'kernel', 'error_lines'), '{:.0f}')}, "
                        f"fill rate logged {f(g(c, 'guard', 'max_rate_mib_s'))} MiB/s, lowest host free {mib(g(c, 'guard', 'min_host_free'))} MiB", ok))
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
    bench_notes
}
