"""`rapidloop capture`, `replay --capture` and `replay --from-kafka` against the real broker.

A live run of the scenario is captured by time range (with messages before
and after the range that must stay out); replaying the capture and
replaying straight from Kafka over the same range give the same decisions
but ``decided_at``, and capturing twice gives byte-identical files.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from rapidloop.base.kafka import quiet
from rapidloop.cli import main
from rapidloop.schemas.timefmt import format_ts, parse_ts
from rapidloop.tools.capture import parse_time_arg, read_manifest

from ..conftest import ROOT, TopicMaker, free_port
from . import scenario
from .test_kafka_io import config_file, produce, read_all

NOISE = "d" * 63 + "4"


def noise(n: int, ts: str | None = None) -> bytes:
    return orjson.dumps({"report_id": f"noise-{n}", "ts": ts or scenario.ts(0, n),
                         "org_id": "org-9",
                         "device_id": "org-9-dev-1", "sha256": NOISE, "source": "antivirus",
                         "verdicts": {"static_ml": 0.01}})


def produce_at(brokers: str, topic: str, values: list[bytes], ts_ms: int) -> None:
    p = Producer(quiet({"bootstrap.servers": brokers, "linger.ms": 5}))
    for v in values:
        p.produce(topic, v, timestamp=ts_ms)
    assert p.flush(15) == 0


def replay(args: list[str], out: Path) -> tuple[list[dict], list[dict]]:
    dead = out.with_suffix(".dead.jsonl")
    assert main(["replay", *args, "--output", str(out), "--dead-letters", str(dead),
                 "--quiet"]) == 0
    decisions = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    dead_letters = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    for d in decisions:
        d.pop("decided_at")
    for d in dead_letters:
        d.pop("ts")
    return decisions, dead_letters


@pytest.mark.integration
def test_capture_of_a_live_run_replays_like_kafka(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rep, fb, dec, dlq = kafka_topics("reports", "feedback", "decisions", "deadletter")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": dec, "deadletter_topic": dlq})
    # An hour before the range: must not be captured. The live run reads it, first; its
    # event time comes before the scenario's too, so that whichever partitions the keyless
    # messages land in, the live run's input is in event-time order (a partition is read in
    # offset order: noise timed mid-scenario ahead of the scenario's own reports in the same
    # partition once made the live run decide otherwise, and this test's story fail).
    produce_at(broker, rep, [noise(i, f"2026-11-28T08:00:0{i}.000Z") for i in range(5)],
               int((time.time() - 3600) * 1000))
    since = format_ts(time.time() - 60)
    produce(broker, rep, [(None, v) for v in scenario.reports()])
    produce(broker, fb, [(None, v) for v in scenario.feedback()])
    live = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--exit-at-end", "--no-recovery", "--progress", "0"],
        cwd=ROOT, capture_output=True, timeout=120,
        env={**os.environ, "RAPIDLOOP_STREAM__EPOCH_INTERVAL_S": "0.2"})
    assert live.returncode == 0, live.stderr.decode()[-2000:]
    until = format_ts(time.time())
    time.sleep(0.05)
    produce(broker, rep, [(None, noise(10 + i)) for i in range(5)])   # after the range

    cap = tmp_path / "cap"
    common = ["--since", since, "--until", until, "--brokers", broker, "--config", cfg]
    assert main(["capture", *common, "--out", str(cap), "--decisions"]) == 0
    assert (f"captured {len(scenario.reports())} reports, {len(scenario.feedback())} feedback"
            in capsys.readouterr().err)
    manifest = read_manifest(cap)
    live_decisions = [orjson.loads(v) for _, _, v in read_all(broker, dec)]
    assert manifest["counts"] == {"reports": len(scenario.reports()),
                                  "feedback": len(scenario.feedback()),
                                  "decisions": len(live_decisions)}
    assert (manifest["since"], manifest["until"]) == (since, until)
    parts = manifest["topics"]["reports"]["partitions"]
    assert [p["partition"] for p in parts] == [0, 1, 2]
    assert sum(p["count"] for p in parts) == len(scenario.reports())
    assert any(p["ended_by"] == "message past until" for p in parts)
    for p in parts:
        if p["count"]:
            assert p["last_offset"] - p["first_offset"] + 1 >= p["count"]
            assert since <= p["first_ts"] <= p["last_ts"] <= until
    with gzip.open(cap / "reports.jsonl.gz", "rb") as f:
        captured = f.read()
    assert NOISE.encode() not in captured
    with gzip.open(cap / "decisions.jsonl.gz", "rb") as f:
        got = {orjson.loads(x)["decision_id"] for x in f.read().splitlines()}
    assert got == {d["decision_id"] for d in live_decisions}

    from_capture = replay(["--capture", str(cap)], tmp_path / "a.jsonl")
    from_kafka = replay(["--from-kafka", *common], tmp_path / "b.jsonl")
    scenario.check(from_capture[0])
    assert from_capture == from_kafka
    assert len(from_capture[1]) == 5 and {d["topic"] for d in from_capture[1]} == {rep, fb}
    # and the live run over this backlog decided as they do (its input was in event-time
    # order: see the noise above)
    assert ({d["decision_id"] for d in live_decisions}
            == {d["decision_id"] for d in from_capture[0]})

    # Capturing the same range again gives the same bytes, whatever the fetch order.
    again = tmp_path / "again"
    assert main(["capture", *common, "--out", str(again)]) == 0
    for name in ("reports.jsonl.gz", "feedback.jsonl.gz"):
        assert (again / name).read_bytes() == (cap / name).read_bytes()

    # The tenant's story of the campaign from the capture names no other tenant.
    capsys.readouterr()
    assert main(["explain", scenario.CAMPAIGN, "--from", str(cap), "--org", "org-2"]) == 0
    story = capsys.readouterr().out
    assert "org-2-dev-3" in story and "BLOCK   " in story, story
    for other in ("org-1", "org-3", "org-4", "org-5"):
        assert other not in story


@pytest.mark.integration
def test_capture_refuses_an_existing_capture_and_a_missing_topic(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rep, fb = kafka_topics("reports", "feedback")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": f"{rep}-never-created"})
    out = tmp_path / "cap"
    assert main(["capture", "--since", "1h", "--brokers", broker, "--config", cfg,
                 "--out", str(out)]) == 0
    assert read_manifest(out)["counts"] == {"reports": 0, "feedback": 0}
    capsys.readouterr()
    assert main(["capture", "--since", "1h", "--brokers", broker, "--config", cfg,
                 "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["capture", "--since", "1h", "--brokers", broker, "--config", cfg,
                 "--out", str(tmp_path / "other"), "--decisions"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not exist" in err[0]
    assert not (tmp_path / "other").exists()


# ---------------------------------------------------------------- no broker needed

@pytest.mark.parametrize("argv, expected", [
    (["capture", "--since", "yesterday-ish", "--out", "X"], "--since: not an RFC 3339 time"),
    (["capture", "--since", "1h", "--until", "2h", "--out", "X"], "is after --until"),
    (["capture", "--since", "2026-13-01T00:00:00Z", "--out", "X"], "--since"),
    (["replay", "--from-kafka", "--output", "O"], "--from-kafka needs --since"),
    (["replay", "--from-kafka", "--since", "nope", "--output", "O"], "--since"),
    (["replay", "--output", "O"], "give the input"),
    (["replay", "--capture", "C", "--reports", "R", "--output", "O"], "alternatives"),
    (["replay", "--capture", "C", "--since", "1h", "--output", "O"], "only go with"),
    (["replay", "--capture", "does-not-exist", "--output", "O"], "not found"),
    (["explain", "abc", "--from", "C"], "not a sha256"),
    (["explain", "a" * 64, "--from", "does-not-exist"], "not found"),
])
def test_bad_arguments_are_one_line(argv: list[str], expected: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    assert lines[0].startswith(f"rapidloop {argv[0]}: ")
    assert not (tmp_path / "X").exists() and not (tmp_path / "O").exists()


def test_unreachable_broker_is_one_line_and_fast(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rapidloop.cli", "capture", "--since", "1h",
                           "--out", str(tmp_path / "cap"), "--brokers",
                           f"127.0.0.1:{free_port()}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0], proc.stderr
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "cap").exists()


def test_time_arguments() -> None:
    now = parse_ts("2026-11-29T12:00:00Z")
    assert parse_time_arg("2h", now) == now - 7200
    assert parse_time_arg("30m", now) == now - 1800
    assert parse_time_arg("1d ago", now) == now - 86400
    assert parse_time_arg("1.5h", now) == now - 5400
    assert parse_time_arg("90s", now) == now - 90
    assert parse_time_arg("now", now) == now
    assert parse_time_arg("2026-11-29T13:00:00+02:00", now) == now - 3600
    for bad in ("", "2x", "-2h", "h", "2026-11-29", "tomorrow"):
        with pytest.raises(ValueError, match="not an RFC 3339 time"):
            parse_time_arg(bad, now)
