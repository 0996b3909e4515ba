"""Recognise redelivered messages by id, in bounded memory.

Kafka delivers at least once and sensors retry, so the same ``report_id`` or
``feedback_id`` can arrive twice. Counting a duplicate as a new sighting would
inflate prevalence, so ids are remembered FIFO up to a fixed capacity: a
duplicate arriving after ``capacity`` newer ids is no longer recognised, which
bounds memory at the cost of very late redeliveries.

With recovery on, the ring is part of every epoch's snapshot of its shard,
and a full ring holds a quarter of a million ids: pickling them one by one
each epoch would cost more than the epoch's real work. So the ids are also
kept, in order, as sealed chunks of ``CHUNK`` ids already encoded as one
bytes object each (encoded once, when the chunk fills); a snapshot is those
blobs plus the open chunk and how many ids of the oldest blob have left the
ring. Its cost no longer grows with the capacity, for ~10-25 more bytes per id.

>>> ids = RecentIds(capacity=2)
>>> ids.seen("a"), ids.seen("a"), ids.seen("b"), ids.seen("c"), ids.seen("a")
(False, True, False, False, False)
"""

from __future__ import annotations

import pickle
from collections import deque

from .snapshot import loads_plain

CHUNK = 4096   # ids per sealed, pre-encoded chunk


def _seal(ids: list[str]) -> bytes:
    """A chunk as one bytes object, which a snapshot copies whole.

    pickle, not orjson: orjson's result keeps its whole output buffer
    allocated (~1 MiB however short the bytes), and any str pickles.
    """
    return pickle.dumps(ids, protocol=pickle.HIGHEST_PROTOCOL)


def _unseal(chunk: bytes) -> list[str]:
    ids: list[str] = loads_plain(chunk)   # plain data: a class inside would be refused
    return ids


class RecentIds:
    """A set of the most recent ``capacity`` ids.

    ``_order`` holds them oldest first (for eviction); the same sequence is
    ``_sealed[0][_skip:] + _sealed[1:] + _open`` in the snapshot form.
    """

    __slots__ = ("_open", "_order", "_sealed", "_set", "_skip", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._set: set[str] = set()
        self._order: deque[str] = deque()
        self._sealed: deque[bytes] = deque()
        self._open: list[str] = []
        self._skip = 0

    def seen(self, msg_id: str) -> bool:
        """True if ``msg_id`` was seen recently; otherwise remember it and return False."""
        ids = self._set   # (runs for every message: each attribute read once)
        if msg_id in ids:
            return True
        ids.add(msg_id)
        order = self._order
        order.append(msg_id)
        opened = self._open
        opened.append(msg_id)
        if len(opened) >= CHUNK:
            self._sealed.append(_seal(opened))
            self._open = []
        if len(order) > self.capacity:
            ids.discard(order.popleft())
            if self._sealed:
                self._skip += 1
                if self._skip == CHUNK:
                    self._sealed.popleft()
                    self._skip = 0
            else:
                del self._open[0]   # only when capacity < CHUNK
        return False

    def __len__(self) -> int:
        return len(self._order)

    def snapshot(self) -> tuple[int, list[bytes], list[str]]:
        """The ring as plain data: (ids of the oldest chunk already gone, the sealed
        chunks, the open chunk). The capacity is a setting, not state."""
        return (self._skip, list(self._sealed), list(self._open))

    @classmethod
    def from_snapshot(cls, capacity: int, state: tuple[int, list[bytes], list[str]]
                      ) -> RecentIds:
        """The ring ``snapshot`` saved, holding at most ``capacity`` ids: the newest, if it
        saved more (a smaller ``dedup.ids_per_shard`` since)."""
        skip, sealed, opened = state
        order: list[str] = []
        for chunk in sealed:
            order.extend(_unseal(chunk))
        del order[:skip]
        order.extend(opened)
        ring = cls(capacity)
        if len(order) > capacity:
            for msg_id in order[len(order) - capacity:]:
                ring.seen(msg_id)
            return ring
        ring._skip = skip
        ring._sealed = deque(sealed)
        ring._open = list(opened)
        ring._order = deque(order)
        ring._set = set(order)
        return ring
