# Sourced by the local scripts: a bare environment (CI, cron) may lack HOME, ~/.cargo/bin or
# the sbin directories (clickhouse-server lives in /usr/sbin). Appends, so a cargo already on
# PATH still wins.
# shellcheck shell=bash
if [[ -z "${HOME:-}" ]]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
    export HOME
fi
for dir in /usr/local/sbin /usr/sbin /sbin /usr/local/bin /usr/bin /bin "$HOME/.cargo/bin"; do
    case ":$PATH:" in
        *":$dir:"*) ;;
        *) PATH="${PATH:+$PATH:}$dir" ;;
    esac
done
export PATH
