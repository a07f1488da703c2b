#!/usr/bin/env python3
"""Spec fingerprints of every released Hunter contract version, computed by fastavro.

An implementation independent of Hunter's (fastavro's to_parsing_canonical_form and its
CRC-64-AVRO, which agree with Java's SchemaNormalization). Prints one line per version:

    <contract> <version> <spec fingerprint> <parsing canonical form>

With --check FILE, compares the spec column of schemas/history/fingerprints.tsv with fastavro's
values and exits 1 on any difference (tests/e2e/contracts.rs runs it that way).

To recompute the committed values by hand (tests/avro/install.sh makes the venv):

    .local/avro-venv/bin/python tests/avro/fingerprints.py
"""
import json
import pathlib
import sys

from fastavro.schema import fingerprint, to_parsing_canonical_form

REPO = pathlib.Path(__file__).resolve().parents[2]


def versions():
    for path in sorted((REPO / "schemas" / "history").glob("*/*.avsc")):
        schema = json.loads(path.read_text())
        pcf = to_parsing_canonical_form(schema)
        yield path.parent.name, path.stem, fingerprint(pcf, "CRC-64-AVRO"), pcf


def main():
    computed = {(c, v): (fp, pcf) for c, v, fp, pcf in versions()}
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        committed = {}
        for line in pathlib.Path(sys.argv[2]).read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            contract, version, spec, _legacy = line.split("\t")
            committed[(contract, version)] = spec
        failures = []
        for key in sorted(set(computed) | set(committed)):
            ours = computed.get(key, (None,))[0]
            theirs = committed.get(key)
            if ours != theirs:
                failures.append(f"{key[0]} {key[1]}: fastavro {ours}, committed {theirs}")
        for key, (fp, pcf) in sorted(computed.items()):
            print(f"{key[0]}\t{key[1]}\t{fp}\t{pcf}")
        if failures:
            print("MISMATCH:\n" + "\n".join(failures), file=sys.stderr)
            sys.exit(1)
        print(f"fastavro agrees with all {len(computed)} committed spec fingerprints", file=sys.stderr)
        return
    for (contract, version), (fp, pcf) in sorted(computed.items()):
        print(f"{contract}\t{version}\t{fp}\t{pcf}")


if __name__ == "__main__":
    main()
