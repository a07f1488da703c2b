#!/usr/bin/env bash
# Hunter's local stack of real servers, all on 127.0.0.1, all state under $REPO/.local/:
#
#   tansu       Kafka API broker, durable sqlite storage   tcp://127.0.0.1:19092
#   clickhouse  Debian clickhouse-server 18.16              http://127.0.0.1:18123, native 127.0.0.1:19000
#   prometheus  Debian prometheus                           http://127.0.0.1:19090
#
# Usage: deploy/local/stack.sh up                     install what is missing, start what is stopped,
#                                                     create Hunter's topics (idempotent)
#        deploy/local/stack.sh status                 one line per component; exit 0 only if all run
#        deploy/local/stack.sh down [--purge] [NAME…] stop what `up` started (pid files in .local/run);
#                                                     --purge also deletes .local/ (all stack data)
#        deploy/local/stack.sh env                    `export` lines for Hunter; use with eval
#        deploy/local/stack.sh packages               only the Debian packages (the build needs some)
#
# Progress messages go to stderr, so `eval "$(deploy/local/stack.sh env)"` stays clean.
set -euo pipefail

# --- where things are ---------------------------------------------------------------------------

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
LOCAL="$REPO/.local"
RUN_DIR="$LOCAL/run"
LOG_DIR="$LOCAL/logs"
TANSU_HOME="$LOCAL/tansu"
CLICKHOUSE_HOME="$LOCAL/clickhouse"
PROMETHEUS_HOME="$LOCAL/prometheus"
PROMETHEUS_CONFIG="$REPO/deploy/prometheus/prometheus.yml"
CLICKHOUSE_TEMPLATES="$SCRIPT_DIR/clickhouse"

# shellcheck source=deploy/local/env.sh
source "$SCRIPT_DIR/env.sh"

HOST=127.0.0.1
KAFKA_PORT=19092
KAFKA_URL="tcp://$HOST:$KAFKA_PORT"
CLICKHOUSE_HTTP_PORT=18123
CLICKHOUSE_TCP_PORT=19000
PROMETHEUS_PORT=19090

# libssl-dev, libcurl4-openssl-dev, pkg-config: librdkafka's TLS/SASL and OIDC (the build needs them);
# stunnel4: the TLS terminator in front of tansu for the secured-Kafka tests; openssl: the tests'
# throwaway CA and certificates (tests/support/tls.rs).
APT_PACKAGES=(clickhouse-server clickhouse-client prometheus libssl-dev libcurl4-openssl-dev pkg-config stunnel4 openssl)
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
TANSU_CLUSTER_ID=hunter-local

# name:partitions:cleanup.policy (empty = delete, the default)
TOPICS=(
    "partner-center.referrals.v1:4:"
    "hunter.source-state.v1:1:compact"
    "hunter.sync-runs.v1:1:"
    "hunter.commands.v1:1:"
    "hunter.leads.v1:4:compact"
    "hunter.dlq.v1:1:"
    "hunter.referral-actions.v1:1:"
    "hunter.referral-action-results.v1:1:"
)

# max.message.bytes of every topic: hunter_core::size::TOPIC_MAX_MESSAGE_BYTES, as `hunter migrate`
# sets it (docs/record-size.md). tansu 0.6.0 stores it but does not enforce it.
TOPIC_MAX_MESSAGE_BYTES=2097152

COMPONENTS=(tansu clickhouse prometheus) # `down` stops them in reverse order

# --- helpers --------------------------------------------------------------------------------------

say() { printf '[stack] %s\n' "$*" >&2; }
warn() { printf '[stack] WARNING: %s\n' "$*" >&2; }
die() {
    printf '[stack] ERROR: %s\n' "$*" >&2
    exit 1
}

now_ms() { date +%s%3N; }
elapsed() { # elapsed START_MS -> "1.234 s"
    local ms=$(($(now_ms) - $1))
    printf '%d.%03d s' $((ms / 1000)) $((ms % 1000))
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root for: $* (run as root or install sudo)"
    fi
}

pid_file() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }

# The pid recorded for component $1, if that process is alive and is really ours: its command
# line must mention $LOCAL (guards against a recycled pid). Zombies count as dead.
component_pid() {
    local file pid state
    file=$(pid_file "$1")
    [[ -s "$file" ]] || return 1
    pid=$(<"$file")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$LOCAL" || return 1
    printf '%s\n' "$pid"
}

process_gone() { # process_gone PID: true once PID has exited (or is a zombie)
    local state
    kill -0 "$1" 2>/dev/null || return 0
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
    [[ -z "$state" || "$state" == Z || "$state" == X ]]
}

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

component_address() {
    case "$1" in
        tansu) printf 'kafka %s\n' "$KAFKA_URL" ;;
        clickhouse) printf 'http://%s:%s, native %s:%s\n' "$HOST" "$CLICKHOUSE_HTTP_PORT" "$HOST" "$CLICKHOUSE_TCP_PORT" ;;
        prometheus) printf 'http://%s:%s\n' "$HOST" "$PROMETHEUS_PORT" ;;
    esac
}

component_port() {
    case "$1" in
        tansu) echo "$KAFKA_PORT" ;;
        clickhouse) echo "$CLICKHOUSE_HTTP_PORT" ;;
        prometheus) echo "$PROMETHEUS_PORT" ;;
    esac
}

component_log() {
    case "$1" in
        tansu) echo "$LOG_DIR/tansu.log" ;;
        clickhouse) echo "$CLICKHOUSE_HOME/logs/clickhouse-server.err.log" ;;
        prometheus) echo "$LOG_DIR/prometheus.log" ;;
    esac
}

# wait_for NAME PID TIMEOUT_S DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds;
# fail early (with the log tail) if PID dies, or after TIMEOUT_S.
wait_for() {
    local name=$1 pid=$2 timeout_s=$3 what=$4
    shift 4
    local deadline=$((SECONDS + timeout_s))
    say "$name: waiting until $what"
    until "$@" >/dev/null 2>&1; do
        if process_gone "$pid"; then
            warn "$name (pid $pid) exited during start-up; last lines of $(component_log "$name"):"
            tail -n 30 "$(component_log "$name")" >&2 || true
            if [[ "$name" == clickhouse ]]; then tail -n 10 "$LOG_DIR/clickhouse.stdout.log" >&2 || true; fi
            rm -f "$(pid_file "$name")"
            die "$name did not start"
        fi
        if ((SECONDS >= deadline)); then
            warn "last lines of $(component_log "$name"):"
            tail -n 30 "$(component_log "$name")" >&2 || true
            die "$name: '$what' not true after ${timeout_s}s (still running as pid $pid; 'stack.sh down' stops it)"
        fi
        sleep 0.2
    done
}

# start_background NAME LOGFILE WORKDIR COMMAND...: start COMMAND in its own session (so Ctrl-C in
# the terminal that ran `up` or the demo does not reach it), record its pid.
start_background() {
    local name=$1 log=$2 workdir=$3
    shift 3
    mkdir -p "$RUN_DIR" "$(dirname "$log")"
    printf '\n===== %s: starting %s =====\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$log"
    # No job control here, so the subshell is not a process-group leader and `setsid` execs
    # in place: $! is the server's own pid. Fds 8 and 9 (this script's locks) are closed so
    # that a long-lived server never holds them.
    (cd "$workdir" && exec setsid "$@" </dev/null >>"$log" 2>&1 8>&- 9>&-) &
    echo "$!" >"$(pid_file "$name")"
}

# --- installation ---------------------------------------------------------------------------------

ensure_apt_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        say "apt packages already installed: ${APT_PACKAGES[*]}"
        return 0
    fi
    say "installing apt packages: ${missing[*]}"
    # Keep package scripts from starting system-wide services (on 0.0.0.0 and default ports):
    # this stack runs its own instances. policy-rc.d exit 101 = "action forbidden".
    local created_policy=0 rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
        as_root chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    } >&2 || rc=$?
    if ((created_policy)); then as_root rm -f /usr/sbin/policy-rc.d; fi
    ((rc == 0)) || die "apt-get failed (exit $rc)"
    say "apt packages installed"
}

tansu_bin() { command -v tansu 2>/dev/null; }

tansu_has_sqlite() { "$1" --help 2>/dev/null | grep -i '^storage engines:' | grep -qw libsql; }

other_tansu_install_running() { pgrep -f 'cargo install.*[[:space:]]tansu([[:space:]]|$)' >/dev/null 2>&1; }

cargo_install_tansu() { # cargo_install_tansu [--force]
    command -v cargo >/dev/null 2>&1 || die "cargo not found (looked in PATH and $HOME/.cargo/bin); install Rust with rustup first"
    local log="$LOG_DIR/tansu-install.log" started=$SECONDS pid rc=0
    mkdir -p "$LOG_DIR"
    say "installing tansu $TANSU_VERSION: cargo install tansu --version $TANSU_VERSION --locked --features $TANSU_FEATURES $*"
    say "the first install compiles for about 40 minutes on 2 cores; log: $log"
    cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" "$@" >>"$log" 2>&1 9>&- &
    pid=$!
    while ! process_gone "$pid"; do
        sleep 5
        if (((SECONDS - started) % 60 < 5)); then
            say "tansu install still running ($(((SECONDS - started) / 60)) min): $(tail -n 1 "$log" | cut -c1-100)"
        fi
    done
    wait "$pid" || rc=$?
    ((rc == 0)) || die "cargo install tansu failed (exit $rc); see $log"
    say "tansu installed in $(((SECONDS - started) / 60)) min"
}

ensure_tansu() {
    local bin started=$SECONDS
    mkdir -p "$RUN_DIR"
    exec 8>"$RUN_DIR/tansu-install.lock"
    if ! flock -n 8; then
        say "another stack.sh is installing tansu; waiting for it"
        flock 8
    fi
    # Someone (another shell, a provisioning job) may already be installing tansu: never start a
    # second install in parallel; wait for theirs and use its result.
    if other_tansu_install_running; then
        say "another 'cargo install tansu' is running; waiting for it to finish (checks every 15 s)"
        while other_tansu_install_running; do
            sleep 15
            if (((SECONDS - started) % 60 < 15)); then
                say "still waiting for the other tansu install ($(((SECONDS - started) / 60)) min)"
            fi
        done
        say "the other tansu install finished after $(((SECONDS - started) / 60)) min of waiting"
    fi
    if ! bin=$(tansu_bin); then
        cargo_install_tansu
        bin=$(tansu_bin) || die "tansu still not on PATH after installing (expected $HOME/.cargo/bin/tansu)"
    fi
    if ! tansu_has_sqlite "$bin"; then
        warn "$bin was built without the libsql (sqlite) storage engine; reinstalling with --features $TANSU_FEATURES"
        cargo_install_tansu --force
        bin=$(tansu_bin) || die "tansu missing after reinstall"
        tansu_has_sqlite "$bin" || die "$bin still has no sqlite storage engine"
    fi
    local version
    version=$("$bin" --version 2>/dev/null || true)
    [[ "$version" == *"$TANSU_VERSION"* ]] || warn "expected tansu $TANSU_VERSION, found '$version'"
    say "tansu: $bin ($version)"
    TANSU="$bin"
    flock -u 8
}

# --- components -------------------------------------------------------------------------------------

check_port_free() { # check_port_free NAME PORT
    if port_open "$2"; then
        die "$1: $HOST:$2 is already in use by a process this script did not start; stop it first"
    fi
}

kafka_request_works() { # a real Kafka request (Metadata) answered by the broker
    (cd / && timeout 10 "$TANSU" topic list --broker "$KAFKA_URL") >/dev/null 2>&1
}

start_tansu() {
    local pid t0
    t0=$(now_ms)
    if pid=$(component_pid tansu); then
        say "tansu: already running (pid $pid, $KAFKA_URL)"
    else
        check_port_free tansu "$KAFKA_PORT"
        mkdir -p "$TANSU_HOME"
        say "tansu: starting the broker on $KAFKA_URL, storage sqlite://$TANSU_HOME/tansu.db"
        # tansu resolves the sqlite path relative to its working directory (it strips the leading
        # '/'), so it runs from / to make sqlite://<absolute path> mean that absolute path. That
        # also keeps it from loading a stray .env (tansu reads ./.env at start-up).
        start_background tansu "$LOG_DIR/tansu.log" / \
            env -u SCHEMA_REGISTRY -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG="${TANSU_RUST_LOG:-warn}" \
            "$TANSU" broker \
            --cluster-id "$TANSU_CLUSTER_ID" \
            --listener-url "$KAFKA_URL" \
            --advertised-listener-url "$KAFKA_URL" \
            --storage-engine "sqlite://$TANSU_HOME/tansu.db"
        pid=$(<"$(pid_file tansu)")
    fi
    wait_for tansu "$pid" 60 "$HOST:$KAFKA_PORT accepts connections" port_open "$KAFKA_PORT"
    wait_for tansu "$pid" 60 "a Kafka Metadata request (tansu topic list) succeeds" kafka_request_works
    say "tansu: ready (pid $pid) after $(elapsed "$t0")"
}

render_clickhouse_config() {
    local etc="$CLICKHOUSE_HOME/etc" template
    case "$CLICKHOUSE_HOME" in
        *[\&\<\>\"\']*) die "the repository path contains XML special characters: $CLICKHOUSE_HOME" ;;
    esac
    mkdir -p "$etc" "$CLICKHOUSE_HOME"/{data,tmp,user_files,format_schemas,logs}
    template=$(<"$CLICKHOUSE_TEMPLATES/config.xml")
    printf '%s\n' "${template//@CLICKHOUSE_HOME@/"$CLICKHOUSE_HOME"}" >"$etc/config.xml.new"
    mv -f "$etc/config.xml.new" "$etc/config.xml"
    cp -f "$CLICKHOUSE_TEMPLATES/users.xml" "$etc/users.xml"
}

clickhouse_ping() { [[ "$(curl -fsS --max-time 2 "http://$HOST:$CLICKHOUSE_HTTP_PORT/ping")" == Ok.* ]]; }

clickhouse_native_query() {
    if command -v clickhouse-client >/dev/null 2>&1; then
        timeout 10 clickhouse-client --host "$HOST" --port "$CLICKHOUSE_TCP_PORT" --query 'SELECT 1' >/dev/null
    else
        port_open "$CLICKHOUSE_TCP_PORT"
    fi
}

clickhouse_version() {
    curl -fsS --max-time 5 "http://$HOST:$CLICKHOUSE_HTTP_PORT/" --data-binary 'SELECT version()' 2>/dev/null || echo unknown
}

start_clickhouse() {
    local pid t0
    t0=$(now_ms)
    command -v clickhouse-server >/dev/null 2>&1 || die "clickhouse-server not found"
    render_clickhouse_config
    if pid=$(component_pid clickhouse); then
        say "clickhouse: already running (pid $pid, $(component_address clickhouse))"
    else
        check_port_free clickhouse "$CLICKHOUSE_HTTP_PORT"
        check_port_free clickhouse "$CLICKHOUSE_TCP_PORT"
        say "clickhouse: starting clickhouse-server with $CLICKHOUSE_HOME/etc/config.xml"
        start_background clickhouse "$LOG_DIR/clickhouse.stdout.log" "$CLICKHOUSE_HOME" \
            clickhouse-server --config-file="$CLICKHOUSE_HOME/etc/config.xml"
        pid=$(<"$(pid_file clickhouse)")
    fi
    wait_for clickhouse "$pid" 120 "http://$HOST:$CLICKHOUSE_HTTP_PORT/ping says Ok." clickhouse_ping
    wait_for clickhouse "$pid" 30 "a query over the native protocol ($HOST:$CLICKHOUSE_TCP_PORT) works" clickhouse_native_query
    say "clickhouse: ready (pid $pid, version $(clickhouse_version)) after $(elapsed "$t0")"
}

prometheus_ready() { curl -fsS --max-time 2 "http://$HOST:$PROMETHEUS_PORT/-/ready" >/dev/null; }

start_prometheus() {
    local pid t0
    t0=$(now_ms)
    command -v prometheus >/dev/null 2>&1 || die "prometheus not found"
    [[ -f "$PROMETHEUS_CONFIG" ]] || die "missing $PROMETHEUS_CONFIG"
    if command -v promtool >/dev/null 2>&1; then
        promtool check config "$PROMETHEUS_CONFIG" >/dev/null 2>&1 ||
            { promtool check config "$PROMETHEUS_CONFIG" >&2 || true; die "invalid $PROMETHEUS_CONFIG"; }
    fi
    if pid=$(component_pid prometheus); then
        say "prometheus: already running (pid $pid, $(component_address prometheus)); reloading its configuration"
        kill -HUP "$pid"
    else
        check_port_free prometheus "$PROMETHEUS_PORT"
        mkdir -p "$PROMETHEUS_HOME/data"
        say "prometheus: starting with $PROMETHEUS_CONFIG on http://$HOST:$PROMETHEUS_PORT"
        start_background prometheus "$LOG_DIR/prometheus.log" "$PROMETHEUS_HOME" \
            prometheus \
            --config.file="$PROMETHEUS_CONFIG" \
            --storage.tsdb.path="$PROMETHEUS_HOME/data" \
            --web.listen-address="$HOST:$PROMETHEUS_PORT" \
            --web.console.templates=/etc/prometheus/consoles \
            --web.console.libraries=/etc/prometheus/console_libraries
        pid=$(<"$(pid_file prometheus)")
    fi
    wait_for prometheus "$pid" 60 "http://$HOST:$PROMETHEUS_PORT/-/ready answers" prometheus_ready
    say "prometheus: ready (pid $pid) after $(elapsed "$t0")"
}

# Topic names the broker knows, one per line.
list_topics() {
    local json
    json=$(cd / && timeout 20 "$TANSU" topic list --broker "$KAFKA_URL") || return 1
    { grep -o '"name":"[^"]*"' <<<"$json" || true; } | cut -d'"' -f4 | sort -u
}

create_topic() { # create_topic NAME PARTITIONS [CONFIG...]; "already exists" counts as success
    local name=$1 partitions=$2 out rc=0
    shift 2
    local args=(topic create "$name" --partitions "$partitions" --broker "$KAFKA_URL")
    local config
    for config in "$@"; do args+=(--config "$config"); done
    out=$(cd / && timeout 30 "$TANSU" "${args[@]}" 2>&1) || rc=$?
    if ((rc == 0)); then return 0; fi
    if grep -qiE 'already exists|TopicAlreadyExists' <<<"$out"; then return 0; fi
    printf '%s\n' "$out" >&2
    return "$rc"
}

# tansu does not auto-create topics, so Hunter's are created here. Beware: in tansu 0.6.0 with
# sqlite storage, deleting ANY topic (DeleteTopics, `tansu topic delete`) deletes every topic of
# the cluster (its topic_delete_by.sql matches on the cluster only). Tests must not delete topics;
# `up` recreates missing ones (empty).
ensure_topics() {
    local existing entry name partitions policy t0
    t0=$(now_ms)
    existing=$(list_topics) || die "cannot list topics on $KAFKA_URL"
    for entry in "${TOPICS[@]}"; do
        IFS=: read -r name partitions policy <<<"$entry"
        if grep -qxF -- "$name" <<<"$existing"; then
            say "topic $name: exists"
            continue
        fi
        local size="max.message.bytes=$TOPIC_MAX_MESSAGE_BYTES"
        if [[ -n "$policy" ]]; then
            say "topic $name: creating ($partitions partition(s), cleanup.policy=$policy, $size)"
            if ! create_topic "$name" "$partitions" "cleanup.policy=$policy" "$size"; then
                warn "topic $name: the broker refused cleanup.policy=$policy or $size; creating it as a plain topic"
                create_topic "$name" "$partitions" || die "cannot create topic $name"
            fi
        else
            say "topic $name: creating ($partitions partition(s), $size)"
            if ! create_topic "$name" "$partitions" "$size"; then
                warn "topic $name: the broker refused $size; creating it as a plain topic"
                create_topic "$name" "$partitions" || die "cannot create topic $name"
            fi
        fi
    done
    existing=$(list_topics) || die "cannot list topics on $KAFKA_URL"
    for entry in "${TOPICS[@]}"; do
        IFS=: read -r name _ _ <<<"$entry"
        grep -qxF -- "$name" <<<"$existing" || die "topic $name is missing after creation"
    done
    say "topics: all ${#TOPICS[@]} present after $(elapsed "$t0")"
}

# --- commands ---------------------------------------------------------------------------------------

take_lock() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/stack.lock"
    if ! flock -n 9; then
        say "another stack.sh up/down is running; waiting for it"
        flock 9
    fi
}

release_lock() { flock -u 9; }

cmd_up() {
    local t0
    t0=$(now_ms)
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    take_lock
    say "bringing up the local stack under $LOCAL"
    ensure_apt_packages
    # ClickHouse and Prometheus first: they are ready in seconds, while a first tansu install
    # compiles for the better part of an hour. The stack lock is not held during that install
    # (so `status` and `down` stay usable); the install has a lock of its own.
    start_clickhouse
    start_prometheus
    release_lock
    ensure_tansu
    take_lock
    start_tansu
    ensure_topics
    say "stack is up after $(elapsed "$t0"); 'deploy/local/stack.sh env' prints Hunter's settings"
    cmd_status >&2 || true
}

cmd_status() {
    local name pid port all_ok=0 line
    for name in "${COMPONENTS[@]}"; do
        port=$(component_port "$name")
        if pid=$(component_pid "$name"); then
            if port_open "$port"; then
                line="running  pid $pid  $(component_address "$name")"
            else
                line="starting pid $pid  (not answering on $HOST:$port yet)"
                all_ok=3
            fi
        else
            line="stopped"
            port_open "$port" && line="stopped  ($HOST:$port is in use by a process this script did not start)"
            all_ok=3
        fi
        printf '%-11s %s\n' "$name" "$line"
    done
    # Hunter's topics (tansu 0.6.0 forgets every topic when any one topic is deleted; see up).
    local existing entry topic present=0 missing=()
    if component_pid tansu >/dev/null && TANSU=$(tansu_bin) && existing=$(list_topics 2>/dev/null); then
        for entry in "${TOPICS[@]}"; do
            topic=${entry%%:*}
            if grep -qxF -- "$topic" <<<"$existing"; then present=$((present + 1)); else missing+=("$topic"); fi
        done
        if ((${#missing[@]} == 0)); then
            printf '%-11s %s\n' topics "$present/${#TOPICS[@]} present"
        else
            printf '%-11s %s\n' topics "$present/${#TOPICS[@]} present; missing: ${missing[*]} ('stack.sh up' creates them)"
            all_ok=3
        fi
    fi
    return "$all_ok"
}

stop_component() {
    local name=$1 pid file deadline
    file=$(pid_file "$name")
    if ! pid=$(component_pid "$name"); then
        if [[ -e "$file" ]]; then
            rm -f "$file"
            say "$name: not running (removed stale pid file)"
        else
            say "$name: not running"
        fi
        return 0
    fi
    say "$name: stopping pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 60))
    until process_gone "$pid"; do
        if ((SECONDS >= deadline)); then
            warn "$name: pid $pid still running after 60 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 1
            break
        fi
        sleep 0.2
    done
    rm -f "$file"
    say "$name: stopped"
}

cmd_down() {
    local purge=0 names=() arg i name
    for arg in "$@"; do
        case "$arg" in
            --purge) purge=1 ;;
            tansu | clickhouse | prometheus) names+=("$arg") ;;
            *) die "down: unknown argument '$arg' (expected --purge or a component: ${COMPONENTS[*]})" ;;
        esac
    done
    if ((${#names[@]} == 0)); then names=("${COMPONENTS[@]}"); fi
    [[ -d "$LOCAL" ]] || { say "nothing to stop ($LOCAL does not exist)"; return 0; }
    take_lock
    for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
        name=${COMPONENTS[i]}
        if [[ " ${names[*]} " == *" $name "* ]]; then stop_component "$name"; fi
    done
    if ((purge)); then
        if ((${#names[@]} != ${#COMPONENTS[@]})); then
            die "--purge deletes all of $LOCAL; use it without component names"
        fi
        [[ "$LOCAL" == */.local && "$LOCAL" != /.local ]] || die "refusing to delete '$LOCAL'"
        say "purging $LOCAL (broker data, ClickHouse data, Prometheus data, logs, demo files)"
        rm -rf -- "$LOCAL"
    else
        say "data left in place under $LOCAL ('down --purge' deletes it)"
    fi
}

cmd_env() {
    cat <<EOF
export HUNTER_KAFKA_BROKERS=$HOST:$KAFKA_PORT
export HUNTER_CLICKHOUSE_URL=http://$HOST:$CLICKHOUSE_HTTP_PORT
export HUNTER_CLICKHOUSE_NATIVE=$HOST:$CLICKHOUSE_TCP_PORT
export HUNTER_PROMETHEUS_URL=http://$HOST:$PROMETHEUS_PORT
EOF
}

usage() {
    sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        env) cmd_env "$@" ;;
        packages) ensure_apt_packages ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
}

main "$@"
