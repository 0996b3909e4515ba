"""`rapidloop run` as a Bytewax cluster of processes decides what one process decides.

A simulated fleet's reports are pre-loaded once (module fixture) and read by:
one process; a local 2-process cluster (``--processes 2``); and two separate
commands forming one cluster (``-i 0 -a A -a B`` and ``-i 1 -a A -a B``, as
two machines or two pods would). Each writes its own decision topic, and the
decisions (by ``decision_id``, with their content but ``decided_at``) must be
the same set, each emitted once.

Only reports are fed, as in ``test_recovery``: live, the interleaving of the
reports and feedback topics is up to timing (a verdict could land before or
after a report from one run to the next), whereas reports alone decide
deterministically given each partition's order, and a file's reports all
share a partition (key = sha256). Which process reads which partition and
which worker holds which shard must not matter.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from rapidloop.cli import main
from rapidloop.flows.chunkstore import CHUNKS_DIR

from ..conftest import ROOT, create_topics, free_port
from .test_kafka_io import read_all

REPORTS = 20_000
SEED = 20261130
START = "2026-11-28T00:00:00Z"
SUMMARY = re.compile(r"^rapidloop run: ([\d,]+) messages in .*; (\d+) processes", re.M)


@dataclass
class World:
    """Pre-loaded input topics and the single-process run's output, shared by the tests."""

    broker: str
    reports: str
    feedback: str
    decisions: dict[str, dict[str, Any]]
    dead: set[tuple[Any, ...]]

    def env(self, tag: str, **extra: str) -> tuple[dict[str, str], str, str]:
        """Env pointing a job at the shared input and fresh output topics of its own."""
        dec, dlq = create_topics(self.broker, f"cluster-{tag}", ["dec", "dlq"])
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAPIDLOOP_")}
        env.update({"RAPIDLOOP_KAFKA__REPORTS_TOPIC": self.reports,
                    "RAPIDLOOP_KAFKA__FEEDBACK_TOPIC": self.feedback,
                    "RAPIDLOOP_KAFKA__DECISIONS_TOPIC": dec,
                    "RAPIDLOOP_KAFKA__DEADLETTER_TOPIC": dlq,
                    "RAPIDLOOP_RECOVERY__DIR": '""',
                    "RAPIDLOOP_STREAM__EPOCH_INTERVAL_S": "0.2"})
        env.update(extra)
        return env, dec, dlq


def _run(broker: str, env: dict[str, str], *args: str, timeout: float = 180.0
         ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--exit-at-end",
         "--progress", "0", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _decisions(broker: str, topic: str) -> dict[str, dict[str, Any]]:
    """decision_id → decision but decided_at; every decision exactly once."""
    out: dict[str, dict[str, Any]] = {}
    for _, key, value in read_all(broker, topic, timeout=30):
        d = orjson.loads(value)
        assert key == d["sha256"].encode()
        del d["decided_at"]
        assert d["decision_id"] not in out, f"decision {d['decision_id']} emitted twice"
        out[d["decision_id"]] = d
    return out


def _dead_letters(broker: str, topic: str) -> set[tuple[Any, ...]]:
    return {(d["topic"], d["partition"], d["offset"], d["error"])
            for d in (orjson.loads(v) for _, _, v in read_all(broker, topic, timeout=30))}


def _messages(stderr: str) -> int:
    m = re.findall(r"rapidloop run: ([\d,]+) messages in", stderr)
    assert m, stderr[-2000:]
    return int(m[-1].replace(",", ""))


def _same(world: World, dec: str, dlq: str) -> None:
    got = _decisions(world.broker, dec)
    want = world.decisions
    assert set(got) == set(want), (f"lost {len(set(want) - set(got))}, "
                                   f"new {len(set(got) - set(want))} decisions")
    assert got == want
    assert _dead_letters(world.broker, dlq) == world.dead


@pytest.fixture(scope="module")
def world(broker: str) -> Iterator[World]:
    rep, fb, sim_fb, dec, dlq = create_topics(
        broker, "cluster-input", ["reports", "feedback", "sim-feedback", "dec", "dlq"])
    w = World(broker, rep, fb, {}, set())
    env, dec, dlq = w.env("single")
    # The simulator's verdicts go to a topic the jobs do not read (see the docstring).
    sim = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "simulate", "--kafka", "--brokers", broker,
         "--rate", "0", "--reports", str(REPORTS), "--seed", str(SEED), "--start", START,
         "--progress", "0"],
        cwd=ROOT, env={**env, "RAPIDLOOP_KAFKA__FEEDBACK_TOPIC": sim_fb},
        capture_output=True, text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    single = _run(broker, env, "--no-recovery")
    assert _messages(single.stderr) == REPORTS
    w.decisions = _decisions(broker, dec)
    w.dead = _dead_letters(broker, dlq)
    assert len(w.decisions) > 100 and w.dead
    yield w


@pytest.mark.integration
def test_two_process_cluster_decides_what_one_process_decides(world: World) -> None:
    env, dec, dlq = world.env("two")
    done = _run(world.broker, env, "--processes", "2", "--no-recovery")
    err = done.stderr
    m = SUMMARY.search(err)
    assert m, err[-2000:]
    # Every message read exactly once, across the processes.
    assert int(m.group(1).replace(",", "")) == REPORTS and m.group(2) == "2"
    spread = re.findall(r"^rapidloop run: process (\d) of 2: read (.*) \(([\d,]+) messages\); "
                        r"shards (.*) \([\d,]+ files, ([\d,]+) events\)", err, re.M)
    assert sorted(s[0] for s in spread) == ["0", "1"], err[-2000:]
    assert sum(int(s[2].replace(",", "")) for s in spread) == REPORTS
    shards = [s for x in spread for s in x[3].split(", ")]
    assert sorted(shards) == [f"{i:03d}" for i in range(8)]      # each shard on one process
    # every event parsed was correlated on one shard; only dead letters were not
    events = [int(s[4].replace(",", "")) for s in spread]
    assert all(events) and REPORTS - len(world.dead) <= sum(events) <= REPORTS
    assert "[p0] " in err and "[p1] " in err                    # children's lines, prefixed
    _same(world, dec, dlq)


def _per_process(world: World, env: dict[str, str], addresses: list[str], tmp_path: Path
                 ) -> list[str]:
    """Run ``-i K -a ... -a ...`` as separate commands, one per process; their stderr."""
    a_args = [x for a in addresses for x in ("-a", a)]
    jobs = [subprocess.Popen(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", world.broker,
         "--exit-at-end", "--progress", "0", "-i", str(i), *a_args,
         "--recovery-dir", str(tmp_path / f"recovery-{i}")],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True) for i in range(len(addresses))]
    errs = []
    try:
        for job in jobs:
            errs.append(job.communicate(timeout=180)[1])
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    assert [j.returncode for j in jobs] == [0] * len(jobs), "\n".join(e[-2000:] for e in errs)
    return errs


@pytest.mark.integration
def test_one_command_per_process_forms_one_cluster(world: World, tmp_path: Path) -> None:
    env, dec, dlq = world.env("per-process", RAPIDLOOP_RECOVERY__PARTITIONS="3")
    addresses = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    errs = _per_process(world, env, addresses, tmp_path)
    assert sum(_messages(e) for e in errs) == REPORTS
    for i, e in enumerate(errs):
        assert f"process {i} of 2 ({addresses[i]})" in e
        assert f"recovery state created in {tmp_path / f'recovery-{i}'}" in e
    # Each process holds its own share of the recovery partitions (j mod 2 == i)...
    assert sorted(p.name for p in (tmp_path / "recovery-0").glob("part-*")) == [
        "part-0.sqlite3", "part-2.sqlite3"]
    assert sorted(p.name for p in (tmp_path / "recovery-1").glob("part-*")) == [
        "part-1.sqlite3"]
    _same(world, dec, dlq)
    # ...and together they resume the cluster: nothing is read twice past the snapshot.
    for i in range(2):   # each process wrote its shards' files and ids as chunks
        assert any((tmp_path / f"recovery-{i}" / CHUNKS_DIR).iterdir())
    again = _per_process(world, env, addresses, tmp_path)
    for i, e in enumerate(again):
        assert f"recovery state resumed from {tmp_path / f'recovery-{i}'}" in e
    assert sum(_messages(e) for e in again) < REPORTS
    _same(world, dec, dlq)   # what the resumed shards decided again is what they decided
    # A process given another's share, or a share under another process count, is refused.
    wrong = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", world.broker,
         "--exit-at-end", "-i", "1", "-a", addresses[0], "-a", addresses[1],
         "--recovery-dir", str(tmp_path / "recovery-0")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "holds the share of process 0" in wrong.stderr


@pytest.mark.integration
def test_cluster_resumes_from_its_shared_recovery_dir(world: World, tmp_path: Path) -> None:
    env, dec, _ = world.env("recovery")
    recovery = tmp_path / "recovery"
    first = _run(world.broker, env, "--processes", "2", "--recovery-dir", str(recovery))
    assert f"recovery state created in {recovery}" in first.stderr
    again = _run(world.broker, env, "--processes", "2", "--recovery-dir", str(recovery))
    assert f"recovery state resumed from {recovery}" in again.stderr
    assert _messages(again.stderr) < REPORTS, "the cluster did not resume from a snapshot"
    # Rescaled to one process, the same state resumes.
    one = _run(world.broker, env, "--recovery-dir", str(recovery))
    assert f"recovery state resumed from {recovery}" in one.stderr
    assert _messages(one.stderr) < REPORTS
    # At-least-once: a repeat after a resume is identical; the distinct set is the same.
    got: dict[str, dict[str, Any]] = {}
    for _, _, value in read_all(world.broker, dec, timeout=30):
        d = orjson.loads(value)
        del d["decided_at"]
        assert got.setdefault(d["decision_id"], d) == d
    assert got == world.decisions


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _start_tailing(world: World, tag: str) -> tuple[subprocess.Popen[str], list[int]]:
    """A tailing --processes 2 job, once both children have started their dataflow."""
    env, _, _ = world.env(tag)
    job = subprocess.Popen(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", world.broker,
         "--progress", "0", "--processes", "2", "--no-recovery"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    assert job.stderr is not None
    started = set()
    for line in job.stderr:
        m = re.match(r"\[p(\d)\] rapidloop run: process \d of 2", line)
        if m:
            started.add(m.group(1))
        if len(started) == 2:
            break
    assert len(started) == 2, f"the children did not start (exit {job.poll()})"
    kids = _children(job.pid)
    assert len(kids) == 2
    return job, kids


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


@pytest.mark.integration
def test_ctrl_c_stops_every_process(world: World) -> None:
    job, kids = _start_tailing(world, "ctrl-c")
    try:
        job.send_signal(signal.SIGINT)
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 130, err[-2000:]
    assert _gone(kids)
    m = SUMMARY.search(err)
    assert m and "(interrupted)" in err, err[-2000:]


@pytest.mark.integration
def test_a_dead_process_fails_the_cluster(world: World) -> None:
    job, kids = _start_tailing(world, "dead")
    try:
        os.kill(kids[1], signal.SIGKILL)
        _, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0
    assert re.search(r"failed \(exit -?\d+\); exit codes \[.*-9.*\]", err), err[-2000:]
    deadline = time.monotonic() + 10
    while not _gone(kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(kids)


@pytest.mark.parametrize("argv, word", [
    (["--processes", "0"], "--processes must be at least 1"),
    (["--processes", "2", "-i", "0", "-a", "h:1", "-a", "h:2"], "do not combine"),
    (["-i", "0"], "go together"),
    (["-a", "h:1", "-a", "h:2"], "go together"),
    (["-i", "2", "-a", "h:1;h:2"], "not an index"),
    (["-i", "0", "-a", "h:1,nope"], "not HOST:PORT"),
    (["-i", "0", "-a", "h:1", "-a", "h:1"], "appears twice"),
])
def test_bad_cluster_arguments_are_one_line(argv: list[str], word: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--brokers", "127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rapidloop run: ") and word in err[0], err
