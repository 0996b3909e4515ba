"""Event-time order across input partitions: a backlog is decided as it was lived.

A live job reads several partitions (reports and feedback) at once. Read in
whatever order the client hands them over, a backlog (start-up, catch-up
after an outage, resume after a crash) interleaves verdicts and reports by
fetch timing, so two runs over the same topics would decide differently and
a resumed run would contradict what the killed one emitted. The merge below
releases messages in event-time order across partitions, the order
``rapidloop replay`` uses, as far as what has been read allows:

* each partition is read in its own order; its *merge time* is the
  message's ``ts``, except that an unreadable time, one more than
  ``max_jump_s`` past the partition's last readable time, or one before
  :data:`OLDEST_PLAUSIBLE_TS` keeps the message's place after the previous
  one (the parser judges it; one bad line must not hold its partition back);
* the message with the least ``(merge time, input, partition, offset)`` is
  released when every partition has a message waiting, or is **caught up**
  (it reached the end of what the broker holds: nothing earlier can come
  from it, as far as anyone can know), or has been silent for ``idle_s``
  (a partition whose broker does not answer must not stall live decisions);
* a message that arrives after later ones were released (a caught-up
  partition receiving something old) is released as it comes: that is live.

On a pre-loaded backlog no partition times out, so the order is the full
merge of the partitions, whatever the fetch timing: the same every run and
after every resume (the resume state is each partition's first message not
yet released).

>>> m = EventTimeMerge({"r#0": 0, "f#0": 1}, {"r#0": 0, "f#0": 0}, idle_s=5.0)
>>> m.add("r#0", 0, 10.0, "report@10"); m.add("r#0", 1, 30.0, "report@30")
>>> m.release(10, now=0.0)        # feedback not read yet: it may hold something earlier
[]
>>> m.add("f#0", 0, 20.0, "verdict@20"); m.caught_up("f#0")
>>> m.release(10, now=0.0)
['report@10', 'verdict@20', 'report@30']
>>> m.resume_offsets()
{'r#0': 2, 'f#0': 1}
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import orjson

from rapidloop.schemas.timefmt import parse_ts

T = TypeVar("T")

DEFAULT_MAX_JUMP_S = 86400.0
# Lines dated before this (the default ``limits.min_ts``) are rejected by the parser;
# in the merge they keep their place instead of dragging their partition's clock back.
OLDEST_PLAUSIBLE_TS = parse_ts("2000-01-01T00:00:00Z")
_NEVER = float("-inf")


def merge_time(value: bytes | None, last: float, max_jump: float = DEFAULT_MAX_JUMP_S
               ) -> tuple[float, float]:
    """``(merge time, new last readable time)`` of one message after ``last``.

    >>> merge_time(b'{"ts": "2026-01-01T00:00:00Z"}', _NEVER)[0] == parse_ts("2026-01-01T00:00:00Z")
    True
    >>> merge_time(b'not json', 5.0)
    (5.0, 5.0)
    """
    return read_time(value, last, max_jump)[:2]   # type: ignore[return-value]


def read_time(value: bytes | None, last: float, max_jump: float = DEFAULT_MAX_JUMP_S
              ) -> tuple[float, float, Any, float | None]:
    """``merge_time``'s two times, then what its one decode read: ``orjson.loads(value)``
    (None if not JSON) and ``parse_ts`` of its ``ts`` string (None unless a string that
    reads as a time), for a reader that needs more of the message than its time (a live
    source also takes each message's shard from it: ``flows.kafka_io.read_fields``).

    >>> read_time(b'{"ts": 5}', 1.0)
    (1.0, 1.0, {'ts': 5}, None)
    """
    try:
        obj = orjson.loads(value)  # type: ignore[arg-type]
    except Exception:
        return last, last, None, None
    try:
        ts = parse_ts(obj["ts"])
    except Exception:
        return last, last, obj, None
    if ts < OLDEST_PLAUSIBLE_TS or (last != _NEVER and ts > last + max_jump):
        return last, last, obj, ts
    return ts, ts, obj, ts


class EventTimeMerge(Generic[T]):
    """Messages of several partitions, released in event-time order (see the module).

    ``ranks`` orders the partitions for ties (input order, then partition);
    ``starts`` is each partition's first offset (the resume state, or a
    logical start before anything was read).
    """

    def __init__(self, ranks: Mapping[str, int], starts: Mapping[str, int], idle_s: float,
                 max_jump_s: float = DEFAULT_MAX_JUMP_S) -> None:
        self.ranks = dict(ranks)
        self.idle_s = idle_s
        self.max_jump = max_jump_s
        self.buffers: dict[str, deque[tuple[int, T]]] = {p: deque() for p in self.ranks}
        self.heads: list[tuple[float, int, int, str]] = []     # (time, rank, offset, part)
        self.times: dict[str, deque[float]] = {p: deque() for p in self.ranks}
        self.last: dict[str, float] = {p: _NEVER for p in self.ranks}
        self.next_offset: dict[str, int] = dict(starts)        # first not yet released
        self.eof: dict[str, bool] = {p: False for p in self.ranks}
        self.empty_since: dict[str, float | None] = {p: None for p in self.ranks}

    def add(self, part: str, offset: int, ts: float | None, item: T,
            value: bytes | None = None) -> None:
        """One message read from ``part``; its merge time is ``ts``, or read from ``value``."""
        if ts is None:
            ts, self.last[part] = merge_time(value, self.last[part], self.max_jump)
        buf = self.buffers[part]
        if not buf:
            heapq.heappush(self.heads, (ts, self.ranks[part], offset, part))
        buf.append((offset, item))
        self.times[part].append(ts)
        self.eof[part] = False
        self.empty_since[part] = None

    def add_many(self, part: str, entries: list[tuple[int, float, T]]) -> None:
        """Messages read from ``part``, in its order: ``(offset, merge time, item)`` each.

        The same as ``add`` for each in turn (a live source hands over a poll's
        messages partition by partition: the merge's order does not depend on
        how partitions interleave within a poll, only on each one's order).
        """
        if not entries:
            return
        buf = self.buffers[part]
        if not buf:
            offset, ts, _ = entries[0]
            heapq.heappush(self.heads, (ts, self.ranks[part], offset, part))
        buf.extend([(offset, item) for offset, _, item in entries])
        self.times[part].extend([ts for _, ts, _ in entries])
        self.eof[part] = False
        self.empty_since[part] = None

    def caught_up(self, part: str) -> None:
        """``part`` reached the end of what the broker holds."""
        self.eof[part] = True

    def buffered(self, part: str) -> int:
        return len(self.buffers[part])

    def drained(self) -> bool:
        """Everything caught up and released (a finite run may end)."""
        return not self.heads and all(self.eof.values())

    def waiting_for(self, now: float) -> list[str]:
        """Partitions that hold back the merge: empty, not caught up, not yet idle."""
        out = []
        for part, buf in self.buffers.items():
            if buf or self.eof[part]:
                continue
            since = self.empty_since[part]
            if since is None:
                self.empty_since[part] = since = now
            if now - since < self.idle_s:
                out.append(part)
        return out

    def release(self, limit: int, now: float) -> list[T]:
        """Up to ``limit`` messages in merge order; fewer when a partition holds the merge back."""
        out: list[T] = []
        heads = self.heads
        if self.waiting_for(now):
            return out
        buffers, all_times, ranks, next_offset = self.buffers, self.times, self.ranks, \
            self.next_offset
        append = out.append
        while heads and len(out) < limit:
            part = heads[0][3]
            buf = buffers[part]
            times = all_times[part]
            offset, item = buf.popleft()
            times.popleft()
            append(item)
            next_offset[part] = offset + 1
            if buf:   # its next message replaces it among the heads (one sift, not two)
                heapq.heapreplace(heads, (times[0], ranks[part], buf[0][0], part))
                continue
            heapq.heappop(heads)
            if not self.eof[part]:
                self.empty_since[part] = now
                if self.idle_s > 0:
                    break           # its next message may come before the others' heads
        return out

    def resume_offsets(self) -> dict[str, int]:
        """Each partition's first offset not yet released: where a resumed run reads from."""
        return {part: buf[0][0] if (buf := self.buffers[part]) else offset
                for part, offset in self.next_offset.items()}
