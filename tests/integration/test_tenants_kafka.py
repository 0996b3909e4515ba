"""Tenants' own input topics, live against the real broker, and a capture of the run.

``[tenants] orgs = ["org-a", "org-b"]``: `rapidloop topics create` makes their
topics, `rapidloop run` reads them with the shared ones, and org-a's topics
carry an honest report, a report claiming to be org-b's and a sandbox
verdict. The honest report is decided as any report is; the other two are
dead letters saying why. A capture of the range replays to the same
decisions and the same dead letters: the capture keeps each tenant topic in
a file of its own, bound to its org.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from rapidloop.cli import main
from rapidloop.schemas.timefmt import format_ts
from rapidloop.tools.capture import read_manifest

from ..conftest import ROOT, TopicMaker
from . import scenario
from .test_capture import replay
from .test_kafka_io import config_file, produce, read_all
from .test_loop_kafka import keyed

pytestmark = pytest.mark.integration

HONEST = "f" * 63 + "6"
IMPOSTOR = "f" * 63 + "7"
UNREPORTED = "f" * 63 + "8"


def _report(n: int, sha: str, org: str) -> bytes:
    return orjson.dumps({
        "report_id": f"t-{n}", "ts": scenario.ts(40, n), "org_id": org,
        "device_id": f"{org}-dev-{n}", "sha256": sha, "source": "edr",
        "file": {"name": "y.exe", "size": 4096, "type": "pe", "signed": False, "signer": None,
                 "path": "downloads"},
        "behaviors": ["ransomware_encryption", "defense_evasion"],
        "verdicts": {"static_ml": 0.97}, "parent_sha256": None})


def test_tenant_topics_speak_for_their_org_live_and_in_a_capture(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rep, fb, dec, dlq = kafka_topics("reports", "feedback", "decisions", "deadletter")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": dec, "deadletter_topic": dlq,
                                 "active_topic": f"{rep}-active"})
    with open(cfg, "a") as f:
        f.write('[tenants]\norgs = ["org-a", "org-b"]\n')
    a_rep, a_fb = f"{rep}.tenant.org-a", f"{fb}.tenant.org-a"

    # The job refuses to start while a tenant's topics are missing; `topics create` makes them.
    missing = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--exit-at-end", "--no-recovery", "--progress", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and a_rep in missing.stderr, missing.stderr
    assert main(["topics", "create", "--brokers", broker, "--config", cfg]) == 0
    out = capsys.readouterr().out
    for t in (a_rep, a_fb, f"{rep}.tenant.org-b", f"{fb}.tenant.org-b"):
        assert f"created {t} (1 partition)" in out, out

    since = format_ts(time.time() - 60)
    produce(broker, rep, keyed(scenario.reports()))
    produce(broker, fb, keyed(scenario.feedback()))
    honest, impostor = _report(1, HONEST, "org-a"), _report(2, IMPOSTOR, "org-b")
    sandbox = orjson.dumps({"feedback_id": "t-f-1", "ts": scenario.ts(41, 30),
                            "sha256": UNREPORTED, "verdict": "malicious", "source": "sandbox",
                            "org_id": None})
    produce(broker, a_rep, keyed([honest, impostor]))
    produce(broker, a_fb, keyed([sandbox]))

    live = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--exit-at-end", "--no-recovery", "--progress", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "RAPIDLOOP_STREAM__EPOCH_INTERVAL_S": "0.2"})
    assert live.returncode == 0, live.stderr[-2000:]
    assert "and the own topics of 2 tenant(s)" in live.stderr
    assert "dead letters 7" in live.stderr   # the scenario's 5, and the two below
    until = format_ts(time.time())

    decisions = [orjson.loads(v) for _, _, v in read_all(broker, dec)]
    scenario.check(decisions)   # the shared topics' story is decided as ever
    mine = [d for d in decisions if d["sha256"] == HONEST]
    assert any(d["action"] == "block" and d["org_id"] == "org-a" for d in mine), mine
    assert not any(d["org_id"] not in (None, "org-a") for d in mine)
    assert not any(d["sha256"] in (IMPOSTOR, UNREPORTED) for d in decisions)

    dead = [orjson.loads(v) for _, _, v in read_all(broker, dlq)]
    tenant_dead = {d["error"]: d for d in dead if d["topic"] in (a_rep, a_fb)}
    assert set(tenant_dead) == {
        f"tenant_mismatch: org_id 'org-b' on topic {a_rep}, which speaks for org-a",
        f"tenant_trusted_verdict: a sandbox verdict on topic {a_fb}, which speaks for org-a: "
        "a tenant topic cannot carry sandbox or analyst verdicts"}
    assert {d["raw"].encode() for d in tenant_dead.values()} == {impostor, sandbox}
    assert all(d["partition"] == 0 and d["offset"] is not None for d in tenant_dead.values())

    # A capture keeps each tenant topic apart and replays to what the live job decided.
    cap = tmp_path / "cap"
    assert main(["capture", "--since", since, "--until", until, "--brokers", broker,
                 "--config", cfg, "--out", str(cap)]) == 0
    n_rep, n_fb = len(scenario.reports()) + 2, len(scenario.feedback()) + 1
    assert (f"captured {n_rep} reports, {n_fb} feedback (3 of the reports and feedback on the "
            "own topics of 2 tenant(s))") in capsys.readouterr().err
    manifest = read_manifest(cap)
    assert manifest["format"] == "rapidloop-capture/2"
    assert manifest["counts"] == {"reports": n_rep, "feedback": n_fb}
    assert [(e["org"], e["kind"], e["topic"], e["count"]) for e in manifest["tenants"]["topics"]] \
        == [("org-a", "reports", a_rep, 2), ("org-b", "reports", f"{rep}.tenant.org-b", 0),
            ("org-a", "feedback", a_fb, 1), ("org-b", "feedback", f"{fb}.tenant.org-b", 0)]

    replayed, replay_dead = replay(["--capture", str(cap)], tmp_path / "replayed.jsonl")
    for d in decisions:
        d.pop("decided_at")
    key = lambda d: d["decision_id"]  # noqa: E731
    assert sorted(replayed, key=key) == sorted(decisions, key=key)

    def what(ds: list[dict]) -> Counter:
        return Counter((d["error"], d["topic"], d["raw"]) for d in ds)

    assert what(replay_dead) == what(dead)

    # The story of a tenant's file comes from its own topic too; a claim the topic could not
    # carry is no part of any story.
    capsys.readouterr()
    assert main(["explain", HONEST, "--from", str(cap), "--org", "org-a",
                 "--no-report-scores"]) == 0
    assert "reports     1 from your organization" in capsys.readouterr().out
    assert main(["explain", IMPOSTOR, "--from", str(cap), "--no-report-scores"]) == 0
    assert "reports     0 from 0 org(s)" in capsys.readouterr().out


@pytest.mark.parametrize("how", [["--processes", "2"], ["--input-order", "arrival"]],
                         ids=["cluster", "arrival"])
def test_a_cluster_and_the_arrival_order_read_the_tenant_topics_too(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path, how: list[str]) -> None:
    rep, fb, dec, dlq, a_rep, a_fb = kafka_topics(
        "reports", "feedback", "decisions", "deadletter", "reports.tenant.org-a",
        "feedback.tenant.org-a")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": dec, "deadletter_topic": dlq,
                                 "active_topic": f"{rep}-active"})
    with open(cfg, "a") as f:
        f.write('[tenants]\norgs = ["org-a"]\n')
    env = {**os.environ, "RAPIDLOOP_STREAM__EPOCH_INTERVAL_S": "0.2"}
    argv = how
    if how[0] == "--input-order":
        env["RAPIDLOOP_STREAM__INPUT_ORDER"] = '"arrival"'
        argv = []
    produce(broker, rep, keyed([_report(3, scenario.CAMPAIGN, "org-z")]))
    produce(broker, a_rep, keyed([_report(1, HONEST, "org-a"), _report(2, IMPOSTOR, "org-b")]))
    produce(broker, a_fb, keyed([orjson.dumps({
        "feedback_id": "t-f-1", "ts": scenario.ts(41, 30), "sha256": UNREPORTED,
        "verdict": "malicious", "source": "sandbox", "org_id": None})]))
    done = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--exit-at-end", "--no-recovery", "--progress", "0", *argv],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    decisions = [orjson.loads(v) for _, _, v in read_all(broker, dec)]
    assert {d["org_id"] for d in decisions if d["sha256"] == scenario.CAMPAIGN} >= {"org-z"}
    assert any(d["sha256"] == HONEST and d["org_id"] == "org-a" for d in decisions), decisions
    assert not any(d["sha256"] in (IMPOSTOR, UNREPORTED) for d in decisions)
    dead = [orjson.loads(v) for _, _, v in read_all(broker, dlq)]
    assert sorted(d["error"].split(":")[0] for d in dead) == ["tenant_mismatch",
                                                             "tenant_trusted_verdict"]


def test_a_resume_takes_an_added_tenant_and_refuses_a_removed_one(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    """Onboarding a tenant keeps the recovery state (its topics are read from their
    beginning); dropping one is refused in one line, as other changed input is."""
    rep, fb, dec, dlq, a_rep, _ = kafka_topics(
        "reports", "feedback", "decisions", "deadletter", "reports.tenant.org-a",
        "feedback.tenant.org-a")
    base = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                  "decisions_topic": dec, "deadletter_topic": dlq,
                                  "active_topic": f"{rep}-active"})
    with_a = tmp_path / "with-a.toml"
    with_a.write_text(Path(base).read_text() + '[tenants]\norgs = ["org-a"]\n')
    produce(broker, rep, keyed([_report(3, scenario.CAMPAIGN, "org-z")]))
    produce(broker, a_rep, keyed([_report(1, HONEST, "org-a")]))   # waiting before onboarding

    def run(cfg: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config",
             str(cfg), "--exit-at-end", "--progress", "0", "--recovery-dir",
             str(tmp_path / "rec")],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
            env={**os.environ, "RAPIDLOOP_STREAM__EPOCH_INTERVAL_S": "0.2"})

    first = run(base)
    assert first.returncode == 0, first.stderr[-2000:]
    shas = {orjson.loads(v)["sha256"] for _, _, v in read_all(broker, dec)}
    assert scenario.CAMPAIGN in shas and HONEST not in shas
    second = run(with_a)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from" in second.stderr
    decisions = [orjson.loads(v) for _, _, v in read_all(broker, dec)]
    assert any(d["sha256"] == HONEST and d["org_id"] == "org-a" for d in decisions)
    third = run(base)
    assert third.returncode != 0
    lines = third.stderr.strip().splitlines()
    assert len(lines) == 1 and f"tenant topic(s) {a_rep}" in lines[0], third.stderr
