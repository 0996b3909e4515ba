"""The feed of decisions in force: one record per target, a tombstone when it ends.

An enforcement point that starts late cannot replay a month of decisions to
learn what is in force. The feed is a compacted topic keyed by the target
(sha256, scope, org, device): its latest record for a target is the decision
in force there, and a tombstone (no value) when the decision was lifted or
lapsed. Read from its beginning, keeping the last record per key, it holds
exactly what ``rapidloop active`` computes from the whole decisions stream
(``rapidloop.feeds.active.in_force``) at the feed's clock: the newest ``event_ts``
among the decisions it has seen (event time, like every rule of the loop).
The rule is ``rapidloop.schemas.enforcement``'s, in force at the clock: a decision
made at the clock's time is in force, one expiring at it has lapsed.

Under ``rapidloop run`` the clock is also the wall clock (``stream.active_clock
= "live"``): a block lapses when it expires even if no decision arrives after
it (:meth:`ActiveFeed.advance`, called by a timer set at the next expiry), and a
decision of a backlog that expired before it was read never enters the feed.
The feed then equals ``rapidloop active --from-kafka`` at the moment it is read.

One difference is by design: the feed follows the stream, so a target's
record is its last decision *emitted*, where ``in_force`` takes the newest by
``event_ts``; the two differ only if the job emitted decisions on one target
out of event-time order.

>>> feed = ActiveFeed()
>>> d = {"sha256": "ab", "scope": "org", "org_id": "o1", "device_id": None,
...      "action": "block", "event_ts": "2026-11-28T10:00:00Z",
...      "expires_at": "2026-11-28T11:00:00Z"}
>>> [(k, v["action"]) for k, v in feed.process([d])]
[('ab|org|o1|', 'block')]
>>> later = {**d, "scope": "global", "org_id": None, "event_ts": "2026-11-28T12:00:00Z",
...          "expires_at": None}
>>> [(k, v and v["action"]) for k, v in feed.process([later])]
[('ab|org|o1|', None), ('ab|global||', 'block')]
>>> feed.advance(4102444800.0)   # the wall clock in 2100: nothing else lapses
[]
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from rapidloop.schemas.enforcement import ENFORCING, lapsed
from rapidloop.schemas.wire import DecisionRecord, read_decision

from .snapshot import register

KIND = "active-feed"
register(KIND, 1)

Record = tuple[str, dict[str, Any] | None]   # (target key, decision or None: a tombstone)


def target_key(d: DecisionRecord) -> str:
    """The feed's key: ``sha256|scope|org|device`` (empty for what does not apply)."""
    return f"{d.sha256}|{d.scope}|{d.org_id or ''}|{d.device_id or ''}"


class ActiveFeed:
    """What is in force per target, and the records that keep a compacted topic equal to it."""

    def __init__(self) -> None:
        self.clock = float("-inf")                      # newest event_ts seen
        self.expires: dict[str, float | None] = {}      # target in force -> its expiry
        self.lapses: list[tuple[float, str]] = []       # (expiry, target), may hold stale ones

    def __len__(self) -> int:
        return len(self.expires)

    def snapshot(self) -> dict[str, Any]:
        """The feed's state as plain data (the lapse heap as the list it is)."""
        return {"clock": self.clock, "expires": self.expires, "lapses": self.lapses}

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> ActiveFeed:
        """The feed ``snapshot`` saved."""
        feed = cls()
        feed.clock = state["clock"]
        feed.expires = dict(state["expires"])
        feed.lapses = [tuple(x) for x in state["lapses"]]
        return feed

    def process(self, decisions: Iterable[dict[str, Any]]) -> list[Record]:
        """The records these decisions (contract objects, in emission order) add to the feed;
        a record's value is the very object passed in."""
        out: list[Record] = []
        for obj in decisions:
            d = read_decision(obj)
            t = d.event_ts
            if t is not None and t > self.clock:
                self.clock = t
                self._lapse(out)
            key = target_key(d)
            if d.action in ENFORCING:
                exp = d.expires_at
                if lapsed(exp, self.clock):                 # already lapsed
                    if key in self.expires:
                        del self.expires[key]
                        out.append((key, None))
                    continue
                self.expires[key] = exp
                if exp is not None:
                    heapq.heappush(self.lapses, (exp, key))
                out.append((key, obj))
            elif key in self.expires:                   # unblock: lifted
                del self.expires[key]
                out.append((key, None))
        return out

    def advance(self, now: float) -> list[Record]:
        """Move the clock to ``now`` if it is later (a live clock's tick) and return the
        tombstones of what lapsed by then."""
        out: list[Record] = []
        if now > self.clock:
            self.clock = now
            self._lapse(out)
        return out

    def next_lapse(self) -> float | None:
        """When the next decision in force expires (None: none will): a live clock's timer."""
        lapses, expires = self.lapses, self.expires
        while lapses and expires.get(lapses[0][1], -1.0) != lapses[0][0]:
            heapq.heappop(lapses)                       # renewed or lifted since: stale
        return lapses[0][0] if lapses else None

    def _lapse(self, out: list[Record]) -> None:
        lapses, clock = self.lapses, self.clock
        while lapses and lapsed(lapses[0][0], clock):
            exp, key = heapq.heappop(lapses)
            if key in self.expires and self.expires[key] == exp:   # not renewed since
                del self.expires[key]
                out.append((key, None))
