"""rapidloop.tools.whatif: the difference between two runs' decisions, as plain functions."""

from __future__ import annotations

import json

import orjson

from rapidloop.schemas.timefmt import format_ts
from rapidloop.tools import whatif

H1, H2, H3, H4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)
T0 = 1_764_316_800.0   # 2025-11-28T08:00:00Z


def dec(sha: str, action: str, scope: str, t: float, org: str | None = None,
        dev: str | None = None, expires: float | None = None) -> dict:
    return {"decision_id": f"{sha[:4]}-{action}-{scope}-{t}", "sha256": sha, "action": action,
            "scope": scope, "org_id": org, "device_id": dev, "score": 0.9,
            "classifiers": {}, "reasons": ["r"], "model_version": "m",
            "event_ts": format_ts(T0 + t), "decided_at": format_ts(T0),
            "expires_at": format_ts(T0 + expires) if expires is not None else None}


def rep(sha: str, t: float, org: str, dev: str, rid: str) -> dict:
    return {"report_id": rid, "ts": format_ts(T0 + t), "org_id": org, "device_id": dev,
            "sha256": sha}


# A: H1 org block then global block at 600; H3 device block; H4 unblocked at 900.
A = [dec(H1, "block", "org", 100, "o1"), dec(H1, "block", "global", 600),
     dec(H3, "block", "device", 50, "o3", "o3-d1"),
     dec(H4, "block", "global", 10), dec(H4, "unblock", "global", 900)]
# B (a lower global threshold): H1 global at 200 (earlier), H2 blocked globally (gained),
# H3's device block gone, H4's unblock later.
B = [dec(H1, "block", "org", 100, "o1"), dec(H1, "block", "global", 200),
     dec(H2, "block", "global", 300),
     dec(H4, "block", "global", 10), dec(H4, "unblock", "global", 1200)]
REPORTS = ([rep(H1, 100 + 50 * i, f"o{2 + i % 3}", f"d{i}", f"h1-{i}") for i in range(12)]
           + [rep(H2, 400 + i, "o9", "o9-d1", f"h2-{i}") for i in range(3)]
           + [rep(H3, 60, "o3", "o3-d1", "h3-0")])


def test_blocks_gained_lost_and_moved_by_scope() -> None:
    diff = whatif.compare(A, B, label_a="default", label_b="low.toml")
    assert diff["blocks"]["gained"] == {"global": 1, "org": 0, "device": 0}
    assert diff["blocks"]["lost"] == {"global": 0, "org": 0, "device": 1}
    assert diff["earlier"]["global"]["count"] == 1
    assert diff["earlier"]["global"]["median_s"] == 400
    assert diff["later"]["global"]["count"] == 0
    assert diff["unblocks"] == {"gained": {"global": 0, "org": 0, "device": 0},
                                "lost": {"global": 0, "org": 0, "device": 0},
                                "earlier": 0, "later": 1}
    kinds = {(c["sha256"], c["change"], c["scope"]) for c in diff["changes"]}
    assert kinds == {(H1, "block earlier", "global"), (H2, "block gained", "global"),
                     (H3, "block lost", "device"), (H4, "unblock later", "global")}
    json.dumps(diff)   # JSON-ready


def test_identical_runs_have_no_difference() -> None:
    diff = whatif.compare(A, list(A), REPORTS)
    assert diff["changes"] == [] and diff["top_hashes"] == []
    assert "(no difference)" in whatif.render(diff)


def test_ranked_by_sightings_whose_enforcement_differs() -> None:
    diff = whatif.compare(A, B, REPORTS)
    top = {h["sha256"]: h for h in diff["top_hashes"]}
    # H1: global block at 200 instead of 600; reports at 200..550 are newly covered, except
    # the org o1 ones (already blocked by the org block): none of the reporters is in o1.
    assert top[H1]["sightings_blocked_only_in_b"] == 8   # t = 200, 250, ..., 550
    assert top[H1]["sightings_blocked_only_in_a"] == 0
    assert top[H1]["orgs"] == 3
    assert top[H2]["sightings"] == 3 and top[H2]["orgs"] == 1
    assert top[H3]["sightings_blocked_only_in_a"] == 1
    assert top[H4]["sightings"] == 0   # no report between the two unblocks
    assert [h["sha256"] for h in diff["top_hashes"]][:3] == [H1, H2, H3]
    assert diff["sightings"] == {"blocked_only_in_b": 11, "blocked_only_in_a": 1}


def test_most_specific_active_decision_wins_and_blocks_expire() -> None:
    a = [dec(H1, "block", "global", 0), dec(H1, "allow", "org", 0, "o1")]
    b = [dec(H1, "block", "global", 0, expires=100)]
    reports = [rep(H1, 50, "o1", "d1", "r1"), rep(H1, 50, "o2", "d2", "r2"),
               rep(H1, 150, "o2", "d2", "r3"), rep(H1, 150, "o2", "d2", "r3")]  # r3 twice
    got = whatif.sightings_affected(H1, reports, whatif.load_decisions(a),
                                    whatif.load_decisions(b))
    # r1: allowed in A (org allow wins), blocked in B; r2 blocked in both;
    # r3: blocked in A, expired in B (counted once).
    assert got == {"sightings": 2, "sightings_blocked_only_in_b": 1,
                   "sightings_blocked_only_in_a": 1, "orgs": 2}


def test_a_sighting_is_covered_by_decisions_strictly_before_it() -> None:
    """The report that triggered a block is not protected by it; at its expiry it lapses."""
    a = whatif.load_decisions([dec(H1, "block", "global", 100, expires=200)])
    reports = [rep(H1, 100, "o1", "d1", "at-the-block"), rep(H1, 150, "o1", "d1", "during"),
               rep(H1, 200, "o1", "d1", "at-expiry")]
    got = whatif.sightings_affected(H1, reports, a, [])
    assert got["sightings_blocked_only_in_a"] == 1   # "during" only


def test_jsonl_lines_and_render() -> None:
    lines_a = [orjson.dumps(d) for d in A] + [b"", b"not json"]
    lines_b = [orjson.dumps(d) + b"\n" for d in B]
    diff = whatif.compare(lines_a, lines_b, [orjson.dumps(r) for r in REPORTS],
                          label_a="A.jsonl", label_b="low.toml")
    assert diff["a"]["decisions"] == len(A) and diff["b"]["decisions"] == len(B)
    text = whatif.render(diff)
    assert "what-if: B = low.toml  against  A = A.jsonl" in text
    assert "gained in B    global 1, org 0, device 0" in text
    assert "lost in B      global 0, org 0, device 1" in text
    assert "earlier in B   global: 1 target(s), median 6m40s, max 6m40s" in text
    assert "moved          0 earlier, 1 later" in text
    assert f"{H1}  8 sighting(s) in 3 org(s)" in text


def test_without_reports_ranked_by_changed_targets() -> None:
    diff = whatif.compare(A, B, top=2)
    assert not diff["sightings_ranked"] and diff["sightings"] is None
    assert diff["hashes_changed"] == 4 and len(diff["top_hashes"]) == 2
    assert "sighting" not in whatif.render(diff).split("Most consequential")[1].split("\n")[1]


def test_duration() -> None:
    assert [whatif.duration(s) for s in (None, 5, 60, 400, 3600 * 3 + 300, 86400 * 2 + 7200)] \
        == ["-", "5s", "1m", "6m40s", "3h05m", "2d02h"]
