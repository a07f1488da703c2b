#!/usr/bin/env bash
# Hunter's benchmarks, every stage with its ceiling in the same run, and BENCHMARKS.md from them.
#
# Usage: tests/bench.sh [--only NAME[,NAME…]] [--no-report] [--smoke]
#
#   NAME: codec source processor sink api end_to_end peer server_faults (all of them, in this
#         order, by default: the long suite). server_faults is the crash suite's server-fault
#         test (tests/e2e/crash.rs: broker and ClickHouse stopped, killed and restarted under a
#         flowing pipeline) at HUNTER_CRASH_REFERRALS (default here 100,000); its RESULT is
#         recorded whether it passed or not, so BENCHMARKS.md shows how it failed
#   --no-report: run and keep the output, leave BENCHMARKS.md alone
#   --smoke: every bench at a tiny size on a debug build (what ./tests/run.sh runs so the benches
#            cannot rot between real runs): checks each still runs and its RESULT line is whole
#            and renders into BENCHMARKS.md (bench-report --check); the figures mean nothing and
#            BENCHMARKS.md is left alone
#
# Sizes come from the benches' variables (defaults are the full sizes; see BENCHMARKS.md):
# HUNTER_BENCH_REFERRALS, HUNTER_BENCH_LEADS, HUNTER_BENCH_SECONDS, HUNTER_BENCH_RECORDS,
# HUNTER_BENCH_STEADY_SECS, HUNTER_BENCH_STEADY_BURST. A quick smoke run:
#   HUNTER_BENCH_REFERRALS=20000 tests/bench.sh --only end_to_end
#
# What it does: brings the local stack up (deploy/local/stack.sh up, unless its ClickHouse already
# answers; that is used, with a fresh database per bench), installs wrk (apt) if the api bench runs and it is missing, builds
# `hunter` and the benches in release, runs each bench with its output in .local/bench/logs/, and
# rewrites the generated parts of BENCHMARKS.md from the benches' `RESULT {json}` lines. Each
# bench runs its own tansu broker(s) with storage under .local/bench/ (never the stack's broker,
# whose storage only grows); what a killed bench leaves there is stopped and deleted at exit.
# Exits non-zero if a bench failed (its tables in BENCHMARKS.md are left as they were).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
cd "$REPO"

ALL_BENCHES=(codec source processor sink api end_to_end peer server_faults)
BENCH_DIR="$REPO/.local/bench"
LOG_DIR="$BENCH_DIR/logs"

say() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}

benches=("${ALL_BENCHES[@]}")
report=1
smoke=0
while (($# > 0)); do
    case "$1" in
        --only)
            (($# >= 2)) || die "--only needs a bench name"
            IFS=, read -r -a benches <<<"$2"
            shift 2
            ;;
        --no-report)
            report=0
            shift
            ;;
        --smoke)
            smoke=1
            report=0
            shift
            ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
for bench in "${benches[@]}"; do
    [[ " ${ALL_BENCHES[*]} " == *" $bench "* ]] || die "unknown bench: $bench (one of: ${ALL_BENCHES[*]})"
done

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust with rustup"

# --- leftovers of benches that were killed: their brokers and data ---------------------------------

# A broker's directory holds tansu.pid; the pid is only ours if that process still runs tansu
# with this directory as its storage (pids are reused).
clean_bench_dir() {
    local dir pid
    for dir in "$BENCH_DIR"/tansu-* "$BENCH_DIR"/end-to-end-*; do
        [[ -d "$dir" ]] || continue
        if [[ -f "$dir/tansu.pid" ]]; then
            pid=$(<"$dir/tansu.pid")
            if [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir/"; then
                say "stopping a broker a bench left running (pid $pid, $dir)"
                kill "$pid" 2>/dev/null || true
                for _ in $(seq 50); do
                    kill -0 "$pid" 2>/dev/null || break
                    sleep 0.1
                done
                kill -9 "$pid" 2>/dev/null || true
            fi
        fi
        rm -rf -- "$dir"
    done
}

# shellcheck disable=SC2317 # called from the EXIT trap
on_exit() {
    local status=$?
    trap - EXIT INT TERM
    clean_bench_dir
    exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$BENCH_DIR" "$LOG_DIR"
clean_bench_dir
export HUNTER_BENCH_DIR="$BENCH_DIR"

# --- the stack, tools, builds ------------------------------------------------------------------------

# The benches need the stack's ClickHouse only (each bench brings its own broker). One that
# already answers is used as it is (a stack started from another checkout of the repository, for
# instance); otherwise the stack is brought up.
eval "$(deploy/local/stack.sh env)"
if curl -fsS --max-time 5 "${HUNTER_CLICKHOUSE_URL%/}/ping" >/dev/null 2>&1; then
    say "ClickHouse answers at $HUNTER_CLICKHOUSE_URL: using it"
else
    say "bringing the local stack up (deploy/local/stack.sh up)"
    deploy/local/stack.sh up
fi

if [[ " ${benches[*]} " == *" api "* ]] && ! command -v wrk >/dev/null 2>&1; then
    say "installing wrk (apt), which the api bench drives"
    if [[ $(id -u) -eq 0 ]]; then
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    else
        sudo apt-get install -y wrk >/dev/null
    fi
    command -v wrk >/dev/null 2>&1 || die "wrk is still missing"
fi

# The peer bench's Python consumer: its own venv, pinned (tests/peer/requirements.txt).
if [[ " ${benches[*]} " == *" peer "* ]]; then
    tests/peer/install.sh
fi

if ((smoke == 1)); then
    # Tiny sizes unless the caller chose others; a debug build (the one the tests use), run
    # through `cargo test --bench` (the test profile), so nothing is compiled in release.
    export HUNTER_BENCH_SMOKE=1
    export HUNTER_BENCH_REFERRALS="${HUNTER_BENCH_REFERRALS:-300}"
    export HUNTER_BENCH_LEADS="${HUNTER_BENCH_LEADS:-300}"
    export HUNTER_BENCH_RECORDS="${HUNTER_BENCH_RECORDS:-300}"
    export HUNTER_BENCH_SECONDS="${HUNTER_BENCH_SECONDS:-1}"
    export HUNTER_BENCH_STEADY_SECS="${HUNTER_BENCH_STEADY_SECS:-3}"
    export HUNTER_BENCH_STEADY_BURST="${HUNTER_BENCH_STEADY_BURST:-5}"
    say "smoke run: building hunter and the benches (debug)"
    cargo build -p hunter --bins
    cargo test --no-run -p hunter-e2e --benches
    cargo test --no-run -p hunter-core --bench codec
    export HUNTER_BIN="$REPO/target/debug/hunter"
else
    say "building hunter and the benches (release)"
    cargo build --release -p hunter
    selected=" ${benches[*]} "
    if [[ "$selected" =~ \ (source|processor|sink|api|end_to_end|peer)\  ]]; then
        cargo bench --no-run -p hunter-e2e
    fi
    [[ "$selected" != *" codec "* ]] || cargo bench --no-run -p hunter-core --bench codec
    # The server-fault run is an end-to-end test: its binary only orchestrates (debug).
    [[ "$selected" != *" server_faults "* ]] || cargo test --no-run -p hunter-e2e --test e2e
    export HUNTER_BIN="$REPO/target/release/hunter"
fi

# --- the benches -------------------------------------------------------------------------------------

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$LOG_DIR/results-$stamp.txt"
: >"$results"
failed=()
summary=()
for bench in "${benches[@]}"; do
    log="$LOG_DIR/$bench-$stamp.log"
    run=bench
    ((smoke == 1)) && run=test
    if [[ "$bench" == codec ]]; then
        command=(cargo "$run" -p hunter-core --bench codec)
    elif [[ "$bench" == server_faults ]]; then
        if ((smoke == 1)); then
            # ./tests/run.sh runs the same test at its default size (crash::).
            summary+=("$bench: not in a smoke run (tests/run.sh runs it as crash::)")
            continue
        fi
        # The test binary only orchestrates (a debug build is fine); the roles are HUNTER_BIN.
        command=(env "HUNTER_CRASH_REFERRALS=${HUNTER_CRASH_REFERRALS:-100000}"
            cargo test -p hunter-e2e --test e2e --
            crash::broker_and_clickhouse_stopped_killed_and_restarted_mid_run_lose_nothing
            --exact --nocapture)
    else
        command=(cargo "$run" -p hunter-e2e --bench "$bench")
    fi
    say "$bench: ${command[*]} (output in $log)"
    started=$SECONDS
    set +e
    "${command[@]}" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    set -e
    took=$((SECONDS - started))
    if ((status == 0)) && grep -q '^RESULT ' "$log"; then
        grep '^RESULT ' "$log" >>"$results"
        summary+=("$bench: ok in $((took / 60)) min $((took % 60)) s")
    elif [[ "$bench" == server_faults ]] && grep -q '^RESULT ' "$log"; then
        # A failed server-fault run is a result too (how it failed goes into BENCHMARKS.md).
        grep '^RESULT ' "$log" >>"$results"
        failed+=("$bench")
        summary+=("$bench: FAILED (exit $status, recorded) after $((took / 60)) min $((took % 60)) s; see $log")
    else
        failed+=("$bench")
        summary+=("$bench: FAILED (exit $status) after $((took / 60)) min $((took % 60)) s; see $log")
    fi
    clean_bench_dir
done

for line in "${summary[@]}"; do say "$line"; done
if ((smoke == 1)) && [[ -s "$results" ]]; then
    cargo run -q -p hunter-e2e --bin bench-report -- --check "$REPO/BENCHMARKS.md" "$results" ||
        failed+=("bench-report --check")
fi
if ((report == 1)) && [[ -s "$results" ]]; then
    cargo run --release -q -p hunter-e2e --bin bench-report -- --out "$REPO/BENCHMARKS.md" "$results"
    say "BENCHMARKS.md rewritten from $results"
fi
((${#failed[@]} == 0)) || die "failed: ${failed[*]}"
