#!/usr/bin/env bash
# Hunter's full check, as CI runs it (.ci/run):
#
#   1. cargo fmt --all -- --check                          (fails fast)
#   2. cargo clippy --workspace --all-targets -- -D warnings (fails fast)
#   3. deploy/local/stack.sh up: the real broker, ClickHouse and Prometheus
#   4. tests/browser/install.sh (chromium, playwright-core), cargo build --workspace --bins
#   5. cargo test --workspace --no-fail-fast -- --test-threads=4
#      with the stack's settings and HUNTER_BIN=target/debug/hunter
#
# Components of the stack that this script started are stopped again at exit; components that
# were already running are left alone. Exits with the test status.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
cd "$REPO"

# shellcheck source=deploy/local/env.sh
source "$REPO/deploy/local/env.sh"

STACK="$REPO/deploy/local/stack.sh"

say() { printf '[tests] %s\n' "$*" >&2; }
die() {
    printf '[tests] ERROR: %s\n' "$*" >&2
    exit 1
}

command -v cargo >/dev/null 2>&1 || die "cargo not found (PATH=$PATH); install Rust with rustup"
say "using $(cargo --version) from $(command -v cargo)"

# --- 1, 2: formatting and lints, before anything slow --------------------------------------------------

say "step 1/5: checking formatting (cargo fmt --all -- --check)"
cargo fmt --all -- --check

say "step 2/5: linting (cargo clippy --workspace --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

# --- 3: the stack ------------------------------------------------------------------------------------

# Which components were already running? Those stay up; the rest are stopped at exit.
already_running=$("$STACK" status 2>/dev/null | awk '$2 == "running" { print $1 }' || true)
to_stop=()
for component in tansu clickhouse prometheus; do
    if ! grep -qxF "$component" <<<"$already_running"; then to_stop+=("$component"); fi
done
if ((${#to_stop[@]} == 0)); then
    say "step 3/5: the local stack is already running; it stays up afterwards"
else
    say "step 3/5: starting the local stack; this script stops ${to_stop[*]} again when it exits"
fi

# shellcheck disable=SC2317 # called from the EXIT trap
stop_started_stack() {
    local status=$?
    trap - EXIT INT TERM
    if ((${#to_stop[@]} > 0)); then
        say "stopping the stack components this run started: ${to_stop[*]}"
        "$STACK" down "${to_stop[@]}" || say "stack.sh down failed (exit $?)"
    fi
    exit "$status"
}
trap stop_started_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$STACK" up
eval "$("$STACK" env)"

# --- 4, 5: build and test ----------------------------------------------------------------------------

say "step 4/5: browser test tools (Debian chromium, playwright-core), then the binaries (cargo build --workspace --bins)"
"$REPO/tests/browser/install.sh"
say "building: cargo build --workspace --bins"
cargo build --workspace --bins

export HUNTER_BIN="$REPO/target/debug/hunter"
[[ -x "$HUNTER_BIN" ]] || die "cargo build succeeded but $HUNTER_BIN is missing"

say "step 5/5: running the tests against the stack (cargo test --workspace --no-fail-fast -- --test-threads=4)"
say "  HUNTER_BIN=$HUNTER_BIN HUNTER_KAFKA_BROKERS=$HUNTER_KAFKA_BROKERS HUNTER_CLICKHOUSE_URL=$HUNTER_CLICKHOUSE_URL"
test_status=0
cargo test --workspace --no-fail-fast -- --test-threads=4 || test_status=$?

if ((test_status == 0)); then
    say "all tests passed"
else
    say "tests failed (cargo test exit $test_status)"
fi
exit "$test_status"
