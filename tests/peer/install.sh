#!/usr/bin/env bash
# Installs the Python peer's packages (tests/peer/requirements.txt, PyPI, pinned) into
# .local/peer-venv, idempotently: nothing happens when the venv already holds exactly them.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
VENV="$REPO/.local/peer-venv"
REQUIREMENTS="$SCRIPT_DIR/requirements.txt"
say() { printf '[peer] %s\n' "$*" >&2; }

wanted() { grep -v '^\s*#' "$REQUIREMENTS" | grep -v '^\s*$' | tr 'A-Z_' 'a-z-' | sort; }
installed() {
    [[ -x "$VENV/bin/python" ]] &&
        diff <(wanted) <("$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort) >/dev/null &&
        "$VENV/bin/python" -c 'import confluent_kafka, fastavro, requests' 2>/dev/null
}
if installed; then
    say "the peer's packages are already installed in $VENV"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    say "installing python3 and python3-venv (apt-get)"
    sudo_if_needed=()
    if [[ $(id -u) -ne 0 ]]; then sudo_if_needed=(sudo); fi
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2
fi
say "installing $(wanted | tr '\n' ' ')into $VENV"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$REQUIREMENTS" >&2
installed || { say "ERROR: the packages of $REQUIREMENTS are not what $VENV holds"; exit 1; }
