"""Kafka connectors, `rapidloop topics` and `rapidloop tail` against the real broker.

A Bytewax flow reads a 3-partition topic with KafkaBatchSource (tail=False)
and writes it back with KafkaBatchSink: every message must arrive exactly
once and the flow must end by itself at the end of the input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from jsonschema import Draft202012Validator

from rapidloop.base.config import load_config
from rapidloop.base.jobstats import JobStats
from rapidloop.base.kafka import BrokerUnavailable, quiet
from rapidloop.cli import main
from rapidloop.flows.kafka_io import (
    DeliveryError,
    KafkaBatchSink,
    KafkaBatchSource,
    preflight,
    to_raw,
)
from rapidloop.schemas.model import RawMessage

from ..conftest import ROOT, TopicMaker, free_port

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- helpers

def produce(brokers: str, topic: str, pairs: list[tuple[bytes | None, bytes]],
            one_batch_each: bool = False, partitions: int = 0) -> None:
    """``partitions``: spread the messages over that many partitions in turn (keyless
    messages otherwise go where the client's sticky partitioner puts whole batches)."""
    p = Producer(quiet({"bootstrap.servers": brokers, "linger.ms": 5}))
    for i, (key, value) in enumerate(pairs):
        if partitions:
            p.produce(topic, value, key, partition=i % partitions)
        else:
            p.produce(topic, value, key)
        if one_batch_each:
            p.flush(10)
    assert p.flush(15) == 0


def read_all(brokers: str, topic: str, partitions: int = 3,
             timeout: float = 20.0) -> list[tuple[int, bytes | None, bytes]]:
    """Every (partition, key, value) of a topic, up to each partition's end."""
    c = Consumer(quiet({"bootstrap.servers": brokers, "group.id": "test-reader",
                        "enable.auto.commit": False, "enable.partition.eof": True}))
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[tuple[int, bytes | None, bytes]] = []
    ended: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(ended) < partitions:
            assert time.monotonic() < deadline, f"{topic} not drained in {timeout}s"
            for m in c.consume(1000, 0.2):
                if m.error() is None:
                    out.append((m.partition(), m.key(), m.value()))
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
                else:
                    raise AssertionError(m.error())
    finally:
        c.close()
    return out


def run_flow(flow: Dataflow, workers: int = 1, timeout: float = 60.0) -> float:
    """Run a flow to its end in a thread; fail if it has not ended within ``timeout``."""
    from bytewax.run import cli_main

    errors: list[BaseException] = []

    def target() -> None:
        try:
            cli_main(flow, workers_per_process=workers,
                     epoch_interval=timedelta(seconds=0.5))
        except BaseException as exc:
            errors.append(exc)

    t0 = time.monotonic()
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"flow did not end within {timeout}s (tail=False must stop at EOF)"
    if errors:
        raise errors[0]
    return time.monotonic() - t0


def copy_flow(brokers: str, src: str, dst: str, batch_size: int = 100,
              seen: Callable[[list[RawMessage]], None] | None = None,
              tag_pid: bool = False, start: str = "beginning",
              stats: JobStats | None = None) -> Dataflow:
    """src → dst through KafkaBatchSource/KafkaBatchSink, counting into ``stats``; also a
    `bytewax.testing -p` target."""
    conf = {"bootstrap.servers": brokers}
    flow = Dataflow("copy")
    batches = op.input("in", flow, KafkaBatchSource(conf, [src], batch_size, False, start,
                                                    stats=stats))

    def to_kv(batch: list[RawMessage]) -> list[tuple[bytes | None, bytes]]:
        if seen is not None:
            seen(batch)
        key = str(os.getpid()).encode() if tag_pid else None
        return [(key or m.key, m.value or b"") for m in batch]

    op.output("out", op.map("kv", batches, to_kv), KafkaBatchSink(conf, dst, stats=stats))
    return flow


def config_file(tmp_path: Path, topics: dict[str, str], **kafka: Any) -> str:
    lines = ["[kafka]"] + [f'{k} = "{v}"' for k, v in topics.items()]
    lines += [f"{k} = {v!r}" for k, v in kafka.items()]
    path = tmp_path / "rapidloop.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def closed_port_brokers() -> str:
    return f"127.0.0.1:{free_port()}"


# ---------------------------------------------------------------- the connectors

@pytest.mark.parametrize("workers", [1, 2])
def test_flow_copies_every_message_exactly_once_and_ends_at_eof(
        broker: str, kafka_topics: TopicMaker, workers: int) -> None:
    src, dst = kafka_topics("in", "out")
    n = 5000
    sent = [(f"k{i % 97}".encode(), f'{{"n":{i}}}'.encode()) for i in range(n)]
    produce(broker, src, sent)
    batches: list[list[RawMessage]] = []
    lock = threading.Lock()

    def seen(batch: list[RawMessage]) -> None:
        with lock:
            batches.append(batch)

    run = JobStats()
    elapsed = run_flow(copy_flow(broker, src, dst, 100, seen, stats=run), workers)
    assert abs(run.newest_produce_ts - time.time()) < 120   # input lag is known

    got = read_all(broker, dst)
    assert Counter(v for _, _, v in got) == Counter(v for _, v in sent)   # exactly once
    assert Counter((k, v) for _, k, v in got) == Counter(sent)           # keys kept
    stats = run.delivery(dst)
    assert (stats.delivered, stats.failed, stats.pending) == (n, 0, 0)
    # Batches: never empty, at most batch_size, one partition each, offsets in order.
    assert all(0 < len(b) <= 100 for b in batches)
    by_part: dict[int, list[int]] = {}
    for b in batches:
        assert {m.partition for m in b} == {b[0].partition} and {m.topic for m in b} == {src}
        by_part.setdefault(b[0].partition, []).extend(m.offset for m in b)  # type: ignore[misc]
    assert sorted(by_part) == [0, 1, 2]
    assert all(offs == list(range(len(offs))) for offs in by_part.values())
    assert elapsed < 30


def test_two_process_cluster_spreads_partitions_and_copies_exactly_once(
        broker: str, kafka_topics: TopicMaker) -> None:
    src, dst = kafka_topics("in", "out")
    sent = [(None, f"m{i}".encode()) for i in range(3000)]
    produce(broker, src, sent, partitions=3)   # every partition, so each process has a share
    target = f"tests.integration.test_kafka_io:copy_flow({broker!r}, {src!r}, {dst!r}, " \
             f"100, None, True)"
    proc = subprocess.run([sys.executable, "-m", "bytewax.testing", target, "-p", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = read_all(broker, dst)
    assert Counter(v for _, _, v in got) == Counter(v for _, v in sent)
    # Output keys are the pid of the process that read each message: both took a share.
    assert len({k for _, k, _ in got}) == 2


def test_resume_state_is_the_next_offset(broker: str, kafka_topics: TopicMaker) -> None:
    (src,) = kafka_topics("in", partitions=1)
    produce(broker, src, [(None, f"{i}".encode()) for i in range(250)])
    source = KafkaBatchSource({"bootstrap.servers": broker}, [src], 40, tail=False)
    assert source.list_parts() == [f"{src}#0"]

    def drain(part: Any, limit: int | None = None) -> list[int]:
        offsets: list[int] = []
        deadline = time.monotonic() + 20
        try:
            while limit is None or len(offsets) < limit:
                assert time.monotonic() < deadline
                for batch in part.next_batch():
                    offsets += [m.offset for m in batch]
        except StopIteration:
            assert limit is None
        return offsets

    first = source.build_part("in", f"{src}#0", None)
    head = drain(first, 100)
    state = first.snapshot()
    first.close()
    assert state == head[-1] + 1
    second = source.build_part("in", f"{src}#0", state)
    rest = drain(second)
    second.close()
    assert head + rest == list(range(250))


def test_empty_topic_and_start_at_end_end_immediately(
        broker: str, kafka_topics: TopicMaker) -> None:
    empty, full, dst = kafka_topics("empty", "full", "out")
    run_flow(copy_flow(broker, empty, dst), timeout=30)
    produce(broker, full, [(None, b"x")], one_batch_each=True)
    run_flow(copy_flow(broker, full, dst, start="end"), timeout=30)
    assert read_all(broker, dst) == []


def test_missing_topic_and_unreachable_broker_fail_fast(broker: str) -> None:
    cfg = load_config(env={})
    with pytest.raises(BrokerUnavailable, match="do not exist"):
        preflight(cfg, broker, ["no-such-topic-here"])
    with pytest.raises(RuntimeError, match="do not exist"):
        KafkaBatchSource({"bootstrap.servers": broker}, ["no-such-topic"], 10, False).list_parts()
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        preflight(cfg, closed_port_brokers(), ["x"])
    assert time.monotonic() - t0 < 5


def test_unreadable_message_becomes_a_dead_letter_candidate() -> None:
    class Fake:
        def __init__(self, code: int, offset: int) -> None:
            self.code, self.off = code, offset

        def error(self) -> KafkaError:
            return KafkaError(self.code)

        def offset(self) -> int:
            return self.off

    raw = to_raw(Fake(KafkaError._BAD_MSG, 17), "t", 2)  # type: ignore[arg-type]
    assert raw == RawMessage("t", None, None, 2, 17)
    assert to_raw(Fake(KafkaError._PARTITION_EOF, 18), "t", 2) is None  # type: ignore[arg-type]
    assert to_raw(Fake(KafkaError._TRANSPORT, -1001), "t", 2) is None  # type: ignore[arg-type]


def test_sink_accepts_single_pairs_and_counts_deliveries(
        broker: str, kafka_topics: TopicMaker) -> None:
    (dst,) = kafka_topics("out")
    sink = KafkaBatchSink({"bootstrap.servers": broker}, dst)
    part = sink.build("out", 0, 1)
    part.write_batch([(b"k", b"one"), [(None, b"two"), (b"k", b"three")]])
    part.close()
    assert sorted(v for _, _, v in read_all(broker, dst)) == [b"one", b"three", b"two"]
    assert (sink.stats.produced, sink.stats.delivered, sink.stats.failed) == (3, 3, 0)


def test_sink_dead_letters_a_message_the_topic_refuses_and_keeps_going(
        broker: str, kafka_topics: TopicMaker) -> None:
    """Too large for the topic: it would be refused after every restart, so it is parked.

    (The limit here is the client's ``message.max.bytes``; a broker's or topic's limit
    answers with the same error code, and the sink retries the message alone first.)
    """
    dst, dlq = kafka_topics("out", "dlq")
    conf = {"bootstrap.servers": broker, "message.max.bytes": 2000}
    part = KafkaBatchSink(conf, dst, undeliverable_topic=dlq).build("out", 0, 1)
    huge = b'{"decision_id":"d1","reasons":["' + b"x" * 5000 + b'"]}'
    part.write_batch([[(b"k0", b"small"), (b"k1", huge), (None, b"also small")]])
    part.close()
    stats = part.stats
    assert (stats.produced, stats.delivered, stats.dead_lettered, stats.lost) == (3, 2, 1, 0)
    assert sorted(v for _, _, v in read_all(broker, dst)) == [b"also small", b"small"]
    [(_, key, value)] = read_all(broker, dlq)
    dead = json.loads(value)
    schema = json.loads((ROOT / "schemas" / "json" / "deadletter.schema.json").read_text())
    Draft202012Validator(schema).validate(dead)   # the contract's DeadLetter, as any other
    assert key == b"k1" and dead["topic"] == dst and dead["key"] == "k1"
    assert dead["partition"] is None and dead["offset"] is None
    assert dead["error"].startswith(f"undeliverable to {dst}: ")
    assert "too large" in dead["error"].lower() and "(5035 bytes)" in dead["error"]
    # the whole value did not fit in a dead letter either (same client limit): its start did
    assert dead["raw"] == (huge[:1024].decode()
                           + "... [truncated: 5035 bytes in all, first 1024 kept]")


def test_sink_without_a_dead_letter_topic_stops_on_a_refused_message(
        broker: str, kafka_topics: TopicMaker) -> None:
    (dst,) = kafka_topics("out")
    conf = {"bootstrap.servers": broker, "message.max.bytes": 2000}
    part = KafkaBatchSink(conf, dst).build("out", 0, 1)
    with pytest.raises(DeliveryError, match=rf"kafka sink {dst}: 1 of 2 message\(s\) not "
                                            r"delivered \(not retriable\): .*too large"):
        part.write_batch([(None, b"small"), (None, b"y" * 5000)])
    assert part.stats.failed == 1


def test_sink_retries_then_stops_when_the_topic_is_gone(broker: str) -> None:
    """A topic that is not there (deleted mid-run) is not auto-created; deliveries time out."""
    topic = f"t-gone-{time.time_ns()}"
    conf = {"bootstrap.servers": broker, "message.timeout.ms": 300}
    part = KafkaBatchSink(conf, topic, retries=1).build("out", 0, 1)
    with pytest.raises(DeliveryError, match=rf"kafka sink {topic}: 3 of 3 message\(s\) not "
                                            r"delivered after 2 attempt\(s\): .*timed out"):
        part.write_batch([[(b"a", b"1"), (b"b", b"2"), (None, b"3")]])
    stats = part.stats
    assert (stats.retried, stats.failed, stats.delivered) == (3, 3, 0)
    assert topic not in AdminClient(quiet({"bootstrap.servers": broker})).list_topics(
        timeout=5).topics


class _FlakyProducer:
    """Stands in for a Producer: fails the given values once with ``code`` (a timeout by
    default), those of ``always`` every time; records what was flushed together."""

    def __init__(self, fail_once: set[bytes], code: int = KafkaError._MSG_TIMED_OUT,
                 always: frozenset[bytes] = frozenset()) -> None:
        self.fail_once = set(fail_once)
        self.code = code
        self.always = always
        self.sent: list[bytes] = []
        self.flushed: list[list[tuple[str, bytes]]] = []
        self.queued: list[tuple[Any, str, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None, on_delivery: Any) -> None:
        self.sent.append(value)
        self.queued.append((on_delivery, topic, value))

    def flush(self, timeout: float = -1) -> int:
        if self.queued:
            self.flushed.append([(t, v) for _, t, v in self.queued])
        for cb, _, value in self.queued:
            if value in self.fail_once or value in self.always:
                self.fail_once.discard(value)
                cb(KafkaError(self.code), None)
            else:
                cb(None, None)
        self.queued.clear()
        return 0

    def __len__(self) -> int:
        return len(self.queued)


def test_sink_resends_a_failed_message_with_the_later_ones_of_its_key(broker: str) -> None:
    """Re-sent in batch order with every later message of the same key: the last stays last."""
    part = KafkaBatchSink({"bootstrap.servers": broker}, "unused", retries=2).build("o", 0, 1)
    fake = _FlakyProducer({b"a1", b"c1"})
    part.producer = fake  # type: ignore[assignment]
    part.write_batch([[(b"a", b"a1"), (b"b", b"b1"), (b"a", b"a2"), (b"c", b"c1"),
                       (None, b"n1"), (b"a", b"a3"), (b"b", b"b2")]])
    first = [b"a1", b"b1", b"a2", b"c1", b"n1", b"a3", b"b2"]
    assert fake.sent == [*first, b"a1", b"a2", b"c1", b"a3"]
    stats = part.stats
    assert (stats.produced, stats.delivered, stats.retried, stats.lost) == (7, 7, 4, 0)


def test_sink_tries_a_message_the_broker_finds_too_large_alone_first(broker: str) -> None:
    """The broker's limit applies to the record batch: a small message refused with a large
    neighbour goes through alone; one refused alone is dead-lettered, the job goes on."""
    part = KafkaBatchSink({"bootstrap.servers": broker}, "out", undeliverable_topic="dlq"
                          ).build("o", 0, 1)
    fake = _FlakyProducer({b"neighbour"}, KafkaError.MSG_SIZE_TOO_LARGE,
                          always=frozenset({b"big"}))
    part.producer = fake  # type: ignore[assignment]
    part.write_batch([[(b"a", b"first"), (b"b", b"neighbour"), (b"c", b"big")]])
    assert fake.flushed[0] == [("out", b"first"), ("out", b"neighbour"), ("out", b"big")]
    assert fake.flushed[1:3] == [[("out", b"neighbour")], [("out", b"big")]]  # each alone
    [[(topic, letter)]] = fake.flushed[3:]
    assert topic == "dlq" and json.loads(letter)["raw"] == "big"
    stats = part.stats
    assert (stats.delivered, stats.dead_lettered, stats.retried, stats.lost) == (2, 1, 2, 0)


# ---------------------------------------------------------------- the commands

def test_topics_create_then_list(broker: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    tag = f"{time.time_ns()}"
    names = {f"{k}_topic": f"cli-{tag}-{k}" for k in ("reports", "feedback", "decisions",
                                                      "deadletter")}
    cfg = config_file(tmp_path, names)
    assert main(["topics", "create", "--brokers", broker, "--config", cfg,
                 "--partitions", "2"]) == 0
    out = capsys.readouterr().out
    assert all(f"created {n} (2 partitions)" in out for n in names.values())
    assert main(["topics", "create", "--brokers", broker, "--config", cfg]) == 0
    assert "already there" in capsys.readouterr().out
    assert main(["topics", "list", "--brokers", broker, "--config", cfg]) == 0
    listed = capsys.readouterr().out.splitlines()
    for n in names.values():
        assert any(line.split() == [n, "2", "partitions"] for line in listed)


def test_broker_script_starts_idempotently_and_stops() -> None:
    port = str(free_port())
    env = {**os.environ, "PYTHON": sys.executable, "RAPIDLOOP_BROKER_WAIT_S": "20"}

    def sh(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(ROOT / "infra" / "broker.sh"), action, port],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    pid_file = ROOT / ".run" / f"broker-{port}.pid"
    try:
        first = sh("start")
        assert first.returncode == 0 and "started" in first.stdout, first.stderr
        pid = int(pid_file.read_text())
        again = sh("start")
        assert again.returncode == 0 and "already running" in again.stdout
        assert sh("status").returncode == 0
        assert sh("wait").returncode == 0
    finally:
        stopped = sh("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert not pid_file.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert sh("status").returncode != 0
    (ROOT / ".run" / f"broker-{port}.log").unlink(missing_ok=True)


@pytest.mark.parametrize("command", [["topics", "list"], ["topics", "create"], ["tail"]])
def test_unreachable_broker_is_one_line_and_fast(command: list[str]) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rapidloop.cli", *command,
                           "--brokers", closed_port_brokers()],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - t0
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "unreachable" in lines[0] and lines[0].startswith(f"rapidloop {command[0]}:")
    assert proc.stdout == ""
    assert elapsed < 5


def decision_json(i: int, action: str = "block") -> bytes:
    return json.dumps({
        "decision_id": f"d{i}", "sha256": f"{i:064x}", "action": action, "scope": "org",
        "org_id": f"org-{i}", "device_id": None, "score": 0.9, "classifiers": {},
        "reasons": [f"reason {i}"], "model_version": "m", "event_ts": "2026-11-29T01:02:03Z",
        "decided_at": "2026-11-29T01:02:04Z", "expires_at": None}).encode()


def test_tail_prints_decisions(broker: str, kafka_topics: TopicMaker,
                               capsys: pytest.CaptureFixture[str]) -> None:
    (topic,) = kafka_topics("decisions")
    produce(broker, topic, [(None, decision_json(i)) for i in range(3)] + [(None, b"garbage")])
    assert main(["tail", "--brokers", broker, "--topic", topic, "--from-beginning",
                 "--timeout", "1.5"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 3 and all(" BLOCK " in x and " org org-" in x for x in lines)
    assert "unreadable message" in captured.err
    assert main(["tail", "--brokers", broker, "--topic", topic, "--from-beginning",
                 "--json", "--max", "3"]) == 0
    raw = capsys.readouterr().out.splitlines()
    assert sorted(json.loads(x)["decision_id"] for x in raw) == ["d0", "d1", "d2"]


def test_tail_from_the_end_shows_only_new_decisions(
        broker: str, kafka_topics: TopicMaker, capsys: pytest.CaptureFixture[str]) -> None:
    (topic,) = kafka_topics("decisions", partitions=1)
    # One record batch per message: some brokers (the embedded one) place "the end" after
    # the first record of the last batch.
    produce(broker, topic, [(None, decision_json(i)) for i in range(3)], one_batch_each=True)
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(main(
        ["tail", "--brokers", broker, "--topic", topic, "--max", "1", "--timeout", "15"])))
    t.start()
    time.sleep(2.0)
    produce(broker, topic, [(None, decision_json(7, "unblock"))])
    t.join(20)
    assert result == [0]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and " UNBLOCK " in lines[0]
