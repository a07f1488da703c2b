#!/usr/bin/env bash
# Installs Debian's Alertmanager for `amtool check-config` (tests/e2e/notify_alerts.rs checks
# deploy/alertmanager/). Idempotent: does nothing when amtool is already there.
set -euo pipefail
command -v amtool >/dev/null 2>&1 && exit 0
if ((EUID == 0)); then sudo_cmd=(); else sudo_cmd=(sudo); fi
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus-alertmanager >&2
command -v amtool >/dev/null 2>&1 || { echo "prometheus-alertmanager installed but amtool is missing" >&2; exit 1; }
