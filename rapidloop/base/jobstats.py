"""Counters of one running job, for the progress line, metrics and the summary.

The dataflow's steps add to these once per batch (never per event), the
progress printer and the OpenTelemetry exporter read them. Plain integers in
one object: cheap, and readable without Bytewax.

Each run owns its counters: the composition root (``flows/job.py``,
``flows/replay.py``) makes one ``JobStats`` with the connectors and hands
it to the steps and sinks it builds, so two flows in one process (tests run
several) never add to each other's figures.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

LATENCY_SAMPLES = 100_000


@dataclass
class DeliveryStats:
    """Delivery outcome of one topic's sink in this process (all its workers).

    ``produced`` counts messages handed to the sink (a re-send is not counted
    again, see ``retried``); each ends ``delivered``, ``dead_lettered`` (a
    message the topic refuses for itself, e.g. too large, written to the
    dead-letter topic instead) or ``failed``.
    """

    topic: str
    produced: int = 0
    delivered: int = 0
    failed: int = 0
    retried: int = 0          # re-sends after librdkafka gave up on a message
    dead_lettered: int = 0
    errors: dict[str, int] = field(default_factory=dict)   # reason → count
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pending(self) -> int:
        """Produced but not yet settled (after the flow has ended: never will be)."""
        return self.produced - self.delivered - self.failed - self.dead_lettered

    @property
    def lost(self) -> int:
        """Messages that reached neither their topic nor the dead-letter topic."""
        return self.failed + self.pending


@dataclass
class JobStats:
    events_in: Counter[str] = field(default_factory=Counter)        # by topic / file
    dead_letters: Counter[str] = field(default_factory=Counter)     # by reason code
    duplicates: int = 0
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, scope)
    tracked_files: dict[str, int] = field(default_factory=dict)     # shard -> files
    # events correlated, by shard: how the work spread (a file's reports all go to its
    # shard, so a few prevalent files can weigh one shard, and its worker, more)
    shard_events: Counter[str] = field(default_factory=Counter)
    labels_seen: int = 0
    newest_event_ts: float = 0.0
    newest_produce_ts: float = 0.0    # broker timestamp of the newest message consumed
    # event-arrival → decision seconds, drained by the progress reporter; bounded so a
    # run without a reporter (replay) cannot grow it without limit
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    # seconds this process's stateful steps spent building their epoch-close snapshots
    # (recovery on): it grows with the state, and the input waits meanwhile
    snapshot_s: float = 0.0
    # seconds the input waited at epoch closes: from a close's first snapshot to the
    # source's next poll, so Bytewax's write of the snapshots is in it (``input_polled``)
    epoch_close_s: float = 0.0
    _close_began: float | None = field(default=None, repr=False)
    # the Kafka sinks' delivery outcomes, by topic, for the summary (``delivery``)
    deliveries: dict[str, DeliveryStats] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def total_in(self) -> int:
        return sum(self.events_in.values())

    def by_scope(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (action, scope), n in self.decisions.items():
            out[f"{action}:{scope}" if action != "block" else scope] += n
        return out

    def add_snapshot(self, seconds: float, began: float | None = None) -> None:
        """A snapshot took ``seconds``, from ``began`` (``time.perf_counter``): the first
        of an epoch close starts the wait ``input_polled`` ends."""
        with self.lock:   # worker threads of one process snapshot at the same epoch close
            self.snapshot_s += seconds
            if began is not None and self._close_began is None:
                self._close_began = began

    def input_polled(self, now: float) -> None:
        """The source is asked for input at ``now`` (``time.perf_counter``): an epoch
        close under way has ended, snapshots built and written. Called at every poll,
        so the usual case is one attribute read."""
        if self._close_began is None:
            return
        with self.lock:
            began = self._close_began
            if began is not None:
                self.epoch_close_s += max(0.0, now - began)
                self._close_began = None

    def held_s(self) -> float:
        """Seconds the epoch closes have held the input so far: measured at the source
        where it polls in this process, else the snapshots' own time (a process of a
        cluster that reads no input), which leaves out Bytewax's write."""
        return max(self.epoch_close_s, self.snapshot_s)

    def drain_latencies(self) -> list[float]:
        with self.lock:
            lat, self.latencies = self.latencies, deque(maxlen=LATENCY_SAMPLES)
        return list(lat)

    def delivery(self, topic: str) -> DeliveryStats:
        """The delivery counters of the sink writing ``topic`` (created on first use)."""
        with self.lock:
            got = self.deliveries.get(topic)
            if got is None:
                got = self.deliveries[topic] = DeliveryStats(topic)
            return got
