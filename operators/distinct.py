"""Distinct counts over event-time sliding windows, exact, updated on every event.

Correlation asks "how many distinct orgs saw this file in the last 10 minutes,
hour, day?" at every report, so no decision may wait for a window to close.
Each tracked key (an org or a device) keeps its last-seen time, and those
times are also kept sorted: a touch moves one time in the sorted list (a
binary search and a short memmove), and the count of keys seen since a
cutoff is one binary search. So every window is exact at every event, and the
cost does not grow with how popular the file is.

Keys are tracked exactly up to ``cap``; past it new keys are no longer stored
(counts saturate) until keys idle for longer than the largest window can be
pruned. ``ever`` counts distinct keys seen, saturating likewise.

>>> d = SlidingDistinct((600.0, 3600.0), cap=100)
>>> d.touch("org-a", 0.0); d.touch("org-b", 100.0); d.touch("org-a", 1000.0)
>>> d.counts(1000.0)
[1, 2]
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence


class SlidingDistinct:
    """Distinct keys seen within each of several trailing event-time windows."""

    __slots__ = ("_last", "_no_prune_before", "_times", "cap", "ever", "windows")

    def __init__(self, windows: Sequence[float], cap: int) -> None:
        self.windows = tuple(float(w) for w in windows)
        self.cap = cap
        self.ever = 0
        self._last: dict[str, float] = {}
        self._times: list[float] = []          # the values of _last, sorted
        self._no_prune_before = float("-inf")  # when saturated: no key can be idle before this

    def touch(self, key: str, ts: float) -> None:
        """Record ``key`` seen at event time ``ts``."""
        last = self._last
        old = last.get(key)
        times = self._times
        if old is None:
            if len(last) >= self.cap:
                if ts >= self._no_prune_before:
                    self._prune(ts)
                if len(last) >= self.cap:
                    return  # saturated: counts stop growing
            self.ever += 1
        elif ts <= old:
            return  # an out-of-order sighting adds nothing new
        else:
            del times[bisect_left(times, old)]
        last[key] = ts
        insort(times, ts)

    def counts(self, now: float) -> list[int]:
        """Distinct keys per window: seen within ``[now - window, ...]``."""
        times = self._times
        n = len(times)
        return [n - bisect_left(times, now - w) for w in self.windows]

    def keys(self) -> list[str]:
        return list(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def _prune(self, now: float) -> None:
        horizon = now - max(self.windows)
        last = self._last
        for k in [k for k, t in last.items() if t < horizon]:
            del last[k]
        times = self._times
        del times[:bisect_left(times, horizon)]
        if len(last) >= self.cap:
            # Still full: nothing can turn idle before the oldest key leaves the horizon.
            self._no_prune_before = times[0] + max(self.windows)

    def __getstate__(self) -> tuple:
        # The sorted times are derived: leave them out of snapshots.
        return (self.windows, self.cap, self.ever, self._last, self._no_prune_before)

    def __setstate__(self, state: tuple) -> None:
        self.windows, self.cap, self.ever, self._last, self._no_prune_before = state
        self._times = sorted(self._last.values())
