"""Distinct counts over event-time sliding windows, updated on every event.

Correlation asks "how many distinct orgs saw this file in the last 10 minutes,
hour, day?" at every report, so no decision may wait for a window to close.
Each tracked key (an org or a device) keeps its last-seen time; each window
keeps a count and the cutoff it was last recounted at. A touch updates the
counts in O(windows); a full recount, O(keys), runs only once the cutoff has
drifted by more than ``slack`` of the window. So a count covers between W and
W·(1+slack) of event time, and the amortised cost stays constant however
popular the file is.

Keys are tracked exactly up to ``cap``; past it new keys are no longer stored
(counts saturate), and keys idle for longer than the largest window are
pruned at recount. ``ever`` counts distinct keys seen, saturating likewise.

>>> d = SlidingDistinct((600.0, 3600.0), cap=100)
>>> d.touch("org-a", 0.0); d.touch("org-b", 100.0); d.touch("org-a", 1000.0)
>>> d.counts(1000.0)
[1, 2]
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_SLACK = 1 / 16


class SlidingDistinct:
    """Distinct keys seen within each of several trailing event-time windows."""

    __slots__ = ("_count", "_cut", "_last", "_no_prune_before", "cap", "ever", "slack",
                 "windows")

    def __init__(self, windows: Sequence[float], cap: int, slack: float = DEFAULT_SLACK) -> None:
        self.windows = tuple(float(w) for w in windows)
        self.cap = cap
        self.slack = slack
        self.ever = 0
        self._last: dict[str, float] = {}
        self._count = [0] * len(self.windows)
        self._cut = [-1e18] * len(self.windows)  # before any recount: count everything
        self._no_prune_before = -1e18   # when saturated: no key can be idle before this

    def touch(self, key: str, ts: float) -> None:
        """Record ``key`` seen at event time ``ts``."""
        last = self._last
        old = last.get(key)
        if old is None:
            if len(last) >= self.cap:
                if ts >= self._no_prune_before:
                    self._prune(ts)
                if len(last) >= self.cap:
                    return  # saturated: counts stop growing
            self.ever += 1
            old = float("-inf")
        elif ts <= old:
            return  # an out-of-order sighting adds nothing new
        cut = self._cut
        count = self._count
        for i in range(len(cut)):
            if old < cut[i] <= ts:
                count[i] += 1
        last[key] = ts

    def counts(self, now: float) -> list[int]:
        """Distinct keys per window, as of event time ``now``."""
        windows, cut, slack = self.windows, self._cut, self.slack
        due = [i for i in range(len(windows)) if now - windows[i] - cut[i] > windows[i] * slack]
        if due:
            self._recount(due, now)
        return list(self._count)

    def keys(self) -> list[str]:
        return list(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def _recount(self, due: list[int], now: float) -> None:
        """Recount the windows in ``due`` at event time ``now``, in one pass over the keys."""
        cuts = [now - self.windows[i] for i in due]
        counts = [0] * len(due)
        for t in self._last.values():
            for j, c in enumerate(cuts):
                if t >= c:
                    counts[j] += 1
        for j, i in enumerate(due):
            self._cut[i] = cuts[j]
            self._count[i] = counts[j]

    def _prune(self, now: float) -> None:
        horizon = now - max(self.windows)
        last = self._last
        stale = [k for k, t in last.items() if t < horizon]
        for k in stale:
            del last[k]
        if len(last) >= self.cap:
            # Still full: nothing can turn idle before the oldest key leaves the horizon.
            self._no_prune_before = min(last.values()) + max(self.windows)
        # Pruned keys were outside every window, but a cutoff older than the
        # horizon may still count them: recount those windows.
        due = [i for i in range(len(self.windows)) if self._cut[i] < horizon]
        if due:
            self._recount(due, now)

    def __getstate__(self) -> tuple:
        return (self.windows, self.cap, self.slack, self.ever, self._last, self._count, self._cut,
                self._no_prune_before)

    def __setstate__(self, state: tuple) -> None:
        (self.windows, self.cap, self.slack, self.ever, self._last, self._count,
         self._cut, self._no_prune_before) = state
