"""Kafka client settings and cluster checks shared by every rapidloop client.

Every client (job, simulator, tail, topics) is configured here, so security
settings from ``[kafka.client]`` reach all of them and an unreachable cluster
is reported the same way everywhere: one clear error within
``kafka.connect_timeout_s``, never a hang.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from rapidloop.config import Config

SECRET_KEYS = ("sasl.password", "ssl.key.password", "ssl.keystore.password",
               "sasl.oauthbearer.client.secret")


class BrokerUnavailable(RuntimeError):
    """The Kafka cluster did not answer in time."""


def client_config(cfg: Config, brokers: str | None = None, **extra: Any) -> dict[str, Any]:
    """librdkafka settings: bootstrap servers, the user's client settings, then ``extra``."""
    conf: dict[str, Any] = {"bootstrap.servers": brokers or cfg.kafka.brokers}
    conf.update(cfg.kafka.client.as_dict())
    conf.update(extra)
    return conf


def redact(conf: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: secrets replaced."""
    return {k: ("***" if k in SECRET_KEYS or "secret" in k or "password" in k else v)
            for k, v in conf.items()}


def admin(cfg: Config, brokers: str | None = None) -> AdminClient:
    return AdminClient(client_config(cfg, brokers, **{"socket.connection.setup.timeout.ms": 5000}))


def list_topics(cfg: Config, brokers: str | None = None) -> set[str]:
    """Topic names on the cluster; raises BrokerUnavailable if it doesn't answer in time."""
    where = brokers or cfg.kafka.brokers
    try:
        meta = admin(cfg, brokers).list_topics(timeout=cfg.kafka.connect_timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Kafka at {where} did not answer within {cfg.kafka.connect_timeout_s:g}s "
            f"({exc.args[0].str() if exc.args else exc})") from None
    return set(meta.topics)


def topic_names(cfg: Config) -> list[str]:
    k = cfg.kafka
    return [k.reports_topic, k.feedback_topic, k.decisions_topic, k.deadletter_topic]


def ensure_topics(cfg: Config, brokers: str | None = None, partitions: int | None = None,
                  names: list[str] | None = None) -> list[str]:
    """Create the missing topics; returns the names created."""
    names = names or topic_names(cfg)
    existing = list_topics(cfg, brokers)
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    n_parts = partitions or cfg.kafka.partitions
    futures = admin(cfg, brokers).create_topics(
        [NewTopic(n, num_partitions=n_parts, replication_factor=1,
                  config={"retention.ms": "604800000"}) for n in missing],
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
