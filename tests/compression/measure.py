#!/usr/bin/env python3
"""Producer compression on a tansu broker: none, lz4 and zstd side by side (BENCHMARKS.md).

Hunter's librdkafka has lz4 but not zstd compiled in, so this measures with confluent-kafka
(librdkafka 2.x with every codec) on a tansu broker of its own: N referral-sized records (the
generated referrals' JSON, about 3.5 kB each, like the referral topic's Avro, which carries the
raw JSON) and N lead-sized records (about 400 B of their fields), produced acks=all, idempotent,
linger 5 ms (Hunter's producer settings) into a topic per codec and round, then read back by a
consumer. Reported per codec, medians of the rounds (orders alternate): producer CPU, broker CPU
while producing and while serving the read, consumer CPU, wall time, and what the broker's sqlite
file grew by.

Usage: measure.py REFERRALS_JSON [N] [ROUNDS]  (tansu on PATH or ~/.cargo/bin/tansu)
"""
import json, os, resource, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def payloads(path, n):
    referrals = json.load(open(path))
    big, small = [], []
    for i in range(n):
        r = dict(referrals[i % len(referrals)])
        r["id"] = f"{i:08x}-0000-4000-8000-{i:012d}"
        big.append((r["id"].encode(), json.dumps(r).encode()))
        profile = r.get("customerProfile") or {}
        lead = {k: r.get(k) for k in ("id", "name", "status", "substatus", "qualification", "type", "createdDateTime", "updatedDateTime", "eTag")}
        lead.update(company=profile.get("name"), country=(profile.get("address") or {}).get("country"), score=i % 100, priority="medium", email_provider="unknown")
        small.append((r["id"].encode(), json.dumps(lead).encode()))
    return big, small


def main():
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    big, small = payloads(path, n)
    print(f"records: {n} referral-sized (mean {statistics.mean(len(v) for _, v in big):.0f} B), {n} lead-sized (mean {statistics.mean(len(v) for _, v in small):.0f} B)")
    home = tempfile.mkdtemp(prefix="compression-", dir=os.environ.get("MEASURE_DIR", "/tmp"))
    port = free_port()
    tansu = shutil.which("tansu") or os.path.expanduser("~/.cargo/bin/tansu")
    db = f"{home}/tansu.db"
    broker = subprocess.Popen([tansu, "broker", "--cluster-id", "measure", "--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", f"sqlite://{db}"], stdout=open(f"{home}/tansu.log", "w"), stderr=subprocess.STDOUT, cwd="/")
    try:
        brokers = f"127.0.0.1:{port}"
        time.sleep(2)
        admin = AdminClient({"bootstrap.servers": brokers})
        codecs = ["none", "lz4", "zstd"]
        results = {c: [] for c in codecs}
        for rnd in range(rounds):
            order = codecs if rnd % 2 == 0 else list(reversed(codecs))
            for codec in order:
                topics = [f"r{rnd}-{codec}-referrals", f"r{rnd}-{codec}-leads"]
                for f in admin.create_topics([NewTopic(t, 4, 1) for t in topics]).values():
                    f.result()
                time.sleep(1)
                size0 = os.path.getsize(db)
                b0, p0, t0 = cpu_of(broker.pid), own_cpu(), time.time()
                producer = Producer({"bootstrap.servers": brokers, "acks": "all", "enable.idempotence": True, "linger.ms": 5, "compression.type": codec, "partitioner": "murmur2_random"})
                for topic, records in zip(topics, (big, small)):
                    for key, value in records:
                        while True:
                            try:
                                producer.produce(topic, value, key)
                                break
                            except BufferError:
                                producer.poll(0.05)
                        producer.poll(0)
                producer.flush(120)
                produce = dict(wall=time.time() - t0, client=own_cpu() - p0, broker=cpu_of(broker.pid) - b0)
                del producer
                time.sleep(0.5)
                grown = os.path.getsize(db) - size0
                b0, p0, t0 = cpu_of(broker.pid), own_cpu(), time.time()
                consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"m-{rnd}-{codec}", "auto.offset.reset": "earliest", "enable.auto.commit": False, "fetch.min.bytes": 262144, "fetch.wait.max.ms": 100})
                consumer.assign([TopicPartition(t, p, 0) for t in topics for p in range(4)])
                got, wire = 0, 0
                while got < 2 * n:
                    for m in consumer.consume(1000, 1.0):
                        if m.error() is None:
                            got += 1
                consume = dict(wall=time.time() - t0, client=own_cpu() - p0, broker=cpu_of(broker.pid) - b0)
                consumer.close()
                results[codec].append(dict(produce=produce, consume=consume, grown=grown))
                print(f"round {rnd + 1} {codec:>4}: produce {produce['wall']:.1f} s (client {produce['client']:.2f} CPU s, broker {produce['broker']:.2f}), read {consume['wall']:.1f} s (client {consume['client']:.2f}, broker {consume['broker']:.2f}), sqlite +{grown / 1e6:.0f} MB", flush=True)
        print("\nmedians, per record (referral + lead pairs, µs CPU per pair):")
        for codec in codecs:
            med = lambda f: statistics.median(f(r) for r in results[codec])
            print(f"  {codec:>4}: produce {med(lambda r: r['produce']['wall']):.1f} s, producer {med(lambda r: r['produce']['client']) * 1e6 / n:.1f} µs, broker on produce {med(lambda r: r['produce']['broker']) * 1e6 / n:.1f} µs, "
                  f"read {med(lambda r: r['consume']['wall']):.1f} s, consumer {med(lambda r: r['consume']['client']) * 1e6 / n:.1f} µs, broker on read {med(lambda r: r['consume']['broker']) * 1e6 / n:.1f} µs, sqlite {med(lambda r: r['grown']) / n:.0f} B")
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(20)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
