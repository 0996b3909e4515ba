"""The baseline: the least work any consumer of these topics must do.

A plain confluent-kafka consumer reads the same pre-loaded input topics the
job reads, parses each value with orjson and updates a per-hash dict entry
(sighting count, distinct orgs and devices, newest time). No validation, no
models, no output. Run in the same benchmark as the job, right next to it,
the ratio job/baseline says how much the dataflow costs on top of the
unavoidable consume + parse + state update, and is far less sensitive to a
busy machine than either figure alone.

``python -m bench.baseline --brokers B --topics T1,T2`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient


def consume_all(brokers: str, topics: list[str], batch: int = 2000) -> dict[str, Any]:
    """Consume ``topics`` to their end once; time from the first message to the last update."""
    admin = AdminClient({"bootstrap.servers": brokers})
    meta = admin.list_topics(timeout=10)
    assignment = [TopicPartition(t, p, -2) for t in topics for p in meta.topics[t].partitions]
    consumer = Consumer({
        "bootstrap.servers": brokers, "group.id": "rapidloop-bench-baseline",
        "enable.auto.commit": False, "enable.partition.eof": True,
    })
    consumer.assign(assignment)
    state: dict[str, list[Any]] = {}
    n = bad = 0
    first = last = 0.0
    done: set[tuple[str, int]] = set()
    loads = orjson.loads
    try:
        while len(done) < len(assignment):
            msgs = consumer.consume(batch, 0.5)
            before = n
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        done.add((msg.topic(), msg.partition()))
                    continue
                if not first:
                    first = time.perf_counter()
                n += 1
                try:
                    ev = loads(msg.value())
                    sha = ev["sha256"].lower()
                    st = state.get(sha)
                    if st is None:
                        st = state[sha] = [0, set(), set(), ""]
                    st[0] += 1
                    org = ev.get("org_id")
                    if org:
                        st[1].add(org)
                        st[2].add(ev.get("device_id"))
                    ts = ev.get("ts") or ""
                    if ts > st[3]:
                        st[3] = ts
                except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError):
                    bad += 1  # the simulator's deliberate noise: malformed values
            if n != before:  # empty polls at the end are not work
                last = time.perf_counter()
    finally:
        consumer.close()
    elapsed = max(last - first, 1e-9)
    return {"messages": n, "unparsable": bad, "files": len(state), "elapsed_s": elapsed,
            "rate": n / elapsed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", required=True)
    p.add_argument("--topics", required=True, help="comma-separated")
    args = p.parse_args(argv)
    print(json.dumps(consume_all(args.brokers, args.topics.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
