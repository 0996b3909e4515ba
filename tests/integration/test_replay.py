"""`rapidloop replay` runs the real dataflow over files: the story, dead letters, determinism."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson

from rapidloop.cli import main

from . import scenario


def write(path: Path, lines: list[bytes]) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return str(path)


def replay(tmp: Path, name: str, reports: str, feedback: str) -> tuple[list[dict], list[dict]]:
    out, dead = tmp / f"{name}.jsonl", tmp / f"{name}-dead.jsonl"
    assert main(["replay", "--reports", reports, "--feedback", feedback, "--output", str(out),
                 "--dead-letters", str(dead), "--quiet"]) == 0
    return ([orjson.loads(x) for x in out.read_bytes().splitlines()],
            [orjson.loads(x) for x in dead.read_bytes().splitlines()])


def test_story_dead_letters_and_identical_replays(tmp_path: Path) -> None:
    reports = write(tmp_path / "reports.jsonl.gz", scenario.reports())
    feedback = write(tmp_path / "feedback.jsonl", scenario.feedback())
    first, dead = replay(tmp_path, "a", reports, feedback)
    scenario.check(first)
    assert len(dead) == 5
    assert all(d["error"] and d["raw"] is not None and d["topic"] for d in dead)
    assert any("sha256" in d["error"] for d in dead)
    second, _ = replay(tmp_path, "b", reports, feedback)
    strip = [{k: v for k, v in d.items() if k != "decided_at"} for d in first]
    assert strip == [{k: v for k, v in d.items() if k != "decided_at"} for d in second]


def test_missing_input_is_one_clear_error(tmp_path: Path, capsys) -> None:
    code = main(["replay", "--reports", str(tmp_path / "nope.jsonl"),
                 "--output", str(tmp_path / "o.jsonl")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_simulated_day_same_decisions_with_any_workers_and_replicas(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """A simulated world: blocks at every scope, unblocks, dead letters; neither the workers
    nor the model replicas (one per worker by default; one per shard; three) matter."""
    world = tmp_path / "world"
    assert main(["simulate", "--out", str(world), "--reports", "30000", "--seed", "3"]) == 0
    args = ["--reports", str(world / "reports.jsonl.gz"),
            "--feedback", str(world / "feedback.jsonl.gz"), "--quiet"]
    runs = []
    for workers, replicas in ((1, 0), (2, 0), (1, 8), (2, 3)):
        monkeypatch.setenv("RAPIDLOOP_STREAM__REPLICAS", str(replicas))
        out = tmp_path / f"w{workers}-{replicas}.jsonl"
        dead = tmp_path / f"w{workers}-{replicas}-dead.jsonl"
        assert main(["replay", *args, "--output", str(out), "--dead-letters", str(dead),
                     "--workers", str(workers)]) == 0
        decisions = [orjson.loads(x) for x in out.read_bytes().splitlines()]
        for d in decisions:
            d.pop("decided_at")
        runs.append(sorted(decisions, key=lambda d: d["decision_id"]))
        assert dead.read_bytes().count(b"\n") > 0
    assert all(run == runs[0] for run in runs[1:])
    scopes = {(d["action"], d["scope"]) for d in runs[0]}
    assert {("block", "device"), ("block", "org"), ("block", "global")} <= scopes, scopes


def test_score_at_every_report_matches_the_dataflow(tmp_path: Path, capsys) -> None:
    """explain's per-report scores are what each report met in the dataflow."""
    from rapidloop.base.config import load_config
    from rapidloop.schemas.intake import FEEDBACK, REPORT
    from rapidloop.tools.modelwalk import score_history

    reports = write(tmp_path / "reports.jsonl", scenario.reports())
    feedback = write(tmp_path / "feedback.jsonl", scenario.feedback())
    decisions, _ = replay(tmp_path, "a", reports, feedback)
    history = score_history(load_config(env={}), [(reports, "r"), (feedback, "f")],
                            {"r": REPORT, "f": FEEDBACK}, scenario.CAMPAIGN)
    assert len(history) == 6                       # every distinct report, duplicate skipped
    by_ts = {h["ts"]: h for h in history}
    for d in decisions:
        if d["sha256"] == scenario.CAMPAIGN and d["action"] == "block":
            assert by_ts[d["event_ts"]]["score"] == d["score"]
            assert by_ts[d["event_ts"]]["classifiers"] == d["classifiers"]
    assert main(["explain", scenario.CAMPAIGN, "--from", str(tmp_path),
                 "--decisions", str(tmp_path / "a.jsonl"), "--no-timeline"]) == 0
    out = capsys.readouterr().out
    assert "Scores at the file's reports (6;" in out
