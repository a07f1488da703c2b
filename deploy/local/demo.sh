#!/usr/bin/env bash
# Hunter demo, end to end on this machine:
#
#   1. the local stack (tansu, ClickHouse, Prometheus) via deploy/local/stack.sh up
#   2. cargo build --release -p hunter
#   3. the built-in Partner Center simulator on 127.0.0.1:18080 with 500 generated referrals,
#      and its DNS on udp 127.0.0.1:18053 answering the customers' MX (deploy/local/demo.env)
#   4. hunter auth login (device code; the simulator approves it by itself)
#   5. hunter migrate (ClickHouse tables in database `hunter`)
#   6. hunter run all in the foreground: source, processor, sink, API on 127.0.0.1:8080
#
# Ctrl-C stops hunter and the simulator; the stack keeps running (deploy/local/stack.sh down
# stops it). Run it again at any time: every step is idempotent.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
cd "$REPO"

# shellcheck source=deploy/local/env.sh
source "$SCRIPT_DIR/env.sh"

LOCAL="$REPO/.local"
DEMO_DIR="$LOCAL/demo"
LOG_DIR="$LOCAL/logs"
BIN="$REPO/target/release/hunter"
SIMULATOR_ADDR=127.0.0.1:18080
API_ADDR=127.0.0.1:8080
# The data set, the simulator's DNS and the example USD rates (docs/demo.md); the test of the
# demo (tests/e2e/demo.rs) reads the same file.
# shellcheck source=deploy/local/demo.env
source "$SCRIPT_DIR/demo.env"
REFERRALS=$HUNTER_DEMO_REFERRALS
SEED=$HUNTER_DEMO_SEED
DNS_ADDR=$HUNTER_DEMO_DNS

say() { printf '[demo] %s\n' "$*"; }
die() {
    printf '[demo] ERROR: %s\n' "$*" >&2
    exit 1
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/${1%:*}/${1##*:}" 2>/dev/null; }

# --- 1. the stack ------------------------------------------------------------------------------------

say "step 1/6: starting the local stack (deploy/local/stack.sh up)"
"$REPO/deploy/local/stack.sh" up

# --- 2. the binary -----------------------------------------------------------------------------------

say "step 2/6: compiling hunter: cargo build --release -p hunter (the first build takes several minutes)"
cargo build --release -p hunter
[[ -x "$BIN" ]] || die "cargo build succeeded but $BIN is missing"

# --- settings ----------------------------------------------------------------------------------------

eval "$("$REPO/deploy/local/stack.sh" env)"

mkdir -p "$DEMO_DIR" "$LOG_DIR"
chmod 0700 "$DEMO_DIR"

# The API token is generated once and kept (mode 0600), so the curl lines below stay valid
# across demo runs. `stack.sh down --purge` deletes it.
TOKEN_FILE="$DEMO_DIR/api-token"
if [[ ! -s "$TOKEN_FILE" ]]; then
    say "generating an API token in $TOKEN_FILE"
    (
        umask 077
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN_FILE.new"
        mv -f "$TOKEN_FILE.new" "$TOKEN_FILE"
    )
fi
chmod 0600 "$TOKEN_FILE"
HUNTER_API_TOKEN=$(<"$TOKEN_FILE")

export HUNTER_PARTNER_CENTER_ENABLED=true
export HUNTER_PARTNER_CENTER_TENANT_ID=demo-tenant
export HUNTER_PARTNER_CENTER_CLIENT_ID=demo-client
export HUNTER_PARTNER_CENTER_API_URL="http://$SIMULATOR_ADDR/v1.0/engagements"
export HUNTER_PARTNER_CENTER_AUTHORITY_URL="http://$SIMULATOR_ADDR"
export HUNTER_TOKEN_CACHE="$DEMO_DIR/token-cache.json"
export HUNTER_CLICKHOUSE_DATABASE=hunter
export HUNTER_API_LISTEN="$API_ADDR"
export HUNTER_API_TOKEN
export HUNTER_SYNC_INTERVAL_SECS=30
# Enrichment asks the simulator's DNS for the customers' MX, and has example USD rates.
export HUNTER_ENRICH_DNS_SERVER HUNTER_ENRICH_DNS_TIMEOUT_MS HUNTER_ENRICH_USD_RATES

for addr in "$SIMULATOR_ADDR" "$API_ADDR"; do
    if port_open "$addr"; then
        die "$addr is already in use (is another demo still running?); stop that process first"
    fi
done

# --- Ctrl-C / exit: stop what this script started, keep the stack --------------------------------

SIMULATOR_PID=""
stop_pid() { # stop_pid NAME PID: SIGTERM, wait up to 15 s, then SIGKILL
    local name=$1 pid=$2 i
    kill -0 "$pid" 2>/dev/null || return 0
    say "stopping the $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "the $name did not stop within 15 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$SIMULATOR_PID" ]]; then stop_pid simulator "$SIMULATOR_PID"; fi
    say "the local stack is still running; deploy/local/stack.sh down stops it"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 3. the Partner Center simulator -----------------------------------------------------------------

say "step 3/6: starting the Partner Center simulator on http://$SIMULATOR_ADDR ($REFERRALS generated referrals, seed $SEED; DNS on udp $DNS_ADDR; log: $LOG_DIR/simulator.log)"
printf '\n===== %s: demo.sh starts the simulator =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$LOG_DIR/simulator.log"
"$BIN" simulate --referrals "$DEMO_DIR/referrals.json" --listen "$SIMULATOR_ADDR" --generate "$REFERRALS" \
    --seed "$SEED" --dns-listen "$DNS_ADDR" \
    </dev/null >>"$LOG_DIR/simulator.log" 2>&1 &
SIMULATOR_PID=$!

deadline=$((SECONDS + 60))
until curl -fsS --max-time 2 "http://$SIMULATOR_ADDR/healthz" >/dev/null 2>&1; do
    if ! kill -0 "$SIMULATOR_PID" 2>/dev/null; then
        tail -n 20 "$LOG_DIR/simulator.log" >&2 || true
        SIMULATOR_PID=""
        die "the simulator exited during start-up (log: $LOG_DIR/simulator.log)"
    fi
    ((SECONDS < deadline)) || die "the simulator did not answer http://$SIMULATOR_ADDR/healthz within 60 s"
    sleep 0.5
done
say "the simulator is ready (pid $SIMULATOR_PID)"

# --- 4. sign in --------------------------------------------------------------------------------------

say "step 4/6: signing in: hunter auth login (device code flow; the simulator approves it by itself)"
timeout --foreground 120 "$BIN" auth login ||
    die "hunter auth login failed or took more than 120 s (simulator log: $LOG_DIR/simulator.log)"
[[ -s "$HUNTER_TOKEN_CACHE" ]] || die "hunter auth login exited 0 but wrote no token cache at $HUNTER_TOKEN_CACHE"
say "signed in; token cache: $HUNTER_TOKEN_CACHE"

# --- 5. ClickHouse tables ----------------------------------------------------------------------------

say "step 5/6: creating the ClickHouse tables: hunter migrate (database $HUNTER_CLICKHOUSE_DATABASE)"
"$BIN" migrate

# --- 6. run ------------------------------------------------------------------------------------------

cat <<EOF

  Hunter is starting (all roles in one process). While it runs:

    Leads API    http://$API_ADDR/api/v1/leads
                 curl -s -H "Authorization: Bearer $HUNTER_API_TOKEN" http://$API_ADDR/api/v1/leads
    Sync now     curl -s -X POST -H "Authorization: Bearer $HUNTER_API_TOKEN" http://$API_ADDR/api/v1/partner-center/referrals/sync
    Web page     http://$API_ADDR/
    Metrics      http://$API_ADDR/metrics
    Prometheus   $HUNTER_PROMETHEUS_URL  (scrapes hunter every 5 s)
    ClickHouse   $HUNTER_CLICKHOUSE_URL  (database $HUNTER_CLICKHOUSE_DATABASE)
    Kafka        $HUNTER_KAFKA_BROKERS
    Simulator    http://$SIMULATOR_ADDR  (log: $LOG_DIR/simulator.log)
    DNS          udp $DNS_ADDR  (MX of the customers' .example domains: dig @${DNS_ADDR%:*} -p ${DNS_ADDR##*:} MX <domain>)
    API token    $HUNTER_API_TOKEN  (kept in $TOKEN_FILE)

  Ctrl-C stops hunter and the simulator; the stack keeps running (deploy/local/stack.sh down stops it).

EOF
say "step 6/6: hunter run all (sync every ${HUNTER_SYNC_INTERVAL_SECS} s)"
"$BIN" run all
