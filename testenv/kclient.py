#!/usr/bin/env python3
"""Independent Kafka client for kbackup's integration tests.

Uses confluent-kafka (librdkafka), so tests do not only check franz-go
against itself. Records travel as JSON lines in the format `kbackup cat`
prints: {"topic","partition","offset","timestamp","timestamp_type","key",
"value","headers":[{"key","value"}]}, key/value/header values base64,
JSON null for null.

  kclient.py produce --brokers B --topic T [--compression C] [--idempotent]
                     [--transactional-id ID] [--acks all] [-X key=value ...]
      stdin: one JSON object per line: a record (partition -1/absent = the
      partitioner; timestamp 0/absent = now), or a transaction step
      {"op": "begin" | "commit" | "abort" | "flush"}.
      stdout: each delivered record with partition/offset/timestamp set and
      "seq" (its index among the input records); {"op": ..., "ok": true}
      after each transaction step.
  kclient.py consume --brokers B --topic T [--isolation read_committed]
      stdout: every record from the log start to the end offsets seen
      (high watermark or last stable offset), per partition in offset order.
  kclient.py committed --brokers B --topic T --group G
      stdout: {"partition": P, "offset": O} per partition of T: G's
      committed offset there (-1: none).
Exit status 0 on success; 1 with a message on stderr otherwise.
"""
import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

TS_TYPES = {0: "NoTimestamp", 1: "CreateTime", 2: "LogAppendTime"}


def b64d(v):
    return None if v is None else base64.b64decode(v)


def b64e(v):
    if v is None:
        return None
    if isinstance(v, str):
        v = v.encode()
    return base64.b64encode(v).decode()


def extra_conf(pairs):
    conf = {}
    for p in pairs or []:
        k, _, v = p.partition("=")
        conf[k] = v
    return conf


def die(msg):
    print("kclient: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def msg_json(m, seq=None):
    ts_type, ts = m.timestamp()
    out = {
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": ts,
        "timestamp_type": TS_TYPES.get(ts_type, str(ts_type)),
        "key": b64e(m.key()),
        "value": b64e(m.value()),
        "headers": [{"key": k, "value": b64e(v)} for k, v in (m.headers() or [])],
    }
    if seq is not None:
        out["seq"] = seq
    return out


def produce(a):
    conf = {
        "bootstrap.servers": a.brokers,
        "compression.type": a.compression,
        "acks": a.acks,
        "linger.ms": 5,
        "message.timeout.ms": int(a.timeout * 1000),
    }
    if a.idempotent:
        conf["enable.idempotence"] = True
    if a.transactional_id:
        conf["transactional.id"] = a.transactional_id
        conf["transaction.timeout.ms"] = max(60000, int(a.timeout * 1000))
    conf.update(extra_conf(a.X))
    p = Producer(conf)
    errors = []
    out = sys.stdout

    def report(seq, headers):
        def cb(err, m):
            if err is not None:
                errors.append("record %d: %s" % (seq, err))
                return
            j = msg_json(m, seq)
            j["headers"] = headers  # delivery reports do not carry headers
            out.write(json.dumps(j) + "\n")
        return cb

    def flush():
        left = p.flush(a.timeout)
        if left:
            die("%d records not delivered within %ss" % (left, a.timeout))
        if errors:
            die("delivery failed: " + "; ".join(errors[:5]))

    if a.transactional_id:
        p.init_transactions(a.timeout)
    seq = 0
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        op = r.get("op")
        if op:
            if op == "begin":
                p.begin_transaction()
            elif op == "commit":
                flush()
                p.commit_transaction(a.timeout)
            elif op == "abort":
                flush()  # so the aborted records have offsets to report
                p.abort_transaction(a.timeout)
            elif op == "flush":
                flush()
            else:
                die("unknown op %r" % op)
            out.write(json.dumps({"op": op, "ok": True}) + "\n")
            continue
        kw = {
            "topic": r.get("topic") or a.topic,
            "key": b64d(r.get("key")),
            "value": b64d(r.get("value")),
            "on_delivery": report(seq, [{"key": h["key"], "value": h.get("value")} for h in (r.get("headers") or [])]),
        }
        part = r.get("partition")
        if part is not None and part >= 0:
            kw["partition"] = part
        if r.get("timestamp"):
            kw["timestamp"] = r["timestamp"]
        hs = r.get("headers")
        if hs:
            kw["headers"] = [(h["key"], b64d(h.get("value"))) for h in hs]
        for _ in range(1000):
            try:
                p.produce(**kw)
                break
            except BufferError:
                p.poll(0.1)
        else:
            die("local queue full for too long")
        p.poll(0)
        seq += 1
    flush()
    out.flush()


def partitions(c, a):
    """The sorted partition numbers of topic a.topic (the consumer c applies
    a.X's extra properties)."""
    md = c.list_topics(a.topic, timeout=a.timeout)
    t = md.topics.get(a.topic)
    if t is None or t.error is not None:
        die("topic %s: %s" % (a.topic, t.error if t else "not found"))
    return sorted(t.partitions)


def consume(a):
    conf = {
        "bootstrap.servers": a.brokers,
        "group.id": "kclient-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": a.isolation,
        "auto.offset.reset": "earliest",
    }
    conf.update(extra_conf(a.X))
    c = Consumer(conf)
    parts = partitions(c, a)
    c.assign([TopicPartition(a.topic, p, -2) for p in parts])  # -2 = beginning
    pending = set(parts)
    recs = []
    deadline = time.time() + a.timeout
    while pending:
        if time.time() > deadline:
            die("timeout: partitions %s not read to the end" % sorted(pending))
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                pending.discard(m.partition())
                continue
            die("consume: %s" % m.error())
        recs.append(msg_json(m))
    c.close()
    recs.sort(key=lambda r: (r["partition"], r["offset"]))
    for r in recs:
        sys.stdout.write(json.dumps(r) + "\n")
    sys.stdout.flush()


def committed(a):
    """Prints the group's committed offset of every partition of the topic
    as {"partition": P, "offset": O} lines (O = -1: none committed)."""
    conf = {"bootstrap.servers": a.brokers, "group.id": a.group, "enable.auto.commit": False}
    conf.update(extra_conf(a.X))
    c = Consumer(conf)
    tps = c.committed([TopicPartition(a.topic, p) for p in partitions(c, a)], timeout=a.timeout)
    c.close()
    for tp in tps:
        if tp.error is not None:
            die("committed %s/%d: %s" % (a.topic, tp.partition, tp.error))
        sys.stdout.write(json.dumps({"partition": tp.partition, "offset": tp.offset if tp.offset >= 0 else -1}) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("produce")
    pp.add_argument("--brokers", required=True)
    pp.add_argument("--topic", required=True)
    pp.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    pp.add_argument("--idempotent", action="store_true")
    pp.add_argument("--transactional-id")
    pp.add_argument("--acks", default="all")
    pp.add_argument("--timeout", type=float, default=60.0)
    pp.add_argument("-X", action="append", help="extra librdkafka property key=value")
    cp = sub.add_parser("consume")
    cp.add_argument("--brokers", required=True)
    cp.add_argument("--topic", required=True)
    cp.add_argument("--isolation", default="read_committed", choices=["read_committed", "read_uncommitted"])
    cp.add_argument("--timeout", type=float, default=60.0)
    cp.add_argument("-X", action="append", help="extra librdkafka property key=value")
    gp = sub.add_parser("committed")
    gp.add_argument("--brokers", required=True)
    gp.add_argument("--topic", required=True)
    gp.add_argument("--group", required=True)
    gp.add_argument("--timeout", type=float, default=60.0)
    gp.add_argument("-X", action="append", help="extra librdkafka property key=value")
    a = ap.parse_args()
    try:
        {"produce": produce, "consume": consume, "committed": committed}[a.cmd](a)
    except KafkaException as e:
        die(str(e))


if __name__ == "__main__":
    main()
