"""Kafka connectors for ``rapidloop run``: batches of raw messages in, key/value batches out.

Why not Bytewax's own ``KafkaSource``/``KafkaSink`` (see ENGINE-FACTS):

* The source hands the flow one ``list[RawMessage]`` per consume call, so the
  parser and every step after it work per batch instead of per message.
* It ends a partition on librdkafka's end-of-partition event, never on the
  high watermark, which some brokers (the embedded one) report wrongly.
* The sink waits for the broker's acknowledgement of every message of a
  batch, retries on a full local queue (``BufferError``) and re-sends what
  librdkafka gave up on; what still fails stops the job before its epoch is
  committed, so recovery emits it again: no decision is lost silently (see
  :class:`KafkaBatchSink`).

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
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

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

from rapidloop.base.config import Config
from rapidloop.base.jobstats import DeliveryStats, JobStats
from rapidloop.base.kafka import (
    BrokerUnavailable,
    describe_error,
    quiet,
    require_topics,
    topic_partitions,
)
from rapidloop.operators.eventtime import EventTimeMerge, read_time
from rapidloop.operators.sharding import ReadItem
from rapidloop.schemas.model import DeadLetter, RawMessage
from rapidloop.schemas.wire import RAW_TEXT_CAP, encode_dead_letter

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
    :class:`rapidloop.base.kafka.BrokerUnavailable` within ``kafka.connect_timeout_s``.
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


FETCH_WAIT_MAX_MS = 10   # a default only: [kafka.client] "fetch.wait.max.ms" overrides it


class _KafkaPartition(StatefulSourcePartition[list[RawMessage], int]):
    def __init__(self, conf: dict[str, Any], topic: str, partition: int, start: int,
                 batch_size: int, tail: bool, poll_timeout_s: float, idle_s: float,
                 stats: JobStats, stop: threading.Event | None = None) -> None:
        self.stop = stop
        self.stats = stats
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
        # librdkafka's default fetch.wait.max.ms (500) holds a fetch on a quiet partition
        # for half a second: at moderate rates that wait, not the job, is the decision latency.
        consumer_conf.setdefault("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
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
        self.stats.input_polled(time.perf_counter())   # an epoch close, if any, is over
        if self.eof or (self.stop is not None and self.stop.is_set()):
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
            stats = self.stats
            for msg in reversed(msgs):
                if msg.error() is None:
                    ts_type, ts = msg.timestamp()
                    if ts_type != TIMESTAMP_NOT_AVAILABLE and ts / 1e3 > stats.newest_produce_ts:
                        stats.newest_produce_ts = ts / 1e3
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


def _check_source_args(starting_offset: str, *sizes: int) -> None:
    if starting_offset not in _STARTS:
        raise ValueError(f"starting_offset must be 'beginning' or 'end', "
                         f"not {starting_offset!r}")
    if min(sizes) < 1:
        raise ValueError("batch and buffer sizes must be at least 1")


class KafkaBatchSource(FixedPartitionedSource[list[RawMessage], int]):
    """Kafka topics as batches: each item is a ``list[RawMessage]`` from one consume call.

    ``conf`` is librdkafka settings (``rapidloop.base.kafka.client_config``). With
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

    ``stop``: once set, every partition ends as at the end of input, so the
    flow closes its last epoch, flushes its sinks and returns (a clean stop).
    ``stats``: the run's counters, whose ``newest_produce_ts`` (the input lag of
    the progress line) the partitions keep up to date (default: counters of
    its own).
    """

    def __init__(self, conf: dict[str, Any], topics: list[str], batch_size: int, tail: bool,
                 starting_offset: str = "beginning", *, poll_timeout_s: float = 0.0,
                 idle_s: float = 0.01, metadata_timeout_s: float = 10.0,
                 stop: threading.Event | None = None, stats: JobStats | None = None) -> None:
        _check_source_args(starting_offset, batch_size)
        self.conf = dict(conf)
        self.topics = list(topics)
        self.batch_size = batch_size
        self.tail = tail
        self.starting_offset = starting_offset
        self.poll_timeout_s = poll_timeout_s
        self.idle_s = idle_s
        self.metadata_timeout_s = metadata_timeout_s
        self.stop = stop
        self.stats = stats if stats is not None else JobStats()

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
                               self.poll_timeout_s, self.idle_s, self.stats, self.stop)


_FILL_READS = 8   # consume calls at most per merged batch


def read_fields(value: bytes | None, last: float, max_jump: float
                ) -> tuple[float, float, int | None, float | None]:
    """``(merge time, new last readable time, route, ts)`` of one message, one JSON decode.

    The first two are :func:`rapidloop.operators.eventtime.merge_time`'s, to the
    bit (tests/unit/test_raw_split.py compares them); ``route`` and ``ts`` are
    what :func:`rapidloop.operators.sharding.split_raw` and
    :class:`~rapidloop.operators.sharding.SkewReference` need (see ``ReadItem``),
    read from the same decode (:func:`~rapidloop.operators.eventtime.read_time`).
    """
    mts, last, obj, ts = read_time(value, last, max_jump)
    route = None
    if type(obj) is dict:
        sha = obj.get("sha256")
        if type(sha) is str:
            try:   # noqa: SIM105 (contextlib.suppress: an object per message, on the hot path)
                route = int(sha[:8], 16)
            except ValueError:
                pass
    return mts, last, route, ts


class _MergedKafkaPartition(StatefulSourcePartition[tuple[int, list[ReadItem]],
                                                    dict[str, Any]]):
    """Every partition of the input topics through one consumer and one event-time merge.

    Each message is kept as a ``ReadItem`` (a plain tuple: no object per message
    here, and cheap to pickle) with the shard route and time its JSON gives.
    """

    def __init__(self, conf: dict[str, Any], parts: list[tuple[str, int]],
                 resume: dict[str, Any] | None, start: int, batch_size: int, tail: bool,
                 idle_s: float, idle_partition_s: float, buffer_cap: int,
                 stats: JobStats, stop: threading.Event | None = None) -> None:
        self.stop = stop
        self.stats = stats
        names = [f"{t}#{p}" for t, p in parts]
        known = (resume or {}).get("next", {})
        # A partition the resume state does not know appeared since: all of it is new.
        starts = {n: int(known.get(n, OFFSET_BEGINNING if resume else start)) for n in names}
        self.merge: EventTimeMerge[ReadItem] = EventTimeMerge(
            {n: i for i, n in enumerate(names)}, starts, idle_partition_s)
        self.seq = int((resume or {}).get("seq", 0))
        self.batch_size = batch_size
        self.tail = tail
        self.idle = timedelta(seconds=idle_s)
        self.buffer_cap = buffer_cap
        self.tps = {n: TopicPartition(t, p) for n, (t, p) in zip(names, parts, strict=True)}
        self.paused: set[str] = set()
        self.awake: datetime | None = None
        self._log = _RateLimitedLog()
        self._waited: float | None = None
        consumer_conf = quiet(conf)
        consumer_conf.setdefault("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
        consumer_conf.setdefault("auto.offset.reset", "earliest")
        consumer_conf.update({
            "group.id": consumer_conf.get("group.id", UNUSED_GROUP),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,      # "caught up" is what lets the merge go on
            "error_cb": self._on_error,
        })
        self.consumer = Consumer(consumer_conf)
        self.consumer.assign([TopicPartition(t, p, starts[n])
                              for n, (t, p) in zip(names, parts, strict=True)])

    def _on_error(self, err: KafkaError) -> None:
        self._log(err.code(), logging.WARNING, f"kafka source: {describe_error(err)}")

    def _read(self) -> int:
        """Hand what the client has fetched to the merge; how many messages and events."""
        merge = self.merge
        last, max_jump = merge.last, merge.max_jump
        msgs = self.consumer.consume(self.batch_size, 0)
        # each partition's messages in its order, handed to the merge together
        read: dict[str, list[tuple[int, float, ReadItem]]] = {}
        for msg in msgs:
            err = msg.error()
            topic, partition = msg.topic(), msg.partition()
            name = f"{topic}#{partition}"
            if err is None:
                value = msg.value()
                offset = msg.offset()
                mts, last[name], route, ts = read_fields(value, last[name], max_jump)
                entries = read.get(name)
                if entries is None:
                    entries = read[name] = []
                entries.append((offset, mts,
                                (topic, value, msg.key(), partition, offset, route, ts)))
                continue
            if name in read:   # what came before it, first
                merge.add_many(name, read.pop(name))
            if err.code() == KafkaError._PARTITION_EOF:
                if name in merge.buffers:
                    merge.caught_up(name)
                continue
            if err.fatal():
                raise RuntimeError(f"fatal Kafka error on {name}: {describe_error(err)}")
            raw = to_raw(msg, topic, partition)
            if raw is not None and name in merge.buffers:
                self._log(err.code(), logging.ERROR,
                          f"kafka source {name}: unreadable message at offset {raw.offset}: "
                          f"{describe_error(err)} (dead-lettered)")
                merge.add(name, raw.offset, last[name],  # type: ignore[arg-type]
                          (topic, None, None, partition, raw.offset, None, None))
            else:
                self._log(err.code(), logging.WARNING,
                          f"kafka source {name}: {describe_error(err)}")
        for name, entries in read.items():
            merge.add_many(name, entries)
        stats = self.stats
        for msg in reversed(msgs):
            if msg.error() is None:
                ts_type, ts = msg.timestamp()
                if ts_type != TIMESTAMP_NOT_AVAILABLE and ts / 1e3 > stats.newest_produce_ts:
                    stats.newest_produce_ts = ts / 1e3
                break
        return len(msgs)

    def _pace_fetching(self) -> None:
        """Pause partitions far ahead of the one the merge waits for; resume them after."""
        merge, cap = self.merge, self.buffer_cap
        stop = [n for n in merge.buffers if n not in self.paused and merge.buffered(n) >= cap]
        go = [n for n in self.paused if merge.buffered(n) < cap // 2]
        if stop:
            self.consumer.pause([self.tps[n] for n in stop])
            self.paused.update(stop)
        if go:
            self.consumer.resume([self.tps[n] for n in go])
            self.paused.difference_update(go)

    def next_batch(self) -> list[tuple[int, list[ReadItem]]]:
        self.stats.input_polled(time.perf_counter())   # an epoch close, if any, is over
        if self.stop is not None and self.stop.is_set():
            raise StopIteration   # asked to stop: what was not released is read next time
        # A batch is a unit downstream (a barrier across shards): fill it while the client
        # has more fetched, rather than hand on every few messages the merge could release.
        out: list[ReadItem] = []
        for _ in range(_FILL_READS):
            read = self._read()
            self._pace_fetching()
            now = time.monotonic()
            out += self.merge.release(self.batch_size - len(out), now)
            if len(out) >= self.batch_size or not read:
                break
        if out:
            self._waited = None
            self.awake = None
            seq = self.seq
            self.seq += 1
            return [(seq, out)]
        if not self.tail and self.merge.drained():
            raise StopIteration
        waiting = self.merge.waiting_for(now)
        if waiting and self.merge.heads:
            self._waited = self._waited or now
            if now - self._waited > _ERROR_LOG_INTERVAL_S:
                self._log("waiting", logging.WARNING,
                          f"kafka source: input held for {now - self._waited:.0f}s waiting "
                          f"for {', '.join(sorted(waiting))} (nothing fetched, not at its "
                          "end); passed over after stream.idle_partition_s")
        self.awake = datetime.now(UTC) + self.idle
        return []

    def next_awake(self) -> datetime | None:
        return self.awake

    def snapshot(self) -> dict[str, Any]:
        return {"seq": self.seq, "next": self.merge.resume_offsets()}

    def close(self) -> None:
        self.consumer.close()


class KafkaMergedSource(FixedPartitionedSource[tuple[int, list[ReadItem]], dict[str, Any]]):
    """Kafka topics as one event-time-ordered, numbered batch stream (one Bytewax partition).

    The live counterpart of ``MergedFileSource``: every partition of
    ``topics`` is read by one consumer and released in event-time order
    (:class:`rapidloop.operators.eventtime.EventTimeMerge`), in batches
    numbered so the dataflow processes them in sequence however work is
    spread. The resume state is each partition's first message not yet
    released plus the batch number, so a resumed job reads on in the same
    order. ``tail=False`` ends once every partition is caught up and drained.

    Batches hold ``ReadItem`` tuples, not RawMessages (``routed``): the
    dataflow splits them by shard unparsed and each shard parses its own
    (``rapidloop.operators.sharding``), so the one reading worker does not
    also parse all input. ``stats``: as :class:`KafkaBatchSource`'s.
    """

    routed = True

    def __init__(self, conf: dict[str, Any], topics: list[str], batch_size: int, tail: bool,
                 starting_offset: str = "beginning", *, idle_s: float = 0.01,
                 idle_partition_s: float = 5.0, buffer_cap: int = 20000,
                 metadata_timeout_s: float = 10.0, stop: threading.Event | None = None,
                 stats: JobStats | None = None) -> None:
        _check_source_args(starting_offset, batch_size, buffer_cap)
        self.conf = dict(conf)
        self.topics = list(topics)
        self.batch_size = batch_size
        self.tail = tail
        self.starting_offset = starting_offset
        self.idle_s = idle_s
        self.idle_partition_s = idle_partition_s
        self.buffer_cap = buffer_cap
        self.metadata_timeout_s = metadata_timeout_s
        self.stop = stop
        self.stats = stats if stats is not None else JobStats()

    def list_parts(self) -> list[str]:
        return ["merged"]

    def build_part(self, step_id: str, for_part: str, resume_state: dict[str, Any] | None
                   ) -> _MergedKafkaPartition:
        try:
            parts = topic_partitions(self.conf, self.topics, self.metadata_timeout_s)
        except BrokerUnavailable as exc:
            raise RuntimeError(str(exc)) from None
        order = {t: i for i, t in enumerate(self.topics)}
        parts = sorted(parts, key=lambda tp: (order[tp[0]], tp[1]))
        if resume_state is not None:
            gone = set(resume_state.get("next", {})) - {f"{t}#{p}" for t, p in parts}
            if gone:
                raise ValueError(f"resume state for {sorted(gone)}, which this source does "
                                 f"not read ({self.topics}): topics cannot change across a "
                                 "resume")
        return _MergedKafkaPartition(self.conf, parts, resume_state,
                                     _STARTS[self.starting_offset], self.batch_size, self.tail,
                                     self.idle_s, self.idle_partition_s, self.buffer_cap,
                                     self.stats, self.stop)


class DeliveryError(RuntimeError):
    """A message could not be delivered: raised so that its epoch is never committed."""


E = TypeVar("E", bound=BaseException)


def find_cause(exc: BaseException, kind: type[E]) -> E | None:
    """The ``kind`` exception behind ``exc`` (itself, its cause, its cause's...): Bytewax
    wraps what the flow raised, an interrupt included, in its own runtime error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def delivery_failure(exc: BaseException) -> DeliveryError | None:
    """The sink's :class:`DeliveryError` behind what ``cli_main`` raised, if that was it.

    Bytewax wraps an exception from ``write_batch`` in a ``BytewaxRuntimeError``
    ("error writing output batch"); the job's one error line should be ours.
    """
    return find_cause(exc, DeliveryError)


# The topic refuses this one message, whatever the broker's health: retrying it as it is
# can never succeed, and stopping the job would stop at it again after every restart.
_PER_MESSAGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD})
# Nothing a retry can fix (credentials, permissions, configuration): stop at once.
_NO_RETRY = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._AUTHENTICATION,
    KafkaError._INVALID_ARG, KafkaError._FATAL,
})
_IDEMPOTENCE_CONFLICTS = frozenset({
    "acks", "request.required.acks", "max.in.flight", "max.in.flight.requests.per.connection",
    "retries", "message.send.max.retries"})
_WAIT_LOG_AFTER_S = 10.0
_SHORT_RAW = 1024   # bytes of a refused message kept when the full dead letter is refused too


def _kv_items(items: Iterable[list[KV] | KV]) -> list[KV]:
    out: list[KV] = []
    for item in items:
        if isinstance(item, tuple):
            out.append(item)
        else:
            out.extend(item)
    return out


class _ProducerPartition(StatelessSinkPartition[list[KV] | KV]):
    def __init__(self, conf: dict[str, Any], topic: str, flush_timeout_s: float,
                 stats: DeliveryStats, raise_on_loss: bool, retries: int,
                 undeliverable_topic: str | None) -> None:
        self.topic = topic
        self.flush_timeout = flush_timeout_s
        self.raise_on_loss = raise_on_loss
        self.retries = retries
        self.undeliverable_topic = undeliverable_topic
        self.stats = stats
        self._log = _RateLimitedLog()
        producer_conf = quiet(conf)
        producer_conf.setdefault("linger.ms", 5)
        # Same key → same partition as Java clients (librdkafka's default hashes differently).
        producer_conf.setdefault("partitioner", "murmur2_random")
        # librdkafka's own retries (until message.timeout.ms) must not reorder a key's
        # decisions or duplicate them: the idempotent producer keeps each partition in order.
        # It needs acks=all and few requests in flight: settings of the user's own win.
        if not _IDEMPOTENCE_CONFLICTS & producer_conf.keys():
            producer_conf.setdefault("enable.idempotence", True)
        # A deleted output topic must fail deliveries, not come back with the broker's
        # default partition count (which would send a sha256 to another partition).
        producer_conf.setdefault("allow.auto.create.topics", False)
        producer_conf["error_cb"] = self._on_error
        self.producer = Producer(producer_conf)

    def _on_error(self, err: KafkaError) -> None:
        self._log(err.code(), logging.WARNING, f"kafka sink {self.topic}: {describe_error(err)}")

    # ------------------------------------------------------------------ sending

    def _produce(self, topic: str, key: bytes | None, value: bytes,
                 on_delivery: Any) -> KafkaError | None:
        """Queue one message; a refusal before queueing (e.g. too large) is returned."""
        waited_since: float | None = None
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=on_delivery)
                return None
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                return err or KafkaError(KafkaError._FAIL, str(exc))
            except BufferError:
                # Local queue full: serve delivery reports until librdkafka has room. This
                # blocks the worker, which is the backpressure we want; it ends because queued
                # messages are either delivered or fail after message.timeout.ms.
                now = time.monotonic()
                if waited_since is None:
                    waited_since = now
                elif now - waited_since > _WAIT_LOG_AFTER_S:
                    self._log("buffer", logging.WARNING,
                              f"kafka sink {topic}: producer queue full for "
                              f"{now - waited_since:.0f}s; is the cluster reachable?")
                self.producer.poll(0.1)

    def _settle(self) -> None:
        """Wait until every queued message is acknowledged or has definitively failed.

        Always ends: librdkafka fails a message it could not deliver within
        ``message.timeout.ms`` (its own retries included).
        """
        t0 = time.monotonic()
        while self.producer.flush(1.0):
            if time.monotonic() - t0 > _WAIT_LOG_AFTER_S:
                self._log("flush", logging.WARNING,
                          f"kafka sink {self.topic}: waiting for the broker to acknowledge "
                          f"{len(self.producer)} message(s)")

    def _send(self, batch: list[KV], todo: list[int], alone: set[int]
              ) -> dict[int, KafkaError]:
        """Send ``batch[i]`` for each ``i`` in ``todo``, in order; the failures by index.

        A message in ``alone`` is flushed by itself, so that a broker's
        "too large" answer is about that message and not the record batch it
        shared with others.
        """
        failed: dict[int, KafkaError] = {}

        def report(i: int) -> Any:
            def on_delivery(err: KafkaError | None, _msg: Message | None) -> None:
                if err is not None:
                    failed[i] = err
            return on_delivery

        for i in todo:
            if i in alone:
                self._settle()
            key, value = batch[i]
            refused = self._produce(self.topic, key, value, report(i))
            if refused is not None:
                failed[i] = refused
            elif i in alone:
                self._settle()
        self._settle()
        return failed

    def write_batch(self, items: Iterable[list[KV] | KV]) -> None:
        """Return only once every message is acknowledged, or raise :class:`DeliveryError`.

        Bytewax commits an epoch (its snapshot and input offsets) once every
        ``write_batch`` of it has returned, and not when one raises: the job
        stops and a restart with recovery emits the epoch again. So a message
        is never lost silently: it is delivered, dead-lettered (a message the
        topic refuses by itself, when ``undeliverable_topic`` is set), or the
        job stops on it. Failures librdkafka gave up on are re-sent up to
        ``retries`` times first; with a failed message goes every later one of
        the batch with the same key, so a key's last message stays last.
        """
        batch = _kv_items(items)
        with self.stats.lock:
            self.stats.produced += len(batch)
        todo = list(range(len(batch)))
        alone: set[int] = set()
        refused: dict[int, KafkaError] = {}
        attempt = 0
        while todo:
            failed = self._send(batch, todo, alone)
            if not failed:
                break
            again: set[int] = set()
            transient: dict[int, KafkaError] = {}
            for i, err in failed.items():
                code = err.code()
                if code in _PER_MESSAGE and (i in alone or not _from_broker(err)):
                    refused[i] = err                # alone and still refused: it's the message
                elif code in _PER_MESSAGE:
                    alone.add(i)                    # maybe its record batch was too large
                    again.add(i)
                elif err.fatal() or code in _NO_RETRY:
                    self._give_up(batch, {i: err}, attempt + 1, retriable=False)
                else:
                    transient[i] = err
                    again.add(i)
            if transient:
                attempt += 1
                if attempt > self.retries:
                    self._give_up(batch, transient, attempt, retriable=True)
                first = min(transient)
                reason = describe_error(next(iter(transient.values())))
                self._log(("retry", self.topic), logging.WARNING,
                          f"kafka sink {self.topic}: {len(transient)} message(s) not "
                          f"delivered ({reason}); sending again (retry {attempt} of "
                          f"{self.retries})")
                keys = {batch[i][0] for i in transient if batch[i][0] is not None}
                again.update(i for i in range(first, len(batch)) if batch[i][0] in keys)
            again -= refused.keys()
            with self.stats.lock:
                self.stats.retried += len(again)
            todo = sorted(again)
        if refused:
            self._dead_letter(batch, refused)
        with self.stats.lock:
            self.stats.delivered += len(batch) - len(refused)

    def _count_errors(self, errs: Iterable[KafkaError]) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for err in errs:
            reason = describe_error(err)
            reasons[reason] = reasons.get(reason, 0) + 1
        with self.stats.lock:
            for reason, n in reasons.items():
                self.stats.errors[reason] = self.stats.errors.get(reason, 0) + n
        return reasons

    def _give_up(self, batch: list[KV], failed: dict[int, KafkaError], attempts: int,
                 retriable: bool) -> None:
        reasons = self._count_errors(failed.values())
        with self.stats.lock:
            self.stats.failed += len(failed)
        why = "; ".join(f"{r} ×{n}" if n > 1 else r for r, n in reasons.items())
        tries = f"after {attempts} attempt(s)" if retriable else "(not retriable)"
        text = (f"kafka sink {self.topic}: {len(failed)} of {len(batch)} message(s) not "
                f"delivered {tries}: {why}. Stopping before this epoch is committed; "
                "run again (with recovery on) once the cause is fixed, and the epoch is "
                "emitted again")
        log.error(text)
        raise DeliveryError(text)

    def _dead_letter(self, batch: list[KV], refused: dict[int, KafkaError]) -> None:
        """Write each refused message to ``undeliverable_topic``, or stop if there is none.

        A message the topic refuses by itself (too large for it) would be
        refused again after every restart, so stopping on it would stop the
        job for good; it goes to the dead-letter topic, as a DeadLetter whose
        error says so, and the job goes on. The DeadLetter keeps the value as
        any dead letter does (cut at 64 KiB); if that is still too large, the
        first :data:`_SHORT_RAW` bytes. If even that fails, or there is no
        dead-letter topic, the job stops: never a silent loss.
        """
        if self.undeliverable_topic is None:
            self._give_up(batch, refused, 1, retriable=False)
        dlq = self.undeliverable_topic
        assert dlq is not None
        now = time.time()
        todo = sorted(refused)
        for cap in (RAW_TEXT_CAP, _SHORT_RAW):
            failed: dict[int, KafkaError] = {}
            for i in todo:
                key, value = batch[i]
                letter = _undeliverable(self.topic, key, value, refused[i], now, cap)

                def on_delivery(e: KafkaError | None, _m: Message | None, i: int = i,
                                failed: dict[int, KafkaError] = failed) -> None:
                    if e is not None:
                        failed[i] = e
                problem = self._produce(dlq, key, letter, on_delivery)
                if problem is not None:
                    failed[i] = problem
            self._settle()
            todo = sorted(i for i, e in failed.items() if e.code() in _PER_MESSAGE)
            if len(todo) < len(failed):   # not about size: the dead-letter topic is in trouble
                self._give_up(batch, refused, 1, retriable=False)
            if not todo:
                break
        else:
            self._give_up(batch, refused, 1, retriable=False)
        self._count_errors(refused.values())
        with self.stats.lock:
            self.stats.dead_lettered += len(refused)
        for i, err in sorted(refused.items()):
            self._log(("undeliverable", err.code()), logging.ERROR,
                      f"kafka sink {self.topic}: a message of {len(batch[i][1])} bytes "
                      f"was refused ({describe_error(err)}); written to {dlq} instead")

    def close(self) -> None:
        # write_batch leaves nothing in flight and raises on what failed (already logged):
        # anything left here was never handed to write_batch's wait, so it is reported.
        left = self.producer.flush(self.flush_timeout)
        if not left:
            return
        text = (f"kafka sink {self.topic}: {left} message(s) still undelivered after "
                f"{self.flush_timeout:g}s")
        log.error(text)
        if self.raise_on_loss:
            raise DeliveryError(text)


def _undeliverable(topic: str, key: bytes | None, value: bytes, err: KafkaError, now: float,
                   cap: int) -> bytes:
    """The DeadLetter of a message ``topic`` refused, its value cut at ``cap`` bytes."""
    if len(value) > cap:
        raw = (str(value[:cap], "utf-8", "replace")
               + f"... [truncated: {len(value)} bytes in all, first {cap} kept]")
    else:
        raw = str(value, "utf-8", "replace")
    return encode_dead_letter(DeadLetter(
        f"undeliverable to {topic}: {describe_error(err)} ({len(value)} bytes)", topic,
        None, None, str(key, "utf-8", "replace") if key is not None else None, raw, now))


def _from_broker(err: KafkaError) -> bool:
    """Whether the broker answered this (positive codes); local refusals are negative."""
    return int(err.code()) > 0


class KafkaBatchSink(DynamicSink[list[KV] | KV]):
    """Writes ``(key, value)`` pairs, or lists of them, to one topic; loses nothing silently.

    ``write_batch`` returns only when the broker has acknowledged every
    message of the batch. A message librdkafka gave up on (after its own
    retries, within ``message.timeout.ms``) is sent again, up to ``retries``
    times; if it still fails, the sink raises :class:`DeliveryError`, which
    stops the job *before* Bytewax commits the epoch, so a restart with
    recovery re-emits the epoch's messages (same content; at-least-once). A
    message the topic refuses by itself (too large, invalid record) would be
    refused on every restart: with ``undeliverable_topic`` it is written
    there as a DeadLetter and the job goes on; without, the job stops.

    Counters are in :attr:`stats`: the run's ``stats.delivery(topic)`` when given the
    run's counters (``stats``), else counters of its own.
    ``close()`` (at the end of a finite flow) flushes for at most
    ``flush_timeout_s``; with ``raise_on_loss`` it raises if anything is left.
    """

    def __init__(self, conf: dict[str, Any], topic: str, *, flush_timeout_s: float = 30.0,
                 raise_on_loss: bool = False, retries: int = 2,
                 undeliverable_topic: str | None = None, stats: JobStats | None = None) -> None:
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self.conf = dict(conf)
        self.topic = topic
        self.flush_timeout_s = flush_timeout_s
        self.raise_on_loss = raise_on_loss
        self.retries = retries
        self.undeliverable_topic = undeliverable_topic
        self.stats: DeliveryStats = (stats.delivery(topic) if stats is not None
                                     else DeliveryStats(topic))

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self.conf, self.topic, self.flush_timeout_s, self.stats,
                                  self.raise_on_loss, self.retries, self.undeliverable_topic)
