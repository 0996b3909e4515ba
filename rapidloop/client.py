"""A small client for the people around the loop: sensor gateways and enforcement points.

A gateway sends reports and verdicts that the job will accept, or learns at
once, with the field and the rule, why not (the job's own parser checks
them, ``rapidloop.schemas.wire``); an enforcement point keeps the decisions
in force from the compacted feed (``rapidloop.active``), one tenant's or all,
by the same rule as ``rapidloop active``.

Sending (a gateway)::

    from rapidloop.client import Gateway
    gw = Gateway(brokers="kafka:9092")
    gw.send_report({"report_id": "r-1", "ts": "2026-11-28T10:00:00Z", "org_id": "org-1",
                    "device_id": "org-1/laptop-7", "sha256": "ab" * 32, "source": "edr",
                    "file": {"name": "x.exe", "size": 1, "type": "pe", "signed": False,
                             "signer": None, "path": "downloads"},
                    "behaviors": ["process_injection"], "verdicts": {}})
    gw.flush()

Enforcing (one tenant's enforcement point)::

    from rapidloop.client import ActiveView
    view = ActiveView(brokers="kafka:9092", org="org-1")
    view.catch_up()                       # the feed from its beginning
    for d in view.in_force():             # typed Decisions, most specific per file
        apply(d.sha256, d.action, d.scope)
    while True:
        for key, d in view.poll(1.0):     # then changes as they come (None: lifted)
            ...

Bad input raises :class:`rapidloop.schemas.wire.InvalidMessage`, whose text
names the field and the rule and whose ``code`` is a stable category.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from rapidloop.base.config import Config, load_config
from rapidloop.base.kafka import BrokerUnavailable, client_config, describe_error, quiet
from rapidloop.base.kafka import topic_partitions as _partitions
from rapidloop.schemas.enforcement import in_force
from rapidloop.schemas.model import Decision
from rapidloop.schemas.wire import (
    DecisionRecord,
    InvalidMessage,
    Limits,
    WireParser,
    decode_decision,
    read_decision,
)

__all__ = ["ActiveView", "Gateway", "InvalidMessage"]


def _bytes(message: dict[str, Any] | bytes) -> bytes:
    return message if isinstance(message, bytes) else orjson.dumps(message)


class Gateway:
    """Validates reports and verdicts as the job will, then sends them keyed by sha256."""

    def __init__(self, brokers: str | None = None, cfg: Config | None = None) -> None:
        self.cfg = cfg or load_config()
        self.parser = WireParser(Limits.from_config(self.cfg))
        self.producer = Producer({**quiet(client_config(self.cfg, brokers)),
                                  "enable.idempotence": True, "linger.ms": 5})
        self.errors: list[str] = []

    def send_report(self, report: dict[str, Any] | bytes) -> None:
        """Send one contract Report; InvalidMessage (nothing sent) if the job would refuse it."""
        value = _bytes(report)
        r = self.parser.report(value)
        self._send(self.cfg.kafka.reports_topic, r.sha256, value)

    def send_feedback(self, feedback: dict[str, Any] | bytes) -> None:
        """Send one contract Feedback (a verdict); InvalidMessage if the job would refuse it."""
        value = _bytes(feedback)
        fb = self.parser.feedback(value)
        self._send(self.cfg.kafka.feedback_topic, fb.sha256, value)

    def _send(self, topic: str, key: str, value: bytes) -> None:
        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                self.errors.append(describe_error(err))
        self.producer.produce(topic, value, key.encode(), on_delivery=report)
        self.producer.poll(0)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for every message to be acknowledged; BrokerUnavailable if some were not."""
        left = self.producer.flush(timeout)
        if left or self.errors:
            raise BrokerUnavailable(f"{left} message(s) not delivered within {timeout:g}s"
                                    + (f"; {self.errors[0]}" if self.errors else ""))


class ActiveView:
    """The decisions in force, kept from the compacted feed (``kafka.active_topic``).

    Reads every partition from its beginning (assigned, nothing committed, so
    any number of enforcement points can read alike); ``org`` gives that
    tenant's view (global decisions and its own, its own org decision
    winning over a global one; nothing of another tenant).
    """

    def __init__(self, brokers: str | None = None, org: str | None = None,
                 cfg: Config | None = None, timeout: float = 10.0) -> None:
        self.cfg = cfg or load_config()
        self.org = org
        conf = client_config(self.cfg, brokers)
        topic = self.cfg.kafka.active_topic
        self.parts = _partitions(conf, [topic], timeout)
        self.consumer = Consumer({**quiet(conf), "group.id": "rapidloop-no-commits",
                                  "enable.auto.commit": False, "enable.partition.eof": True})
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in self.parts])
        self.records: dict[str, DecisionRecord] = {}   # target key -> the decision in force
        self.clock = float("-inf")   # the newest event time seen

    def poll(self, timeout: float = 1.0) -> list[tuple[str, Decision | None]]:
        """Apply what arrived; the changes, ``(target, decision)`` or ``(target, None)``."""
        return self._poll(timeout)[0]

    def _poll(self, timeout: float) -> tuple[list[tuple[str, Decision | None]], set[Any]]:
        changes: list[tuple[str, Decision | None]] = []
        ended: set[Any] = set()
        for m in self.consumer.consume(1000, timeout):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    ended.add((m.topic(), m.partition()))
                    continue
                raise BrokerUnavailable(f"{m.topic()}: {describe_error(err)}")
            key = (m.key() or b"").decode()
            value = m.value()
            if value is None:
                self.records.pop(key, None)
                changes.append((key, None))
                continue
            record = read_decision(value)
            decision = decode_decision(record.raw)   # the typed Decision; a bad record raises
            self.clock = max(self.clock, decision.event_ts)
            self.records[key] = record
            changes.append((key, decision))
        return changes, ended

    def catch_up(self, timeout: float = 10.0) -> int:
        """Read every partition to its current end; the number of targets held."""
        pending = set(self.parts)
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(f"{len(pending)} partition(s) of "
                                        f"{self.cfg.kafka.active_topic} not read to their "
                                        f"end within {timeout:g}s")
            _, ended = self._poll(0.5)
            pending -= ended
        return len(self.records)

    def in_force(self, at: float | None = None) -> list[Decision]:
        """The decisions in force at ``at`` (default: the newest event time seen), typed."""
        when = self.clock if at is None else at
        return [decode_decision(d.raw) for d in in_force(self.records.values(), when, self.org)]

    def close(self) -> None:
        self.consumer.close()
