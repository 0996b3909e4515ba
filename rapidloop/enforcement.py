"""What decisions enforce over event time: the contract's rule, for the tools that judge them.

A decision's target is (sha256, scope, org, device); a ``block`` or ``allow``
is active from its ``event_ts`` until the next decision for the same target or
its ``expires_at``; for a device the most specific active decision wins
(device, then org, then global). Evaluation and what-if both ask "was this
sighting covered by a block when it happened?", and must answer it the same
way, so the rule lives here once. A decision applies to sightings strictly
after its ``event_ts``: the report that triggered a block was not protected
by it.

>>> d = [{"sha256": "a", "scope": "global", "org_id": None, "device_id": None,
...       "action": "block", "event_ts": "2026-11-28T00:00:00Z", "expires_at": None},
...      {"sha256": "a", "scope": "org", "org_id": "o1", "device_id": None,
...       "action": "allow", "event_ts": "2026-11-28T00:01:00Z", "expires_at": None}]
>>> t = Timeline(d)
>>> from rapidloop.schemas.timefmt import parse_ts
>>> noon = parse_ts("2026-11-28T12:00:00Z")
>>> t.action_at("a", "o1", "o1/d", noon), t.action_at("a", "o2", "o2/d", noon)
('allow', 'block')
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from rapidloop.schemas.timefmt import parse_ts_or_none

Target = tuple[str, str, str | None, str | None]   # (sha256, scope, org_id, device_id)


def target_of(d: dict[str, Any]) -> Target:
    return (str(d.get("sha256", "")).lower(), str(d.get("scope")), d.get("org_id"),
            d.get("device_id"))


class Timeline:
    """Every target's decisions in event-time order, queryable at any time."""

    def __init__(self, decisions: Iterable[dict[str, Any]]) -> None:
        per: dict[Target, list[tuple[float, str, float | None]]] = defaultdict(list)
        for d in decisions:
            t = parse_ts_or_none(d.get("event_ts"))
            if t is not None:
                per[target_of(d)].append(
                    (t, str(d.get("action")), parse_ts_or_none(d.get("expires_at"))))
        self._rows = {k: sorted(v, key=lambda x: x[0]) for k, v in per.items()}
        self._times = {k: [x[0] for x in v] for k, v in self._rows.items()}

    def _active(self, key: Target, t: float) -> str | None:
        rows = self._rows.get(key)
        if not rows:
            return None
        i = bisect.bisect_left(self._times[key], t) - 1   # decided strictly before t
        if i < 0:
            return None
        _, action, expires = rows[i]
        if action in ("block", "allow") and (expires is None or expires > t):
            return action
        return None

    def action_at(self, sha: str, org: str | None, device: str | None, t: float) -> str | None:
        """The action in force for this device at ``t`` (most specific wins), or None."""
        for key in ((sha, "device", org, device), (sha, "org", org, None),
                    (sha, "global", None, None)):
            action = self._active(key, t)
            if action is not None:
                return action
        return None

    def blocked(self, sha: str, org: str | None, device: str | None, t: float) -> bool:
        return self.action_at(sha, org, device, t) == "block"
