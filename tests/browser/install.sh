#!/usr/bin/env bash
# Installs what the browser tests need, idempotently: Debian's chromium (headless) and
# playwright-core from npm (a protocol client only: it downloads no browser).
set -euo pipefail
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { printf '[browser] %s\n' "$*" >&2; }
as_root() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]} > 0)); then
    say "installing ${missing[*]} (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
say "$(chromium --version 2>/dev/null || echo 'chromium: no version')"

# npm ci only when the lock file changed since the last install.
stamp="$DIR/node_modules/.hunter-lock-stamp"
if [[ ! -f "$stamp" ]] || ! cmp -s "$stamp" "$DIR/package-lock.json"; then
    say "installing playwright-core (npm ci)"
    (cd "$DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2)
    cp "$DIR/package-lock.json" "$stamp"
else
    say "playwright-core already installed"
fi
