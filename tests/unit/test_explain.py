"""`rapidloop explain`: one file's story from small dict fixtures, and the tenant view.

Three tenants see the same file: acme (the viewer in the tenant view),
globex and initech. The tenant view must show acme's own reports and
decisions, global decisions and trusted verdicts, and never name another
tenant's org or devices, nor their file names, anywhere.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from rapidloop.cli import main
from rapidloop.schemas.timefmt import parse_ts
from rapidloop.schemas.wire import read_decision
from rapidloop.tools.explain import in_force, normalise_sha256, render, select

SHA = "e" * 63 + "5"
OTHER = "f" * 64


def report(n: int, org: str, device: str, minute: int, behaviors: list[str],
           name: str = "invoice.exe", sha: str = SHA) -> dict[str, Any]:
    return {"report_id": f"r-{n}", "ts": f"2026-11-28T10:{minute:02d}:00.000Z", "org_id": org,
            "device_id": device, "sha256": sha, "source": "edr",
            "file": {"name": name, "size": 4096, "type": "pe", "signed": False, "signer": None,
                     "path": "downloads"},
            "behaviors": behaviors, "verdicts": {"static_ml": 0.8 + n / 100},
            "parent_sha256": None}


def decision(n: int, action: str, scope: str, minute: int, org: str | None = None,
             device: str | None = None, reasons: list[str] | None = None,
             score: float = 0.9, expires: str | None = "2026-11-29T10:00:00.000Z"
             ) -> dict[str, Any]:
    return {"decision_id": f"d-{n}", "sha256": SHA, "action": action, "scope": scope,
            "org_id": org, "device_id": device, "score": score,
            "classifiers": {"prior": score, "logreg": 0.5 + n / 100, "tree": 0.5},
            "reasons": reasons or [f"reason {n}"], "model_version": "ens-0",
            "event_ts": f"2026-11-28T10:{minute:02d}:00.000Z",
            "decided_at": "2026-11-29T04:00:00.000Z",
            "expires_at": expires if action == "block" else None}


REPORTS = [
    report(1, "globex", "globex-srv-9", 1, ["ransomware_encryption"],
           name="C:/Users/globex-bob/payroll.exe"),
    report(2, "acme", "acme-laptop-1", 5, ["ransomware_encryption", "defense_evasion"]),
    report(3, "initech", "initech-pc-4", 8, ["process_injection"]),
    report(4, "acme", "acme-laptop-2", 12, ["defense_evasion"]),
    report(5, "acme", "acme-laptop-9", 13, [], sha=OTHER),           # another file
]
REPORTS.append(dict(REPORTS[1]))                                      # redelivered duplicate
FEEDBACK = [
    {"feedback_id": "f-1", "ts": "2026-11-28T10:20:00.000Z", "sha256": SHA.upper(),
     "verdict": "benign", "source": "org_report", "org_id": "globex"},
    {"feedback_id": "f-2", "ts": "2026-11-28T10:30:00.000Z", "sha256": SHA,
     "verdict": "malicious", "source": "sandbox", "org_id": None},
]
DECISIONS = [
    decision(1, "block", "device", 1, "globex", "globex-srv-9"),
    decision(2, "block", "org", 5, "acme", reasons=["reported by device acme-laptop-1 in "
                                                    "this org"]),
    # Against the contract, a reason naming another tenant: the tenant view must scrub it.
    decision(3, "block", "global", 8, reasons=["seen in 3 orgs within 1h (initech, globex)"],
             score=0.97, expires="2026-12-05T10:08:00.000Z"),
    decision(4, "allow", "org", 20, "globex", reasons=["reported benign by this org"]),
    decision(5, "unblock", "org", 30, "acme", reasons=["sandbox verdict malicious"]),
]


def story_text(org: str | None = None) -> str:
    story = select(SHA, REPORTS, FEEDBACK, DECISIONS)
    return render(story, org=org, source="fixtures")


def test_select_picks_one_file_in_any_case_from_dicts_or_lines() -> None:
    lines = [orjson.dumps(r) for r in REPORTS] + [b"{not json", b"null"]
    story = select(SHA.upper(), lines, FEEDBACK, DECISIONS)
    assert story.sha256 == SHA
    assert [r["report_id"] for r in story.reports] == ["r-1", "r-2", "r-2", "r-3", "r-4"]
    assert [f["feedback_id"] for f in story.feedback] == ["f-1", "f-2"]   # upper case too
    assert len(story.decisions) == 5
    untimed = select(SHA, [{**REPORTS[0], "ts": "yesterday"}])
    assert untimed.reports == [] and untimed.untimed == 1
    assert normalise_sha256(" " + SHA.upper()) == SHA and normalise_sha256("abc") is None
    with pytest.raises(ValueError, match="not a sha256"):
        select("xyz", [])


def test_operator_view_tells_the_whole_story_on_one_timeline() -> None:
    text = story_text()
    assert "4 from 3 org(s) on 4 device(s)" in text and "1 redelivered duplicate(s)" in text
    assert "globex: 1 report(s)" in text and "acme: 2 report(s), 2 device(s)" in text
    assert "ransomware_encryption ×3" in text or "defense_evasion ×2" in text
    assert "static_ml max" in text
    assert "benign from org_report (org globex)" in text and "malicious from sandbox" in text
    # every decision with its reasons, and the score table with every classifier
    for d in DECISIONS:
        assert d["reasons"][0] in text
    assert "prior" in text and "logreg" in text and "tree" in text
    assert "0.970" in text
    # in force at the end: the global block, globex's allow; acme's block was ended
    assert "in force    at 2026-11-28T10:30:00.000Z" in text
    force = next(line for line in text.splitlines() if "in force" in line)
    assert "block global" in force and "allow org globex" in force and "acme" not in force
    # one timeline in event time; a decision follows the input that triggered it
    timeline = text.split("Timeline")[1].splitlines()[1:]
    stamps = [line.split()[0] for line in timeline]
    assert stamps == sorted(stamps)
    i = next(k for k, line in enumerate(timeline) if "report   acme acme-laptop-1" in line)
    assert "DECISION BLOCK   org acme" in timeline[i + 2]   # after the duplicate
    assert "redelivered duplicate of r-2" in timeline[i + 1]
    assert OTHER not in text and "acme-laptop-9" not in text


def test_org_view_names_no_other_tenant() -> None:
    text = story_text("acme")
    for secret in ("globex", "initech", "globex-srv-9", "initech-pc-4", "payroll",
                   "globex-bob", "d-1", "d-4"):
        assert secret not in text, secret
    assert "acme-laptop-1" in text and "acme-laptop-2" in text
    assert "2 from your organization on 2 device(s); 2 from 2 other organization(s)" in text
    assert "BLOCK   global" in text and "seen in 3 orgs within 1h ((another org), " \
                                         "(another org))" in text
    assert "UNBLOCK org acme" in text and "malicious from sandbox" in text
    assert "1 org report(s) from other organizations" in text
    assert "3: block/global ×1, block/org ×1, unblock/org ×1; 2 for other organizations" in text
    assert "… other organizations: 1 report(s), 1 decision(s) (1 org(s))" in text
    # only what acme could see carries a score row
    table = text.split("Classifier scores")[1].split("Timeline")[0]
    assert len([line for line in table.splitlines() if line.startswith("  2026-")]) == 3


def test_org_view_of_a_tenant_that_never_saw_the_file() -> None:
    text = story_text("hooli")
    assert "0 from your organization on 0 device(s); 4 from 3 other organization(s)" in text
    assert "file        (no report)" in text
    for secret in ("globex", "initech", "acme"):
        assert secret not in text


def test_ids_sharing_a_prefix_are_scrubbed_whole() -> None:
    reports = [report(1, "org-1", "org-1-dev-1", 1, []), report(2, "org-10", "org-10-dev-1", 2,
                                                                 [])]
    dec = [decision(1, "block", "global", 2, reasons=["seen in org-10 and org-1"])]
    text = render(select(SHA, reports, [], dec), org="org-1")
    assert "org-10" not in text and "org-1-dev-1" in text
    assert "seen in (another org) and org-1" in text


def test_in_force_follows_the_contract() -> None:
    ds = [read_decision(d) for d in (
        decision(1, "block", "org", 1, "acme"), decision(2, "unblock", "org", 2, "acme"),
        decision(3, "block", "device", 3, "acme", "a-1", expires="2026-11-28T10:04:00.000Z"),
        decision(4, "allow", "org", 4, "globex"))]
    at = parse_ts("2026-11-28T10:05:00Z")
    assert [d.decision_id for d in in_force(ds, at)] == ["d-4"]
    at = parse_ts("2026-11-28T10:03:30Z")
    assert [d.decision_id for d in in_force(ds, at)] == ["d-3"]


def test_decisions_of_older_releases_and_odd_ones_are_shown_as_far_as_they_go() -> None:
    """Fields a release did not write yet (classifiers, model_version, decided_at,
    expires_at) are left out, a field of the wrong type shows as ``?``, and a decision
    without a readable time is counted, not shown."""
    old = {"decision_id": "d-old", "sha256": SHA, "action": "block", "scope": "org",
           "org_id": "acme", "device_id": None, "score": 0.9, "reasons": ["old reason"],
           "event_ts": "2026-11-28T10:02:00.000Z"}
    odd = {"sha256": SHA, "action": 7, "scope": "global", "score": "high", "reasons": "x",
           "classifiers": {"prior": "?"}, "event_ts": "2026-11-28T10:03:00Z",
           "expires_at": "later"}
    untimed = {"sha256": SHA, "action": "block", "scope": "global", "event_ts": None}
    story = select(SHA, [], [], [orjson.dumps(old), odd, untimed, b"{broken"])
    assert [d.decision_id for d in story.decisions] == ["d-old", None]
    assert story.untimed == 1
    text = render(story)
    assert "DECISION BLOCK   org acme  score 0.900  old reason" in text
    assert "DECISION ?       global  score ?  (no reason given)  (until later)" in text
    assert "in force    at 2026-11-28T10:03:00.000Z (the last event): block org acme" in text


def test_control_characters_never_reach_the_terminal() -> None:
    evil = report(1, "acme", "acme-\x1b[31mpc", 1, ["\x07bell"])
    text = render(select(SHA, [evil], [], []))
    assert "\x1b" not in text and "\x07" not in text


# ---------------------------------------------------------------- the command

def write_capture(directory: Path, decisions: bool) -> None:
    directory.mkdir()
    topics: dict[str, Any] = {}
    kinds = [("reports", REPORTS), ("feedback", FEEDBACK)]
    if decisions:
        kinds.append(("decisions", DECISIONS))
    for kind, items in kinds:
        with gzip.open(directory / f"{kind}.jsonl.gz", "wb") as f:
            f.write(b"".join(orjson.dumps(x) + b"\n" for x in items))
        topics[kind] = {"topic": f"rapidloop.{kind}", "file": f"{kind}.jsonl.gz",
                        "count": len(items), "partitions": []}
    (directory / "manifest.json").write_text(json.dumps({
        "format": "rapidloop-capture/1", "since": "2026-11-28T10:00:00.000Z",
        "until": "2026-11-28T11:00:00.000Z", "topics": topics,
        "counts": {k: v["count"] for k, v in topics.items()}}))


def test_command_from_a_capture_its_decisions_or_a_replay(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cap = tmp_path / "cap"
    write_capture(cap, decisions=True)
    assert main(["explain", SHA.upper(), "--from", str(cap)]) == 0
    out = capsys.readouterr().out
    assert "decisions captured from rapidloop.decisions (live)" in out
    assert "reason 1" in out and "report   globex globex-srv-9" in out
    assert main(["explain", SHA, "--from", str(cap), "--org", "acme", "--no-timeline"]) == 0
    out = capsys.readouterr().out
    assert "globex" not in out and "Timeline" not in out
    # without replaying the models for the score at each report (it used to say "not found")
    assert main(["explain", SHA, "--from", str(cap), "--no-report-scores"]) == 0
    out = capsys.readouterr().out
    assert "reason 1" in out and "Scores at the file's reports" not in out
    # a replay's output: decisions only
    replayed = tmp_path / "replayed.jsonl"
    replayed.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in DECISIONS[:2]))
    assert main(["explain", SHA, "--from", str(replayed)]) == 0
    out = capsys.readouterr().out
    assert "decisions only" in out and "2: block/device ×1, block/org ×1" in out
    assert main(["explain", SHA, "--from", str(cap), "--decisions", str(replayed)]) == 0
    assert f"decisions from {replayed}" in capsys.readouterr().out
    # no decisions in the capture: the replay is run over it now
    bare = tmp_path / "bare"
    write_capture(bare, decisions=False)
    assert main(["explain", SHA, "--from", str(bare)]) == 0
    out = capsys.readouterr().out
    assert "decisions from a replay of the capture, run now" in out
    assert "DECISION" in out


def test_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_capture = tmp_path / "empty"
    not_capture.mkdir()
    cases = [
        (["--from", str(not_capture)], "is not a capture"),
        (["--from", str(tmp_path / "nothing")], "not found"),
    ]
    cap = tmp_path / "cap"
    write_capture(cap, decisions=True)
    cases += [(["--from", str(cap), "--decisions", str(tmp_path / "nope.jsonl")], "not found"),
              (["--from", str(cap), "--decisions", "x", "--replay"], "alternatives")]
    for args, expected in cases:
        assert main(["explain", SHA, *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_trusted_verdict_shows_in_the_org_view_without_its_org() -> None:
    fb = [{"feedback_id": "f-9", "ts": "2026-11-28T10:31:00.000Z", "sha256": SHA,
           "verdict": "malicious", "source": "analyst", "org_id": "initech"}]
    text = render(select(SHA, REPORTS, fb, []), org="acme")
    assert "malicious from analyst at 2026-11-28T10:31:00.000Z" in text
    assert "initech" not in text and "(another org)" not in text
