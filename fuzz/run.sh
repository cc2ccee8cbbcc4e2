#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and reports, per target, the
# executions and whether libFuzzer found anything (crash, panic, leak, OOM,
# timeout). Exits non-zero if any target found something.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60, all)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable
# toolchain RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its -Z flags. Crash inputs
# land in fuzz/artifacts/<target>/, logs in fuzz/target/fuzz-logs/.
set -uo pipefail

cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
all=(stream_decode stream_fixup stream_roundtrip meta_decode extent_map manifest_decode resume_token mountinfo size name keep_policy)
[[ $# -gt 0 ]] && targets=("$@") || targets=("${all[@]}")

export RUSTC_BOOTSTRAP=1
# ASan's default 256 MiB quarantine of freed memory alone takes
# stream_roundtrip (megabytes per run) over the 512 MiB RSS limit within
# minutes; a smaller one keeps the limit about real growth. Values the
# caller sets in ASAN_OPTIONS come later and win.
export ASAN_OPTIONS="quarantine_size_mb=64${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

# Largest input per target (streams: the largest sample stream fits), and a
# per-allocation limit where the format promises bounded memory.
max_len() {
    case "$1" in
        stream_decode | stream_fixup) echo 200000 ;;
        stream_roundtrip) echo 512 ;;
        meta_decode) echo 66000 ;;
        mountinfo) echo 8192 ;;
        extent_map) echo 4096 ;;
        *) echo 256 ;;
    esac
}
malloc_limit() {
    case "$1" in
        stream_decode | stream_fixup | meta_decode | extent_map) echo 8 ;;
        *) echo 512 ;;
    esac
}

if ! command -v cargo-fuzz >/dev/null; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$logs"
echo "building fuzz targets (log: $logs/build.log)..."
if ! nice -n 10 cargo fuzz build >"$logs/build.log" 2>&1; then
    tail -40 "$logs/build.log" >&2
    exit 2
fi
status=0
printf '%-18s %14s %8s  %s\n' TARGET EXECUTIONS EXEC/S RESULT
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f ! -name 'slow-unit-*' | wc -l)
    nice -n 10 cargo fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=512 -malloc_limit_mb="$(malloc_limit "$t")" \
        -max_len="$(max_len "$t")" -print_final_stats=1 >"$logs/$t.log" 2>&1
    rc=$?
    after=$(find "artifacts/$t" -type f ! -name 'slow-unit-*' | wc -l)
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$')
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*$')
    if [[ $rc -eq 0 && $after -eq $before ]]; then
        result="ok, no finding"
    else
        status=1
        artifact=$(grep -o 'Test unit written to [^ ]*' "$logs/$t.log" | tail -1 | sed 's/Test unit written to //')
        result="FINDING (exit $rc) ${artifact:-see $logs/$t.log}"
    fi
    printf '%-18s %14s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$result"
done
exit $status
