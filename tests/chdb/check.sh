#!/usr/bin/env bash
# Every ClickHouse migration and analyst view on both ClickHouse versions Hunter supports:
#
#   current ClickHouse   in-process, the PyPI package chdb-core (pinned below), in a venv under
#                        .local/chdb-venv (installed once; later runs only check it)
#   ClickHouse 18.16     the local stack's server at $HUNTER_CLICKHOUSE_URL
#
# Usage: tests/chdb/check.sh   (tests/run.sh runs it after the stack is up; exit 0 = both passed)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
VENV="$REPO/.local/chdb-venv"
CHDB_CORE_VERSION=26.9.0

say() { printf '[schema] %s\n' "$*" >&2; }
die() {
    printf '[schema] ERROR: %s\n' "$*" >&2
    exit 1
}

: "${HUNTER_CLICKHOUSE_URL:?is not set: run via tests/run.sh, or eval \"\$(deploy/local/stack.sh env)\" first}"

chdb_installed() {
    [[ -x "$VENV/bin/python" ]] &&
        [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("chdb-core"))' 2>/dev/null)" == "$CHDB_CORE_VERSION" ]]
}

if chdb_installed; then
    say "chdb-core $CHDB_CORE_VERSION already installed in $VENV"
else
    # Debian 12: python3 may be missing, and `python3 -m venv` needs python3-venv (ensurepip).
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        say "installing python3 and python3-venv (apt-get)"
        sudo_if_needed=()
        if [[ $(id -u) -ne 0 ]]; then sudo_if_needed=(sudo); fi
        "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2
    fi
    say "installing chdb-core $CHDB_CORE_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "chdb-core==$CHDB_CORE_VERSION" >&2
    chdb_installed || die "chdb-core $CHDB_CORE_VERSION not importable from $VENV after installing"
fi

status=0
"$VENV/bin/python" "$SCRIPT_DIR/check_schema.py" --engine chdb || status=1
"$VENV/bin/python" "$SCRIPT_DIR/check_schema.py" --engine http --url "$HUNTER_CLICKHOUSE_URL" || status=1
exit "$status"
