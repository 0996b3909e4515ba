"""Shared plumbing: a private embedded broker, topics, subprocesses, topic read-back.

Every benchmark phase talks to a broker the harness started itself on a free
loopback port (never a developer's broker on 9092, whose topics would skew
the figures) and stops in a ``finally``. Each phase uses its own topic names
(through ``RAPIDLOOP_KAFKA__*_TOPIC``) so runs never see each other's data
without having to delete topics on a broker that only keeps memory.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RAPIDLOOP = str(BIN / "rapidloop")
PYTHON = sys.executable

# "200,966 messages in 12.5s (16,038/s): decisions 1,253 (...)"
_SUMMARY = re.compile(r"([\d,]+) messages in ([\d.]+)s \(([\d,]+)/s\): decisions ([\d,]+)")


def log(msg: str) -> None:
    """Progress on stderr, so stdout carries only the final table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A loopback port nobody listens on right now (the broker binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Topics:
    """One phase's four topic names, and the env that points rapidloop at them."""

    reports: str
    feedback: str
    decisions: str
    deadletter: str

    @classmethod
    def named(cls, tag: str) -> Topics:
        return cls(f"bench.{tag}.reports", f"bench.{tag}.feedback",
                   f"bench.{tag}.decisions", f"bench.{tag}.deadletter")

    def with_outputs(self, tag: str) -> Topics:
        """Same inputs, fresh outputs: re-running the job over pre-loaded input."""
        return Topics(self.reports, self.feedback, f"bench.{tag}.decisions",
                      f"bench.{tag}.deadletter")

    def env(self) -> dict[str, str]:
        return {
            "RAPIDLOOP_KAFKA__REPORTS_TOPIC": self.reports,
            "RAPIDLOOP_KAFKA__FEEDBACK_TOPIC": self.feedback,
            "RAPIDLOOP_KAFKA__DECISIONS_TOPIC": self.decisions,
            "RAPIDLOOP_KAFKA__DEADLETTER_TOPIC": self.deadletter,
        }


@contextmanager
def broker() -> Iterator[str]:
    """Start the embedded Tansu broker on a free port; always stop it.

    Goes through ``infra/broker.sh`` so the harness starts the broker exactly
    as ``make run`` and the tests do, and checks afterwards that no Tansu
    process for this port survived (the memory-only broker is cheap to leak).
    """
    port = free_port()
    addr = f"127.0.0.1:{port}"
    env = {**os.environ, "PYTHON": PYTHON}
    script = str(ROOT / "infra" / "broker.sh")
    subprocess.run(["bash", script, "start", str(port)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    log(f"broker started on {addr}")
    try:
        yield addr
    finally:
        subprocess.run(["bash", script, "stop", str(port)], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        left = subprocess.run(["pgrep", "-f", f"tansu.*{addr}"], capture_output=True,
                              text=True, check=False).stdout.split()
        if left:
            log(f"WARNING: tansu still running on {addr}: pids {left}")
        else:
            log(f"broker on {addr} stopped, no tansu process left for it")


def rapidloop_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a rapidloop subprocess: ours, minus stray RAPIDLOOP_ overrides.

    A developer's exported ``RAPIDLOOP_*`` setting would silently change what
    is measured, so those are dropped; the harness sets the ones it needs.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPIDLOOP_")}
    env.update(extra or {})
    return env


def run_cli(args: list[str], env: Mapping[str, str], cwd: Path,
            timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    """Run a rapidloop command to completion; raise with its stderr if it fails."""
    proc = subprocess.run(args, env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])}... exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-2000:]}")
    return proc


def create_topics(brokers: str, topics: Topics, cwd: Path, partitions: int = 4) -> None:
    run_cli([RAPIDLOOP, "topics", "create", "--brokers", brokers, "--partitions",
             str(partitions)], rapidloop_env(topics.env()), cwd)


def parse_summary(stderr: str) -> dict[str, float]:
    """The numbers of the job's final summary line (messages, seconds, rate, decisions)."""
    found = _SUMMARY.findall(stderr)
    if not found:
        raise RuntimeError(f"no summary line in: {stderr.strip()[-1000:]}")
    n, secs, rate, dec = found[-1]
    return {"messages": int(n.replace(",", "")), "elapsed_s": float(secs),
            "rate": float(rate.replace(",", "")), "decisions": int(dec.replace(",", ""))}


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 20.0) -> None:
    """SIGINT (the job's Ctrl-C path), then SIGTERM, then SIGKILL: only this one pid."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@dataclass(frozen=True)
class Record:
    """One message read back: its key, value and Kafka timestamp (seconds)."""

    key: bytes | None
    value: bytes
    ts: float


def read_topic(brokers: str, topic: str, timeout_s: float = 60.0) -> list[Record]:
    """Every message of ``topic`` from the beginning to the end of each partition.

    Ends on the partition-EOF signal, not on watermarks: the embedded broker's
    high watermark is the base offset of the last batch + 1, not the log end.
    """
    admin = AdminClient({"bootstrap.servers": brokers})
    meta = admin.list_topics(topic, timeout=10)
    parts = list(meta.topics[topic].partitions)
    consumer = Consumer({
        "bootstrap.servers": brokers, "group.id": "rapidloop-bench-reader",
        "enable.auto.commit": False, "enable.partition.eof": True,
    })
    out: list[Record] = []
    try:
        consumer.assign([TopicPartition(topic, p, -2) for p in parts])  # -2: beginning
        done: set[int] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(parts):
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} did not reach the end in {timeout_s}s")
            for msg in consumer.consume(5000, 0.5):
                err = msg.error()
                if err is None:
                    out.append(Record(msg.key(), msg.value() or b"", msg.timestamp()[1] / 1e3))
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
    finally:
        consumer.close()
    return out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def percentile(sorted_xs: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_xs:
        return float("nan")
    k = max(0, min(len(sorted_xs) - 1, math.ceil(q / 100.0 * len(sorted_xs)) - 1))
    return sorted_xs[k]


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
