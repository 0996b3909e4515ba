"""The decisions in force at one moment: what an enforcement point should be applying.

The decision stream is a change log; an enforcement point that starts late,
or a SOC asking "what is blocked right now, and for whom", needs its state:
every target's ``block`` or ``allow`` in force at the moment, decisions made
at that very moment included (``rapidloop.schemas.enforcement``, ``inclusive=True``).

Views: the operator's (every target), or one tenant's: global decisions and
that tenant's own org and device decisions, nothing of any other tenant, and
a global decision is left out where the tenant's own org decision on the same
file is in force (the most specific wins for every one of its devices).

>>> from rapidloop.schemas.timefmt import parse_ts
>>> from rapidloop.schemas.wire import read_decision
>>> ds = [read_decision(d) for d in (
...   {"sha256": "a", "scope": "global", "org_id": None, "device_id": None,
...    "action": "block", "event_ts": "2026-11-28T00:00:00Z", "expires_at": None},
...   {"sha256": "a", "scope": "org", "org_id": "o1", "device_id": None,
...    "action": "allow", "event_ts": "2026-11-28T00:01:00Z", "expires_at": None},
...   {"sha256": "b", "scope": "org", "org_id": "o2", "device_id": None,
...    "action": "block", "event_ts": "2026-11-28T00:02:00Z",
...    "expires_at": "2026-11-28T01:02:00Z"})]
>>> [(d.sha256, d.scope) for d in in_force(ds, at=parse_ts("2026-11-28T00:02:00Z"))]
[('a', 'global'), ('a', 'org'), ('b', 'org')]
>>> [(d.sha256, d.scope) for d in in_force(ds, parse_ts("2026-11-28T00:02:00Z"), "o1")]
[('a', 'org')]
>>> [(d.sha256, d.scope) for d in in_force(ds, parse_ts("2026-11-28T01:02:00Z"), "o2")]
[('a', 'global')]
"""

from __future__ import annotations

import time

from rapidloop.base.config import Config
from rapidloop.schemas.wire import DecisionRecord, InvalidMessage, read_decision


class ActiveError(RuntimeError):
    """The decisions cannot be read (one line: which file or topic, and why)."""


def read_file(path: str) -> list[DecisionRecord]:
    """Every decision of a decisions JSONL (.gz ok); a line that is not one stops it
    (ActiveError): a file the user named that holds something else is a mistake to say."""
    from rapidloop.tools.capture import iter_values

    decisions = []
    try:
        for n, line in enumerate(iter_values(path), 1):
            try:
                decisions.append(read_decision(line))
            except InvalidMessage as exc:
                raise ActiveError(f"{path} line {n}: {exc}") from None
    except OSError as exc:
        raise ActiveError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decisions


def read_topic(cfg: Config, brokers: str | None, timeout: float) -> list[DecisionRecord]:
    """Every decision on the decisions topic, from the beginning of each partition to its
    end (assigned, nothing committed); ActiveError after ``timeout`` seconds without news.
    A message that is not a decision is skipped: nothing it could put in force."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from rapidloop.base.kafka import (
        BrokerUnavailable,
        client_config,
        describe_error,
        quiet,
        topic_partitions,
    )

    topic = cfg.kafka.decisions_topic
    conf = client_config(cfg, brokers)
    try:
        parts = topic_partitions(conf, [topic], timeout)
    except BrokerUnavailable as exc:
        raise ActiveError(str(exc)) from None
    consumer = Consumer({**quiet(conf), "group.id": "rapidloop-no-commits",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    pending = set(parts)
    decisions: list[DecisionRecord] = []
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise ActiveError(f"no news from {topic} for {timeout:g}s; "
                                  f"{len(pending)} partition(s) not read to their end")
            for m in consumer.consume(1000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((m.topic(), m.partition()))
                        continue
                    raise ActiveError(f"{topic}: {describe_error(err)}")
                deadline = time.monotonic() + timeout
                try:
                    decisions.append(read_decision(m.value() or b"null"))
                except InvalidMessage:
                    continue   # not a decision: nothing it could put in force
    finally:
        consumer.close()
    return decisions
