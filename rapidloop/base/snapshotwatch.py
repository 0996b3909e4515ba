"""How much of a running job's time its epoch-close snapshots take, and when to say so.

With recovery on, Bytewax asks every stateful step for a snapshot at each
epoch close (``stream.epoch_interval_s``) and holds the input until they
are written. Whole, a shard's snapshot holds every file it tracks and every
recent id, so the hold grows with the state, not with the load (1–2 µs a
file end to end on a 2-core machine: most of each epoch at a million);
in chunks (``flows.chunked``, the default on one machine) it grows with
what changed in the epoch. Either way the job's throughput and latency
tail go with it, and nothing else says why. The job measures how long each
close holds the input, from its first snapshot to the source's next poll
(``JobStats.held_s``; Bytewax's write is in it); this turns that running
total into a share of the wall clock over the last few epochs and says
once, in one line, when the share crosses ``stream.snapshot_warn_share``
(again only after it has fallen below half of it).

>>> w = SnapshotWatch(warn_share=0.25, window_s=10.0)
>>> w.observe(0.0, 0.0) is None, w.observe(10.0, 1.0) is None   # 10 %
(True, True)
>>> w.observe(20.0, 5.0)   # 40 % of the last 10 s
0.4
>>> w.observe(30.0, 9.0) is None   # still over: said once
True
"""

from __future__ import annotations

from collections import deque

WINDOW_EPOCHS = 5   # the share is over this many epochs at least: one close more or less
                    # in the window then moves it little


def window_for(epoch_s: float, at_least_s: float) -> float:
    """The trailing window the share is measured over, for epochs of ``epoch_s``
    (``stream.snapshot_warn_window_s`` is ``at_least_s``)."""
    return max(WINDOW_EPOCHS * epoch_s, at_least_s)


class SnapshotWatch:
    """Share of the wall clock spent in snapshots over a trailing window; edge-triggered."""

    def __init__(self, warn_share: float, window_s: float) -> None:
        self.warn_share = warn_share   # 0 or less: never warn
        self.window_s = window_s
        self.share: float | None = None   # over the last full window, once there is one
        self._samples: deque[tuple[float, float]] = deque()
        self._armed = True

    def observe(self, now: float, snapshot_s: float) -> float | None:
        """Note the running total ``snapshot_s`` at monotonic time ``now``; the share to
        warn about when it has just crossed ``warn_share``, else None."""
        samples = self._samples
        samples.append((now, snapshot_s))
        while len(samples) > 2 and now - samples[1][0] >= self.window_s:
            samples.popleft()   # keep the newest earlier sample at least a window old
        t0, s0 = samples[0]
        if now - t0 < self.window_s or now <= t0:
            return None
        self.share = (snapshot_s - s0) / (now - t0)
        if self.warn_share <= 0:
            return None
        if self._armed and self.share >= self.warn_share:
            self._armed = False
            return self.share
        if self.share < self.warn_share / 2:
            self._armed = True
        return None


def warning(share: float, window_s: float, files: int, epoch_s: float) -> str:
    """The line the job prints when ``share`` crosses the threshold."""
    return (f"epoch-close snapshots took {share:.0%} of the last {window_s:g}s "
            f"({files:,} tracked files, {epoch_s:g}s epochs): the input waits for them at "
            "every close. Raise stream.epoch_interval_s (fewer closes, more input read "
            "again after a crash) or run more processes (docs/operations.md, "
            "\"State size and the epoch interval\")")
