"""The live progress line and the metrics pump of a running job.

Both read the run's counters (a ``rapidloop.base.jobstats.JobStats``) from a
background thread once a period, so neither costs the hot path anything.
A replay's line (:class:`EtaReporter`) also says how much is done and when
it should end, from a known or estimated total (``flows.file_io.estimate_total``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO

from rapidloop.base.jobstats import JobStats
from rapidloop.base.snapshotwatch import SnapshotWatch, warning


def format_progress(stats: JobStats, rate: float, lag: float | None,
                    latencies: list[float] | None = None,
                    snapshots: float | None = None) -> str:
    """``snapshots``: the share of the time the epoch closes held the input lately,
    snapshots built and written (``base.snapshotwatch``), when recovery is on and it
    is known."""
    scopes = stats.by_scope()
    parts = [f"events {stats.total_in():,} ({rate:,.0f}/s)",
             "decisions " + (" ".join(f"{k} {v}" for k, v in sorted(scopes.items())) or "0"),
             f"dead letters {sum(stats.dead_letters.values()):,}",
             f"duplicates {stats.duplicates:,}",
             f"files {sum(stats.tracked_files.values()):,}",
             f"labels {stats.labels_seen:,}"]
    if lag is not None:
        parts.append(f"input lag {lag:.1f}s")
    if latencies:
        lat = sorted(latencies)
        parts.append(f"decision latency p50 {lat[len(lat) // 2] * 1000:.0f} ms")
    if snapshots is not None:
        parts.append(f"snapshots {snapshots:.0%} of the time")
    return " | ".join(parts)


def summary_line(stats: JobStats, elapsed: float) -> str:
    """The one-line account of a finished run: every message in is used, dead or a duplicate."""
    n = stats.total_in()
    scopes = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_scope().items())) or "none"
    return (f"{n:,} messages in {elapsed:.1f}s ({n / max(elapsed, 1e-9):,.0f}/s): "
            f"decisions {sum(stats.decisions.values()):,} ({scopes}); "
            f"dead letters {sum(stats.dead_letters.values()):,}; "
            f"duplicates {stats.duplicates:,}")


class Reporter(threading.Thread):
    """Every ``period`` seconds: print the progress line and push metrics deltas.

    ``watch``: the share of time in epoch-close snapshots (recovery on), shown on
    the line; ``warn`` gets the one line saying it crossed its threshold (printed
    even without progress lines).
    """

    def __init__(self, stats: JobStats, period: float = 2.0, out: TextIO | None = sys.stderr,
                 telemetry: object | None = None, watch: SnapshotWatch | None = None,
                 warn: Callable[[str], None] | None = None, epoch_s: float = 0.0) -> None:
        super().__init__(name="rapidloop-progress", daemon=True)
        self.stats = stats
        self.period = period
        self.out = out
        self.telemetry = telemetry
        self.watch = watch
        self.warn = warn
        self.epoch_s = epoch_s
        self._sent_snapshot_s = 0.0
        self._stop_evt = threading.Event()
        self._last_in = 0
        self._last_t = time.monotonic()
        self._sent_in: Counter[str] = Counter()
        self._sent_dead: Counter[str] = Counter()
        self._sent_dec: Counter[tuple[str, str]] = Counter()
        self._sent_dup = 0

    def run(self) -> None:
        while not self._stop_evt.wait(self.period):
            self.tick()

    def stop(self) -> None:
        self._stop_evt.set()
        self.tick()

    def tick(self) -> None:
        now = time.monotonic()
        total = self.stats.total_in()
        rate = (total - self._last_in) / max(now - self._last_t, 1e-9)
        self._last_in, self._last_t = total, now
        lag = None
        if self.stats.newest_produce_ts:
            lag = max(0.0, time.time() - self.stats.newest_produce_ts)
        latencies = self.stats.drain_latencies()
        share = None
        if self.watch is not None:
            crossed = self.watch.observe(now, self.stats.held_s())
            share = self.watch.share
            if crossed is not None and self.warn is not None:
                self.warn(warning(crossed, self.watch.window_s,
                                  sum(self.stats.tracked_files.values()), self.epoch_s))
        if self.out is not None:
            print(format_progress(self.stats, rate, lag, latencies, share), file=self.out,
                  flush=True)
        if self.telemetry is not None:
            self._push(latencies)

    def _push(self, latencies: list[float]) -> None:
        t, s = self.telemetry, self.stats
        for topic, n in (s.events_in - self._sent_in).items():
            t.events_in(topic, n)  # type: ignore[attr-defined]
        for code, n in (s.dead_letters - self._sent_dead).items():
            t.dead_letters(code, n)  # type: ignore[attr-defined]
        for (action, scope), n in (s.decisions - self._sent_dec).items():
            t.decisions(action, scope, n)  # type: ignore[attr-defined]
        if s.duplicates > self._sent_dup:
            t.duplicates("all", s.duplicates - self._sent_dup)  # type: ignore[attr-defined]
        self._sent_in, self._sent_dead = Counter(s.events_in), Counter(s.dead_letters)
        self._sent_dec, self._sent_dup = Counter(s.decisions), s.duplicates
        for lat in latencies:
            t.latency(lat)  # type: ignore[attr-defined]
        held = s.held_s()
        if held > self._sent_snapshot_s:
            t.snapshot_time(held - self._sent_snapshot_s)  # type: ignore[attr-defined]
            self._sent_snapshot_s = held
        t.set_tracked_files(sum(s.tracked_files.values()))  # type: ignore[attr-defined]
        t.set_labels_seen(s.labels_seen)  # type: ignore[attr-defined]


def _clock(seconds: float) -> str:
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{(s % 3600) // 60:02d}:{s % 60:02d}"


class EtaReporter(Reporter):
    """The progress line, plus the share done and an ETA when the total is known."""

    def __init__(self, stats: JobStats, period: float, out: object,
                 total: int | None, exact: bool) -> None:
        super().__init__(stats, period, out)   # type: ignore[arg-type]
        self.total, self.exact = total, exact
        self._start = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        done = self.stats.total_in()
        rate = (done - self._last_in) / max(now - self._last_t, 1e-9)
        self._last_in, self._last_t = done, now
        line = format_progress(self.stats, rate, None)
        if self.total:
            mean = done / max(now - self._start, 1e-9)
            total = max(self.total, done)
            approx = "" if self.exact else "~"
            left = (total - done) / mean if mean > 0 else None
            line += (f" | {100 * done / total:.0f}% of {approx}{total:,}"
                     + (f", ETA {approx}{_clock(left)}" if left is not None else ""))
        print(line, file=self.out, flush=True)
