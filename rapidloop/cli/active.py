"""`rapidloop active`: the decisions in force at one moment, one JSON line each.

The operator's view by default; ``--org`` gives one tenant's (global decisions
and its own, nothing of any other tenant). ``--at`` defaults to the latest
``event_ts`` in the file, or to now with ``--from-kafka`` (which reads the
decisions topic from its beginning to its end, assigned, nothing committed).
The rule is ``rapidloop.active`` (``rapidloop.enforcement``: decisions made at ``--at``
included, a decision expiring at ``--at`` lapsed). Lines are the decisions as read.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from rapidloop.active import in_force, latest_event_ts
from rapidloop.cli import CliError
from rapidloop.schemas.timefmt import parse_ts_or_none
from rapidloop.schemas.wire import DecisionRecord, InvalidMessage, read_decision


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("active", help="the decisions in force at one moment",
                       description=__doc__.splitlines()[0])
    add_view_args(p)
    p.set_defaults(func=run)


def add_view_args(p: argparse.ArgumentParser) -> None:
    """Where the decisions come from and which view of them (shared with ``export``)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--decisions", metavar="FILE",
                     help="decisions JSONL (.gz ok): a replay's output or a capture's")
    src.add_argument("--from-kafka", action="store_true",
                     help="read the decisions topic (kafka.decisions_topic) from its beginning")
    p.add_argument("--brokers", help="with --from-kafka: bootstrap servers (default: config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="with --from-kafka: give up after this long without news")
    p.add_argument("--org", metavar="ORG", help="that tenant's view")
    p.add_argument("--at", metavar="RFC3339",
                   help="the moment (default: the latest event_ts in the file)")


def view(args: argparse.Namespace) -> tuple[list[DecisionRecord], float | None]:
    """(the decisions in force in the asked view, the moment), or ([], None) if none."""
    if args.from_kafka:
        decisions = _from_kafka(args)
        default_at: float | None = time.time()
    else:
        decisions = _from_file(args.decisions)
        default_at = latest_event_ts(decisions)
    if args.at is not None:
        at = parse_ts_or_none(args.at)
        if at is None:
            raise CliError(f"--at {args.at!r} is not an RFC 3339 time")
    elif default_at is None:
        return [], None   # no decision: nothing in force
    else:
        at = default_at
    return in_force(decisions, at, args.org), at


def run(args: argparse.Namespace) -> int:
    active, _ = view(args)
    out = sys.stdout.buffer
    for d in active:
        out.write(orjson.dumps(d.raw) + b"\n")   # the contract decision as it was read
    out.flush()
    return 0


def _from_file(path: str) -> list[DecisionRecord]:
    from rapidloop.capture import iter_values

    decisions = []
    try:
        for n, line in enumerate(iter_values(path), 1):
            try:
                decisions.append(read_decision(line))
            except InvalidMessage as exc:
                raise CliError(f"{path} line {n}: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decisions


def _from_kafka(args: argparse.Namespace) -> list[DecisionRecord]:
    """Every decision on the topic, from the beginning of each partition to its end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    from rapidloop.config import load_config
    from rapidloop.kafka import (
        BrokerUnavailable,
        client_config,
        describe_error,
        quiet,
        topic_partitions,
    )

    cfg = load_config(args.config)
    topic = cfg.kafka.decisions_topic
    conf = client_config(cfg, args.brokers)
    try:
        parts = topic_partitions(conf, [topic], args.timeout)
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None
    consumer = Consumer({**quiet(conf), "group.id": "rapidloop-no-commits",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    pending = set(parts)
    decisions: list[DecisionRecord] = []
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in parts])
        deadline = time.monotonic() + args.timeout
        while pending:
            if time.monotonic() > deadline:
                raise CliError(f"no news from {topic} for {args.timeout:g}s; "
                               f"{len(pending)} partition(s) not read to their end")
            for m in consumer.consume(1000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((m.topic(), m.partition()))
                        continue
                    raise CliError(f"{topic}: {describe_error(err)}")
                deadline = time.monotonic() + args.timeout
                try:
                    decisions.append(read_decision(m.value() or b"null"))
                except InvalidMessage:
                    continue   # not a decision: nothing it could put in force
    finally:
        consumer.close()
    return decisions
