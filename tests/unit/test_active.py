"""`rapidloop active`: the decisions in force, the operator's and one tenant's view."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import orjson
import pytest

from rapidloop.cli import main
from rapidloop.schemas.enforcement import in_force
from rapidloop.schemas.timefmt import parse_ts
from rapidloop.schemas.wire import read_decision

T = "2026-11-28T10:00:00.000Z"


def dec(sha: str, scope: str, action: str, ts: str, org: str | None = None,
        device: str | None = None, expires: str | None = None) -> dict:
    return {"decision_id": f"{sha}{scope}{org}{device}{action}{ts}", "sha256": sha,
            "action": action, "scope": scope, "org_id": org, "device_id": device,
            "score": 0.9, "classifiers": {}, "reasons": ["r"], "model_version": "m",
            "event_ts": ts, "decided_at": ts, "expires_at": expires}


EDGES = [
    # a decision at exactly t is in force at t; an expiry at exactly t is not
    ([dec("a", "global", "block", T)], T, None, [("a", "global")]),
    ([dec("a", "global", "block", "2026-11-28T09:00:00.000Z", expires=T)], T, None, []),
    # the next decision on the same target ends it (unblock), or replaces it
    ([dec("a", "org", "block", "2026-11-28T09:00:00.000Z", org="o1"),
      dec("a", "org", "unblock", T, org="o1")], T, None, []),
    ([dec("a", "org", "block", "2026-11-28T09:00:00.000Z", org="o1"),
      dec("a", "org", "allow", T, org="o1")], T, None, [("a", "org")]),
    # a decision after t is not yet in force
    ([dec("a", "global", "block", "2026-11-28T11:00:00.000Z")], T, None, []),
    # a tenant's view: nothing of another tenant; its own org allow supersedes the global block
    ([dec("a", "global", "block", T), dec("a", "org", "block", T, org="o2"),
      dec("a", "device", "block", T, org="o2", device="o2/d")], T, "o1", [("a", "global")]),
    ([dec("a", "global", "block", T), dec("a", "org", "allow", T, org="o1")], T, "o1",
     [("a", "org")]),
    ([dec("a", "global", "block", T), dec("a", "device", "allow", T, org="o1",
                                          device="o1/d")], T, "o1",
     [("a", "global"), ("a", "device")]),
]


@pytest.mark.parametrize(("decisions", "at", "org", "want"), EDGES)
def test_in_force_edge_cases(decisions, at, org, want) -> None:
    got = in_force([read_decision(d) for d in decisions], parse_ts(at), org)
    assert [(d.sha256, d.scope) for d in got] == want


def test_the_command_prints_the_decisions_in_force(tmp_path, capsys) -> None:
    path = tmp_path / "decisions.jsonl"
    ds = [dec("a", "global", "block", "2026-11-28T09:00:00.000Z"),
          dec("b", "org", "block", "2026-11-28T09:30:00.000Z", org="o2"),
          dec("a", "org", "allow", T, org="o1")]
    path.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in ds))
    assert main(["active", "--decisions", str(path)]) == 0
    lines = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["sha256"], d["scope"], d["org_id"]) for d in lines] == [
        ("a", "global", None), ("a", "org", "o1"), ("b", "org", "o2")]
    assert lines[0] == ds[0]   # the contract decision as it was emitted
    assert main(["active", "--decisions", str(path), "--org", "o2",
                 "--at", "2026-11-28T09:45:00Z"]) == 0
    lines = [orjson.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(d["sha256"], d["scope"]) for d in lines] == [("a", "global"), ("b", "org")]
    assert main(["active", "--decisions", str(path), "--at", "yesterday"]) == 2
    assert "not an RFC 3339 time" in capsys.readouterr().err
    assert main(["active", "--decisions", str(tmp_path / "missing.jsonl")]) == 2
    capsys.readouterr()
    path.write_bytes(orjson.dumps(ds[0]) + b"\n[1, 2]\n")
    assert main(["active", "--decisions", str(path)]) == 2
    assert "line 2: not a decision: a JSON object is needed, got array" in capsys.readouterr().err


def test_the_feed_keeps_one_record_per_target_and_tombstones_what_ends() -> None:
    """Renewed blocks are not lapsed by their old expiry; an unblock and a lapse each leave a
    tombstone; what the feed holds is what in_force says at its clock."""
    from rapidloop.operators.activefeed import ActiveFeed, target_key
    from rapidloop.schemas.enforcement import in_force
    from rapidloop.schemas.timefmt import parse_ts

    def d(sha: str, scope: str, action: str, ts: str, exp: str | None = None,
          org: str | None = None) -> dict:
        return {"sha256": sha * 64, "scope": scope, "org_id": org, "device_id": None,
                "action": action, "event_ts": ts, "expires_at": exp}

    stream = [d("a", "org", "block", "2026-11-28T10:00:00Z", "2026-11-28T11:00:00Z", "o1"),
              d("a", "org", "block", "2026-11-28T10:30:00Z", "2026-11-28T12:00:00Z", "o1"),
              d("b", "global", "block", "2026-11-28T10:40:00Z"),
              d("b", "global", "unblock", "2026-11-28T10:50:00Z"),
              d("c", "org", "block", "2026-11-28T10:55:00Z", "2026-11-28T11:05:00Z", "o2"),
              d("e", "org", "allow", "2026-11-28T11:30:00Z", None, "o3")]
    feed, held = ActiveFeed(), {}
    records = feed.process(stream)
    for key, rec in records:
        if rec is None:
            held.pop(key, None)
        else:
            held[key] = rec
    assert [k[:1] for k, rec in records if rec is None] == ["b", "c"]   # lifted, lapsed
    want = in_force([read_decision(x) for x in stream], parse_ts("2026-11-28T11:30:00Z"))
    assert sorted(held) == sorted(target_key(x) for x in want)
    assert len(feed) == 2   # a's renewed block and e's allow


# A replayed simulated day (tests/unit/data/active_day: how it was made is in expected.json)
# and what `rapidloop active` and `rapidloop export` printed for it before the tools read
# decisions as typed records: the contract's JSON must come out byte for byte the same.
DAY = Path(__file__).parent / "data" / "active_day"
DAY_EXPECTED = json.loads((DAY / "expected.json").read_text())


@pytest.mark.parametrize("case", DAY_EXPECTED["outputs"],
                         ids=[" ".join(c["args"]) for c in DAY_EXPECTED["outputs"]])
def test_active_and_export_of_a_replayed_day_are_byte_identical_to_before(
        case: dict, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    command, *rest = case["args"]
    assert main([command, "--decisions", str(DAY / "decisions.jsonl.gz"), *rest]) == 0
    out = capsysbinary.readouterr().out
    assert out.count(b"\n") == case["lines"]
    assert hashlib.sha256(out).hexdigest() == case["sha256"]


def test_the_feed_over_a_replayed_day_holds_what_active_prints() -> None:
    from rapidloop.operators.activefeed import ActiveFeed, target_key
    from rapidloop.schemas.enforcement import latest_event_ts
    from rapidloop.tools.capture import iter_values

    objects = [orjson.loads(line) for line in iter_values(DAY / "decisions.jsonl.gz")]
    feed, held = ActiveFeed(), {}
    for obj in objects:
        for key, rec in feed.process([obj]):
            if rec is None:
                held.pop(key, None)
            else:
                assert rec is obj   # the flow sends the very message on
                held[key] = rec
    records = [read_decision(x) for x in objects]
    want = in_force(records, latest_event_ts(records))
    assert len(want) > 500 and held == {target_key(d): d.raw for d in want}


def test_a_live_clock_lapses_on_time_skips_stale_timers_and_never_admits_a_lapsed_backlog(
        ) -> None:
    from rapidloop.operators.activefeed import ActiveFeed

    def d(sha: str, ts: str, exp: str | None) -> dict:
        return {"sha256": sha * 64, "scope": "global", "org_id": None, "device_id": None,
                "action": "block", "event_ts": ts, "expires_at": exp}

    feed = ActiveFeed()
    feed.process([d("a", "2026-11-28T10:00:00Z", "2026-11-28T11:00:00Z"),
                  d("b", "2026-11-28T10:00:00Z", "2026-11-28T10:30:00Z"),
                  d("c", "2026-11-28T10:00:00Z", None)])
    feed.process([d("b", "2026-11-28T10:10:00Z", "2026-11-28T12:00:00Z")])   # b renewed
    assert feed.next_lapse() == parse_ts("2026-11-28T11:00:00Z")   # b's old timer is stale
    assert feed.advance(parse_ts("2026-11-28T10:59:59Z")) == []
    assert [k[:1] for k, v in feed.advance(parse_ts("2026-11-28T11:00:00Z"))] == ["a"]
    assert feed.advance(parse_ts("2026-11-28T10:00:00Z")) == []   # a clock never goes back
    assert feed.next_lapse() == parse_ts("2026-11-28T12:00:00Z")
    # a backlog read late: its block expired before it was read, so it never enters
    assert feed.process([d("e", "2026-11-28T09:00:00Z", "2026-11-28T10:45:00Z")]) == []
    assert [k[:1] for k, v in feed.advance(parse_ts("2026-11-28T12:00:00Z"))] == ["b"]
    assert feed.next_lapse() is None and len(feed) == 1          # c never lapses


def test_ticks_of_a_live_clock_keep_the_feed_equal_to_active_at_its_clock() -> None:
    """Over a replayed day with the wall clock ticking ahead of event time (a backlog read
    late), the feed is what in_force says at the feed's clock after every step."""
    import random

    from rapidloop.operators.activefeed import ActiveFeed, target_key
    from rapidloop.tools.capture import iter_values

    objects = [orjson.loads(line) for line in iter_values(DAY / "decisions.jsonl.gz")]
    records = [read_decision(x) for x in objects]
    rng = random.Random(5)
    feed, held = ActiveFeed(), {}
    for i, obj in enumerate(objects):
        out = feed.process([obj])
        if rng.random() < 0.01:                    # a tick: wall clock up to a day ahead
            out += feed.advance((records[i].event_ts or 0.0) + rng.uniform(0, 86400))
        for key, rec in out:
            if rec is None:
                held.pop(key, None)
            else:
                held[key] = rec
        if rng.random() < 0.02 or i == len(objects) - 1:
            want = in_force(records[:i + 1], feed.clock)
            assert held == {target_key(x): x.raw for x in want}, i
