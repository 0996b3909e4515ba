"""Kafka connectors for ``rapidloop run``: batches of raw messages in, key/value batches out.

Why not Bytewax's own ``KafkaSource``/``KafkaSink`` (see ENGINE-FACTS):

* The source hands the flow one ``list[RawMessage]`` per consume call, so the
  parser and every step after it work per batch instead of per message.
* It ends a partition on librdkafka's end-of-partition event, never on the
  high watermark, which some brokers (the embedded one) report wrongly.
* The sink counts delivered and failed messages through ``on_delivery``,
  retries on a full local queue (``BufferError``) instead of crashing, and
  says loudly, with counts the job can read, what it could not deliver.

Partitions and workers: each Kafka partition is one Bytewax partition named
``topic#partition``. Bytewax asks every worker for ``list_parts()`` (every
worker here lists all partitions), then worker 0 picks a "primary" for each
key in sorted key order, always the candidate with the fewest partitions so
far (ties: lowest worker index), and broadcasts the result. The spread is as
even as the partition count allows (3 partitions on 2 workers: 2 + 1), but it
is computed per input step, so with several inputs worker 0 takes the first
partition of each. Make the partition count a multiple of the worker count.
Naming cannot change this: order only decides which partition goes where.

Offsets live in Bytewax's recovery snapshots (no consumer group, no commits):
each partition's resume state is the next offset to read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from rapidloop.config import Config
from rapidloop.jobstats import STATS
from rapidloop.kafka import (
    BrokerUnavailable,
    describe_error,
    quiet,
    require_topics,
    topic_partitions,
)
from rapidloop.schemas.model import RawMessage

log = logging.getLogger(__name__)

KV = tuple[bytes | None, bytes]

# librdkafka needs a group.id even for assign()-only consumers; nothing is ever
# committed under it, so it can be shared by every job and tool.
UNUSED_GROUP = "rapidloop-no-commits"
_STARTS = {"beginning": OFFSET_BEGINNING, "end": OFFSET_END}
_ERROR_LOG_INTERVAL_S = 10.0


def preflight(cfg: Config, brokers: str | None, topics: list[str]) -> None:
    """Fail fast, in one line, if the cluster is unreachable or a topic is missing.

    Bytewax hangs when a source's broker does not answer, and a misspelt
    topic may be auto-created; call this before building a flow. Raises
    :class:`rapidloop.kafka.BrokerUnavailable` within ``kafka.connect_timeout_s``.
    """
    require_topics(cfg, topics, brokers)


class _RateLimitedLog:
    """Logs each kind of error at most once per interval, with a count of the rest."""

    def __init__(self, interval_s: float = _ERROR_LOG_INTERVAL_S) -> None:
        self.interval = interval_s
        self.last: dict[Any, float] = {}
        self.suppressed: dict[Any, int] = {}

    def __call__(self, kind: Any, level: int, text: str) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, float("-inf")) < self.interval:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        more = self.suppressed.pop(kind, 0)
        self.last[kind] = now
        log.log(level, "%s%s", text, f" (and {more} more like it)" if more else "")


def to_raw(msg: Message, topic: str, partition: int) -> RawMessage | None:
    """One consumed message (or per-message error) as a RawMessage; None for other events.

    A message the client could not read (e.g. a corrupt record) still has a
    place in the partition: it becomes a RawMessage with ``value`` and ``key``
    None, which the parser dead-letters ("message has no value") with its
    topic, partition and offset, so nothing vanishes silently. Errors with no
    offset (broker or partition state) are not messages and return None.
    """
    err = msg.error()
    if err is None:
        return RawMessage(topic, msg.value(), msg.key(), partition, msg.offset())
    offset = msg.offset()
    if err.code() != KafkaError._PARTITION_EOF and offset is not None and offset >= 0:
        return RawMessage(topic, None, None, partition, offset)
    return None


class _KafkaPartition(StatefulSourcePartition[list[RawMessage], int]):
    def __init__(self, conf: dict[str, Any], topic: str, partition: int, start: int,
                 batch_size: int, tail: bool, poll_timeout_s: float, idle_s: float) -> None:
        self.topic = topic
        self.partition = partition
        self.batch_size = batch_size
        self.tail = tail
        self.poll_timeout = poll_timeout_s
        self.idle = timedelta(seconds=idle_s)
        self.offset = start             # next offset to read (or a logical OFFSET_* before any)
        self.eof = False
        self.awake: datetime | None = None
        self._log = _RateLimitedLog()
        consumer_conf = quiet(conf)
        consumer_conf.setdefault("auto.offset.reset", "earliest")  # a resumed offset gone to
        consumer_conf.update({                                      # retention: read what's left
            "group.id": consumer_conf.get("group.id", UNUSED_GROUP),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": not tail,
            "error_cb": self._on_error,
        })
        self.consumer = Consumer(consumer_conf)
        self.consumer.assign([TopicPartition(topic, partition, start)])

    def _on_error(self, err: KafkaError) -> None:
        # Client-level trouble (broker down, transport): librdkafka retries by itself.
        self._log(err.code(), logging.WARNING,
                  f"kafka source {self.topic}#{self.partition}: {describe_error(err)}")

    def next_batch(self) -> list[list[RawMessage]]:
        if self.eof:
            raise StopIteration
        msgs = self.consumer.consume(self.batch_size, self.poll_timeout)
        batch: list[RawMessage] = []
        topic, partition = self.topic, self.partition
        for msg in msgs:
            err = msg.error()
            if err is None:
                batch.append(RawMessage(topic, msg.value(), msg.key(), partition, msg.offset()))
                continue
            if err.code() == KafkaError._PARTITION_EOF:
                if not self.tail:
                    self.eof = True
                continue
            if err.fatal():
                raise RuntimeError(f"fatal Kafka error on {topic}#{partition}: "
                                   f"{describe_error(err)}")
            raw = to_raw(msg, topic, partition)
            if raw is not None:
                self._log(err.code(), logging.ERROR,
                          f"kafka source {topic}#{partition}: unreadable message at offset "
                          f"{raw.offset}: {describe_error(err)} (dead-lettered)")
                batch.append(raw)
            else:
                self._log(err.code(), logging.WARNING,
                          f"kafka source {topic}#{partition}: {describe_error(err)}")
        if batch:
            self.offset = batch[-1].offset + 1  # type: ignore[operator]
            self.awake = None
            # Broker/producer time of the newest message, for the progress line's input lag.
            for msg in reversed(msgs):
                if msg.error() is None:
                    ts_type, ts = msg.timestamp()
                    if ts_type != TIMESTAMP_NOT_AVAILABLE and ts / 1e3 > STATS.newest_produce_ts:
                        STATS.newest_produce_ts = ts / 1e3
                    break
            return [batch]
        if self.eof:
            raise StopIteration
        # Nothing fetched yet. librdkafka keeps fetching in the background, so sleeping
        # here (rather than blocking in consume) frees the worker for its other
        # partitions and operators, and costs at most idle_s of latency.
        self.awake = datetime.now(UTC) + self.idle
        return []

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> int:
        return self.offset

    def close(self) -> None:
        self.consumer.close()


class KafkaBatchSource(FixedPartitionedSource[list[RawMessage], int]):
    """Kafka topics as batches: each item is a ``list[RawMessage]`` from one consume call.

    ``conf`` is librdkafka settings (``rapidloop.kafka.client_config``). With
    ``tail=False`` each partition ends when it has delivered everything up to
    the end it saw (librdkafka's end-of-partition event), so the flow stops
    once all input is drained. ``starting_offset`` ("beginning" or "end")
    applies only without a resume state. (On the embedded broker "end" is
    the base offset of the last record batch + 1, so a start from the end
    there may replay the rest of that batch; Apache Kafka is exact.)

    ``poll_timeout_s`` is how long one consume call may block the worker: 0 by
    default, because librdkafka prefetches in the background and a blocking
    call on a quiet partition (feedback is mostly quiet) would stall every
    other partition and operator on the same worker. An empty partition
    instead sleeps ``idle_s`` through ``next_awake``.
    """

    def __init__(self, conf: dict[str, Any], topics: list[str], batch_size: int, tail: bool,
                 starting_offset: str = "beginning", *, poll_timeout_s: float = 0.0,
                 idle_s: float = 0.05, metadata_timeout_s: float = 10.0) -> None:
        if starting_offset not in _STARTS:
            raise ValueError(f"starting_offset must be 'beginning' or 'end', "
                             f"not {starting_offset!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.conf = dict(conf)
        self.topics = list(topics)
        self.batch_size = batch_size
        self.tail = tail
        self.starting_offset = starting_offset
        self.poll_timeout_s = poll_timeout_s
        self.idle_s = idle_s
        self.metadata_timeout_s = metadata_timeout_s

    def list_parts(self) -> list[str]:
        try:
            parts = topic_partitions(self.conf, self.topics, self.metadata_timeout_s)
        except BrokerUnavailable as exc:
            raise RuntimeError(str(exc)) from None
        return [f"{topic}#{partition}" for topic, partition in parts]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _KafkaPartition:
        topic, _, idx = for_part.rpartition("#")
        if topic not in self.topics:
            raise ValueError(f"resume state for {for_part!r}, but this source reads "
                             f"{self.topics}: topics cannot change across a resume")
        start = resume_state if resume_state is not None else _STARTS[self.starting_offset]
        return _KafkaPartition(self.conf, topic, int(idx), start, self.batch_size, self.tail,
                               self.poll_timeout_s, self.idle_s)


@dataclass
class DeliveryStats:
    """Delivery outcome of one topic's sink in this process (all its workers)."""

    topic: str
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)   # reason → count
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pending(self) -> int:
        """Produced but not yet acknowledged (after the flow has ended: never will be)."""
        return self.produced - self.delivered - self.failed

    @property
    def lost(self) -> int:
        """Messages that did not reach Kafka; meaningful once the flow has ended."""
        return self.failed + self.pending


SINK_STATS: dict[str, DeliveryStats] = {}
"""Delivery counters by topic, for the job's final summary (process-local)."""
_STATS_LOCK = threading.Lock()


def delivery_stats(topic: str) -> DeliveryStats:
    """The counters of the sink writing ``topic`` (created on first use)."""
    with _STATS_LOCK:
        stats = SINK_STATS.get(topic)
        if stats is None:
            stats = SINK_STATS[topic] = DeliveryStats(topic)
        return stats


def reset_delivery_stats() -> None:
    """Forget all counters (tests and benchmarks run several flows per process)."""
    with _STATS_LOCK:
        SINK_STATS.clear()


class DeliveryError(RuntimeError):
    """Messages were lost or left undelivered when a sink closed."""


class _ProducerPartition(StatelessSinkPartition[list[KV] | KV]):
    def __init__(self, conf: dict[str, Any], topic: str, flush_timeout_s: float,
                 stats: DeliveryStats, raise_on_loss: bool) -> None:
        self.topic = topic
        self.flush_timeout = flush_timeout_s
        self.raise_on_loss = raise_on_loss
        self.stats = stats
        self._log = _RateLimitedLog()
        self._delivered = 0   # per-partition, folded into stats under the lock after polls
        self._failed = 0
        self._failed_here = 0   # over this partition's life, for close()
        self._reasons: dict[str, int] = {}
        producer_conf = quiet(conf)
        producer_conf.setdefault("linger.ms", 5)
        # Same key → same partition as Java clients (librdkafka's default hashes differently).
        producer_conf.setdefault("partitioner", "murmur2_random")
        producer_conf["on_delivery"] = self._on_delivery
        producer_conf["error_cb"] = self._on_error
        self.producer = Producer(producer_conf)

    def _on_error(self, err: KafkaError) -> None:
        self._log(err.code(), logging.WARNING, f"kafka sink {self.topic}: {describe_error(err)}")

    def _on_delivery(self, err: KafkaError | None, msg: Message | None) -> None:
        if err is None:
            self._delivered += 1
            return
        self._failed += 1
        self._failed_here += 1
        reason = describe_error(err)
        self._reasons[reason] = self._reasons.get(reason, 0) + 1
        self._log(("delivery", err.code()), logging.ERROR,
                  f"kafka sink {self.topic}: message not delivered: {reason}")

    def _fold(self, produced: int = 0) -> None:
        s = self.stats
        with s.lock:
            s.produced += produced
            s.delivered += self._delivered
            s.failed += self._failed
            for reason, n in self._reasons.items():
                s.errors[reason] = s.errors.get(reason, 0) + n
        self._delivered = self._failed = 0
        self._reasons.clear()

    def _produce(self, key: bytes | None, value: bytes) -> None:
        waited_since: float | None = None
        while True:
            try:
                self.producer.produce(self.topic, value, key)
                return
            except KafkaException as exc:
                # Refused before queueing (e.g. larger than message.max.bytes): count it
                # like a failed delivery rather than stopping the job.
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                self._on_delivery(err or KafkaError(KafkaError._FAIL, str(exc)), None)
                return
            except BufferError:
                # Local queue full: serve delivery reports until librdkafka has room. This
                # blocks the worker, which is the backpressure we want; it ends because queued
                # messages are either delivered or fail after message.timeout.ms.
                now = time.monotonic()
                if waited_since is None:
                    waited_since = now
                elif now - waited_since > 10.0:
                    self._log("buffer", logging.WARNING,
                              f"kafka sink {self.topic}: producer queue full for "
                              f"{now - waited_since:.0f}s; is the cluster reachable?")
                self.producer.poll(0.1)

    def write_batch(self, items: Iterable[list[KV] | KV]) -> None:
        n = 0
        for item in items:
            if isinstance(item, tuple):
                self._produce(item[0], item[1])
                n += 1
            else:
                for key, value in item:
                    self._produce(key, value)
                n += len(item)
        # At-least-once with recovery: Bytewax commits an epoch once every write_batch of
        # it has returned, so wait until the broker has acknowledged (or failed) it all.
        while self.producer.flush(1.0):
            log.warning("kafka sink %s: waiting for the broker to acknowledge messages",
                        self.topic)
        self._fold(n)

    def close(self) -> None:
        left = self.producer.flush(self.flush_timeout)
        self._fold()
        if not left and not self._failed_here:
            return
        s = self.stats
        with s.lock:
            reasons = dict(s.errors)
        problems = []
        if self._failed_here:
            problems.append(f"{self._failed_here} message(s) failed")
        if left:
            problems.append(f"{left} still undelivered after {self.flush_timeout:g}s")
        text = (f"kafka sink {self.topic}: {', '.join(problems)}"
                + (f" ({'; '.join(f'{r}: {n}' for r, n in reasons.items())})" if reasons else ""))
        log.error(text)
        if self.raise_on_loss:
            raise DeliveryError(text)


class KafkaBatchSink(DynamicSink[list[KV] | KV]):
    """Writes ``(key, value)`` pairs, or lists of them, to one topic, counting deliveries.

    Counters are in :func:`delivery_stats` (``topic``) and :attr:`stats`. A
    message that cannot be delivered is counted and logged, never silently
    dropped, and does not stop the job. ``close()`` (at the end of a finite
    flow) flushes for at most ``flush_timeout_s`` and logs an error if any
    message failed or is still undelivered; the job should then exit non-zero
    (``stats.lost``). With ``raise_on_loss`` it raises :class:`DeliveryError`
    instead, but Bytewax turns an exception in ``close()`` into a panic with
    a Rust backtrace and a generic message, so reading the counters is nicer.
    """

    def __init__(self, conf: dict[str, Any], topic: str, *, flush_timeout_s: float = 30.0,
                 raise_on_loss: bool = False) -> None:
        self.conf = dict(conf)
        self.topic = topic
        self.flush_timeout_s = flush_timeout_s
        self.raise_on_loss = raise_on_loss

    @property
    def stats(self) -> DeliveryStats:
        return delivery_stats(self.topic)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self.conf, self.topic, self.flush_timeout_s, self.stats,
                                  self.raise_on_loss)
