"""Crash recovery of `rapidloop run`: kill -9 it, restart it, lose nothing, invent nothing.

A simulated fleet's reports and verdicts go to the input topics, pre-loaded:
two uninterrupted runs write their decisions to two topics, and a run with a
recovery directory, SIGKILLed at three seeded random points and restarted
each time, writes to a third. The job merges both topics by event time, so
the uninterrupted runs must agree exactly, and the crashed run must end with
the same distinct decisions (by ``decision_id``, with their content but
``decided_at``): nothing lost, nothing only a killed attempt emitted (a
phantom), a repeat (at-least-once) identical to the first copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from rapidloop.base.config import load_config
from rapidloop.base.kafka import quiet
from rapidloop.flows.chunkstore import CHUNKS_DIR
from rapidloop.flows.recovery import MANIFEST, RecoveryError, prepare, stored_snapshots
from rapidloop.flows.steps import correlate_chunk_names
from rapidloop.operators.activefeed import target_key
from rapidloop.schemas.enforcement import in_force, latest_event_ts
from rapidloop.schemas.wire import read_decision

from ..conftest import ROOT, TopicMaker
from .test_kafka_io import read_all

REPORTS = 60_000
SEED = 20261129
KILLS = 3
DAMAGED_REPORTS = 3000   # enough for every shard to hold a file, and a snapshot of it
START = "2026-11-28T00:00:00Z"


def _env(topics: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPIDLOOP_")}
    env.update({f"RAPIDLOOP_KAFKA__{k.upper()}_TOPIC": v for k, v in topics.items()})
    env["RAPIDLOOP_STREAM__EPOCH_INTERVAL_S"] = "0.2"   # many epochs, so many snapshots
    # Small fetches: read in arrival order (stream.input_order = "arrival"), two runs over
    # these topics then differ (1,107 vs 425 decisions, measured), so the merge is tested.
    env["RAPIDLOOP_KAFKA__CONSUME_BATCH"] = "200"
    env.update(extra)
    return env


def _job(broker: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--exit-at-end",
         *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)


def _finish(job: subprocess.Popen[str], timeout: float = 60.0) -> str:
    try:
        _, err = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        job.communicate()
        pytest.fail("rapidloop run did not finish")
    assert job.returncode == 0, err[-3000:]
    return err


def _messages_read(stderr: str) -> int:
    m = re.search(r"rapidloop run: ([\d,]+) messages in", stderr)
    assert m, stderr[-2000:]
    return int(m.group(1).replace(",", ""))


def _kill_after(job: subprocess.Popen[str], events: int) -> int:
    """SIGKILL the job once its progress line shows ``events`` read in this run."""
    assert job.stderr is not None
    seen = 0
    lines = []
    for line in job.stderr:
        lines.append(line)
        m = re.match(r"events ([\d,]+) ", line)
        if m:
            seen = int(m.group(1).replace(",", ""))
            if seen >= events:
                job.kill()
                job.wait(10)
                job.stderr.read()
                return seen
    job.wait(10)
    pytest.fail(f"the job ended (exit {job.returncode}) before reading {events} events, "
                f"so it could not be killed mid-run:\n{''.join(lines)[-2000:]}")


def _decisions(broker: str, topic: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """(messages, decision_id → decision but decided_at); repeats must be identical."""
    out: dict[str, dict[str, Any]] = {}
    n = 0
    for _, key, value in read_all(broker, topic, timeout=30):
        d = orjson.loads(value)
        assert key == d["sha256"].encode()
        del d["decided_at"]
        n += 1
        first = out.setdefault(d["decision_id"], d)
        assert first == d, f"decision {d['decision_id']} emitted again with other content"
    return n, out


def _last_per_target(broker: str, topic: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    """What an enforcement point ends with: the last decision per target, in topic order."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for _, _, value in read_all(broker, topic, timeout=30):
        d = orjson.loads(value)
        del d["decided_at"]
        out[(d["sha256"], d["scope"], d.get("org_id"), d.get("device_id"))] = d
    return out


def _dead_letters(broker: str, topic: str) -> set[tuple[Any, ...]]:
    return {(d["topic"], d["partition"], d["offset"], d["error"])
            for d in (orjson.loads(v) for _, _, v in read_all(broker, topic, timeout=30))}


@pytest.mark.integration
def test_kill_9_and_restart_loses_and_invents_no_decision(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    rep, fb, dec_a, dlq_a, dec_b, dlq_b, dec_c, dlq_c, act_b = kafka_topics(
        "reports", "feedback", "dec-a", "dlq-a", "dec-b", "dlq-b", "dec-c", "dlq-c", "act-b")
    sim = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "simulate", "--kafka", "--brokers", broker,
         "--rate", "0", "--reports", str(REPORTS), "--seed", str(SEED), "--start", START,
         "--progress", "0"],
        cwd=ROOT, env=_env({"reports": rep, "feedback": fb}), capture_output=True,
        text=True, timeout=60)
    assert sim.returncode == 0, sim.stderr

    plain = _finish(_job(broker, _env({"reports": rep, "feedback": fb, "decisions": dec_a,
                                       "deadletter": dlq_a}), "--no-recovery",
                         "--progress", "0"))
    total = _messages_read(plain)
    assert total > REPORTS                  # reports and verdicts
    again = _finish(_job(broker, _env({"reports": rep, "feedback": fb, "decisions": dec_c,
                                       "deadletter": dlq_c}), "--no-recovery",
                         "--progress", "0"))
    assert _messages_read(again) == total

    # the feed by event time: this day was lived in the past, and its blocks lapse by now
    env = _env({"reports": rep, "feedback": fb, "decisions": dec_b, "deadletter": dlq_b,
                "active": act_b}, RAPIDLOOP_STREAM__ACTIVE_CLOCK="event")
    recovery = tmp_path / "recovery"
    rng = random.Random(SEED)
    killed_at = []
    for i in range(KILLS):
        # Past the first few epochs of the run (so snapshots were taken) but early enough
        # to land mid-run however little the previous runs had snapshotted.
        job = _job(broker, env, "--recovery-dir", str(recovery), "--progress", "0.05")
        killed_at.append(_kill_after(job, int(total * rng.uniform(0.2, 0.3))))
        assert (recovery / MANIFEST).is_file(), f"no recovery state after kill {i + 1}"
    chunks = recovery / CHUNKS_DIR
    assert any(chunks.iterdir()), "the shards' files and ids were not written as chunks"
    orphan = chunks / "000-files-0123456789abcdef"   # as a crash mid-write may leave one
    orphan.write_bytes(b"left over")
    last = _finish(_job(broker, env, "--recovery-dir", str(recovery), "--progress", "0"))
    assert not orphan.exists(), "a chunk no snapshot names was not removed at the start"
    assert f"recovery state resumed from {recovery}" in last
    resumed_reads = _messages_read(last)
    assert resumed_reads < total, \
        f"the restart read {resumed_reads} messages: it did not resume from a snapshot"

    n_a, want = _decisions(broker, dec_a)
    n_c, twin = _decisions(broker, dec_c)
    assert n_a == len(want) > 200            # the uninterrupted run emits each decision once
    assert twin == want and n_c == n_a, "two uninterrupted runs over the same topics differ"
    assert _dead_letters(broker, dlq_c) == _dead_letters(broker, dlq_a)
    n_b, got = _decisions(broker, dec_b)
    assert set(got) == set(want), (f"lost {len(set(want) - set(got))}, "
                                   f"new {len(set(got) - set(want))} decisions")
    assert got == want
    assert _last_per_target(broker, dec_b) == _last_per_target(broker, dec_a)
    # the compacted feed, read from its start, is what `rapidloop active` says of the
    # uninterrupted run's decisions at their newest event time
    feed: dict[bytes | None, dict[str, Any]] = {}
    for _, key, value in read_all(broker, act_b, timeout=30):
        if value is None:
            feed.pop(key, None)
        else:
            d = orjson.loads(value)
            del d["decided_at"]
            feed[key] = d
    decisions = [orjson.loads(v) for _, _, v in read_all(broker, dec_a, timeout=30)]
    for d in decisions:
        del d["decided_at"]
    records = [read_decision(d) for d in decisions]
    expected = [d.raw for d in in_force(records, latest_event_ts(records) or 0.0)]

    def key(d: dict[str, Any]) -> str:
        return target_key(read_decision(d))

    assert sorted(feed.values(), key=key) == sorted(expected, key=key)
    assert len(expected) > 100
    assert _dead_letters(broker, dlq_b) == _dead_letters(broker, dlq_a)
    print(f"killed after {killed_at} events; the last restart read {resumed_reads} of "
          f"{total}; {len(want)} distinct decisions, {n_b - len(got)} repeated after resumes")


@pytest.mark.integration
def test_recovery_dir_of_other_input_is_refused_in_one_line(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    rep, fb, dec, dlq, other = kafka_topics("reports", "feedback", "dec", "dlq", "other")
    topics = {"reports": rep, "feedback": fb, "decisions": dec, "deadletter": dlq}
    recovery = tmp_path / "state" / "recovery"
    first = _finish(_job(broker, _env(topics), "--recovery-dir", str(recovery),
                         "--progress", "0"))
    assert f"recovery state created in {recovery}" in first
    manifest = json.loads((recovery / MANIFEST).read_text())
    assert manifest["reports_topic"] == rep and manifest["shards"] == 8
    assert manifest["replicas"] == 1   # one per worker of the first start
    # more workers later: the replicas stay those the state was made with
    again = _finish(_job(broker, _env(topics), "--recovery-dir", str(recovery),
                         "--progress", "0", "--workers", "2"))
    assert f"recovery state resumed from {recovery}" in again

    for env, word in ((_env({**topics, "reports": other}), other),
                      (_env(topics, RAPIDLOOP_STREAM__SHARDS="4"), "shards"),
                      (_env(topics, RAPIDLOOP_STREAM__REPLICAS="3"), "replicas 1 (now 3)")):
        job = _job(broker, env, "--recovery-dir", str(recovery))
        _, err = job.communicate(timeout=60)
        lines = err.strip().splitlines()
        assert job.returncode == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"rapidloop run: recovery dir {recovery} holds state of "
                                   f"other input") and word in lines[0], lines[0]
        assert f"delete {recovery}" in lines[0]

    # Same name, new topic (deleted and recreated, or a memory-only broker restarted).
    assert manifest["reports_topic_id"], "the broker reports topic ids; the manifest has none"
    admin = AdminClient(quiet({"bootstrap.servers": broker}))
    admin.delete_topics([rep], operation_timeout=10)[rep].result(timeout=15)
    for _ in range(50):
        if rep not in admin.list_topics(timeout=5).topics:
            break
        time.sleep(0.1)
    admin.create_topics([NewTopic(rep, num_partitions=3, replication_factor=1)],
                        operation_timeout=10)[rep].result(timeout=15)
    job = _job(broker, _env(topics), "--recovery-dir", str(recovery))
    _, err = job.communicate(timeout=60)
    assert job.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert f"topic {rep} as it was before it was recreated" in err, err


def _small_day(broker: str, kafka_topics: TopicMaker) -> dict[str, str]:
    """Topics holding a small simulated day, for the tests of damaged recovery state."""
    rep, fb, dec, dlq = kafka_topics("reports", "feedback", "dec", "dlq")
    topics = {"reports": rep, "feedback": fb, "decisions": dec, "deadletter": dlq}
    sim = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "simulate", "--kafka", "--brokers", broker,
         "--rate", "0", "--reports", str(DAMAGED_REPORTS), "--seed", str(SEED), "--start",
         START, "--progress", "0"],
        cwd=ROOT, env=_env(topics), capture_output=True, text=True, timeout=60)
    assert sim.returncode == 0, sim.stderr
    return topics


def _refusal(broker: str, topics: dict[str, str], recovery: Path, *how: str) -> str:
    """The one line a start over damaged recovery state is refused with (exit 2)."""
    job = _job(broker, _env(topics), "--recovery-dir", str(recovery), *how)
    _, err = job.communicate(timeout=60)
    # (a note on how partitions spread over workers may come first; nothing else)
    lines = [line for line in err.strip().splitlines()
             if not line.startswith("rapidloop run: note: ")]
    assert job.returncode == 2 and len(lines) == 1, err   # not even the start line
    assert "Traceback" not in err and "panicked" not in err, err
    return lines[0]


@pytest.mark.integration
def test_a_damaged_snapshot_is_refused_in_one_line_before_the_flow_starts(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    topics = _small_day(broker, kafka_topics)
    recovery = tmp_path / "recovery"
    # (the run also shows the job watching its snapshots: short epochs and a tiny
    # threshold, so that it says so in a run this small)
    first = _finish(_job(broker, _env(topics, RAPIDLOOP_STREAM__EPOCH_INTERVAL_S="0.05",
                                      RAPIDLOOP_STREAM__SNAPSHOT_WARN_SHARE="0.0001",
                                      RAPIDLOOP_STREAM__SNAPSHOT_WARN_WINDOW_S="0"),
                         "--recovery-dir", str(recovery), "--progress", "0.05"))
    warned = [line for line in first.splitlines() if "epoch-close snapshots took" in line]
    assert warned and warned[0].startswith("rapidloop run: "), first[-3000:]
    assert "tracked files, 0.05s epochs" in warned[0] and "stream.epoch_interval_s" in warned[0]
    assert any("| snapshots " in line for line in first.splitlines()), first[-3000:]
    snap = next(s for s in stored_snapshots(recovery) if s.step_id == "rapidloop.correlate")
    state = bytearray(pickle.loads(snap.blob))   # what the step returned, in Bytewax's pickle
    middle = len(state) // 2
    state[middle:middle + 64] = bytes(b ^ 0xFF for b in state[middle:middle + 64])
    with contextlib.closing(sqlite3.connect(recovery / snap.partition)) as db, db:
        db.execute("UPDATE snaps SET ser_change = ? WHERE step_id = ? AND state_key = ?",
                   (pickle.dumps(bytes(state)), snap.step_id, snap.state_key))

    for how in ([], ["--processes", "2"]):   # one process, and a local cluster's supervisor
        line = _refusal(broker, topics, recovery, *how)
        assert line.startswith(f"rapidloop run: recovery dir {recovery}: the snapshot of "
                               f"step correlate for key {snap.state_key} "), line
        assert snap.partition in line and f"move {recovery} aside" in line, line
        print(f"exit 2: {line}")


@pytest.mark.integration
def test_a_snapshot_whose_chunk_is_missing_is_refused_in_one_line(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    topics = _small_day(broker, kafka_topics)
    recovery = tmp_path / "recovery"
    _finish(_job(broker, _env(topics), "--recovery-dir", str(recovery), "--progress", "0"))
    snap = next(s for s in stored_snapshots(recovery) if s.step_id == "rapidloop.correlate")
    gone = sorted(correlate_chunk_names(pickle.loads(snap.blob)))[0]
    (recovery / CHUNKS_DIR / gone).unlink()
    line = _refusal(broker, topics, recovery)
    assert line.startswith(f"rapidloop run: recovery dir {recovery}: the snapshot of "
                           f"step correlate for key {snap.state_key} "), line
    assert f"chunk {gone} is missing" in line, line


def test_recovery_dir_is_locked_and_checked(tmp_path: Path) -> None:
    cfg = load_config(env={})
    ids = {cfg.kafka.reports_topic: "id-r", cfg.kafka.feedback_topic: "id-f"}
    first = prepare(cfg, tmp_path / "rec", ids)
    assert first.created and sorted(p.name for p in (tmp_path / "rec").iterdir()) == [
        "part-0.sqlite3", MANIFEST]
    with pytest.raises(RecoveryError, match="in use by another rapidloop run"):
        prepare(cfg, tmp_path / "rec", ids)
    first.close()
    again = prepare(cfg, tmp_path / "rec", ids)
    assert not again.created
    again.close()
    recreated = {**ids, cfg.kafka.reports_topic: "id-r2"}
    with pytest.raises(RecoveryError, match="before it was recreated"):
        prepare(cfg, tmp_path / "rec", recreated)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "part-0.sqlite3").write_bytes(b"")
    with pytest.raises(RecoveryError, match="was not made by rapidloop run"):
        prepare(cfg, tmp_path / "bare", ids)
    assert list(tmp_path.glob(".*.new")) == []
