"""The whole loop, live: `rapidloop run` against the real broker.

Reports go in first; once the campaign is blocked globally the verdicts
follow, as they would minutes later in a real fleet. The story and its
expected decisions are in ``scenario.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from rapidloop.schemas.timefmt import format_ts, parse_ts

from ..conftest import ROOT, TopicMaker
from . import scenario
from .test_kafka_io import config_file, produce, read_all

pytestmark = pytest.mark.integration


def keyed(values: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    """Contract keys (sha256): one file's reports share a partition, so their order holds."""
    out = []
    for v in values:
        try:
            key = orjson.loads(v)["sha256"].encode()
        except Exception:
            key = None
        out.append((key, v))
    return out


def wait_for(brokers: str, topic: str, pred, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = [orjson.loads(v) for _, _, v in read_all(brokers, topic)]
        if pred(got):
            return got
        assert time.monotonic() < deadline, f"timed out; {topic} holds {got}"
        time.sleep(0.5)


def test_live_loop_blocks_unblocks_allows_and_dead_letters(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    rep, fb, dec, dlq = kafka_topics("reports", "feedback", "decisions", "deadletter")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": dec, "deadletter_topic": dlq})
    job = subprocess.Popen(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--progress", "0"], cwd=ROOT, stderr=subprocess.PIPE,
        env={**os.environ, "RAPIDLOOP_STREAM__EPOCH_INTERVAL_S": "0.2"})
    try:
        # the history first (reports, then their verdicts), so the models are past their
        # cold start when the story begins: live topics are read in parallel, not merged
        produce(broker, rep, keyed(scenario.warm_reports()))
        wait_for(broker, dec, lambda ds: sum(
            scenario.is_warm(d["sha256"]) and d["scope"] == "org" for d in ds) >= scenario.WARM)
        produce(broker, fb, keyed(scenario.warm_feedback()))
        wait_for(broker, dec, lambda ds: sum(
            scenario.is_warm(d["sha256"]) and d["scope"] == "global" for d in ds)
            >= scenario.WARM)
        time.sleep(2.0)   # the benign verdicts, which decide nothing, on the other partitions
        produce(broker, rep, keyed(scenario.reports(warm=False)))
        wait_for(broker, dec, lambda ds: any(
            d["sha256"] == scenario.CAMPAIGN and d["scope"] == "global" for d in ds)
            and any(d["sha256"] == scenario.TOOL for d in ds))
        produce(broker, fb, keyed(scenario.feedback(warm=False)))
        decisions = wait_for(broker, dec, lambda ds: sum(
            d["action"] in ("allow", "unblock") or d["sha256"] == scenario.SANDBOXED
            for d in ds) >= 3)
        scenario.check(decisions)
        keys = {k for _, k, _ in read_all(broker, dec)}
        assert keys == {d["sha256"].encode() for d in decisions}   # message key = sha256

        dead = wait_for(broker, dlq, lambda ds: len(ds) >= 5)
        assert len(dead) == 5
        assert {d["topic"] for d in dead} == {rep, fb}
        assert all(d["error"] and d["offset"] is not None for d in dead)
        assert any("sha256" in d["error"] for d in dead)
        assert any("not valid UTF-8" in d["error"] for d in dead)
    finally:
        job.send_signal(signal.SIGINT)
        try:
            job.wait(20)
        except subprocess.TimeoutExpired:
            job.kill()
            pytest.fail("rapidloop run did not stop on SIGINT")


def preloaded(broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> tuple[str, str]:
    """Fresh contract topics with the scenario's reports in them: (decisions topic, config)."""
    rep, fb, dec, dlq = kafka_topics("reports", "feedback", "decisions", "deadletter")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": dec, "deadletter_topic": dlq})
    produce(broker, rep, keyed(scenario.reports()))
    return dec, cfg


def test_run_exits_at_end_of_input(broker: str, kafka_topics: TopicMaker,
                                   tmp_path: Path) -> None:
    dec, cfg = preloaded(broker, kafka_topics, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--exit-at-end", "--progress", "0"], cwd=ROOT, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    decisions = [orjson.loads(v) for _, _, v in read_all(broker, dec)]
    assert any(d["sha256"] == scenario.CAMPAIGN and d["scope"] == "org" for d in decisions)


def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    from ..conftest import free_port
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", f"127.0.0.1:{free_port()}"],
        cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode != 0
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("rapidloop run: ") and "127.0.0.1" in lines[0], lines
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_single_process_stops_on_a_signal_with_its_summary(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM (a service manager, a pod) and Ctrl-C end a single-process run alike: the
    summary line, exit 0; the recovery state keeps the last closed epoch."""
    dec, cfg = preloaded(broker, kafka_topics, tmp_path)
    job = subprocess.Popen(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--progress", "0", "--recovery-dir", str(tmp_path / "recovery")],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(broker, dec, lambda ds: len(ds) > 0)
        job.send_signal(sig)
        _, err = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("rapidloop run: ") and last.endswith("(stopped by a signal)"), last


def test_active_from_kafka_equals_active_from_the_same_decisions_in_a_file(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    rep, fb, dec, dlq = kafka_topics("reports", "feedback", "decisions", "deadletter")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": dec, "deadletter_topic": dlq})

    def d(sha: str, scope: str, action: str, ts: str, org: str | None = None) -> bytes:
        return orjson.dumps({"decision_id": f"{sha}{scope}{org}{action}", "sha256": sha,
                             "action": action, "scope": scope, "org_id": org,
                             "device_id": None, "score": 0.9, "classifiers": {},
                             "reasons": ["r"], "model_version": "m", "event_ts": ts,
                             "decided_at": ts, "expires_at": None})

    a, b = "a" * 64, "b" * 64
    values = [d(a, "global", "block", "2026-11-28T09:00:00.000Z"),
              d(b, "org", "block", "2026-11-28T09:10:00.000Z", "o2"),
              d(a, "org", "allow", "2026-11-28T09:20:00.000Z", "o1"),
              d(b, "org", "unblock", "2026-11-28T09:30:00.000Z", "o2")]
    produce(broker, dec, keyed(values))
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(b"".join(v + b"\n" for v in values))
    for view in ([], ["--org", "o1"], ["--org", "o2"]):
        live = subprocess.run(
            [sys.executable, "-m", "rapidloop.cli", "active", "--from-kafka", "--brokers",
             broker, "--config", cfg, *view], cwd=ROOT, capture_output=True, timeout=60)
        filed = subprocess.run(
            [sys.executable, "-m", "rapidloop.cli", "active", "--decisions", str(path), *view],
            cwd=ROOT, capture_output=True, timeout=60)
        assert live.returncode == 0, live.stderr.decode()[-2000:]
        assert live.stdout == filed.stdout and live.stdout, view
    got = [orjson.loads(x) for x in live.stdout.splitlines()]   # o2's view: the global block
    assert [(x["sha256"], x["scope"]) for x in got] == [(a, "global")]


def test_the_active_feed_lapses_a_block_by_the_wall_clock_while_nothing_arrives(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    """stream.active_clock = "live" (run's default): an analyst's block that expires a few
    seconds after it was made gets its tombstone on time although no message follows it, so
    a late enforcement point reading the compacted feed never enforces a lapsed block."""
    rep, fb, dec, dlq, act = kafka_topics("reports", "feedback", "decisions", "deadletter",
                                          "active")
    cfg = config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb,
                                 "decisions_topic": dec, "deadletter_topic": dlq,
                                 "active_topic": act})
    sha = "c" * 64
    now = time.time()
    report = orjson.dumps({
        "report_id": "live-1", "ts": format_ts(now), "org_id": "org-a", "device_id": "d-1",
        "sha256": sha, "source": "edr",
        "file": {"name": "z.exe", "size": 4096, "type": "pe", "signed": False,
                 "signer": None, "path": "downloads"},
        "behaviors": [], "verdicts": {}, "parent_sha256": None})
    verdict = orjson.dumps({"feedback_id": "live-f-1", "ts": format_ts(now + 0.5),
                            "sha256": sha, "verdict": "malicious", "source": "analyst",
                            "org_id": None})
    produce(broker, rep, keyed([report]))
    produce(broker, fb, keyed([verdict]))
    job = subprocess.Popen(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", cfg,
         "--no-recovery", "--progress", "0"], cwd=ROOT, stderr=subprocess.PIPE,
        env={**os.environ, "RAPIDLOOP_STREAM__EPOCH_INTERVAL_S": "0.2",
             "RAPIDLOOP_POLICY__TRUSTED_BLOCK_TTL_S": "8"})
    try:
        blocks = wait_for(broker, dec, lambda ds: any(d["action"] == "block" for d in ds))
        block = next(d for d in blocks if d["action"] == "block")
        expires = parse_ts(block["expires_at"])
        assert expires <= now + 10
        deadline = time.monotonic() + 60
        while True:
            feed = [(k, v) for _, k, v in read_all(broker, act)]
            if feed and feed[-1][1] is None:
                break
            assert time.monotonic() < deadline, f"no tombstone; the feed holds {feed}"
            time.sleep(0.5)
        assert time.time() >= expires                # not before the block expired
        assert [v is None for _, v in feed] == [False, True]
        assert feed[0][0] == feed[1][0] == f"{sha}|global||".encode()
        assert len(read_all(broker, dec)) == len(blocks)   # no decision arrived meanwhile
        shown = subprocess.run(
            [sys.executable, "-m", "rapidloop.cli", "active", "--from-kafka", "--brokers",
             broker, "--config", cfg], cwd=ROOT, capture_output=True, timeout=60)
        assert shown.returncode == 0 and shown.stdout == b"", shown.stderr[-2000:]
    finally:
        job.send_signal(signal.SIGINT)
        try:
            job.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            job.kill()
