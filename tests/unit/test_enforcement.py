"""The one rule of "in force" (rapidloop.schemas.enforcement) at its boundaries, and that every
tool that asks it (active, evaluate and what-if's coverage, the feed, the job's own state)
draws the line in the same place."""

from __future__ import annotations

import pytest

from rapidloop.operators.activefeed import ActiveFeed
from rapidloop.operators.policy import Enforcement
from rapidloop.schemas.enforcement import Timeline, in_force, lapsed
from rapidloop.schemas.timefmt import format_ts
from rapidloop.schemas.wire import read_decision

SHA = "ab" * 32
T = 1_764_324_000.0   # 2025-11-28T10:00:00Z


def dec(action: str, t: float, scope: str = "global", org: str | None = None,
        expires: float | None = None, n: int = 0) -> dict:
    return {"decision_id": f"d-{n}", "sha256": SHA, "action": action, "scope": scope,
            "org_id": org, "device_id": None, "score": 0.9, "classifiers": {}, "reasons": [],
            "model_version": "m", "event_ts": format_ts(t), "decided_at": format_ts(t),
            "expires_at": format_ts(expires) if expires is not None else None}


def timeline(*ds: dict) -> Timeline:
    return Timeline(read_decision(d) for d in ds)


def active_ids(ds: list[dict], at: float) -> list[str | None]:
    return [d.decision_id for d in in_force([read_decision(d) for d in ds], at)]


def test_a_decision_at_exactly_t_is_in_force_at_t_but_does_not_cover_a_sighting_at_t() -> None:
    t = timeline(dec("block", T))
    assert t.blocked(SHA, "o", "o/d", T, inclusive=True)            # active, export, serve
    assert not t.blocked(SHA, "o", "o/d", T, inclusive=False)       # evaluate, what-if
    assert t.blocked(SHA, "o", "o/d", T + 0.001, inclusive=False)
    assert active_ids([dec("block", T)], T) == ["d-0"]
    assert active_ids([dec("block", T)], T - 0.001) == []


@pytest.mark.parametrize("inclusive", [True, False])
def test_at_its_expiry_a_decision_has_lapsed_under_both_boundaries(inclusive: bool) -> None:
    t = timeline(dec("block", T, expires=T + 60))
    assert t.blocked(SHA, "o", "o/d", T + 59.999, inclusive=inclusive)
    assert not t.blocked(SHA, "o", "o/d", T + 60, inclusive=inclusive)
    assert lapsed(T + 60, T + 60) and not lapsed(T + 60, T + 59.999) and not lapsed(None, T)
    assert active_ids([dec("block", T, expires=T + 60)], T + 60) == []


def test_the_jobs_own_state_and_the_feed_lapse_at_the_expiry_too() -> None:
    enf = Enforcement()
    target = ("global", None, None)
    enf.active[target] = ("block", T + 60)
    assert enf.current(target, T + 59.999) == "block"
    assert enf.current(target, T + 60) is None
    feed = ActiveFeed()
    feed.process([dec("block", T, expires=T + 60)])
    assert len(feed) == 1
    records = feed.process([dec("allow", T + 60, scope="org", org="o", n=1)])
    assert (f"{SHA}|global||", None) in records   # lapsed at the feed's clock T + 60
    assert len(feed) == 1


@pytest.mark.parametrize(("first", "second"), [("block", "unblock"), ("unblock", "block"),
                                               ("block", "allow")])
def test_of_two_decisions_on_one_target_at_the_same_time_the_later_emitted_wins(
        first: str, second: str) -> None:
    ds = [dec(first, T, n=1), dec(second, T, n=2)]
    want = second if second in ("block", "allow") else None
    t = timeline(*ds)
    assert t.action_at(SHA, "o", "o/d", T, inclusive=True) == want
    assert t.action_at(SHA, "o", "o/d", T + 1, inclusive=False) == want
    assert t.action_at(SHA, "o", "o/d", T, inclusive=False) is None   # neither before T
    assert active_ids(ds, T) == (["d-2"] if want else [])
    held: dict[str, dict | None] = {}
    for key, rec in ActiveFeed().process(ds):
        held[key] = rec
    assert [r["decision_id"] for r in held.values() if r] == (["d-2"] if want else [])


def test_event_time_orders_the_decisions_not_their_place_in_the_input() -> None:
    """A decision emitted late but made earlier does not override a newer one (the feed,
    which follows the stream, is the one place that takes the last emitted)."""
    ds = [dec("unblock", T + 10, n=1), dec("block", T, n=2)]
    assert timeline(*ds).action_at(SHA, "o", "o/d", T + 20, inclusive=False) is None
    assert active_ids(ds, T + 20) == []


def test_the_most_specific_decision_in_force_wins_and_a_lifted_one_gives_way() -> None:
    t = timeline(dec("block", T), dec("allow", T, scope="org", org="o1", n=1),
                 dec("unblock", T + 5, scope="org", org="o1", n=2))
    assert t.action_at(SHA, "o1", "o1/d", T, inclusive=True) == "allow"
    assert t.action_at(SHA, "o2", "o2/d", T, inclusive=True) == "block"
    assert t.action_at(SHA, "o1", "o1/d", T + 5, inclusive=True) == "block"   # org lifted
