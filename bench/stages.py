"""Where the job's time goes: µs per event of each stage, measured in-process.

The throughput and replay figures say how fast the whole job is, not which
step to make faster. This runs the job's own per-batch steps (``flows.steps``
and the operators behind them, as ``rapidloop replay`` wires them in
``flows.dataflow``: one worker, ``stream.shards`` correlators, the configured
model replicas, ``kafka.consume_batch`` messages a batch, recovery off) in
one thread over a simulated world, without Bytewax: Bytewax only moves the
items between these steps, and its share is roughly the gap between the
in-process rate printed here and the replay rate of ``bench.run`` (a larger
world there: compare per event, not exactly).

Stages (self time: a timed call inside another is billed to its own stage only):

* read: gunzip, line split and event-time merge (``merged_timed_lines``);
* parse: wire parser to events (``steps.Parse``, i.e. ``Intake.parse``);
* shard: split into pieces, route the correlator's output, reassemble units
  (``Split``, ``CorrelateLogic.on_batch`` minus the correlator, ``UnitAssembler.add``);
* correlate: ``Correlator.process``. Duplicates are dropped there (its
  ``RecentIds``), not in a step of their own, so dedup is part of it;
* score: ``Ensemble.score`` and ``Ensemble.trimmed``, wherever called (the
  trimmed view is computed lazily inside the policy);
* learn: ``Ensemble.learn`` (its prequential scoring included) and the
  other records taught by a verdict: ``OrgTrust.settle``, ``SignerRecord.learn``
  (lineage too), ``SourceReliability.judge``;
* policy: ``Policy.on_sighting``, ``on_verdict``, ``accepts`` (and ``settled``,
  the settled-file fast path, where it exists) minus the scoring nested in
  them (the reasons of a decision, ``Ensemble.explain``, stay here);
* decider other: the rest of ``DecideLogic.on_batch`` and ``Decider.process``;
* encode: decisions and dead letters to bytes (``steps.encode_*``);
* free: releasing each batch's objects once it is through (reports,
  sightings, their feature dicts: about as much as a small stage), plus the
  loops that hand pieces from step to step (Bytewax's part in the job).

How. The methods are replaced on their classes, in this process only and
for the instrumented pass only, by wrappers that add ``perf_counter_ns``
deltas to their stage and subtract them from the enclosing timed call. A
wrapper costs time of its own: a calibration times an empty method plain and
wrapped; the part of that cost inside the wrapper's own clock readings is
subtracted from the stage, once per call, and the part outside them from the
enclosing stage, once per nested call (both are shown, as
``overhead_subtracted_us_per_event``). Every moment of the pass is in some
stage, so ``total`` (the sum of the stages) is the instrumented pass's wall
time minus the subtracted wrapper cost. A second pass over the same data,
with nothing wrapped, gives the plain in-process rate: ``total`` against it
shows how well the subtraction worked (what is left is the wrappers' cost
not caught by the calibration, and noise). Medians of ``--runs`` runs, each
from fresh operators (state from the start of the world), the two passes
alternating in order from run to run.

``python -m bench.stages [--reports N | --world DIR] [--runs R]`` prints one
JSON object on stdout and the stage table on stderr; ``bench.run`` runs it
as phase 5 and prints :func:`stage_table` after its main table.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from rapidloop.base.config import Config, load_config
from rapidloop.base.jobstats import JobStats
from rapidloop.flows import steps
from rapidloop.flows.file_io import merged_timed_lines
from rapidloop.flows.placement import replica_layout, resolve_replicas
from rapidloop.operators.allowlist import AllowList
from rapidloop.operators.classifiers import Ensemble
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.decide import Decider
from rapidloop.operators.policy import Policy
from rapidloop.operators.reliability import SourceReliability
from rapidloop.operators.settings import Settings
from rapidloop.operators.sharding import Piece, UnitAssembler, shard_key
from rapidloop.operators.signers import SignerRecord
from rapidloop.operators.trust import OrgTrust
from rapidloop.schemas.intake import FEEDBACK, REPORT, Intake
from rapidloop.schemas.model import RawMessage
from rapidloop.schemas.wire import Limits, WireParser

from .common import RAPIDLOOP, ROOT, log, median, rapidloop_env, run_cli

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
REPORTS = 20_000 if QUICK else 200_000   # standalone defaults; bench.run passes its SIZES
RUNS = 1 if QUICK else 3
SEED = 7
WORKERS = 1                 # as `rapidloop replay` by default: one worker, one thread
SIMULATE_TIMEOUT_S = 1800.0
CALIBRATION_CALLS = 200_000  # empty calls per calibration timing
CALIBRATION_REPEATS = 5      # the fastest repeat is the overhead (noise only adds)
NS_PER_US = 1000.0

REPORTS_TOPIC, FEEDBACK_TOPIC = "reports", "feedback"
KINDS = {REPORTS_TOPIC: REPORT, FEEDBACK_TOPIC: FEEDBACK}

# stage -> what it covers, in pipeline order (the table's rows)
STAGES: dict[str, str] = {
    "read": "read: gunzip, split lines, merge by event time",
    "parse": "parse: wire format → events",
    "shard": "shard: split, route, reassemble units",
    "correlate": "correlate: file state (dedup included)",
    "score": "decide/score: Ensemble.score + trimmed",
    "learn": "decide/learn: Ensemble.learn, trust, signers, lineage, reliability",
    "policy": "decide/policy: on_sighting, on_verdict, accepts, settled (minus score)",
    "decider_other": "decide/other: rest of the decide step",
    "encode": "encode: decisions and dead letters",
    "free": "free: each batch's objects released; glue between steps",
}

# (class, method, stage): the calls the instrumented pass times, patched on the class
PATCHES: tuple[tuple[type, str, str], ...] = (
    (steps.CorrelateLogic, "on_batch", "shard"),
    (UnitAssembler, "add", "shard"),
    (Correlator, "process", "correlate"),
    (Ensemble, "score", "score"),
    (Ensemble, "trimmed", "score"),
    (Ensemble, "learn", "learn"),
    (OrgTrust, "settle", "learn"),
    (SignerRecord, "learn", "learn"),
    (SourceReliability, "judge", "learn"),
    (Policy, "on_sighting", "policy"),
    (Policy, "on_verdict", "policy"),
    (Policy, "accepts", "policy"),
    (Policy, "settled", "policy"),   # the settled-file fast path, where the policy has it
    (steps.DecideLogic, "on_batch", "decider_other"),
    (Decider, "process", "decider_other"),
)
# Patched methods a version of the operators may lack (newer than this benchmark's first
# version); any other missing one is an error, not a stage silently left out.
OPTIONAL_PATCHES = frozenset({(Policy, "settled")})


class StageClock:
    """Self time, calls and nested calls per stage, for the wrappers it makes.

    ``nested[s]`` counts timed calls made from inside a call of stage ``s``:
    each leaves the part of its wrapper's cost outside its own clock readings
    in ``s``'s self time, which :meth:`corrected` takes out again.
    """

    def __init__(self, stages: tuple[str, ...] = tuple(STAGES)) -> None:
        self.ns = dict.fromkeys(stages, 0)
        self.calls = dict.fromkeys(stages, 0)
        self.nested = dict.fromkeys(stages, 0)
        self._stack: list[list[Any]] = []   # [stage, ns spent in timed calls nested in it]

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        """``fn`` timed into ``stage`` (locals bound once: the wrapper is on the hot path)."""
        clock = time.perf_counter_ns
        stack, ns, calls, nested = self._stack, self.ns, self.calls, self.nested

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = [stage, 0]
            stack.append(frame)
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = clock() - t0
                stack.pop()
                ns[stage] += dt - frame[1]
                calls[stage] += 1
                if stack:
                    parent = stack[-1]
                    parent[1] += dt
                    nested[parent[0]] += 1

        return timed

    def corrected(self, over: Overhead) -> dict[str, float]:
        """Self ns per stage minus the wrappers' own cost (never below 0: noise can overshoot)."""
        return {s: max(0.0, self.ns[s] - over.inner_ns * self.calls[s]
                       - over.outer_ns * self.nested[s]) for s in self.ns}

    def overhead(self, over: Overhead) -> dict[str, float]:
        """What :meth:`corrected` takes out of each stage, ns."""
        return {s: over.inner_ns * self.calls[s] + over.outer_ns * self.nested[s]
                for s in self.ns}


@dataclass(frozen=True)
class Overhead:
    """A wrapper's cost per call: inside its clock readings (billed to the stage it
    times) and outside them (billed to the enclosing stage)."""

    inner_ns: float
    outer_ns: float


def _per_call_ns(fn: Callable[[], None], calls: int) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / calls


def calibrate(calls: int = CALIBRATION_CALLS, repeats: int = CALIBRATION_REPEATS) -> Overhead:
    """The wrapper's cost per call, from an empty method called plain and wrapped.

    Per call: ``loop`` (the bare loop), ``plain`` (loop + real call), ``wrapped``
    (loop + wrapper, timed inside a timed parent, as the nested calls are) and
    ``inner`` (what the wrapper itself recorded). The stage of a wrapped call
    sees ``inner - (plain - loop)`` too much, its parent ``wrapped - loop - inner``.
    Each is the fastest of ``repeats``: noise only ever adds.
    """
    class Probe:
        def nop(self, a: object, b: object) -> None:
            """Empty: only the cost of calling it is measured."""

    probe = Probe()
    rng = range(calls)

    def bare() -> None:
        for _ in rng:
            pass

    def called() -> None:   # looked up on the instance each time, as the timed methods are
        for _ in rng:
            probe.nop(1, 2)

    loop_ns = min(_per_call_ns(bare, calls) for _ in range(repeats))
    plain_ns = min(_per_call_ns(called, calls) for _ in range(repeats))
    clock = StageClock(("probe", "parent"))
    Probe.nop = clock.wrap(Probe.nop, "probe")  # type: ignore[method-assign]
    in_parent = clock.wrap(called, "parent")
    wrapped_ns, inner_ns = float("inf"), float("inf")
    for _ in range(repeats):
        clock.ns["probe"] = 0
        wrapped_ns = min(wrapped_ns, _per_call_ns(in_parent, calls))
        inner_ns = min(inner_ns, clock.ns["probe"] / calls)
    return Overhead(inner_ns=max(0.0, inner_ns - (plain_ns - loop_ns)),
                    outer_ns=max(0.0, wrapped_ns - loop_ns - inner_ns))


@contextmanager
def patched(clock: StageClock) -> Iterator[None]:
    """The :data:`PATCHES` methods timed into ``clock``; the originals back on exit."""
    todo = [(cls, name, stage) for cls, name, stage in PATCHES
            if name in cls.__dict__ or (cls, name) not in OPTIONAL_PATCHES]
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in todo]
    try:
        for cls, name, stage in todo:
            setattr(cls, name, clock.wrap(cls.__dict__[name], stage))
        yield
    finally:
        for cls, name, original in saved:
            setattr(cls, name, original)


@dataclass
class PassResult:
    """One pass over the world: what went through it and how long it took."""

    batches: int = 0
    messages: int = 0
    reports: int = 0
    decisions: int = 0
    wall_ns: int = 0
    stage_ns: dict[str, float] = field(default_factory=dict)
    overhead_ns: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    files: int = 0         # files the shards track at the end
    snapshot_ns: int = 0   # every shard's epoch-close snapshot of that state, once


def _read_batch(lines: Iterator[tuple[float, RawMessage]], size: int) -> list[RawMessage]:
    """The next source batch, as ``MergedFileSource`` makes it (the event time dropped)."""
    return [msg for _, msg in islice(lines, size)]


def run_pass(world: Path, cfg: Config, clock: StageClock | None = None) -> PassResult:
    """The job's steps over ``world``'s files, batch by batch, from fresh operators.

    With ``clock``, every step is timed into it (the caller patches the
    methods, see :func:`patched`); without, only the whole pass is timed.
    What Bytewax does between steps (keying, grouping by key) is done here
    by plain loops, timed in the wall clock only.
    """
    shards = int(cfg.stream.shards)
    layout = replica_layout(shards, resolve_replicas(int(cfg.stream.replicas), WORKERS))
    allow = AllowList.load(cfg.policy.allowlist_file)
    # Built before the clock starts, as the job builds them on a key's first item.
    settings, stats = Settings.from_config(cfg), JobStats()
    correlate = steps.correlate_builder(settings, layout, False, stats)
    decide = steps.decide_builder(settings, allow, False, stats)
    correlators = {shard_key(s): correlate(None) for s in range(shards)}
    deciders = {key: decide(None) for key in layout.keys}
    files = [(str(world / "reports.jsonl.gz"), REPORTS_TOPIC),
             (str(world / "feedback.jsonl.gz"), FEEDBACK_TOPIC)]
    lines = merged_timed_lines(files, float(cfg.limits.max_future_skew_s))
    size = int(cfg.kafka.consume_batch)

    read: Callable[..., list[RawMessage]] = _read_batch
    parse: Callable[..., Any] = steps.Parse(Intake(WireParser(Limits.from_config(cfg)), KINDS),
                                            stats)
    split: Callable[..., list[tuple[str, Piece]]] = steps.Split(shards)
    encode_dead: Callable[..., Any] = steps.encode_dead_letters
    encode: Callable[..., Any] = steps.EncodeDecisions(stats)
    if clock is not None:
        read, parse, split = (clock.wrap(read, "read"), clock.wrap(parse, "parse"),
                              clock.wrap(split, "shard"))
        encode_dead, encode = clock.wrap(encode_dead, "encode"), clock.wrap(encode, "encode")

    res = PassResult()

    def batch_through() -> bool:
        """One source batch through every step; False at the end of the input. Its
        objects are dropped on return, so their release is timed with this call."""
        batch = read(lines, size)
        if not batch:
            return False
        unit = parse((res.batches, batch))
        res.batches += 1
        res.messages += len(batch)
        res.reports += unit.counts[REPORTS_TOPIC]
        encode_dead(unit)
        by_shard: dict[str, list[Piece]] = {}
        for key, piece in split(unit):
            by_shard.setdefault(key, []).append(piece)
        routed: dict[str, list[Piece]] = {}
        for key, pieces in by_shard.items():
            out, _ = correlators[key].on_batch(pieces)
            for dest, piece in out:
                routed.setdefault(dest, []).append(piece)
        for key, pieces in routed.items():
            decided, _ = deciders[key].on_batch(pieces)
            for decisions in decided:
                res.decisions += len(encode((key, decisions)))
        return True

    step = clock.wrap(batch_through, "free") if clock is not None else batch_through
    gc.collect()
    gc.freeze()   # as the job does once its flow is built (flows.dataflow)
    t0 = time.perf_counter_ns()
    try:
        while step():
            pass
        res.wall_ns = time.perf_counter_ns() - t0
        # What one epoch close would pickle now, with recovery on (see bench.memory).
        res.files = sum(len(logic.c.files) for logic in correlators.values())
        t0 = time.perf_counter_ns()
        for logic in correlators.values():
            steps.snapshot_correlate(logic.c)
        res.snapshot_ns = time.perf_counter_ns() - t0
    finally:
        gc.unfreeze()
    return res


def _instrumented(world: Path, cfg: Config, over: Overhead) -> PassResult:
    clock = StageClock()
    with patched(clock):
        res = run_pass(world, cfg, clock)
    res.stage_ns = clock.corrected(over)
    res.overhead_ns = clock.overhead(over)
    res.calls = dict(clock.calls)
    return res


def measure(world: Path, runs: int = RUNS, cfg: Config | None = None) -> dict[str, Any]:
    """Stage figures for ``world`` (medians of ``runs``), as printed by ``main``."""
    cfg = cfg or load_config(env={})   # defaults only: a developer's RAPIDLOOP_* is not the job
    over = calibrate()
    timed: list[PassResult] = []
    plain: list[PassResult] = []
    for i in range(runs):
        if i % 2 == 0:
            timed.append(_instrumented(world, cfg, over))
            plain.append(run_pass(world, cfg))
        else:
            plain.append(run_pass(world, cfg))
            timed.append(_instrumented(world, cfg, over))
        t, p = timed[-1], plain[-1]
        log(f"stages run {i + 1}: {t.messages:,} messages, instrumented "
            f"{t.wall_ns / NS_PER_US / t.messages:.1f} µs/event, plain "
            f"{p.wall_ns / NS_PER_US / p.messages:.1f} µs/event")
    first = timed[0]
    n, reports = first.messages, max(first.reports, 1)
    per_event = {s: median([r.stage_ns[s] / NS_PER_US / r.messages for r in timed])
                 for s in STAGES}
    total = sum(per_event.values())
    stages = {
        s: {"label": STAGES[s], "us_per_event": per_event[s],
            "us_per_report": per_event[s] * n / reports,
            "share": per_event[s] / total if total > 0 else 0.0,
            "calls_per_event": first.calls[s] / n,
            "overhead_subtracted_us_per_event":
                median([r.overhead_ns[s] / NS_PER_US / r.messages for r in timed])}
        for s in STAGES}
    plain_us = median([p.wall_ns / NS_PER_US / p.messages for p in plain])
    timed_us = median([t.wall_ns / NS_PER_US / t.messages for t in timed])
    return {
        "world": {"messages": n, "reports": first.reports, "decisions": first.decisions},
        "runs": runs, "batch": int(cfg.kafka.consume_batch), "shards": int(cfg.stream.shards),
        "replicas": len(replica_layout(int(cfg.stream.shards),
                                       resolve_replicas(int(cfg.stream.replicas), WORKERS)).keys),
        "stages": stages,
        "total_us_per_event": total, "total_us_per_report": total * n / reports,
        "plain_us_per_event": plain_us, "plain_events_per_s": median(
            [p.messages / (p.wall_ns / 1e9) for p in plain]),
        "instrumented_wall_us_per_event": timed_us,
        "state_files": plain[0].files,
        "snapshot_ms_median": median([p.snapshot_ns / 1e6 for p in plain]),
        "snapshot_us_per_file": median([p.snapshot_ns / NS_PER_US / max(p.files, 1)
                                        for p in plain]),
        "wrapper_ns_per_call": {"inner": over.inner_ns, "outer": over.outer_ns},
        "method": "self time per stage (perf_counter_ns wrappers on the classes' methods), "
                  "wrapper cost calibrated on an empty method and subtracted; plain pass "
                  "without wrappers over the same data; medians of the runs",
        "per_run": [{"instrumented_us_per_event": t.wall_ns / NS_PER_US / t.messages,
                     "plain_us_per_event": p.wall_ns / NS_PER_US / p.messages,
                     "stages_us_per_event": {s: t.stage_ns[s] / NS_PER_US / t.messages
                                             for s in STAGES}}
                    for t, p in zip(timed, plain, strict=True)],
    }


def stage_table(r: dict[str, Any]) -> str:
    """The stage figures as a Markdown table: µs per event, share of the sum, totals."""
    rows = [(v["label"], f"{v['us_per_event']:.2f}", f"{v['share']:.1%}")
            for v in r["stages"].values()]
    rows += [
        (f"total: sum of the stages ({r['total_us_per_report']:.2f} µs per report)",
         f"{r['total_us_per_event']:.2f}", "100%"),
        (f"in-process end to end, nothing wrapped: {r['plain_events_per_s']:,.0f} events/s",
         f"{r['plain_us_per_event']:.2f}", ""),
        ("in-process end to end, wrapped (before subtracting the wrappers' cost)",
         f"{r['instrumented_wall_us_per_event']:.2f}", ""),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len("µs per event"), *(len(b) for _, b, _ in rows))
    lines = [f"| {'stage':<{w0}} | {'µs per event':>{w1}} | share |",
             f"| {'-' * w0} | {'-' * w1}:| ---:|"]
    lines += [f"| {a:<{w0}} | {b:>{w1}} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def simulate(out: Path, reports: int, seed: int = SEED) -> None:
    """A world of ``reports`` reports under ``out``, as bench.run's replay phase makes it."""
    run_cli([RAPIDLOOP, "simulate", "--out", str(out), "--reports", str(reports),
             "--seed", str(seed), "--fixed"], rapidloop_env(), ROOT, timeout=SIMULATE_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--reports", type=int, default=REPORTS,
                     help=f"simulate a world of this many reports (default {REPORTS:,})")
    src.add_argument("--world", type=Path,
                     help="use this directory's reports.jsonl.gz and feedback.jsonl.gz")
    p.add_argument("--runs", type=int, default=RUNS, help=f"runs, median (default {RUNS})")
    p.add_argument("--seed", type=int, default=SEED, help=f"simulator seed (default {SEED})")
    args = p.parse_args(argv)
    if args.world is not None:
        res = measure(args.world, args.runs)
    else:
        with tempfile.TemporaryDirectory(prefix="rapidloop-stages-") as tmp:
            log(f"stages: simulating {args.reports:,} reports")
            simulate(Path(tmp) / "world", args.reports, args.seed)
            res = measure(Path(tmp) / "world", args.runs)
    print(json.dumps(res))
    log("stages:\n" + stage_table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
