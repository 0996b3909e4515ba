"""Process-local counters of a running job, for the progress line and metrics.

The dataflow's steps add to these once per batch (never per event), the
progress printer and the OpenTelemetry exporter read them. Plain integers in
one object: cheap, and readable without Bytewax.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

LATENCY_SAMPLES = 100_000


@dataclass
class JobStats:
    events_in: Counter[str] = field(default_factory=Counter)        # by topic / file
    dead_letters: Counter[str] = field(default_factory=Counter)     # by reason code
    duplicates: int = 0
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (action, scope)
    tracked_files: dict[str, int] = field(default_factory=dict)     # shard -> files
    labels_seen: int = 0
    newest_event_ts: float = 0.0
    newest_produce_ts: float = 0.0    # broker timestamp of the newest message consumed
    # event-arrival → decision seconds, drained by the progress reporter; bounded so a
    # run without a reporter (replay) cannot grow it without limit
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def total_in(self) -> int:
        return sum(self.events_in.values())

    def by_scope(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for (action, scope), n in self.decisions.items():
            out[f"{action}:{scope}" if action != "block" else scope] += n
        return out

    def drain_latencies(self) -> list[float]:
        with self.lock:
            lat, self.latencies = self.latencies, deque(maxlen=LATENCY_SAMPLES)
        return list(lat)


STATS = JobStats()
"""The running job's counters (one dataflow per process)."""


def reset() -> JobStats:
    """Zero the counters in place (tests and benchmarks run several flows per process)."""
    STATS.__dict__.update(JobStats().__dict__)
    return STATS
