"""A recovery directory whose snapshots cannot all be restored is refused in one line.

Each stateful step restores its snapshot inside Bytewax, where a failure is a
long traceback (a panic, when the bytes are not even Bytewax's pickle); so
``flows.recovery_plan.check_snapshots`` restores every stored snapshot before
the flow starts and names the first that fails: its directory, partition,
step and key, why, and what to do. The directory here is a real one: the flow
run by Bytewax with recovery over a small simulated world, then damaged the
ways a disk, a hand or another version could damage it.
"""

from __future__ import annotations

import contextlib
import pickle
import shutil
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.testing import run_main

from rapidloop.base.config import load_config
from rapidloop.flows import steps
from rapidloop.flows.dataflow import build_flow
from rapidloop.flows.file_io import JsonlSink
from rapidloop.flows.job import file_connectors
from rapidloop.flows.recovery import RecoveryError, prepare, stored_snapshots
from rapidloop.flows.recovery_plan import check_snapshots
from rapidloop.operators.snapshot import encode, loads_plain
from rapidloop.schemas.intake import FEEDBACK, REPORT
from rapidloop.tools.simulator import SimParams, Simulator, write_files

CFG = load_config(env={})
FLOW = "rapidloop"
EPOCH = timedelta(seconds=0.2)
SMALL = dict(reports=3000, orgs=8, devices_min=2, devices_max=50, benign_files=200,
             campaigns=3, hashes_per_campaign=2, duration_s=3600.0)

Damage = Callable[[bytes], bytes]


@pytest.fixture(scope="module")
def recovered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recovery directory the flow wrote over a whole small world (every step's state)."""
    work = tmp_path_factory.mktemp("recovery")
    write_files(Simulator(SimParams.defaults(seed=4, **SMALL)), work / "world")
    k = CFG.kafka
    kinds = {k.reports_topic: REPORT, k.feedback_topic: FEEDBACK}
    files = [(str(work / "world" / "reports.jsonl.gz"), k.reports_topic),
             (str(work / "world" / "feedback.jsonl.gz"), k.feedback_topic)]
    rec = prepare(CFG, work / "rec", dict.fromkeys(kinds))
    try:
        sink = JsonlSink(str(work / "decisions.jsonl"))
        flow = build_flow(CFG, file_connectors(CFG, files, kinds, sink), recovery=True)
        run_main(flow, epoch_interval=EPOCH, recovery_config=rec.config)
        sink.commit()
    finally:
        rec.close()
    return work / "rec"


def _damaged(source: Path, tmp_path: Path, step: str, damage: Damage) -> tuple[Path, str]:
    """A copy of ``source`` with the first snapshot of ``step`` damaged; (copy, its key)."""
    copy = tmp_path / "rec"
    shutil.copytree(source, copy)
    snap = next(s for s in stored_snapshots(copy) if s.step_id == f"{FLOW}.{step}")
    with contextlib.closing(sqlite3.connect(copy / snap.partition)) as db, db:
        db.execute("UPDATE snaps SET ser_change = ? WHERE step_id = ? AND state_key = ? "
                   "AND snap_epoch = ?", (damage(snap.blob), snap.step_id, snap.state_key,
                                         snap.epoch))
    return copy, snap.state_key


def _inner(damage: Damage) -> Damage:
    """``damage`` done to what the step returned, Bytewax's own pickle left whole."""
    return lambda blob: pickle.dumps(damage(loads_plain(blob)))


def _garbled(blob: bytes) -> bytes:
    middle = len(blob) // 2
    return blob[:middle] + bytes(b ^ 0xFF for b in blob[middle:middle + 64]) + blob[middle + 64:]


def _future_version(blob: bytes) -> bytes:
    envelopes = pickle.loads(blob)
    return encode([{**envelopes[0], "version": 99}, *envelopes[1:]])


def _truncated(blob: bytes) -> bytes:
    return blob[:len(blob) // 2]


def test_an_intact_directory_passes(recovered: Path) -> None:
    held = {s.step_id.removeprefix(f"{FLOW}.") for s in stored_snapshots(recovered)}
    assert {steps.CORRELATE, steps.DECIDE} <= held   # the check had something to restore
    check_snapshots(CFG, recovered, FLOW)


@pytest.mark.parametrize(("step", "damage", "why"), [
    (steps.CORRELATE, _inner(_garbled), "unreadable snapshot"),
    (steps.DECIDE, _inner(_future_version), "version 99 is not one this rapidloop reads"),
    (steps.DECIDE, _truncated, "pickle data was truncated"),
])
def test_a_snapshot_that_cannot_be_restored_is_named_in_one_line(
        recovered: Path, tmp_path: Path, step: str, damage: Damage, why: str) -> None:
    copy, key = _damaged(recovered, tmp_path, step, damage)
    with pytest.raises(RecoveryError) as exc:
        check_snapshots(CFG, copy, FLOW)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"recovery dir {copy}: the snapshot of step {step} for key {key} "), msg
    assert "part-0.sqlite3" in msg and why in msg, msg
    assert f"move {copy} aside" in msg and "--no-recovery" in msg, msg


def test_a_partition_that_is_not_a_database_is_named_in_one_line(recovered: Path,
                                                                 tmp_path: Path) -> None:
    copy = tmp_path / "rec"
    shutil.copytree(recovered, copy)
    (copy / "part-0.sqlite3").write_bytes(b"not a database, whatever it was" * 100)
    with pytest.raises(RecoveryError) as exc:
        check_snapshots(CFG, copy, FLOW)
    msg = str(exc.value)
    assert "\n" not in msg and "partition part-0.sqlite3 is not a readable" in msg, msg
    assert f"move {copy} aside" in msg, msg
