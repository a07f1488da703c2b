#!/usr/bin/env bash
# Installs the downstream consumer's tools (PyPI, pinned) into .local/avro-venv, idempotently,
# for tests/e2e/contracts.rs: fastavro (an Avro implementation independent of Hunter's: spec
# fingerprints, single-object decoding) and confluent-kafka with its Schema Registry client
# (librdkafka bundled in the wheel; AvroDeserializer).
set -euo pipefail
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
VENV="$REPO/.local/avro-venv"
FASTAVRO=1.13.1
CONFLUENT_KAFKA=2.16.1
say() { printf '[avro] %s\n' "$*" >&2; }

installed() {
    [[ -x "$VENV/bin/python" ]] &&
        [[ "$("$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m
import confluent_kafka.schema_registry.avro  # the Schema Registry extra is there
print(m.version("fastavro"), m.version("confluent-kafka"))
PY
)" == "$FASTAVRO $CONFLUENT_KAFKA" ]]
}
if installed; then
    say "fastavro $FASTAVRO and confluent-kafka $CONFLUENT_KAFKA already installed in $VENV"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    say "installing python3 and python3-venv (apt-get)"
    sudo_if_needed=()
    if [[ $(id -u) -ne 0 ]]; then sudo_if_needed=(sudo); fi
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2
fi
say "installing fastavro $FASTAVRO and confluent-kafka[schemaregistry] $CONFLUENT_KAFKA into $VENV"
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "fastavro==$FASTAVRO" "confluent-kafka[schemaregistry]==$CONFLUENT_KAFKA" >&2
installed || { say "ERROR: fastavro/confluent-kafka not usable from $VENV"; exit 1; }
