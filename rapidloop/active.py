"""The decisions in force at one moment: what an enforcement point should be applying.

The decision stream is a change log; an enforcement point that starts late,
or a SOC asking "what is blocked right now, and for whom", needs its state.
The contract's rule: a ``block`` or ``allow`` is in force on its target
(sha256, scope, org, device) from its ``event_ts`` (included) until the next
decision for the same target or its ``expires_at`` (excluded); ``unblock``
and ``audit`` end it.

Views: the operator's (every target), or one tenant's: global decisions and
that tenant's own org and device decisions, nothing of any other tenant, and
a global decision is left out where the tenant's own org decision on the same
file is in force (the most specific wins for every one of its devices).

>>> from rapidloop.schemas.timefmt import parse_ts
>>> ds = [
...   {"sha256": "a", "scope": "global", "org_id": None, "device_id": None,
...    "action": "block", "event_ts": "2026-11-28T00:00:00Z", "expires_at": None},
...   {"sha256": "a", "scope": "org", "org_id": "o1", "device_id": None,
...    "action": "allow", "event_ts": "2026-11-28T00:01:00Z", "expires_at": None},
...   {"sha256": "b", "scope": "org", "org_id": "o2", "device_id": None,
...    "action": "block", "event_ts": "2026-11-28T00:02:00Z",
...    "expires_at": "2026-11-28T01:02:00Z"}]
>>> [(d["sha256"], d["scope"]) for d in in_force(ds, at=parse_ts("2026-11-28T00:02:00Z"))]
[('a', 'global'), ('a', 'org'), ('b', 'org')]
>>> [(d["sha256"], d["scope"]) for d in in_force(ds, parse_ts("2026-11-28T00:02:00Z"), "o1")]
[('a', 'org')]
>>> [(d["sha256"], d["scope"]) for d in in_force(ds, parse_ts("2026-11-28T01:02:00Z"), "o2")]
[('a', 'global')]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rapidloop.schemas.timefmt import parse_ts_or_none

_SCOPE_ORDER = {"global": 0, "org": 1, "device": 2}


def _target(d: dict[str, Any]) -> tuple[str, str, str | None, str | None]:
    return (str(d.get("sha256", "")).lower(), str(d.get("scope")), d.get("org_id"),
            d.get("device_id"))


def latest_event_ts(decisions: Iterable[dict[str, Any]]) -> float | None:
    """The newest ``event_ts`` among the decisions (the default moment to look at)."""
    times = [t for t in (parse_ts_or_none(d.get("event_ts")) for d in decisions)
             if t is not None]
    return max(times) if times else None


def in_force(decisions: Iterable[dict[str, Any]], at: float,
             org: str | None = None) -> list[dict[str, Any]]:
    """The ``block`` and ``allow`` decisions in force at ``at``, one per target, in a stable
    order (file, then global, org, device); ``org`` gives that tenant's view."""
    last: dict[tuple[str, str, str | None, str | None], tuple[float, int, dict[str, Any]]] = {}
    for i, d in enumerate(decisions):
        t = parse_ts_or_none(d.get("event_ts"))
        if t is None or t > at:
            continue
        key = _target(d)
        if key not in last or (t, i) >= last[key][:2]:   # the newest; on a tie, the later
            last[key] = (t, i, d)
    out = []
    for key, (_, _, d) in last.items():
        expires = parse_ts_or_none(d.get("expires_at"))
        if d.get("action") not in ("block", "allow") or (expires is not None and expires <= at):
            continue
        _, scope, d_org, _ = key
        if org is not None and scope != "global" and d_org != org:
            continue   # another tenant's: never in this view
        out.append(d)
    if org is not None:
        own = {_target(d)[0] for d in out if d.get("scope") == "org"}
        out = [d for d in out if not (d.get("scope") == "global" and _target(d)[0] in own)]
    out.sort(key=lambda d: (_target(d)[0], _SCOPE_ORDER.get(str(d.get("scope")), 9),
                            d.get("org_id") or "", d.get("device_id") or ""))
    return out
