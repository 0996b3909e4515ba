"""Faults while the job runs, and hostile input end to end.

* The broker is paused (SIGSTOP) for 30 s in the middle of a run and resumed:
  the job waits it out and its decisions are exactly those of an undisturbed
  run. This test starts its own broker: the session broker is shared.
* A decision that cannot be delivered stops the job before its epoch is
  committed (Bytewax's side of this is checked on its own), with one clear
  line and a non-zero exit; the restart emits it: the broker is stopped for
  longer than the delivery timeout mid-run, and the union of the two runs'
  decisions is exactly an undisturbed run's.
* The broker is killed (SIGKILL) mid-run, and killed while the job is idle:
  either way the job stops within ``kafka.broker_timeout_s`` (plus one
  probe), with one line naming the cluster and exit 2.
* A decision the topic refuses by itself (too large) is dead-lettered with
  an "undeliverable" error and the run goes on, exiting 1 at the end.
* Thousands of malformed and adversarial lines mixed into a replay: it exits
  0, every bad line is a dead letter with a specific reason, and the good
  lines decide exactly what they decide alone.
* One tenant reporting a benign signed file from 500 devices with the worst
  behaviours and sensor verdicts blocks nothing for any other tenant.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from rapidloop.flows.kafka_io import DeliveryError, delivery_failure
from rapidloop.schemas.timefmt import format_ts, parse_ts

from ..conftest import ROOT, _start_tansu, _stop, create_topics, free_port
from . import scenario
from .test_kafka_io import produce, read_all
from .test_recovery import _dead_letters, _decisions, _env, _finish, _job, _messages_read

pytestmark = pytest.mark.integration

START = "2026-11-28T00:00:00Z"


# ------------------------------------------------------------------ broker paused

def _listening_addresses(pid: int) -> list[str]:
    """Local addresses of the TCP sockets process ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:   # 0A: LISTEN
                out.append(cols[1])
    return out


def _pause_after(job: subprocess.Popen[str], events: int, broker: subprocess.Popen[bytes],
                 seconds: float) -> tuple[int, list[str]]:
    """SIGSTOP the broker once the job has read ``events``; SIGCONT after ``seconds``."""
    assert job.stderr is not None
    lines: list[str] = []
    for line in job.stderr:
        lines.append(line)
        m = re.match(r"events ([\d,]+) ", line)
        if m and int(m.group(1).replace(",", "")) >= events:
            break
    else:
        pytest.fail(f"the job ended before reading {events} events:\n{''.join(lines)[-2000:]}")
    seen = int(m.group(1).replace(",", ""))
    os.kill(broker.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds / 2)
        assert job.poll() is None, "the job died while the broker was paused"
        listening = _listening_addresses(job.pid)
        time.sleep(seconds / 2)
        assert job.poll() is None, "the job died while the broker was paused"
    finally:
        os.kill(broker.pid, signal.SIGCONT)
    return seen, listening


def test_broker_paused_30s_mid_run_loses_no_decision(tmp_path: Path) -> None:
    port = free_port()
    broker = _start_tansu(port, tmp_path / "tansu.log")
    brokers = f"127.0.0.1:{port}"
    try:
        rep, fb, unused_fb, dec_a, dlq_a, dec_b, dlq_b = create_topics(
            brokers, "faults", ["reports", "feedback", "sim-feedback", "dec-a", "dlq-a",
                                "dec-b", "dlq-b"])
        n = 30_000
        sim = subprocess.run(
            [sys.executable, "-m", "rapidloop.cli", "simulate", "--kafka", "--brokers", brokers,
             "--rate", "0", "--reports", str(n), "--seed", "7", "--start", START,
             "--progress", "0"], cwd=ROOT, env=_env({"reports": rep, "feedback": unused_fb}),
            capture_output=True, text=True, timeout=60)
        assert sim.returncode == 0, sim.stderr
        _finish(_job(brokers, _env({"reports": rep, "feedback": fb, "decisions": dec_a,
                                    "deadletter": dlq_a}), "--no-recovery", "--progress", "0"))

        job = _job(brokers, _env({"reports": rep, "feedback": fb, "decisions": dec_b,
                                  "deadletter": dlq_b}),
                   "--recovery-dir", str(tmp_path / "recovery"), "--progress", "0.05")
        try:
            seen, listening = _pause_after(job, n // 4, broker, 30.0)
            err = _finish(job, timeout=120)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait(10)
        assert seen < n, "the pause came after the whole input was read"
        assert "messages in" in err
        # the job serves nothing: any listening socket is loopback only (there are none)
        assert all(a.startswith(("0100007F:", "00000000000000000000000001000000:"))
                   for a in listening), listening

        n_a, want = _decisions(brokers, dec_a)
        _, got = _decisions(brokers, dec_b)
        assert n_a == len(want) > 100
        assert set(got) == set(want), (f"lost {len(set(want) - set(got))}, "
                                       f"new {len(set(got) - set(want))} decisions")
        assert got == want
        dead_a = sorted(v for _, _, v in read_all(brokers, dlq_a))
        dead_b = sorted(v for _, _, v in read_all(brokers, dlq_b))
        assert len(dead_a) == len(dead_b) > 0
    finally:
        if broker.poll() is None:
            os.kill(broker.pid, signal.SIGCONT)
        _stop(broker)
        assert broker.poll() is not None


# ------------------------------------------------------------ undeliverable decisions

class _SnapshotSource(FixedPartitionedSource[int, int]):
    """0, 1, 2, ... N-1, one item per 10 ms; the resume state is the next number."""

    def __init__(self, n: int) -> None:
        self.n = n

    def list_parts(self) -> list[str]:
        return ["p0"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> StatefulSourcePartition[int, int]:
        n = self.n

        class Part(StatefulSourcePartition[int, int]):
            def __init__(self) -> None:
                self.i = resume_state or 0
                self.awake: datetime | None = None

            def next_batch(self) -> list[int]:
                if self.i >= n:
                    raise StopIteration
                self.i += 1
                self.awake = datetime.now(UTC) + timedelta(milliseconds=10)
                return [self.i - 1]

            def next_awake(self) -> datetime | None:
                return self.awake

            def snapshot(self) -> int:
                return self.i

        return Part()


class _FailOnceSink(DynamicSink[tuple[str, tuple[int, int]]]):
    """Records what it is given (with the epoch); raises DeliveryError once, on ``fail_at``."""

    def __init__(self, log: list[tuple[int, int, int]], fail_at: int | None) -> None:
        self.log = log
        self.fail_at = fail_at

    def build(self, step_id: str, worker_index: int, worker_count: int
              ) -> StatelessSinkPartition[tuple[str, tuple[int, int]]]:
        sink = self

        class Part(StatelessSinkPartition[tuple[str, tuple[int, int]]]):
            def write_batch(self, items: list[tuple[str, tuple[int, int]]]) -> None:
                for _, (i, total) in items:
                    if i == sink.fail_at:
                        sink.fail_at = None
                        raise DeliveryError(f"kafka sink out: {i} not delivered")
                    sink.log.append((i, total, sink.epochs[i]))

        return Part()

    epochs: ClassVar[dict[int, int]] = {}


def test_bytewax_does_not_commit_an_epoch_whose_sink_raised(tmp_path: Path) -> None:
    """What the Kafka sink relies on (Bytewax 0.21): ``write_batch`` raising stops the flow
    before the epoch is committed, and a resume emits that epoch again, from its start and
    from the state before it."""
    from bytewax.errors import BytewaxRuntimeError
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main

    def running_sum(total: int | None, x: int) -> tuple[int, tuple[int, int]]:
        total = (total or 0) + x
        return total, (x, total)

    def flow(sink: _FailOnceSink) -> Dataflow:
        df = Dataflow("epochs")
        nums = op.input("in", df, _SnapshotSource(60))
        sums = op.stateful_map("sum", op.key_on("k", nums, lambda _: "k"), running_sum)

        def note_epoch(step: str, item: tuple[str, tuple[int, int]], epoch: int,
                       worker: int) -> None:
            _FailOnceSink.epochs[item[1][0]] = epoch
        op.output("out", op.inspect_debug("epoch", sums, note_epoch), sink)
        return df

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    first: list[tuple[int, int, int]] = []
    with pytest.raises(BytewaxRuntimeError) as failed:
        cli_main(flow(_FailOnceSink(first, 33)), epoch_interval=timedelta(milliseconds=50),
                 recovery_config=recovery)
    assert str(delivery_failure(failed.value)) == "kafka sink out: 33 not delivered"
    failed_epoch = _FailOnceSink.epochs[33]
    assert first[-1][0] == 32 and [i for i, _, _ in first] == list(range(33))
    second: list[tuple[int, int, int]] = []
    cli_main(flow(_FailOnceSink(second, None)), epoch_interval=timedelta(milliseconds=50),
             recovery_config=recovery)
    # The second run starts at the start of an epoch, no later than the one that failed (the
    # one before it may not be committed yet either), from the state before that epoch.
    epoch_starts = {min(i for i, _, e in first if e == epoch) for _, _, epoch in first}
    start = second[0][0]
    assert start <= min((i for i, _, e in first if e == failed_epoch), default=33)
    assert start in epoch_starts | {33}
    assert [i for i, _, _ in second] == list(range(start, 60))
    assert {i: t for i, t, _ in first if i >= start} == {i: t for i, t, _ in second if i < 33}
    assert all(t == i * (i + 1) // 2 for i, t, _ in second)


def test_decision_too_large_for_the_topic_is_dead_lettered_and_the_run_goes_on(
        broker: str, tmp_path: Path) -> None:
    """Refused by the topic itself, it would be refused after every restart: stopping on it
    would stop protection for good. It is written to the dead-letter topic, loudly."""
    rep, fb, dec, dlq = create_topics(broker, "undeliverable",
                                      ["reports", "feedback", "decisions", "deadletter"])
    cfg = tmp_path / "rapidloop.toml"
    cfg.write_text("[limits]\nmax_string_len = 8000\n"
                   '[kafka.client]\n"message.max.bytes" = 4000\n')
    huge_device = "dev-" + "x" * 6000     # the decision's reason names the device
    lines = []
    for i, (org, device) in enumerate([("org-1", "dev-1"), ("org-2", huge_device),
                                       ("org-3", "dev-3")]):
        lines.append(orjson.dumps({
            "report_id": f"r{i}", "ts": f"2026-11-28T10:0{i}:00.000Z", "org_id": org,
            "device_id": device, "sha256": f"{i + 1:064x}",
            "file": {"name": "x.exe", "size": 1, "type": "pe", "signed": False,
                     "path": "downloads"},
            "behaviors": ["ransomware_encryption"], "verdicts": {"static_ml": 0.99}}))
    produce(broker, rep, [(None, v) for v in lines])
    done = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", broker, "--config", str(cfg),
         "--exit-at-end", "--no-recovery", "--progress", "0"], cwd=ROOT,
        # no feed of decisions in force here (a topic that does not exist): one dead letter
        env=_env({"reports": rep, "feedback": fb, "decisions": dec, "deadletter": dlq,
                  "active": f"{dec}-no-feed"}),
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.search(rf"1 message\(s\) refused by {re.escape(dec)} were written to "
                     rf"{re.escape(dlq)} instead: .*too large", done.stderr), done.stderr[-3000:]
    delivered = [orjson.loads(v) for _, _, v in read_all(broker, dec)]
    assert sorted(d["org_id"] for d in delivered) == ["org-1", "org-3"]
    [(_, key, value)] = read_all(broker, dlq)
    dead = orjson.loads(value)
    assert key == f"{2:064x}".encode() and dead["key"] == f"{2:064x}"
    assert dead["topic"] == dec and dead["partition"] is None and dead["offset"] is None
    assert dead["error"].startswith(f"undeliverable to {dec}: ") and "too large" in dead["error"]
    assert dead["raw"].startswith('{"decision_id":"') and "[truncated: " in dead["raw"]


# ------------------------------------------------------------------ broker killed

BROKER_TIMEOUT_S = 6.0


@pytest.mark.parametrize("when", ["mid-run", "idle"])
def test_a_dead_broker_stops_the_run_within_its_timeout(tmp_path: Path, when: str) -> None:
    port = free_port()
    broker = _start_tansu(port, tmp_path / "tansu.log")
    brokers = f"127.0.0.1:{port}"
    n = 30_000 if when == "mid-run" else 2_000
    try:
        rep, fb, dec, dlq = create_topics(brokers, "dead", ["reports", "feedback", "dec", "dlq"])
        sim = subprocess.run(
            [sys.executable, "-m", "rapidloop.cli", "simulate", "--kafka", "--brokers", brokers,
             "--rate", "0", "--reports", str(n), "--seed", "5", "--start", START,
             "--progress", "0"], cwd=ROOT, env=_env({"reports": rep, "feedback": fb}),
            capture_output=True, text=True, timeout=60)
        assert sim.returncode == 0, sim.stderr
        env = _env({"reports": rep, "feedback": fb, "decisions": dec, "deadletter": dlq},
                   RAPIDLOOP_KAFKA__BROKER_TIMEOUT_S=str(BROKER_TIMEOUT_S))
        job = subprocess.Popen(   # live: no --exit-at-end, so "idle" means waiting for input
            [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", brokers,
             "--no-recovery", "--progress", "0.2"], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        assert job.stderr is not None
        lines: list[str] = []
        want = n // 4 if when == "mid-run" else n
        for line in job.stderr:
            lines.append(line)
            m = re.match(r"events ([\d,]+) ", line)
            if m and int(m.group(1).replace(",", "")) >= want:
                break
        else:
            pytest.fail(f"the job ended before reading {want} events:\n{''.join(lines)[-2000:]}")
        if when == "idle":
            time.sleep(2.0)           # everything read and decided: nothing waits to go out
        broker.kill()
        broker.wait(10)
        t0 = time.monotonic()
        try:
            rest = job.communicate(timeout=BROKER_TIMEOUT_S + 60)[1]
        finally:
            if job.poll() is None:
                job.kill()
                job.wait(10)
        took = time.monotonic() - t0
        err = "".join(lines) + rest
        assert job.returncode == 2, err[-3000:]
        # the timeout, one probe interval to notice, and a few seconds of a loaded machine
        assert took < BROKER_TIMEOUT_S + 15, f"exited {took:.0f}s after the broker died"
        dead = [ln for ln in err.splitlines() if "has not answered" in ln]
        assert len(dead) == 1 and dead[0].startswith("rapidloop run: the Kafka cluster at "
                                                     f"{brokers} has not answered"), err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        waiting = [ln for ln in err.splitlines() if not re.match(r"events [\d,]+ ", ln)
                   and ln.strip() and ln not in dead]
        assert len(waiting) <= 12, "\n".join(waiting)
        print(f"{when}: exit 2 {took:.1f}s after the broker died; "
              f"{len(waiting)} other line(s) meanwhile")
    finally:
        _stop(broker)


def _committed_reads(recovery: Path) -> int:
    """Input offsets in the last snapshot the job could resume from (Bytewax's SQLite)."""
    db = recovery / "part-0.sqlite3"
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as c:
        try:
            rows = c.execute(
                "SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ? "
                "AND snap_epoch < (SELECT MAX(worker_frontier) FROM fronts WHERE ex_num = "
                "(SELECT MAX(ex_num) FROM exs))", ("rapidloop.input",)).fetchall()
        except sqlite3.OperationalError:   # tables not made yet, or busy
            return 0
    latest: dict[str, tuple[int, int]] = {}
    for key, epoch, blob in rows:   # the event-time merge: {"seq", "next": {part: offset}}
        if blob is not None and epoch >= latest.get(key, (-1, 0))[0]:
            state = pickle.loads(blob)
            latest[key] = (epoch, sum(max(0, o) for o in state["next"].values()))
    return sum(offset for _, offset in latest.values())


def _stop_on_delivery_failure(job: subprocess.Popen[str], recovery: Path, events: int,
                              broker: subprocess.Popen[bytes]) -> tuple[int, int, list[str]]:
    """SIGSTOP the broker once the job has read ``events`` and snapshotted some of them.

    SIGCONT once the job has given up on a delivery. Returns the events read and the input
    committed when the broker was stopped, and the job's stderr lines until then.
    """
    assert job.stderr is not None
    lines: list[str] = []
    seen = committed = 0
    stopped = False
    try:
        for line in job.stderr:
            lines.append(line)
            m = re.match(r"events ([\d,]+) ", line)
            if m and not stopped:
                seen = int(m.group(1).replace(",", ""))
                if seen >= events:
                    committed = _committed_reads(recovery)
                    if committed:
                        os.kill(broker.pid, signal.SIGSTOP)
                        stopped = True
            if "Stopping before this epoch is committed" in line:
                break
    finally:
        if stopped:
            os.kill(broker.pid, signal.SIGCONT)
    assert stopped, f"the job ended before it was stopped:\n{''.join(lines)[-2000:]}"
    return seen, committed, lines


def test_undeliverable_decisions_stop_the_run_and_the_restart_loses_none(
        tmp_path: Path) -> None:
    """The broker stops answering for longer than the delivery timeout and the retries.

    The job must not commit the epoch it could not deliver: it stops with one clear line
    naming the topic and the Kafka error, exits non-zero, and once the broker is back the
    same command (same recovery dir) emits what was missing, so the union of what both
    runs delivered is exactly the decisions of an undisturbed run.
    """
    port = free_port()
    broker = _start_tansu(port, tmp_path / "tansu.log")
    brokers = f"127.0.0.1:{port}"
    try:
        rep, fb, unused_fb, dec_a, dlq_a, dec_b, dlq_b = create_topics(
            brokers, "undelivered", ["reports", "feedback", "sim-feedback", "dec-a", "dlq-a",
                                     "dec-b", "dlq-b"])
        n = 30_000
        sim = subprocess.run(
            [sys.executable, "-m", "rapidloop.cli", "simulate", "--kafka", "--brokers", brokers,
             "--rate", "0", "--reports", str(n), "--seed", "11", "--start", START,
             "--progress", "0"], cwd=ROOT,
            # no malformed input: no dead letters, so the decisions are what fails to go out
            env=_env({"reports": rep, "feedback": unused_fb},
                     RAPIDLOOP_SIMULATE__MALFORMED_SHARE="0"),
            capture_output=True, text=True, timeout=60)
        assert sim.returncode == 0, sim.stderr
        _finish(_job(brokers, _env({"reports": rep, "feedback": fb, "decisions": dec_a,
                                    "deadletter": dlq_a}), "--no-recovery", "--progress", "0"))

        env = _env({"reports": rep, "feedback": fb, "decisions": dec_b, "deadletter": dlq_b})
        recovery = tmp_path / "recovery"
        # The fault: deliveries time out after 1 s (librdkafka's own retries included) and
        # are sent again once; the broker is stopped until the job has given up.
        impatient = tmp_path / "impatient.toml"
        impatient.write_text('[kafka]\ndelivery_retries = 1\n'
                             '[kafka.client]\n"message.timeout.ms" = 1000\n')
        job = _job(brokers, env, "--config", str(impatient), "--recovery-dir", str(recovery),
                   "--progress", "0.05")
        try:
            seen, committed, lines = _stop_on_delivery_failure(job, recovery, n // 5, broker)
            _, rest = job.communicate(timeout=120)
        finally:
            if job.poll() is None:
                job.kill()
                job.wait(10)
        err = "".join(lines) + rest
        assert job.returncode not in (0, None), err[-3000:]
        last = err.strip().splitlines()[-1]
        assert re.fullmatch(rf"rapidloop run: kafka sink {re.escape(dec_b)}: \d+ of \d+ "
                            r"message\(s\) not delivered after 2 attempt\(s\): .*timed out.*\. "
                            r"Stopping before this epoch is committed; .*", last), err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        _, want = _decisions(brokers, dec_a)
        _, before = _decisions(brokers, dec_b)
        assert set(before) < set(want), "the fault cost no decision: it tested nothing"

        again = _finish(_job(brokers, env, "--recovery-dir", str(recovery), "--progress", "0"),
                        timeout=120)
        assert f"recovery state resumed from {recovery}" in again
        assert _messages_read(again) <= n - committed, "the restart did not resume"

        n_a, want = _decisions(brokers, dec_a)
        n_b, got = _decisions(brokers, dec_b)
        assert n_a == len(want) > 100
        assert set(got) == set(want), (f"lost {len(set(want) - set(got))}, "
                                       f"new {len(set(got) - set(want))} decisions")
        assert got == want
        assert _dead_letters(brokers, dlq_b) == _dead_letters(brokers, dlq_a) == set()
        print(f"stopped the broker after {seen} events ({committed} committed); "
              f"{len(want) - len(before)} of {len(want)} decisions missing after the stop; "
              f"{n_b - len(got)} repeated; the restart read {_messages_read(again)}")
    finally:
        if broker.poll() is None:
            os.kill(broker.pid, signal.SIGCONT)
        _stop(broker)


# ----------------------------------------------------------- hostile input, replayed

def _bad_lines(rng: random.Random, times: list[str]) -> list[bytes]:
    """One bad line per entry of ``times`` (its ``ts`` where it has a readable one)."""
    good = next(r for r in map(orjson.loads, scenario.reports()[:-5])   # the story's first
                if r["sha256"] == scenario.CAMPAIGN)                      # campaign report
    out: list[bytes] = []
    n = len(times)
    kinds = ["type", "hash", "long", "array", "past", "future", "utf8", "json", "nan", "deep",
             "missing", "enum", "verdict", "size", "notobj"]
    for i in range(n):
        obj: dict[str, Any] = {**good, "report_id": f"bad-{i}", "ts": times[i]}
        kind = kinds[i % len(kinds)]
        if kind == "type":
            obj[rng.choice(["org_id", "device_id", "ts", "behaviors", "file"])] = rng.choice(
                [1, 2.5, None, True, [1]])
        elif kind == "hash":
            obj["sha256"] = "a" * rng.choice([0, 1, 63, 65, 128]) or "zz" * 32
        elif kind == "long":
            obj["org_id"] = "o" * rng.randrange(257, 60_000)
        elif kind == "array":
            obj["behaviors"] = ["persistence"] * rng.randrange(65, 3000)
        elif kind == "past":
            obj["ts"] = f"{rng.randrange(1, 2000):04d}-01-01T00:00:00Z"
        elif kind == "future":
            obj["ts"] = f"{rng.randrange(2100, 10_000):04d}-01-01T00:00:00Z"
        elif kind == "missing":
            del obj[rng.choice(["report_id", "ts", "org_id", "device_id", "sha256"])]
        elif kind == "enum":
            obj["file"] = {**obj["file"], "type": "exe"}
        elif kind == "verdict":
            obj["verdicts"] = {"static_ml": rng.choice([-0.1, 1.5, 1e300])}
        elif kind == "size":
            obj["file"] = {**obj["file"], "size": -rng.randrange(1, 10**6)}
        data = orjson.dumps(obj)
        if kind == "utf8":
            pos = rng.randrange(len(data))
            data = data[:pos] + b"\xc3\x28\xff" + data[pos:]
        elif kind == "json":
            data = data[: rng.randrange(1, len(data) - 1)]
        elif kind == "nan":
            data = data.replace(b"0.97", rng.choice([b"NaN", b"Infinity", b"1e999"]))
        elif kind == "deep":
            depth = rng.randrange(100, 3000)
            data = data[:-1] + b',"sha256":' + b"[" * depth + b"]" * depth + b"}"
        elif kind == "notobj":
            data = rng.choice([b"[]", b"42", b'"x"', b"null", b"true"])
        out.append(data)
    # a few megabyte values as well
    out += [orjson.dumps({**good, "report_id": f"big-{i}", "file": "f" * (1 << 20)})
            for i in range(3)]
    return out


def _replay(tmp_path: Path, reports: list[bytes], feedback: list[bytes], tag: str
            ) -> tuple[subprocess.CompletedProcess[str], list[dict], list[dict]]:
    rep, fb = tmp_path / f"{tag}-reports.jsonl", tmp_path / f"{tag}-feedback.jsonl"
    out, dead = tmp_path / f"{tag}-decisions.jsonl", tmp_path / f"{tag}-dead.jsonl"
    rep.write_bytes(b"\n".join(reports) + b"\n")
    fb.write_bytes(b"\n".join(feedback) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "replay", "--reports", str(rep), "--feedback",
         str(fb), "--output", str(out), "--dead-letters", str(dead)],
        cwd=ROOT, env=_env({}), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    decisions = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    dead_letters = [orjson.loads(x) for x in dead.read_bytes().splitlines()] \
        if dead.exists() else []
    return done, decisions, dead_letters


def _strip(ds: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "decided_at"} for d in ds]


def test_replay_of_hostile_input_dead_letters_each_bad_line(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    good_reports, good_fb = scenario.reports(), scenario.feedback()
    _, want, want_dead = _replay(tmp_path, good_reports, good_fb, "clean")

    # Scattered through the good ones, each with the time of the good line before it: replay
    # merges the two files by event time and expects each file in time order (as a capture
    # is). Far-future times go last; far-past ones anywhere (they sort first anyway).
    slots = sorted(rng.randrange(len(good_reports) + 1) for _ in range(3000))
    line_ts, last = [], START
    for line in good_reports:
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            last = orjson.loads(line)["ts"]   # not for the scenario's own malformed lines
        line_ts.append(last)
    times = [line_ts[max(0, i - 1)] for i in slots]
    bad = _bad_lines(rng, times)
    future: list[bytes] = []
    at_slot: dict[int, list[bytes]] = {}
    for slot, line in zip(slots, bad, strict=False):   # _bad_lines adds 3 big ones at the end
        if re.search(rb'"ts":"(2[1-9]|[3-9])', line):
            future.append(line)
        else:
            at_slot.setdefault(slot, []).append(line)
    mixed: list[bytes] = []
    for i, line in enumerate([*good_reports, None]):
        mixed += at_slot.get(i, [])
        if line is not None:
            mixed.append(line)
    mixed += bad[len(slots):] + future
    _, got, dead = _replay(tmp_path, mixed, good_fb, "hostile")

    # the good lines decide exactly as before (emission order may follow other batch cuts)
    assert sorted(_strip(got), key=lambda d: d["decision_id"]) == \
        sorted(_strip(want), key=lambda d: d["decision_id"])
    scenario.check(got)
    assert len(dead) == len(bad) + len(want_dead)
    for d in dead:
        assert d["error"] and d["offset"] is not None and d["topic"]
        assert not d["error"].startswith("internal error"), d["error"]
        assert len(d["raw"]) <= 65536 + 100
    topics = [d["topic"] for d in dead]
    reports_name = max(set(topics), key=topics.count)
    dead_lines = {d["offset"] for d in dead if d["topic"] == reports_name}
    bad_set = set(bad)
    bad_lines = {n for n, line in enumerate(mixed, 1) if line in bad_set}
    assert bad_lines <= dead_lines, sorted(bad_lines - dead_lines)[:10]


# ------------------------------------------------------------- poisoning, replayed

def test_one_tenant_500_devices_blocks_nothing_for_anyone_else(tmp_path: Path) -> None:
    sha = "5" * 64
    t0 = parse_ts("2026-11-28T08:00:00Z")

    def rep(i: int, org: str, dev: str, ts: float, evil: bool) -> bytes:
        return orjson.dumps({
            "report_id": f"{org}-{i}", "ts": format_ts(ts), "org_id": org, "device_id": dev,
            "sha256": sha, "source": "edr",
            "file": {"name": "vendor-updater.exe", "size": 2_000_000, "type": "pe",
                     "signed": True, "signer": "Contoso Ltd", "path": "program_files"},
            "behaviors": (["ransomware_encryption", "credential_dumping", "process_injection",
                           "lateral_movement", "c2_beacon"] if evil else []),
            "verdicts": {"static_ml": 0.99, "av_signature": 1.0} if evil else {}})

    lines = [rep(k, f"org-{k}", f"org-{k}-pc", t0 + 60 * k, False) for k in range(30)]
    lines += [rep(i, "org-evil", f"org-evil-dev-{i}", t0 + 3600 + i, True) for i in range(500)]
    lines += [rep(100 + k, f"org-{k}", f"org-{k}-pc2", t0 + 7200 + 60 * k, False)
              for k in range(30)]
    # a feedback stream the evil tenant controls as well: its own org reports only
    fb = [orjson.dumps({"feedback_id": f"fb-{i}", "ts": format_ts(t0 + 5000 + i),
                        "sha256": sha, "verdict": "malicious", "source": "org_report",
                        "org_id": "org-evil"}) for i in range(5)]
    _, decisions, dead = _replay(tmp_path, lines, fb, "poison")
    assert not dead
    elsewhere = [(d["action"], d["scope"], d["org_id"]) for d in decisions
                 if d["org_id"] != "org-evil"]
    assert elsewhere == []
    assert any(d["scope"] == "org" and d["org_id"] == "org-evil" for d in decisions)
