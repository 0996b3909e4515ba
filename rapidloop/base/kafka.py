"""Kafka client settings and cluster checks shared by every rapidloop client.

Every client (job, simulator, tail, topics) is configured here, so security
settings from ``[kafka.client]`` reach all of them and an unreachable cluster
is reported the same way everywhere: one clear error within
``kafka.connect_timeout_s``, never a hang. A cluster that refuses connections
outright (nothing listening, unknown host, TLS handshake failure) is reported
as soon as librdkafka gives up on every bootstrap broker, usually well under a
second, instead of after the full timeout.

librdkafka's own log lines go to the ``rapidloop.librdkafka`` Python logger,
not straight to stderr: a CLI must be able to fail with one line, and a job
that configures logging still sees them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from rapidloop.base.config import Config

SECRET_KEYS = ("sasl.password", "ssl.key.password", "ssl.keystore.password",
               "sasl.oauthbearer.client.secret")

LIBRDKAFKA_LOG = logging.getLogger("rapidloop.librdkafka")
LIBRDKAFKA_LOG.addHandler(logging.NullHandler())  # silent unless the application configures logging

# How long one metadata request may wait before we look at the client's errors again:
# short, so a refused connection is reported quickly; each retry is one small request.
_METADATA_SLICE_S = 0.5
_INTERNAL_TOPIC = "__"


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster did not answer in time (or a topic it needs is missing)."""


def client_config(cfg: Config, brokers: str | None = None, **extra: Any) -> dict[str, Any]:
    """librdkafka settings: bootstrap servers, the user's client settings, then ``extra``."""
    conf: dict[str, Any] = {"bootstrap.servers": brokers or cfg.kafka.brokers}
    conf.update(cfg.kafka.client.as_dict())
    conf.update(extra)
    return conf


def quiet(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with librdkafka's log lines routed to :data:`LIBRDKAFKA_LOG` (not stderr)."""
    out = dict(conf)
    out.setdefault("logger", LIBRDKAFKA_LOG)
    return out


def redact(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: secrets replaced."""
    return {k: ("***" if k in SECRET_KEYS or "secret" in k or "password" in k else v)
            for k, v in conf.items()}


def admin(cfg: Config, brokers: str | None = None) -> AdminClient:
    return AdminClient(quiet(client_config(
        cfg, brokers, **{"socket.connection.setup.timeout.ms": 5000})))


def describe_error(err: KafkaError) -> str:
    """A librdkafka error as a short sentence: no ``host/bootstrap:`` prefix, no state suffix."""
    text = err.str()
    text = re.sub(r"^\S+/(bootstrap|\d+): ", "", text)
    return re.sub(r" \(after \d+ms in state \w+\)$", "", text)


def cluster_metadata(conf: dict[str, Any], timeout: float) -> ClusterMetadata:
    """Metadata of every topic, or BrokerUnavailable within ``timeout`` seconds.

    Takes a plain librdkafka ``conf`` (not a Config) so connectors, which only
    carry their client settings, can use it too. Asks in short slices and, in
    between, looks at the client's error callback: once librdkafka reports
    that all bootstrap brokers are down, waiting longer only delays the same
    answer, so the error is raised at once with librdkafka's reason.
    """
    where = conf.get("bootstrap.servers", "?")
    errors: list[KafkaError] = []
    client_conf = quiet(conf)
    client_conf.setdefault("socket.connection.setup.timeout.ms",
                           max(1000, int(timeout * 1000)))
    client_conf["error_cb"] = errors.append
    client = AdminClient(client_conf)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return client.list_topics(timeout=max(0.05, min(_METADATA_SLICE_S, left)))
        except KafkaException as exc:
            last = exc.args[0] if exc.args else None
        client.poll(0)  # serve the error callback
        if any(e.code() == KafkaError._ALL_BROKERS_DOWN or e.fatal() for e in errors):
            reasons = [describe_error(e) for e in errors
                       if e.code() != KafkaError._ALL_BROKERS_DOWN]
            reason = reasons[-1] if reasons else "all brokers are down"
            raise BrokerUnavailable(f"Kafka at {where} is unreachable: {reason}")
        if time.monotonic() >= deadline:
            why = describe_error(last) if isinstance(last, KafkaError) else str(last)
            raise BrokerUnavailable(
                f"Kafka at {where} did not answer within {timeout:g}s ({why})")


def _metadata(cfg: Config, brokers: str | None) -> ClusterMetadata:
    conf = client_config(cfg, brokers, **{"socket.connection.setup.timeout.ms": 5000})
    return cluster_metadata(conf, cfg.kafka.connect_timeout_s)


class BrokerWatch:
    """Calls ``on_dead`` once the cluster has not answered for ``timeout_s``.

    A job whose broker is gone cannot decide anything, yet neither Bytewax
    nor librdkafka gives up soon: the sink waits out ``message.timeout.ms``
    per attempt (minutes), and a job with nothing to deliver waits forever.
    A thread asks the cluster for metadata every few seconds (what any
    client's first request is, so it answers whenever the job could work);
    after ``timeout_s`` of failed asks it calls ``on_dead`` with one line.

    >>> watch = BrokerWatch({"bootstrap.servers": "127.0.0.1:1"}, 0.0, print)
    >>> watch.start(); watch.stop()    # timeout 0: never started, nothing printed
    """

    def __init__(self, conf: dict[str, Any], timeout_s: float,
                 on_dead: Callable[[str], None]) -> None:
        self.conf = conf
        self.timeout_s = timeout_s
        self.probe_s = max(0.5, min(5.0, timeout_s / 4))
        self.on_dead = on_dead
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.timeout_s > 0:
            self._thread = threading.Thread(target=self._watch, name="broker-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.probe_s + 1)

    def _watch(self) -> None:
        conf = quiet(self.conf)
        conf["socket.connection.setup.timeout.ms"] = max(1000, int(self.probe_s * 1000))
        client = AdminClient(conf)
        answered = time.monotonic()
        while not self._stop.wait(self.probe_s):
            try:
                client.list_topics(timeout=self.probe_s)
                answered = time.monotonic()
                continue
            except KafkaException:
                pass
            silent = time.monotonic() - answered
            if silent >= self.timeout_s and not self._stop.is_set():
                self.on_dead(f"the Kafka cluster at {conf.get('bootstrap.servers')} has not "
                             f"answered for {silent:.0f}s (kafka.broker_timeout_s = "
                             f"{self.timeout_s:g}); stopping")
                return


def list_topics(cfg: Config, brokers: str | None = None) -> set[str]:
    """Topic names on the cluster; raises BrokerUnavailable if it doesn't answer in time."""
    return set(_metadata(cfg, brokers).topics)


def describe_topics(cfg: Config, brokers: str | None = None,
                    internal: bool = False) -> dict[str, int]:
    """Topic name → partition count (``__``-prefixed internal topics only if asked)."""
    return {name: len(t.partitions) for name, t in _metadata(cfg, brokers).topics.items()
            if internal or not name.startswith(_INTERNAL_TOPIC)}


def topic_partitions(conf: dict[str, Any], topics: list[str],
                     timeout: float = 10.0) -> list[tuple[str, int]]:
    """Every (topic, partition) of ``topics``, in order; BrokerUnavailable if one is missing.

    Reads the whole cluster's metadata rather than asking for the topics by
    name, because a by-name request may auto-create a misspelt topic.
    """
    meta = cluster_metadata(conf, timeout)
    missing = [t for t in topics if t not in meta.topics]
    if missing:
        raise BrokerUnavailable(
            f"topic(s) {', '.join(missing)} do not exist on {conf.get('bootstrap.servers')}; "
            "create them with `rapidloop topics create`")
    out: list[tuple[str, int]] = []
    for topic in topics:
        t = meta.topics[topic]
        if t.error is not None:
            raise BrokerUnavailable(f"topic {topic} is not usable: {describe_error(t.error)}")
        out.extend((topic, p) for p in sorted(t.partitions))
    return out


def topic_names(cfg: Config) -> list[str]:
    """The topics ``rapidloop topics create`` makes: the contract's four and the feed."""
    k = cfg.kafka
    return [k.reports_topic, k.feedback_topic, k.decisions_topic, k.deadletter_topic,
            k.active_topic]


def topic_config(cfg: Config, name: str) -> dict[str, str]:
    """The configs a topic is created with.

    The decisions topic keeps its messages at least as long as the longest
    block lasts (plus a week), so that replaying it from the beginning gives
    every decision still in force; the active feed is compacted and keeps its
    latest record per target for ever (tombstones for a day).
    """
    week = 7 * 86400 * 1000
    if name == cfg.kafka.active_topic:
        return {"cleanup.policy": "compact", "delete.retention.ms": "86400000"}
    if name == cfg.kafka.decisions_topic:
        p = cfg.policy
        longest = max(float(p.device_block_ttl_s), float(p.org_block_ttl_s),
                      float(p.global_block_ttl_s), float(p.trusted_block_ttl_s))
        return {"retention.ms": str(int(longest * 1000) + week)}
    return {"retention.ms": str(week)}


def ensure_topics(cfg: Config, brokers: str | None = None, partitions: int | None = None,
                  names: list[str] | None = None, replication_factor: int = 1) -> list[str]:
    """Create the missing topics; returns the names created.

    ``retention.ms`` is given explicitly because some brokers (the embedded
    one) report only the configs a topic was created with.
    """
    names = names or topic_names(cfg)
    existing = list_topics(cfg, brokers)
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    n_parts = partitions or cfg.kafka.partitions
    client = admin(cfg, brokers)  # keep a reference: a collected client cancels the futures
    futures = client.create_topics(
        [NewTopic(n, num_partitions=n_parts, replication_factor=replication_factor,
                  config=topic_config(cfg, n)) for n in missing],
        operation_timeout=cfg.kafka.connect_timeout_s)
    for name, fut in futures.items():
        try:
            fut.result(timeout=cfg.kafka.connect_timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            if err.name() != "TOPIC_ALREADY_EXISTS":
                raise BrokerUnavailable(f"could not create topic {name}: {err.str()}") from None
    return missing


def require_topics(cfg: Config, names: list[str], brokers: str | None = None) -> None:
    """Fail clearly if a topic is missing (a typo must not auto-create a topic)."""
    existing = list_topics(cfg, brokers)
    missing = [n for n in names if n not in existing]
    if missing:
        raise BrokerUnavailable(
            f"topic(s) {', '.join(missing)} do not exist on {brokers or cfg.kafka.brokers}; "
            "create them with `rapidloop topics create`")


def publish_values(cfg: Config, topic: str, values: list[bytes], key_field: str = "sha256",
                   brokers: str | None = None) -> int:
    """Produce JSON values to ``topic`` keyed by their ``key_field``; returns how many.

    Used to send a replay's decisions to a topic other systems read. Every
    message is confirmed by the broker or the call fails: nothing is lost
    silently.
    """
    import orjson
    from confluent_kafka import Producer

    require_topics(cfg, [topic], brokers)
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(describe_error(err))

    producer = Producer(quiet(client_config(cfg, brokers, **{"linger.ms": 5})))
    for value in values:
        key = orjson.loads(value).get(key_field)
        while True:
            try:
                producer.produce(topic, value, key.encode() if key else None,
                                 on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(cfg.kafka.connect_timeout_s * 3)
    if failed or left:
        raise BrokerUnavailable(f"{len(failed) + left} of {len(values)} message(s) to {topic} "
                                f"not delivered ({failed[0] if failed else 'timed out'})")
    return len(values)
