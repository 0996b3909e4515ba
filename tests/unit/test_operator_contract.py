"""The contract every stateful operator keeps, checked the way River's ``check_estimator``
checks estimators: one test body, run against each operator.

1. **No engine inside**: nothing in ``operators/`` or ``schemas/`` imports Bytewax or
   Kafka, so the logic outlives the engine (the wiring is ``flows/``).
2. **Snapshot → restore → same output**: an operator snapshotted into the very bytes
   recovery stores (``flows.steps``: plain data in versioned envelopes, no pickled
   class) and restored from them, fed the rest of the stream, says exactly what the
   uninterrupted one says (recovery rests on it).
3. **Replicas do not matter**: sightings spread over several deciders by shard, verdicts
   taught to all of them (owned by one), give the decisions of a single decider.
4. **The flow itself**, built by ``flows.dataflow.build_flow`` and run by Bytewax's
   ``run_main`` / ``cluster_main`` over ``TestingSource`` and ``TestingSink`` (no Kafka, no
   files): the same decisions with 1 worker and 1 replica as with 2 workers and 3 replicas.
"""

from __future__ import annotations

import ast
import copy
import pickletools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rapidloop.base.config import Config, load_config
from rapidloop.cli import main
from rapidloop.flows import steps
from rapidloop.flows.file_io import merged_lines
from rapidloop.operators.activefeed import ActiveFeed
from rapidloop.operators.allowlist import AllowList
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.decide import Decider
from rapidloop.operators.settings import Settings
from rapidloop.operators.sharding import UnitAssembler, route, split_unit
from rapidloop.schemas.intake import FEEDBACK, REPORT, Intake
from rapidloop.schemas.model import Decision, RawMessage
from rapidloop.schemas.wire import Limits, WireParser

from .helpers import run_flow

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"reports": REPORT, "feedback": FEEDBACK}
BATCH = 400
ENGINES = ("bytewax", "confluent_kafka")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> list[list[RawMessage]]:
    """A small simulated day, as the source hands it on: batches in event-time order."""
    out = tmp_path_factory.mktemp("world")
    assert main(["simulate", "--out", str(out), "--seed", "5", "--reports", "8000",
                 "--orgs", "24"]) == 0
    msgs = list(merged_lines([(str(out / "reports.jsonl.gz"), "reports"),
                              (str(out / "feedback.jsonl.gz"), "feedback")]))
    return [msgs[i:i + BATCH] for i in range(0, len(msgs), BATCH)]


def _split(intake: Intake, batch: list[RawMessage], seq: int, shards: int) -> list[Any]:
    """A source batch as the flow's ``split`` step cuts it: one piece per shard."""
    unit = intake.parse(batch, 0.0, seq, "src")
    return [p for _, p in split_unit(unit.source, unit.unit, unit.seq, unit.events, shards,
                                     unit.arrived)]


def _row(d: Decision) -> tuple[Any, ...]:
    """A decision without its wall-clock stamp."""
    return (d.decision_id, d.sha256, d.action, d.scope, d.org_id, d.device_id, d.score,
            tuple(d.reasons), d.model_version, d.event_ts, d.expires_at)


# ---------------------------------------------------------------- 1. no engine inside

@pytest.mark.parametrize("package", ["operators", "schemas"])
def test_the_logic_imports_no_engine(package: str) -> None:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names
                      if n.split(".")[0] in ENGINES]
    assert not found, found


# ---------------------------------------------------------------- 2. snapshot, restore

class Pipeline:
    """Intake → correlator → decider for one shard, as ``flows.steps`` drives them."""

    def __init__(self, cfg: Config) -> None:
        self.intake = Intake(WireParser(Limits.from_config(cfg)), KINDS)
        self.correlator = Correlator.from_config(cfg)
        self.decider = Decider.from_config(cfg)

    def feed(self, batch: list[RawMessage]) -> list[tuple[Any, ...]]:
        unit = self.intake.parse(batch, 0.0)
        items, _ = self.correlator.process(list(enumerate(unit.events)), 0.0)
        return [_row(d) for d in self.decider.process([it for _, it in items], 0.0)]


CFG = load_config(env={})
SETTINGS = Settings.from_config(CFG)


def _no_class_inside(blob: bytes) -> bytes:
    """``blob``, once checked to name no class or function: plain data only (River's
    blob, nested as bytes, is opaque here and checked by its own loader)."""
    named = [arg for op, arg, _ in pickletools.genops(blob)
             if op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ")]
    assert not named, named
    return blob


def _restored_pipeline(c: Correlator, d: Decider) -> tuple[Correlator, Decider]:
    """Through the bytes of the correlate and decide steps' snapshots, as recovery does."""
    c2 = steps.restore_correlate(SETTINGS, _no_class_inside(steps.snapshot_correlate(c)))
    blob = _no_class_inside(steps.snapshot_decide(d, UnitAssembler()))
    return c2, steps.restore_decide(SETTINGS, AllowList(), blob)[0]


def _decisions_json(world: list[list[RawMessage]]) -> list[dict[str, Any]]:
    p = Pipeline(load_config(env={}))
    out = []
    for batch in world:
        unit = p.intake.parse(batch, 0.0)
        items, _ = p.correlator.process(list(enumerate(unit.events)), 0.0)
        for d in p.decider.process([it for _, it in items], 0.0):
            out.append({"sha256": d.sha256, "scope": d.scope, "org_id": d.org_id,
                        "device_id": d.device_id, "action": d.action,
                        "event_ts": d.event_ts, "expires_at": d.expires_at})
    return out


def _pipeline_run(world: list[list[RawMessage]], cut: int | None) -> list[tuple[Any, ...]]:
    p = Pipeline(load_config(env={}))
    out: list[tuple[Any, ...]] = []
    for i, batch in enumerate(world):
        if i == cut:   # what recovery does: the state as saved at an epoch's close
            p.correlator, p.decider = _restored_pipeline(p.correlator, p.decider)
        out += p.feed(batch)
    return out


def _feed_run(decisions: list[dict[str, Any]], cut: int | None) -> list[Any]:
    feed, out = ActiveFeed(), []
    for i, d in enumerate(decisions):
        if i == cut:
            feed = steps.restore_feed(_no_class_inside(steps.snapshot_feed(feed)))
        out += feed.process([d])
    return out


def _assembler_run(pieces: list[Any], cut: int | None) -> list[Any]:
    asm, out = UnitAssembler(), []
    for i, p in enumerate(pieces):
        if i == cut:
            blob = _no_class_inside(steps.snapshot_decide(Decider.from_config(CFG), asm))
            asm = steps.restore_decide(SETTINGS, AllowList(), blob)[1]
        out += [(u.source, u.seq, len(u.items)) for u in asm.add(copy.copy(p))]
    return out


def _sharded_run(world: list[list[RawMessage]], cut: int | None) -> list[tuple[Any, ...]]:
    """Every shard's correlator, 3 replicas' deciders and their assemblers, all restored
    at piece ``cut`` (mid-unit: the assemblers then hold pieces of sightings and verdicts)."""
    shards = int(CFG.stream.shards)
    intake = Intake(WireParser(Limits.from_config(CFG)), KINDS)
    keys = ["r0", "r1", "r2"]
    owner = [keys[s % len(keys)] for s in range(shards)]
    cors = [Correlator.from_config(CFG) for _ in range(shards)]
    deciders = {k: (Decider.from_config(CFG), UnitAssembler()) for k in keys}
    out: list[tuple[Any, ...]] = []
    n = 0
    for seq, batch in enumerate(world):
        for piece in _split(intake, batch, seq, shards):
            if n == cut:
                cors = [steps.restore_correlate(SETTINGS, steps.snapshot_correlate(c))
                        for c in cors]
                deciders = {k: steps.restore_decide(SETTINGS, AllowList(),
                                                    steps.snapshot_decide(*da))
                            for k, da in deciders.items()}
                assert any(len(asm) for _, asm in deciders.values()) or cut % shards == 0
            n += 1
            items, copies = cors[piece.shard].process(piece.items, piece.arrived)
            piece.items = items
            for key, routed in route(piece, owner[piece.shard], keys, copies):
                decider, asm = deciders[key]
                for unit in asm.add(routed):
                    out += [_row(d) for d in decider.process([it for _, it in unit.items], 0.0)]
    return out


STATEFUL: dict[str, Callable[[Any, int | None], list[Any]]] = {
    "correlator+decider": _pipeline_run,
    "sharded loop": _sharded_run,
    "active feed": _feed_run,
    "unit assembler": _assembler_run,
}


def _stream(name: str, world: list[list[RawMessage]]) -> list[Any]:
    if name in ("correlator+decider", "sharded loop"):
        return world
    if name == "active feed":
        return _decisions_json(world)
    intake = Intake(WireParser(Limits.from_config(load_config(env={}))), KINDS)
    pieces = []
    for seq, batch in enumerate(world):
        pieces += _split(intake, batch, seq, 4)
    pieces.reverse()   # out of order, as workers deliver them
    return pieces


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_snapshot_restore_gives_the_same_output(name: str,
                                                world: list[list[RawMessage]]) -> None:
    stream = _stream(name, world)
    run = STATEFUL[name]
    whole = run(stream, None)
    assert whole, f"{name}: the stream produced nothing to compare"
    if name == "sharded loop":   # cut by piece, mid-unit
        shards = int(CFG.stream.shards)
        cuts: tuple[int, ...] = (3, len(stream) // 2 * shards + 5,
                                 (len(stream) - 1) * shards + 1)
    else:
        cuts = (1, len(stream) // 3, len(stream) // 2, len(stream) - 1)
    for cut in cuts:
        assert run(stream, cut) == whole, f"{name}: restored at {cut} of {len(stream)}"


# ---------------------------------------------------------------- 3. replicas

def _replicated(world: list[list[RawMessage]], replicas: int) -> list[tuple[Any, ...]]:
    """Shards' sightings to their replica (shard mod replicas), every verdict to every
    replica and owned by its shard's: ``operators.sharding.route`` as the flow uses it."""
    cfg = load_config(env={})
    shards = int(cfg.stream.shards)
    intake = Intake(WireParser(Limits.from_config(cfg)), KINDS)
    correlators = [Correlator.from_config(cfg) for _ in range(shards)]
    keys = [f"r{i}" for i in range(replicas)]
    owner = [keys[s % replicas] for s in range(shards)]
    deciders = {k: Decider.from_config(cfg) for k in keys}
    asm = {k: UnitAssembler() for k in keys}
    out: list[tuple[Any, ...]] = []
    for seq, batch in enumerate(world):
        for piece in _split(intake, batch, seq, shards):
            items, copies = correlators[piece.shard].process(piece.items, piece.arrived)
            piece.items = items
            for key, routed in route(piece, owner[piece.shard], keys, copies):
                for unit in asm[key].add(routed):
                    out += [_row(d) for d in
                            deciders[key].process((it for _, it in unit.items), 0.0)]
    return sorted(out)


def test_decisions_do_not_depend_on_the_replica_count(world: list[list[RawMessage]]) -> None:
    one = _replicated(world, 1)
    assert one
    assert _replicated(world, 3) == one


# ---------------------------------------------------------------- 4. the flow

def _flow_decisions(world: list[list[RawMessage]], workers: int,
                    replicas: int) -> list[tuple[Any, ...]]:
    from bytewax.testing import TestingSource

    return run_flow(TestingSource(list(enumerate(world))), KINDS, workers, replicas)[0]


def test_the_flow_decides_alike_on_any_number_of_workers_and_replicas(
        world: list[list[RawMessage]]) -> None:
    import gc

    single = _flow_decisions(world, 1, 1)
    # building the flow set the young generation's threshold from [stream]
    assert gc.get_threshold()[0] == CFG.stream.gc_gen0_threshold
    assert single
    assert _flow_decisions(world, 2, 3) == single
    assert len(single) == len(_replicated(world, 1))
