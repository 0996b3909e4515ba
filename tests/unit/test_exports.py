"""Exports of the decisions in force: STIX 2.1 (checked by the OASIS validator), Defender
indicators, MISP and CSV, per view, and the CLI that writes them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from rapidloop.feeds.exports import defender, for_tools, misp, render, stix
from rapidloop.schemas.enforcement import in_force
from rapidloop.schemas.timefmt import parse_ts
from rapidloop.schemas.wire import DecisionRecord, read_decision

from ..conftest import ROOT

AT = "2026-11-28T12:00:00.000Z"


def _d(n: int, sha: str, action: str, scope: str, org: str | None = None,
       dev: str | None = None, ts: str = "2026-11-28T10:00:00.000Z",
       expires: str | None = "2026-12-28T10:00:00.000Z", score: float = 0.95) -> dict:
    return {"decision_id": f"d{n}", "sha256": sha * 64, "action": action, "scope": scope,
            "org_id": org, "device_id": dev, "score": score, "reasons": [f"reason {n}"],
            "model_version": "ens-1", "event_ts": ts,
            "expires_at": expires if action == "block" else None, "decided_at": None}


DECISIONS = [
    _d(1, "a", "block", "global"),
    _d(2, "b", "block", "org", "org-1"),
    _d(3, "b", "block", "org", "org-2"),
    _d(4, "c", "block", "device", "org-1", "org-1/dev-1"),
    _d(5, "d", "allow", "org", "org-1"),
    _d(6, "e", "block", "global"),
    _d(7, "e", "unblock", "global", ts="2026-11-28T11:00:00.000Z"),
    _d(8, "f", "block", "global", expires="2026-11-28T11:30:00.000Z"),
    _d(9, "a", "allow", "org", "org-2"),
]


def _view(org: str | None) -> list[DecisionRecord]:
    return in_force([read_decision(d) for d in DECISIONS], parse_ts(AT), org)


def test_stix_bundle_validates_and_holds_one_indicator_per_global_block_in_force() -> None:
    from stix2validator import ValidationOptions, validate_string

    bundle = stix(for_tools(_view(None), tenant=False), AT)
    result = validate_string(json.dumps(bundle), ValidationOptions(strict=False))
    assert result.is_valid
    (ind,) = [o for o in bundle["objects"] if o["type"] == "indicator"]
    assert ind["pattern"] == f"[file:hashes.'SHA-256' = '{'a' * 64}']"
    assert (ind["valid_from"], ind["valid_until"], ind["confidence"]) == (
        "2026-11-28T10:00:00.000Z", "2026-12-28T10:00:00.000Z", 95)
    assert stix(for_tools(_view(None), False), AT) == bundle     # same input, same ids


def test_a_tenants_view_holds_its_own_decisions_and_no_other_tenants() -> None:
    tools = for_tools(_view("org-1"), tenant=True)
    assert [(d.sha256[0], d.scope, d.action) for d in tools] == [
        ("a", "global", "block"), ("b", "org", "block"), ("d", "org", "allow")]
    inds = defender(tools)
    assert [(i["indicatorValue"][0], i["action"]) for i in inds] == [
        ("a", "Block"), ("b", "Block"), ("d", "Allowed")]
    for i in inds:
        assert set(i) >= {"indicatorValue", "indicatorType", "action", "title", "description",
                          "expirationTime", "severity", "generateAlert",
                          "recommendedActions"}
        assert i["indicatorType"] == "FileSha256"
    assert "org-2" not in json.dumps(inds)
    # org-2 allowed file a for itself: its tools do not block a file it allowed
    assert [(d.sha256[0], d.action) for d in for_tools(_view("org-2"), True)] == [
        ("a", "allow"), ("b", "block")]


def test_misp_event_and_csv() -> None:
    event = misp(for_tools(_view("org-1"), True), AT[:10])["Event"]
    assert [a["value"][0] for a in event["Attribute"]] == ["a", "b"]
    assert all(a["type"] == "sha256" and a["to_ids"] for a in event["Attribute"])
    rows = list(csv.DictReader(io.StringIO(render("csv", _view(None), AT, False).decode())))
    assert {(r["sha256"][0], r["scope"], r["org_id"]) for r in rows} == {
        ("a", "global", ""), ("a", "org", "org-2"), ("b", "org", "org-1"),
        ("b", "org", "org-2"), ("c", "device", "org-1"), ("d", "org", "org-1")}


def test_export_cli_writes_the_whole_file_and_names_no_other_tenant(tmp_path: Path) -> None:
    src = tmp_path / "decisions.jsonl"
    src.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in DECISIONS))
    out = tmp_path / "org1.json"
    p = subprocess.run([sys.executable, "-m", "rapidloop.cli", "export", "--decisions",
                        str(src), "--org", "org-1", "--at", AT, "--format", "defender",
                        "--output", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("rapidloop export: 4 decision(s) in force (3 block(s))")
    assert "org-2" not in out.read_text()
    assert [i["indicatorValue"][0] for i in json.loads(out.read_text())] == ["a", "b", "d"]
    assert not list(tmp_path.glob(".org1.json.*"))     # no temporary left behind
    bad = subprocess.run([sys.executable, "-m", "rapidloop.cli", "export", "--decisions",
                          str(src), "--format", "stix", "--output",
                          str(tmp_path / "nope" / "x.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


@pytest.mark.parametrize("fmt", ["stix", "defender", "misp", "csv"])
def test_nothing_in_force_is_still_a_valid_file(fmt: str) -> None:
    data = render(fmt, [], AT, False)
    if fmt != "csv":
        json.loads(data)
