"""`rapidloop active`: the decisions in force, the operator's and one tenant's view."""

from __future__ import annotations

import orjson
import pytest

from rapidloop.active import in_force
from rapidloop.cli import main
from rapidloop.schemas.timefmt import parse_ts

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
    got = in_force(decisions, parse_ts(at), org)
    assert [(d["sha256"], d["scope"]) for d in got] == want


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


def test_the_feed_keeps_one_record_per_target_and_tombstones_what_ends() -> None:
    """Renewed blocks are not lapsed by their old expiry; an unblock and a lapse each leave a
    tombstone; what the feed holds is what in_force says at its clock."""
    from rapidloop.active import in_force
    from rapidloop.operators.activefeed import ActiveFeed, target_key
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
    want = in_force(stream, parse_ts("2026-11-28T11:30:00Z"))
    assert sorted(held) == sorted(target_key(x) for x in want)
    assert len(feed) == 2   # a's renewed block and e's allow
