"""Recognise redelivered messages by id, in bounded memory.

Kafka delivers at least once and sensors retry, so the same ``report_id`` or
``feedback_id`` can arrive twice. Counting a duplicate as a new sighting would
inflate prevalence, so ids are remembered FIFO up to a fixed capacity: a
duplicate arriving after ``capacity`` newer ids is no longer recognised, which
bounds memory at the cost of very late redeliveries.

>>> ids = RecentIds(capacity=2)
>>> ids.seen("a"), ids.seen("a"), ids.seen("b"), ids.seen("c"), ids.seen("a")
(False, True, False, False, False)
"""

from __future__ import annotations

from collections import deque


class RecentIds:
    """A set of the most recent ``capacity`` ids."""

    __slots__ = ("_order", "_set", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._set: set[str] = set()
        self._order: deque[str] = deque()

    def seen(self, msg_id: str) -> bool:
        """True if ``msg_id`` was seen recently; otherwise remember it and return False."""
        if msg_id in self._set:
            return True
        self._set.add(msg_id)
        self._order.append(msg_id)
        if len(self._order) > self.capacity:
            self._set.discard(self._order.popleft())
        return False

    def __len__(self) -> int:
        return len(self._order)
