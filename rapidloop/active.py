"""The decisions in force at one moment: what an enforcement point should be applying.

The decision stream is a change log; an enforcement point that starts late,
or a SOC asking "what is blocked right now, and for whom", needs its state:
every target's ``block`` or ``allow`` in force at the moment, decisions made
at that very moment included (``rapidloop.enforcement``, ``inclusive=True``).

Views: the operator's (every target), or one tenant's: global decisions and
that tenant's own org and device decisions, nothing of any other tenant, and
a global decision is left out where the tenant's own org decision on the same
file is in force (the most specific wins for every one of its devices).

>>> from rapidloop.schemas.timefmt import parse_ts
>>> from rapidloop.schemas.wire import read_decision
>>> ds = [read_decision(d) for d in (
...   {"sha256": "a", "scope": "global", "org_id": None, "device_id": None,
...    "action": "block", "event_ts": "2026-11-28T00:00:00Z", "expires_at": None},
...   {"sha256": "a", "scope": "org", "org_id": "o1", "device_id": None,
...    "action": "allow", "event_ts": "2026-11-28T00:01:00Z", "expires_at": None},
...   {"sha256": "b", "scope": "org", "org_id": "o2", "device_id": None,
...    "action": "block", "event_ts": "2026-11-28T00:02:00Z",
...    "expires_at": "2026-11-28T01:02:00Z"})]
>>> [(d.sha256, d.scope) for d in in_force(ds, at=parse_ts("2026-11-28T00:02:00Z"))]
[('a', 'global'), ('a', 'org'), ('b', 'org')]
>>> [(d.sha256, d.scope) for d in in_force(ds, parse_ts("2026-11-28T00:02:00Z"), "o1")]
[('a', 'org')]
>>> [(d.sha256, d.scope) for d in in_force(ds, parse_ts("2026-11-28T01:02:00Z"), "o2")]
[('a', 'global')]
"""

from __future__ import annotations

from collections.abc import Iterable

from rapidloop.enforcement import Timeline
from rapidloop.schemas.wire import DecisionRecord

_SCOPE_ORDER = {"global": 0, "org": 1, "device": 2}


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
