#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) into .local/schemathesis-venv, idempotently, for
# tests/e2e/api_fuzz.rs: it fuzzes every route of the API's OpenAPI document.
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
VENV="$REPO/.local/schemathesis-venv"
VERSION=4.32.5
say() { printf '[schemathesis] %s\n' "$*" >&2; }

installed() {
    [[ -x "$VENV/bin/schemathesis" ]] &&
        [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" == "$VERSION" ]]
}
if installed; then
    say "schemathesis $VERSION already installed in $VENV"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    say "installing python3 and python3-venv (apt-get)"
    sudo_if_needed=()
    if [[ $(id -u) -ne 0 ]]; then sudo_if_needed=(sudo); fi
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2
fi
say "installing schemathesis $VERSION into $VENV"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
installed || { say "ERROR: schemathesis $VERSION not usable from $VENV"; exit 1; }
