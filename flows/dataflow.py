"""The rapidloop dataflow, top to bottom as in the README's diagram.

    reports ─┐                          ┌─ dead letters ─────────────▶ deadletter sink
             ├─▶ parse ─▶ split by shard ─▶ correlate ─▶ route ─▶ decide ─▶ decisions sink
  feedback ─┘     (Unit)    (Piece/shard)  (file state)  (verdicts    (models,    │
                                                           to every     policy)   │
                                                           replica)               ▼
                                                  active feed (in force per target,
                                                  tombstones; when the topic exists) ─▶ active sink

Logic lives in rapidloop.operators and rapidloop.schemas; this module only
wires it. The same builder runs on Kafka (``rapidloop run``) and on files
(``rapidloop replay``): only the connectors differ, and where parsing
happens: a *routed* source (the live event-time merge, which one worker
reads) hands on raw messages with the shard each names, split unparsed, and
each shard parses its own (dead letters then leave the correlate step), so
the reading worker does not parse everything and workers exchange bytes; the
other sources are parsed where they are read, then split. Both give the same
events and dead letters (``tests/unit/test_raw_split.py``).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from rapidloop.base.config import Config
from rapidloop.base.jobstats import JobStats
from rapidloop.operators.allowlist import AllowList
from rapidloop.operators.settings import Settings
from rapidloop.schemas.intake import Intake
from rapidloop.schemas.wire import Limits, WireParser

from . import steps
from .placement import replica_layout, resolve_replicas


@dataclass
class Connectors:
    """Where the flow reads and writes; ``kinds`` maps each input topic/file to its message kind.

    ``stats``: the run's counters. The sources and sinks that count (Kafka's)
    were made with them, and ``build_flow`` hands them to the steps: one
    object per run, read by its progress line and summary.
    """

    sources: list[tuple[str, Source]]
    kinds: dict[str, str]
    decisions: Sink
    dead_letters: Sink | None = None
    active: Sink | None = None   # the compacted feed of decisions in force (operators.activefeed)
    stats: JobStats = field(default_factory=JobStats)


def build_flow(cfg: Config, io: Connectors, recovery: bool = False,
               flow_id: str = "rapidloop", replicas: int | None = None,
               chunks: steps.ChunkSettings | None = None) -> Dataflow:
    """``replicas``: model replicas to run (default: ``stream.replicas``, 0 meaning one).
    ``chunks``: with recovery on, where the correlate step keeps the bulk of its
    snapshots (``flows.chunked``; None: they are whole in Bytewax's).

    The operators' settings are read from ``cfg`` once, here, and shared by
    every shard and replica (with the one prior they score with).
    """
    shards = cfg.stream.shards
    layout = replica_layout(shards, replicas or resolve_replicas(cfg.stream.replicas, 1))
    allow = AllowList.load(cfg.policy.allowlist_file)
    settings = Settings.from_config(cfg)
    limits = Limits.from_config(cfg)
    intake = Intake(WireParser(limits), io.kinds)
    stats = io.stats

    flow = Dataflow(flow_id)
    inputs = [op.input(name, flow, source) for name, source in io.sources]
    batches = op.merge("merge", *inputs) if len(inputs) > 1 else inputs[0]
    if len(io.sources) == 1 and getattr(io.sources[0][1], "routed", False):
        # One routed source (the live event-time merge): split its batches unparsed and
        # let each shard parse its own; dead letters come out of the correlate step.
        pieces = op.flat_map("split", batches, steps.RawSplit(shards, io.kinds, limits, stats))
        correlated = op.stateful_batch(steps.CORRELATE, pieces, steps.correlate_builder(
            settings, layout, recovery, stats, (io.kinds, limits), chunks))
        split = op.branch("dead_or_routed", correlated, steps.is_dead)
        if io.dead_letters is not None:
            op.output("dead_letters",
                      op.map("encode_dead", split.trues, steps.encode_routed_dead),
                      io.dead_letters)
        correlated = split.falses
    else:
        units = op.map("parse", batches, steps.Parse(intake, stats))
        if io.dead_letters is not None:
            op.output("dead_letters", op.map("encode_dead", units, steps.encode_dead_letters),
                      io.dead_letters)
        pieces = op.flat_map("split", units, steps.Split(shards))
        correlated = op.stateful_batch(steps.CORRELATE, pieces, steps.correlate_builder(
            settings, layout, recovery, stats, chunks=chunks))
    routed = op.map("route", correlated, steps.unwrap)
    decided = op.stateful_batch(steps.DECIDE, routed,
                                steps.decide_builder(settings, allow, recovery, stats))
    encoded = op.map("encode", decided, steps.EncodeDecisions(stats))
    op.output("decisions", encoded, io.decisions)
    if io.active is not None:
        live = cfg.stream.active_clock == "live"
        feed = op.stateful_batch(steps.ACTIVE_FEED, op.key_on("feed_key", encoded, _one_key),
                                 steps.active_feed_builder(recovery, live, stats))
        op.output("active", op.map("feed_records", feed, steps.unwrap_feed), io.active)
    _tune_collector(int(cfg.stream.gc_gen0_threshold))
    return flow


def _one_key(_: object) -> str:
    """The feed is one sequence: every decision goes to the same (single) key."""
    return "active"


def _tune_collector(gen0_threshold: int) -> None:
    """Take what exists now out of the cyclic collector's sight, and collect the
    young generation less often (``stream.gc_gen0_threshold``).

    Imported modules (River, Bytewax, NumPy...), the configuration and the
    flow itself live as long as the job, yet every full collection walks
    them again; the stream allocates a few objects per event, so full
    collections keep coming. Collecting once and freezing the survivors
    makes those passes walk only what the stream has built since: about 5 %
    of a replay's time. Nothing frozen is ever freed, which is the point.
    The stream's own objects die by reference counting, so a young collection
    every few hundred allocations mostly finds nothing to free: another ~5 %.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(gen0_threshold, older, oldest)
