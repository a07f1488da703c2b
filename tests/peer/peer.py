#!/usr/bin/env python3
"""The Python peer of the benchmarks: referrals from Kafka into ClickHouse the way a user would
write it without Hunter (the seed's Celery worker, one process): confluent-kafka to consume,
fastavro to decode, a dict to drop versions already written, JSONEachRow inserts over HTTP.

    peer.py --brokers HOST:PORT --topic TOPIC --group GROUP --schema schemas/referral.avsc \\
            --clickhouse http://127.0.0.1:18123 --database DB [--table peer_referrals]

Runs until it is stopped (SIGTERM/SIGINT: the pending batch is written first), like a worker.

Decoding: Hunter writes Avro single-object records (C3 01, the writer schema's 8-byte
CRC-64-AVRO fingerprint little-endian, the body) without a schema registry, and Confluent
framing (00, a 4-byte schema id, the body) with one (docs/contracts.md). The writer schema is
the repository's schemas/referral.avsc: a single-object record must carry its fingerprint
(anything else is counted as rejected and skipped, never guessed at); a Confluent-framed one is
read with the same schema (this peer has no registry client).

Dedupe: a dict of referral id -> the version written last (its eTag, else its updatedDateTime):
a record whose version was already written (or is in the batch) is skipped, as a redelivery or
a source's overlap re-read would be. Batches of 10,000 rows or 1 s (Hunter's sink defaults); the consumer's offsets
are committed after ClickHouse accepted the batch (at least once).
"""
import argparse
import datetime
import io
import json
import signal
import sys
import time

import requests
from confluent_kafka import Consumer, KafkaError
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

BATCH_ROWS = 10_000
BATCH_SECONDS = 1.0

COLUMNS = """
    referral_id String,
    version String,
    engagement_id String,
    name String,
    status String,
    substatus String,
    referral_type String,
    direction String,
    qualification String,
    company_name String,
    country String,
    deal_value Float64,
    currency String,
    created_at DateTime,
    updated_at DateTime,
    fetched_at DateTime
"""


def when(value):
    """A decoded timestamp as ClickHouse's DateTime text (UTC)."""
    if value is None:
        return "1970-01-01 00:00:00"
    return value.strftime("%Y-%m-%d %H:%M:%S")


def row(referral):
    profile = referral.get("customerProfile") or {}
    address = profile.get("address") or {}
    details = referral.get("details") or {}
    return {
        "referral_id": referral["id"],
        "version": version_of(referral),
        "engagement_id": referral.get("engagementId") or "",
        "name": referral.get("name") or "",
        "status": referral.get("status") or "",
        "substatus": referral.get("substatus") or "",
        "referral_type": referral.get("type") or "",
        "direction": referral.get("direction") or "",
        "qualification": referral.get("qualification") or "",
        "company_name": profile.get("name") or "",
        "country": address.get("country") or "",
        "deal_value": details.get("dealValue") or 0.0,
        "currency": details.get("currency") or "",
        "created_at": when(referral.get("createdDateTime")),
        "updated_at": when(referral.get("updatedDateTime")),
        "fetched_at": when((referral.get("ingest") or {}).get("fetchedAt")),
    }


def version_of(referral):
    etag = referral.get("eTag")
    if etag:
        return etag
    updated = referral.get("updatedDateTime")
    return updated.isoformat() if updated else ""


class Decoder:
    def __init__(self, schema_path):
        with open(schema_path) as f:
            schema_json = json.load(f)
        self.schema = parse_schema(schema_json)
        hexa = fingerprint(to_parsing_canonical_form(schema_json), "CRC-64-AVRO")
        self.fingerprint = bytes.fromhex(hexa)

    def decode(self, value):
        if value[:2] == b"\xc3\x01":
            if value[2:10] != self.fingerprint:
                raise ValueError(f"unknown writer schema fingerprint {value[2:10].hex()}")
            body = value[10:]
        elif value[:1] == b"\x00" and len(value) > 5:
            body = value[5:]
        else:
            raise ValueError("neither single-object nor confluent framing")
        return schemaless_reader(io.BytesIO(body), self.schema)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--clickhouse", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--table", default="peer_referrals")
    args = parser.parse_args()

    decoder = Decoder(args.schema)
    http = requests.Session()
    table = f"{args.database}.{args.table}"

    def query(sql, data=None):
        response = http.post(args.clickhouse, params={"query": sql}, data=data, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"clickhouse: {response.status_code} {response.text.strip()}")

    query(f"CREATE DATABASE IF NOT EXISTS {args.database}")
    query(f"CREATE TABLE IF NOT EXISTS {table} ({COLUMNS}) ENGINE = MergeTree ORDER BY (referral_id, updated_at)")

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))

    written = {}  # referral id -> version written
    batch = []
    started = time.monotonic()
    counts = {"read": 0, "written": 0, "duplicates": 0, "rejected": 0}

    def flush():
        if not batch:
            return
        body = "\n".join(json.dumps(r) for r in batch).encode()
        query(f"INSERT INTO {table} FORMAT JSONEachRow", data=body)
        consumer.commit(asynchronous=False)
        counts["written"] += len(batch)
        batch.clear()

    last_flush = time.monotonic()
    while not stopping:
        messages = consumer.consume(num_messages=1000, timeout=0.2)
        for message in messages:
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"kafka: {message.error()}")
                continue
            counts["read"] += 1
            try:
                referral = decoder.decode(message.value())
            except Exception as error:  # a record this peer cannot read: skipped, counted
                counts["rejected"] += 1
                print(f"rejected a record: {error}", file=sys.stderr)
                continue
            version = version_of(referral)
            if written.get(referral["id"]) == version:
                counts["duplicates"] += 1
                continue
            # Marked at once: a failed insert ends the process, which starts again from the
            # committed offsets with an empty dict.
            written[referral["id"]] = version
            batch.append(row(referral))
        if len(batch) >= BATCH_ROWS or (batch and time.monotonic() - last_flush >= BATCH_SECONDS):
            flush()
            last_flush = time.monotonic()
    flush()
    consumer.close()
    counts["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(counts), flush=True)



if __name__ == "__main__":
    main()
