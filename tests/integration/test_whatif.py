"""`rapidloop replay --compare/--compare-config`, `--pace` and the ETA, over the real dataflow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest

from rapidloop.cli import CliError, main
from rapidloop.cli.replay import parse_pace
from rapidloop.flows.file_io import estimate_total

from . import scenario
from .test_replay import write

LOWER = "[policy]\nglobal_block_score = 0.6\nglobal_min_orgs = 2\nglobal_min_corroboration = 1.0\n"


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Path:
    world = tmp_path_factory.mktemp("whatif") / "day"
    assert main(["simulate", "--out", str(world), "--reports", "30000", "--seed", "1"]) == 0
    (world.parent / "lower.toml").write_text(LOWER)
    return world


def inputs(world: Path) -> list[str]:
    return ["--reports", str(world / "reports.jsonl.gz"),
            "--feedback", str(world / "feedback.jsonl.gz")]


def test_lower_global_threshold_gives_more_and_earlier_global_blocks(day: Path, capsys) -> None:
    lower = str(day.parent / "lower.toml")
    a = day.parent / "a.jsonl"
    capsys.readouterr()
    assert main(["replay", *inputs(day), "--output", str(a), "--quiet",
                 "--compare-config", lower, "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["b"]["label"].startswith(lower)
    assert diff["b"]["blocked_targets"]["global"] > diff["a"]["blocked_targets"]["global"]
    assert diff["blocks"]["gained"]["global"] > 0 and diff["blocks"]["lost"]["global"] == 0
    assert diff["earlier"]["global"]["count"] > 0
    assert diff["earlier"]["global"]["count"] > diff["later"]["global"]["count"]
    assert diff["sightings"]["blocked_only_in_b"] > diff["sightings"]["blocked_only_in_a"]
    top = diff["top_hashes"][0]
    assert top["sightings"] > 0 and top["orgs"] > 1
    assert a.read_bytes().count(b"\n") == diff["a"]["decisions"]

    # the other form: this run (B, --config) against saved decisions (A), as text
    assert main(["replay", *inputs(day), "--config", lower, "--quiet",
                 "--compare", str(a)]) == 0
    text = capsys.readouterr().out
    gained = diff["blocks"]["gained"]
    assert f"what-if: B = this run with {lower}  against  A = {a} (--compare)" in text
    assert (f"gained in B    global {gained['global']:,}, org {gained['org']:,}, "
            f"device {gained['device']:,}") in text
    assert "earlier in B   global:" in text
    assert top["sha256"] in text


def test_compare_arguments_are_checked(tmp_path: Path, capsys) -> None:
    r = write(tmp_path / "r.jsonl", scenario.reports())
    for args, msg in ((["--compare", str(tmp_path / "nope.jsonl")], "not found"),
                      (["--json"], "--json goes with"),
                      (["--compare", r, "--compare-config", r], "alternatives"),
                      (["--pace", "fast"], "--pace must look like 10x")):
        assert main(["replay", "--reports", r, "--output", str(tmp_path / "o.jsonl"),
                     *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_pace_follows_event_time_with_the_same_decisions(tmp_path: Path, capsys) -> None:
    r = write(tmp_path / "r.jsonl", scenario.reports())
    f = write(tmp_path / "f.jsonl.gz", scenario.feedback())
    runs = {}
    for pace in (None, "3000x"):   # the scenario spans 41 min of event time: 0.8 s at 3000x
        out = tmp_path / f"{pace}.jsonl"
        t = time.monotonic()
        assert main(["replay", "--reports", r, "--feedback", f, "--output", str(out),
                     "--progress", "0.2", *(["--pace", pace] if pace else [])]) == 0
        runs[pace] = (time.monotonic() - t,
                      sorted(orjson.loads(x)["decision_id"] for x in out.read_bytes().splitlines()))
    assert runs["3000x"][0] >= 41 * 60 / 3000 * 0.9
    assert runs["3000x"][1] == runs[None][1]
    err = capsys.readouterr().err
    assert "ETA" in err and "% of ~" in err


def test_parse_pace_and_estimated_total(day: Path) -> None:
    assert parse_pace(None) is None and parse_pace("max") is None
    assert parse_pace("10x") == 10 and parse_pace("0.5") == 0.5
    with pytest.raises(CliError):
        parse_pace("-3x")
    files = [(str(day / "reports.jsonl.gz"), "r"), (str(day / "feedback.jsonl.gz"), "f")]
    est = estimate_total(files)
    assert est is not None and 0.9 * 30_765 < est < 1.1 * 30_765
