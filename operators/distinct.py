"""Distinct counts over event-time sliding windows, exact, updated on every event.

Correlation asks "how many distinct orgs saw this file in the last 10 minutes,
hour, day?" at every report, so no decision may wait for a window to close.
Each tracked key (an org or a device) keeps its last-seen time, and those
times are also kept sorted: a touch moves one time in the sorted list (a
binary search and a short memmove), and the count of keys seen since a
cutoff is one binary search. So every window is exact at every event, and the
cost does not grow with how popular the file is.

Most files are seen by one organization on one device, and there are two of
these per tracked file, so the representation is chosen for that case: one
key is held as the key and its time in two slots, with no dict and no list
(an instance then costs 80 bytes, not ~500); the dict of last-seen times and
the sorted list appear with the second key. The window tuple is shared, not
copied per instance.

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
from typing import Any

_NEG_INF = float("-inf")   # one shared object, not a new float per instance


class SlidingDistinct:
    """Distinct keys seen within each of several trailing event-time windows.

    ``_key``/``_ts`` hold the state in one of three shapes: no key (``_key``
    None), one key (``_key`` the key, ``_ts`` its last-seen time), or several
    (``_key`` a dict key → last-seen time, ``_ts`` those times sorted).
    """

    __slots__ = ("_key", "_no_prune_before", "_ts", "cap", "ever", "windows")

    def __init__(self, windows: Sequence[float], cap: int) -> None:
        # A tuple is kept as given so that every file's instances share one object.
        self.windows: tuple[float, ...] = (
            windows if type(windows) is tuple else tuple(float(w) for w in windows))
        self.cap = cap
        self.ever = 0
        self._key: Any = None
        self._ts: Any = None
        self._no_prune_before = _NEG_INF  # when saturated: no key can be idle before this

    def touch(self, key: str, ts: float) -> None:
        """Record ``key`` seen at event time ``ts``."""
        last = self._key
        if type(last) is dict:
            old = last.get(key)
            times: list[float] = self._ts
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
        elif last is None:
            if self.cap < 1:
                return  # saturated from the start
            self._key = key
            self._ts = ts
            self.ever += 1
        elif last == key:
            if ts > self._ts:
                self._ts = ts   # an out-of-order sighting adds nothing new
        else:
            # The second key: switch to the dict and the sorted list, then add it as above.
            self._key = {last: self._ts}
            self._ts = [self._ts]
            self.touch(key, ts)

    def counts(self, now: float) -> list[int]:
        """Distinct keys per window: seen within ``[now - window, ...]``.

        Called for every report. Three windows (the configured default) are
        written out: a comprehension costs a function call of its own on
        Python 3.11, more than the three comparisons it makes.
        """
        k = self._key
        windows = self.windows
        if type(k) is dict:
            times = self._ts
            n = len(times)
            if len(windows) == 3:
                a, b, c = windows
                return [n - bisect_left(times, now - a), n - bisect_left(times, now - b),
                        n - bisect_left(times, now - c)]
            return [n - bisect_left(times, now - w) for w in windows]
        if k is None:
            return [0] * len(windows)
        t = self._ts
        if len(windows) == 3:
            a, b, c = windows
            return [1 if t >= now - a else 0, 1 if t >= now - b else 0,
                    1 if t >= now - c else 0]
        return [1 if t >= now - w else 0 for w in windows]

    def count(self, now: float, window: int) -> int:
        """Distinct keys seen within the ``window``-th window only (one search, no list)."""
        k = self._key
        cutoff = now - self.windows[window]
        if type(k) is dict:
            times = self._ts
            return len(times) - bisect_left(times, cutoff)
        if k is None:
            return 0
        return 1 if self._ts >= cutoff else 0

    def first_key(self) -> str | None:
        """``keys()[0]`` (None without keys), without building the list: asked for every
        report of a file that one organization has seen so far."""
        k = self._key
        if type(k) is dict:
            return next(iter(k), None)
        return k

    def keys(self) -> list[str]:
        k = self._key
        if type(k) is dict:
            return list(k)
        return [] if k is None else [k]

    def __len__(self) -> int:
        k = self._key
        if type(k) is dict:
            return len(k)
        return 0 if k is None else 1

    def _prune(self, now: float) -> None:
        horizon = now - max(self.windows)
        last: dict[str, float] = self._key
        for k in [k for k, t in last.items() if t < horizon]:
            del last[k]
        times: list[float] = self._ts
        del times[:bisect_left(times, horizon)]
        if len(last) >= self.cap:
            # Still full: nothing can turn idle before the oldest key leaves the horizon.
            self._no_prune_before = times[0] + max(self.windows)

    def parts(self) -> tuple[Any, ...]:
        """The state as plain data, without what is shared or derived (the windows, the
        cap, the sorted times), for a shard's snapshot: (ever, key or key → last seen or
        None, last seen of a single key, no_prune_before)."""
        k = self._key
        return (self.ever, k, None if type(k) is dict else self._ts, self._no_prune_before)

    @classmethod
    def from_parts(cls, windows: tuple[float, ...], cap: int,
                   parts: tuple[Any, ...]) -> SlidingDistinct:
        """The inverse of ``parts``, with the window tuple and cap of the caller."""
        d = cls.__new__(cls)
        d.windows, d.cap = windows, cap
        d.ever, d._key, d._ts, d._no_prune_before = parts
        if type(d._key) is dict:
            d._ts = sorted(d._key.values())
        return d
