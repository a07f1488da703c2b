#!/usr/bin/env bash
# Hunter's full check, as CI runs it (.ci/run):
#
#   1. cargo fmt --all -- --check                          (fails fast)
#   2. cargo clippy --workspace --all-targets -- -D warnings (fails fast)
#   3. deploy/local/stack.sh up: the real broker, ClickHouse and Prometheus
#   4. tests/chdb/check.sh: every ClickHouse migration and analyst view on current ClickHouse
#      (in-process, PyPI chdb-core, installed once into .local/chdb-venv) and on the stack's 18.16
#   5. tests/browser/install.sh (chromium, playwright-core), tests/schemathesis/install.sh (PyPI,
#      for the API fuzz test), tests/avro/install.sh (PyPI fastavro and confluent-kafka, for the
#      contract tests), docker-compose (apt, for the deployment tests),
#      cargo build --workspace --bins
#   6. cargo test --workspace --no-fail-fast -- --test-threads=4, the end-to-end binary
#      (tests/e2e/main.rs) once per module
#      with the stack's settings and HUNTER_BIN=target/debug/hunter; this includes
#      `promtool check rules/config` and `promtool test rules` (tests/e2e/alerts.rs); then every
#      bench at a tiny size on the debug build (tests/bench.sh --smoke: it runs and its RESULT
#      line is whole, speed not judged)
#
# Components of the stack that this script started are stopped again at exit; components that
# were already running are left alone. Exits non-zero if step 4 or the tests failed.
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

say "Debian packages the build needs (deploy/local/stack.sh packages)"
"$STACK" packages

say "step 1/6: checking formatting (cargo fmt --all -- --check)"
cargo fmt --all -- --check

say "step 2/6: linting (cargo clippy --workspace --all-targets -- -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

# --- 3: the stack ------------------------------------------------------------------------------------

# Which components were already running? Those stay up; the rest are stopped at exit.
already_running=$("$STACK" status 2>/dev/null | awk '$2 == "running" { print $1 }' || true)
to_stop=()
for component in tansu clickhouse prometheus; do
    if ! grep -qxF "$component" <<<"$already_running"; then to_stop+=("$component"); fi
done
if ((${#to_stop[@]} == 0)); then
    say "step 3/6: the local stack is already running; it stays up afterwards"
else
    say "step 3/6: starting the local stack; this script stops ${to_stop[*]} again when it exits"
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

# --- 4: the ClickHouse schema on both versions -------------------------------------------------------

say "step 4/6: ClickHouse migrations and views on current ClickHouse (chdb-core) and on 18.16"
schema_status=0
"$REPO/tests/chdb/check.sh" || schema_status=$?

# --- 5, 6: build and test ----------------------------------------------------------------------------

say "step 5/6: test tools (Debian chromium, playwright-core, schemathesis), then the binaries (cargo build --workspace --bins)"
"$REPO/tests/browser/install.sh"
"$REPO/tests/schemathesis/install.sh"
# The downstream consumer of tests/e2e/contracts.rs: fastavro and confluent-kafka (PyPI, pinned).
"$REPO/tests/avro/install.sh"
# amtool for the Alertmanager config check (tests/e2e/notify.rs): Debian's prometheus-alertmanager.
"$REPO/tests/alertmanager-install.sh"
# The deployment tests validate docker-compose.yml with Debian's docker-compose (no Docker engine
# needed for `config`; --no-install-recommends keeps docker.io out) and parse the Kubernetes
# manifests with PyYAML, one of its dependencies.
if ! command -v docker-compose >/dev/null 2>&1; then
    say "installing docker-compose (apt, --no-install-recommends)"
    as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >&2
fi
# The ClickHouse security tests (tests/e2e/clickhouse_security.rs) make a throwaway CA and server
# certificate with the openssl command line; its current-ClickHouse check uses step 4's chdb venv.
if ! command -v openssl >/dev/null 2>&1; then
    say "installing openssl (apt)"
    if ((EUID == 0)); then sudo_cmd=(); else sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends openssl >&2
fi
say "building: cargo build --workspace --bins"
cargo build --workspace --bins

export HUNTER_BIN="$REPO/target/debug/hunter"
[[ -x "$HUNTER_BIN" ]] || die "cargo build succeeded but $HUNTER_BIN is missing"

say "step 6/6: running the tests against the stack (unit tests, then tests/e2e module by module, --test-threads=4)"
say "  HUNTER_BIN=$HUNTER_BIN HUNTER_KAFKA_BROKERS=$HUNTER_KAFKA_BROKERS HUNTER_CLICKHOUSE_URL=$HUNTER_CLICKHOUSE_URL"
test_status=0
# Unit tests of every crate (and the e2e support's own), then the end-to-end binary module by
# module (tests/e2e/main.rs): one link, and only the tests of one module run beside each other.
cargo test --workspace --no-fail-fast --exclude hunter-e2e -- --test-threads=4 || test_status=$?
cargo test -p hunter-e2e --no-fail-fast --lib --bins -- --test-threads=4 || test_status=$?
cargo build -p hunter-e2e --tests
modules=$(sed -n 's/^mod \([a-z_0-9]*\);$/\1/p' "$REPO/tests/e2e/main.rs")
[[ -n "$modules" ]] || die "no modules in tests/e2e/main.rs"
for module in $modules; do
    # A filter matches anywhere in a test's name: skip the modules whose name ends in this one.
    skips=()
    for other in $modules; do
        if [[ "$other" != "$module" && "$other" == *"_$module" ]]; then skips+=(--skip "$other::"); fi
    done
    say "  end-to-end: $module"
    cargo test -p hunter-e2e --test e2e -- --test-threads=4 "$module::" "${skips[@]}" || test_status=$?
done

# The benches (harness = false, so `cargo test` skips them) at a tiny size on this debug build:
# each must still run and print a whole RESULT line that renders into BENCHMARKS.md. Speed is
# not judged here (tests/bench.sh measures it); BENCHMARKS.md is left alone.
say "  benches: tests/bench.sh --smoke (every bench at a tiny size, debug build)"
bench_status=0
"$REPO/tests/bench.sh" --smoke || bench_status=$?
if ((bench_status != 0)); then
    say "the bench smoke run failed (exit $bench_status): see the [bench] lines above"
    test_status=$bench_status
fi

if ((schema_status != 0)); then
    say "the ClickHouse schema check failed (step 4, exit $schema_status): see the [schema] lines above"
fi
if ((test_status == 0)); then
    say "all cargo tests passed"
else
    say "tests failed (cargo test exit $test_status)"
fi
if ((test_status == 0 && schema_status != 0)); then exit "$schema_status"; fi
exit "$test_status"
