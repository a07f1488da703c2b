#!/usr/bin/env python3
"""A downstream consumer that no one at Hunter wrote: reads one of Hunter's topics with
confluent-kafka (librdkafka) and fastavro, the way a partner's data team would.

    consume.py --brokers HOST:PORT --topic TOPIC --schema schemas/lead.avsc --count N \
               --mode single-object
    consume.py ... --mode registry --registry URL [--user USER]   (password in $REGISTRY_PASSWORD)

single-object: the Avro specification's single-object decoding. Each value must start with
C3 01 and the CRC-64-AVRO fingerprint that fastavro computes for the reader's schema (the
consumer's own copy of the .avsc); the body is read with fastavro.schemaless_reader.

registry: Confluent framing through confluent-kafka's own AvroDeserializer and
SchemaRegistryClient (basic auth when --user is given); the writer schema comes from the
registry.

Prints one JSON object: {"read": n, "rejected": [reasons], "records": [...]} where each record
is the decoded value with timestamps as microseconds since the epoch (Hunter's JSON form).
Exits 1 when a record was rejected or fewer than --count arrived within --timeout seconds.
"""
import argparse
import datetime
import io
import json
import os
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError
from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint, to_parsing_canonical_form

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def plain(value):
    """Decoded Avro as Hunter's JSON: timestamps in microseconds, the rest as is."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return (value - EPOCH) // datetime.timedelta(microseconds=1)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mode", choices=["single-object", "registry"], required=True)
    parser.add_argument("--registry")
    parser.add_argument("--user")
    parser.add_argument("--ca")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()

    with open(args.schema) as f:
        schema_json = json.load(f)
    schema = parse_schema(schema_json)
    expected = fingerprint(to_parsing_canonical_form(schema_json), "CRC-64-AVRO")

    deserializer = None
    if args.mode == "registry":
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        conf = {"url": args.registry}
        if args.user:
            conf["basic.auth.user.info"] = f"{args.user}:{os.environ['REGISTRY_PASSWORD']}"
        if args.ca:
            conf["ssl.ca.location"] = args.ca
        deserializer = AvroDeserializer(SchemaRegistryClient(conf))

        def decode(value):
            return deserializer(value, SerializationContext(args.topic, MessageField.VALUE))

    else:

        def decode(value):
            if value[:2] != b"\xc3\x01":
                raise ValueError(f"not single-object encoded (starts {value[:2].hex()})")
            found = value[2:10].hex()
            if found != expected:
                raise ValueError(
                    f"fingerprint {found} is not {expected}, the fingerprint of {args.schema}"
                )
            return schemaless_reader(io.BytesIO(value[10:]), schema, None)

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": f"downstream-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([args.topic])
    records, rejected = [], []
    deadline = time.monotonic() + args.timeout
    try:
        while len(records) + len(rejected) < args.count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    print(f"kafka: {message.error()}", file=sys.stderr)
                continue
            try:
                records.append(plain(decode(message.value())))
            except Exception as error:  # a rejected record is the finding, not a crash
                rejected.append(f"offset {message.partition()}/{message.offset()}: {error}")
    finally:
        consumer.close()
    print(json.dumps({"read": len(records), "rejected": rejected, "records": records}))
    if rejected or len(records) < args.count:
        sys.exit(1)


if __name__ == "__main__":
    main()
