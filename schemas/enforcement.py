"""What decisions enforce over event time: the contract's rule, once, for every tool.

A decision's target is (sha256, scope, org, device); a ``block`` or ``allow``
is in force from its ``event_ts`` until the next decision for the same target
(``unblock`` and ``audit`` end it) or its ``expires_at``; for a device the
most specific decision in force wins (device, then org, then global).
Evaluation, what-if, ``rapidloop active``, export, serve, the client and
explain all ask this, so it is answered here, by :class:`Timeline`, and
nowhere else on the tools' side (the job keeps its own state,
``operators.policy.Enforcement``, by the same rule).

The one thing the callers differ on is the moment itself, so every query
says which it means (``inclusive``, never defaulted):

* **coverage of a sighting at t** (``inclusive=False``; evaluation's
  protection and collateral, what-if's sightings): decisions strictly before
  ``t``. The report that triggered a block was not protected by it.
* **in force at t** (``inclusive=True``; ``rapidloop active``, export, serve,
  the client, explain's "in force" line): decisions at ``t`` included, as an
  enforcement point holds them once it has applied everything up to ``t``.

Expiry is the same in both: a decision whose ``expires_at <= t`` has lapsed
at ``t`` (:func:`lapsed`, as ``Enforcement.current`` in the job). Of several
decisions on one target at the same event time, the one emitted last (later
in the input) wins.

>>> from rapidloop.schemas.wire import read_decision
>>> from rapidloop.schemas.timefmt import parse_ts
>>> d = [read_decision(x) for x in (
...      {"sha256": "a", "scope": "global", "org_id": None, "device_id": None,
...       "action": "block", "event_ts": "2026-11-28T00:00:00Z", "expires_at": None},
...      {"sha256": "a", "scope": "org", "org_id": "o1", "device_id": None,
...       "action": "allow", "event_ts": "2026-11-28T00:01:00Z", "expires_at": None})]
>>> t = Timeline(d)
>>> noon = parse_ts("2026-11-28T12:00:00Z")
>>> t.action_at("a", "o1", "o1/d", noon, inclusive=False), t.action_at("a", "o2", "o2/d", noon,
...                                                                    inclusive=False)
('allow', 'block')
>>> first = parse_ts("2026-11-28T00:00:00Z")   # the global block's own moment
>>> t.blocked("a", "o2", "o2/d", first, inclusive=False), t.blocked("a", "o2", "o2/d", first,
...                                                                 inclusive=True)
(False, True)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from rapidloop.schemas.wire import DecisionRecord, Target

__all__ = ["ENFORCING", "Target", "Timeline", "in_force", "in_view", "lapsed", "latest_event_ts"]

ENFORCING = frozenset({"block", "allow"})   # what puts a target under a rule; the rest end it
_SCOPE_ORDER = {"global": 0, "org": 1, "device": 2}


def lapsed(expires_at: float | None, t: float) -> bool:
    """Has a decision expiring at ``expires_at`` (None: never) lapsed at ``t``? At its
    expiry it has: ``expires_at <= t``.

    >>> lapsed(10.0, 10.0), lapsed(10.0, 9.999), lapsed(None, 1e12)
    (True, False, False)
    """
    return expires_at is not None and expires_at <= t


def enforces(d: DecisionRecord | None, t: float) -> bool:
    """Does ``d``, the newest decision on its target, still put that target under a rule
    at ``t`` (a ``block`` or ``allow`` not lapsed)?"""
    return d is not None and d.action in ENFORCING and not lapsed(d.expires_at, t)


class Timeline:
    """Every target's decisions in event-time order, queryable at any moment.

    Decisions without a readable ``event_ts`` are left out (they cannot be placed).
    """

    def __init__(self, decisions: Iterable[DecisionRecord]) -> None:
        rows: dict[Target, list[DecisionRecord]] = {}
        for d in decisions:
            if d.event_ts is not None:
                rows.setdefault(d.target, []).append(d)
        for r in rows.values():
            r.sort(key=_event_ts)   # stable: the same time keeps the input's order
        self._rows = rows
        self._times = {k: [_event_ts(d) for d in r] for k, r in rows.items()}

    def last(self, target: Target, t: float, *, inclusive: bool) -> DecisionRecord | None:
        """The newest decision on ``target`` made before ``t`` (or at ``t``, ``inclusive``);
        of several made at the same time, the last emitted."""
        times = self._times.get(target)
        if times is None:
            return None
        i = (bisect.bisect_right if inclusive else bisect.bisect_left)(times, t) - 1
        return self._rows[target][i] if i >= 0 else None

    def in_force(self, target: Target, t: float, *, inclusive: bool) -> DecisionRecord | None:
        """The ``block`` or ``allow`` in force on ``target`` at ``t``, or None."""
        d = self.last(target, t, inclusive=inclusive)
        return d if enforces(d, t) else None

    def all_in_force(self, t: float, *, inclusive: bool) -> list[DecisionRecord]:
        """The decision in force on every target that has one at ``t`` (targets in the order
        they first appear in the input)."""
        out = []
        for target in self._rows:
            d = self.in_force(target, t, inclusive=inclusive)
            if d is not None:
                out.append(d)
        return out

    def action_at(self, sha: str, org: str | None, device: str | None, t: float, *,
                  inclusive: bool) -> str | None:
        """The action in force for this device at ``t`` (most specific wins), or None."""
        for target in ((sha, "device", org, device), (sha, "org", org, None),
                       (sha, "global", None, None)):
            d = self.in_force(target, t, inclusive=inclusive)
            if d is not None:
                return d.action
        return None

    def blocked(self, sha: str, org: str | None, device: str | None, t: float, *,
                inclusive: bool) -> bool:
        return self.action_at(sha, org, device, t, inclusive=inclusive) == "block"


def _event_ts(d: DecisionRecord) -> float:
    return d.event_ts if d.event_ts is not None else float("-inf")   # placed ones only


def latest_event_ts(decisions: Iterable[DecisionRecord]) -> float | None:
    """The newest ``event_ts`` among the decisions (the default moment to look at)."""
    return max((d.event_ts for d in decisions if d.event_ts is not None), default=None)


def in_view(d: DecisionRecord, org: str | None) -> bool:
    """Is ``d`` in ``org``'s view (None: the operator's, every decision)? A tenant sees the
    global decisions and its own org's, never another tenant's."""
    return org is None or d.scope == "global" or d.org_id == org


def in_force(decisions: Iterable[DecisionRecord], at: float,
             org: str | None = None) -> list[DecisionRecord]:
    """The ``block`` and ``allow`` decisions in force at ``at`` (decided at ``at`` included),
    one per target, in a stable order (file, then global, org, device); ``org`` gives that
    tenant's view."""
    out = [d for d in Timeline(decisions).all_in_force(at, inclusive=True) if in_view(d, org)]
    if org is not None:
        own = {d.sha256 for d in out if d.scope == "org"}
        out = [d for d in out if not (d.scope == "global" and d.sha256 in own)]
    out.sort(key=lambda d: (d.sha256, _SCOPE_ORDER.get(str(d.scope), 9), d.org_id or "",
                            d.device_id or ""))
    return out
