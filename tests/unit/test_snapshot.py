"""Snapshots are versioned plain data: migrated when older, refused when foreign.

What recovery stores for each stateful step (``operators.snapshot``): envelopes
naming the state's kind and version, never a pickled rapidloop class; a
version-1 state goes through its registered migration; a recovery directory
from before (pickled operators, no ``state_format`` in its manifest) is
refused in one line.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from rapidloop.base.config import load_config
from rapidloop.flows.recovery import MANIFEST, RecoveryError, prepare
from rapidloop.operators import snapshot
from rapidloop.operators.classifiers import Ensemble
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.filestate import ROW, FileState
from rapidloop.operators.snapshot import (
    SnapshotError,
    decode,
    encode,
    envelope,
    load_objects,
    migrate,
    register,
)

CFG = load_config(env={})


def test_a_version_1_envelope_passes_through_its_migration() -> None:
    calls: list[object] = []

    def v1_to_v2(state: dict[str, int]) -> dict[str, int]:
        calls.append(state)
        return {"total": state["a"] + state["b"]}

    register("test-kind", 2, {1: v1_to_v2})
    old = encode([{"format": snapshot.FORMAT, "kind": "test-kind", "version": 1,
                   "state": {"a": 2, "b": 3}}])
    assert decode(old, "test-kind") == [{"total": 5}] and calls == [{"a": 2, "b": 3}]
    current = encode([envelope("test-kind", {"total": 7})])
    assert decode(current, "test-kind") == [{"total": 7}] and len(calls) == 1
    with pytest.raises(SnapshotError, match="version 3"):
        migrate("test-kind", 3, {})
    with pytest.raises(ValueError, match="no migration from 1"):
        register("test-kind", 2)


def test_a_version_1_decider_state_restores_with_no_provisional_blocks() -> None:
    """Version 2 of the decider's state ends each file's enforcement row with its
    provisional org blocks; a version-1 row (eight slots) gets none."""
    from rapidloop.operators.decide import Decider
    from rapidloop.operators.policy import Enforcement
    from rapidloop.operators.settings import Settings

    settings = Settings.from_config(CFG)
    state = Decider.from_config(CFG).snapshot()
    row = Enforcement(active={("org", "o1", None): ("block", None)},
                      scored={("org", "o1", None)}).row()
    old = {"format": snapshot.FORMAT, "kind": "decider", "version": 1,
           "state": {**state, "states": {"a" * 64: row[:-1]}}}
    (restored,) = decode(encode([old]), "decider")
    enf = Decider.from_snapshot(settings, restored).states["a" * 64]
    assert enf.provisional == set() and enf.scored == {("org", "o1", None)}


def test_a_snapshot_of_pickled_objects_is_refused_not_loaded() -> None:
    old = pickle.dumps(Correlator.from_config(CFG))   # what the previous rapidloop stored
    with pytest.raises(SnapshotError, match="not plain data"):
        decode(old, "correlator")
    with pytest.raises(SnapshotError, match="not a rapidloop-state envelope of 'decider'"):
        decode(encode([envelope("correlator", {})]), "decider")


def test_foreign_blobs_may_not_hide_a_rapidloop_class() -> None:
    ens = Ensemble.from_config(CFG)
    assert set(load_objects(ens.snapshot()["river"])[0]) == {"logreg", "tree"}
    with pytest.raises(SnapshotError, match="never pickled classes"):
        load_objects(pickle.dumps(ens.learners["nb"]))   # CutBernoulliNB is rapidloop's


def test_the_file_row_covers_every_slot() -> None:
    assert sorted((*ROW, "evidence", "orgs", "devices")) == sorted(FileState.__slots__)


def test_a_recovery_dir_from_the_pickled_format_is_refused_in_one_line(tmp_path: Path
                                                                       ) -> None:
    ids = {CFG.kafka.reports_topic: "id-r", CFG.kafka.feedback_topic: "id-f"}
    prepare(CFG, tmp_path / "rec", ids).close()
    path = tmp_path / "rec" / MANIFEST
    manifest = json.loads(path.read_text())
    assert manifest["state_format"] == snapshot.STATE_FORMAT
    del manifest["state_format"]   # as the previous rapidloop wrote it
    path.write_text(json.dumps(manifest))
    with pytest.raises(RecoveryError) as exc:
        prepare(CFG, tmp_path / "rec", ids)
    msg = str(exc.value)
    assert "\n" not in msg and "written by an older rapidloop" in msg, msg
    assert f"delete {tmp_path / 'rec'}" in msg and "previous version" in msg, msg
    path.write_text(json.dumps({**manifest, "state_format": snapshot.STATE_FORMAT + 1}))
    with pytest.raises(RecoveryError, match="written by a newer rapidloop"):
        prepare(CFG, tmp_path / "rec", ids)
    path.write_text(json.dumps({**manifest, "state_format": snapshot.STATE_FORMAT}))
    prepare(CFG, tmp_path / "rec", ids).close()   # the current format: resumes


def test_a_last_kind_may_be_optional() -> None:
    register("opt-a", 1)
    register("opt-b", 1)
    both = encode([envelope("opt-a", 1), envelope("opt-b", 2)])
    one = encode([envelope("opt-a", 1)])
    assert decode(both, "opt-a", "opt-b", optional=1) == [1, 2]
    assert decode(one, "opt-a", "opt-b", optional=1) == [1, None]
    with pytest.raises(SnapshotError):
        decode(one, "opt-a", "opt-b")
