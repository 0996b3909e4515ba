"""Thin adapters between Bytewax's operator interfaces and the plain logic.

Each adapter forwards a batch to a ``rapidloop.operators`` object and adds
to the run's counters once per batch (the ``JobStats`` the builders are
given: each run counts into its own, so flows run side by side in one
process, as tests run them, never share figures); nothing here decides
anything.
Snapshots are the operators' own plain state in versioned envelopes
(``operators.snapshot``), never pickled objects, and are taken only when
recovery is on: without it, Bytewax still asks for one per touched key
every epoch, and copying a shard's state for nothing would be the job's
biggest cost.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import orjson
from bytewax.operators import StatefulBatchLogic

from rapidloop.base.jobstats import JobStats
from rapidloop.operators import activefeed, correlate, decide, sharding
from rapidloop.operators.activefeed import ActiveFeed
from rapidloop.operators.allowlist import AllowList
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.decide import Decider
from rapidloop.operators.settings import Settings
from rapidloop.operators.sharding import (
    SEQUENCED,
    Piece,
    RawPiece,
    ReadItem,
    SkewReference,
    UnitAssembler,
    parse_piece,
    route,
    split_raw,
    split_unit,
)
from rapidloop.operators.snapshot import SnapshotError, decode, encode, envelope
from rapidloop.schemas.intake import Intake, Unit
from rapidloop.schemas.model import DeadLetter, Decision, RawMessage
from rapidloop.schemas.wire import GivenNewestParser, Limits, encode_dead_letter, encode_decision

from . import chunked
from .chunked import ChunkedSnapshots
from .placement import ReplicaLayout

KV = tuple[bytes | None, bytes | None]   # (key, value); a None value is a tombstone

# The stateful steps' names: a recovery snapshot is stored under the flow's id and one of these.
CORRELATE = "correlate"
DECIDE = "decide"
ACTIVE_FEED = "active_feed"


class Parse:
    """Source batch (``list[RawMessage]`` or ``(seq, list[RawMessage])``) → ``Unit``."""

    def __init__(self, intake: Intake, stats: JobStats) -> None:
        self.intake = intake
        self.stats = stats

    def __call__(self, batch: Any) -> Unit:
        seq: int | None = None
        if isinstance(batch, tuple):
            seq, batch = batch
        messages: list[RawMessage] = batch
        unit = self.intake.parse(messages, time.time(), seq,
                                 "replay" if seq is not None else None)
        stats = self.stats
        stats.events_in.update(unit.counts)
        if unit.dead_codes:
            stats.dead_letters.update(unit.dead_codes)
        if unit.events:
            last = unit.events[-1].ts
            if last > stats.newest_event_ts:
                stats.newest_event_ts = last
        return unit


def encode_dead_letters(unit: Unit) -> list[KV]:
    return [(dl.key.encode() if dl.key else None, encode_dead_letter(dl)) for dl in unit.dead]


class Split:
    def __init__(self, shards: int) -> None:
        self.shards = shards

    def __call__(self, unit: Unit) -> list[tuple[str, Piece]]:
        return split_unit(unit.source, unit.unit, unit.seq, unit.events, self.shards,
                          unit.arrived)


def unwrap(kv: tuple[str, tuple[str, Piece]]) -> tuple[str, Piece]:
    """Drop the key Bytewax wrapped around a routed ``(dest_key, piece)``."""
    return kv[1]


class RawSplit:
    """A routed source's batch ``(seq, list[ReadItem])`` → one unparsed piece per shard.

    Runs where the input is read (one worker); the parsing is the shards'
    (:class:`CorrelateLogic`). Counts the messages in, by topic, as ``Parse``
    does, and keeps the parser's future-skew rule exact across shards
    (:class:`~rapidloop.operators.sharding.SkewReference`).
    """

    def __init__(self, shards: int, kinds: dict[str, str], limits: Limits,
                 stats: JobStats) -> None:
        self.shards = shards
        self.skew = SkewReference(kinds, limits)
        self.stats = stats

    def __call__(self, batch: tuple[int, list[ReadItem]]) -> list[tuple[str, RawPiece]]:
        seq, items = batch
        self.stats.events_in.update(Counter([it[0] for it in items]))
        return split_raw(seq, items, self.skew.refs(items), self.shards, time.time())


DEAD = ""
"""The destination of the correlate step's dead letters (no decide key is empty)."""


def is_dead(kv: tuple[str, tuple[str, Any]]) -> bool:
    return kv[1][0] == DEAD


def encode_routed_dead(kv: tuple[str, tuple[str, list[DeadLetter]]]) -> list[KV]:
    return [(dl.key.encode() if dl.key else None, encode_dead_letter(dl)) for dl in kv[1][1]]


def timed(stats: JobStats, snapshot: Callable[..., bytes], *state: Any) -> bytes:
    """``snapshot(*state)``, its time added to ``stats.snapshot_s``: at each epoch close
    the input waits for every snapshot and Bytewax's write of them, which grow with the
    state, so the job reports its share of the time (``JobStats.held_s``,
    ``base.snapshotwatch``)."""
    t0 = time.perf_counter()
    blob = snapshot(*state)
    stats.add_snapshot(time.perf_counter() - t0, t0)
    return blob


def snapshot_correlate(c: Correlator) -> bytes:
    """The correlate step's snapshot: one ``correlator`` envelope."""
    return encode([envelope(correlate.KIND, c.snapshot())])


def snapshot_decide(decider: Decider, assembler: UnitAssembler) -> bytes:
    """The decide step's snapshot: the ``decider`` and ``unit-assembler`` envelopes."""
    return encode([envelope(decide.KIND, decider.snapshot()),
                   envelope(sharding.KIND, assembler.snapshot())])


def snapshot_feed(feed: ActiveFeed) -> bytes:
    """The active feed step's snapshot: one ``active-feed`` envelope."""
    return encode([envelope(activefeed.KIND, feed.snapshot())])


def restore_correlate(settings: Settings, blob: bytes,
                      chunks: ChunkedSnapshots | None = None) -> Correlator:
    """A correlate step's snapshot, whole or in chunks (``flows.chunked``: ``chunks``
    reads them back, and takes up their bookkeeping)."""
    state, stored = _decode_correlate(blob)
    if stored is None:
        return Correlator.from_snapshot(settings, state)
    if chunks is None:
        raise SnapshotError("the snapshot's files are in chunks, and no chunk directory "
                            "was given")
    return chunks.restore(settings, state, stored)


def _decode_correlate(blob: bytes) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ``correlator`` state and, for a snapshot in chunks, its ``shard-chunks`` part."""
    state, stored = decode(blob, correlate.KIND, chunked.KIND, optional=1)
    return state, stored


def correlate_chunk_names(blob: bytes) -> set[str]:
    """The chunks a correlate step's snapshot names (none if it is whole)."""
    state, stored = _decode_correlate(blob)
    return set() if stored is None else chunked.named_chunks(state, stored)


def restore_decide(settings: Settings, allow: AllowList, blob: bytes
                   ) -> tuple[Decider, UnitAssembler]:
    dec, asm = decode(blob, decide.KIND, sharding.KIND)
    return Decider.from_snapshot(settings, dec, allow), UnitAssembler.from_snapshot(asm)


def restore_feed(blob: bytes) -> ActiveFeed:
    (state,) = decode(blob, activefeed.KIND)
    return ActiveFeed.from_snapshot(state)


def restorers(settings: Settings, chunks: ChunkSettings | None = None,
              read_chunks: bool = True) -> dict[str, Callable[[bytes], object]]:
    """Each stateful step's name → how its builder restores a snapshot, for checking a
    recovery directory's snapshots before the flow starts (``flows.recovery_plan``). The
    allow-list is not state: the real one plays no part in restoring. ``read_chunks``
    false: a correlate snapshot in chunks is only decoded (its chunks may be elsewhere)."""
    def correlator(blob: bytes) -> Correlator | None:
        if not read_chunks and correlate_chunk_names(blob):   # in chunks: decoded only
            return None
        return restore_correlate(settings, blob, chunks.make() if chunks else None)
    return {CORRELATE: correlator,
            DECIDE: partial(restore_decide, settings, AllowList()),
            ACTIVE_FEED: restore_feed}


class CorrelateLogic(StatefulBatchLogic[Piece | RawPiece, tuple[str, Any], bytes | None]):
    """A shard's correlation; with ``intake``, it first parses the raw pieces it gets
    (a routed source), and its dead letters leave as ``(DEAD, [DeadLetter, ...])``."""

    def __init__(self, correlator: Correlator, layout: ReplicaLayout, recovery: bool,
                 stats: JobStats, intake: Intake | None = None,
                 chunks: ChunkedSnapshots | None = None) -> None:
        self.c = correlator
        self.layout = layout
        self.recovery = recovery
        self.stats = stats
        self.intake = intake
        self.chunks = chunks   # None: the snapshots are whole (``flows.chunked``)
        self.shard = chunks.store.shard if chunks and chunks.store else None

    def _parsed(self, raw: RawPiece, out: list[tuple[str, Any]]) -> Piece:
        assert self.intake is not None, "a raw piece needs the flow's kinds (correlate_builder)"
        got = parse_piece(self.intake, raw, time.time())
        stats = self.stats
        if got.dead:
            stats.dead_letters.update(got.codes)
            out.append((DEAD, got.dead))
        if got.newest > stats.newest_event_ts:
            stats.newest_event_ts = got.newest
        return Piece(raw.shard, SEQUENCED, raw.unit, raw.seq, raw.expect, got.events,
                     raw.arrived)

    def on_batch(self, pieces: list[Piece | RawPiece]) -> tuple[list[tuple[str, Any]], bool]:
        out: list[tuple[str, Any]] = []
        dup0 = self.c.duplicates
        owner, replicas = self.layout.owner, self.layout.keys
        events = 0
        for given in pieces:
            p = self._parsed(given, out) if type(given) is RawPiece else given
            assert isinstance(p, Piece)
            events += len(p.items)
            items, copies = self.c.process(p.items, p.arrived)
            p.items = items
            out.extend(route(p, owner[p.shard], replicas, copies))
        stats = self.stats
        stats.duplicates += self.c.duplicates - dup0
        if pieces:
            self.shard = pieces[0].shard
            key = f"{self.shard:03d}"
            stats.tracked_files[key] = len(self.c.files)
            stats.shard_events[key] += events
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if not self.recovery:
            return None
        if self.chunks is not None and self.shard is not None:
            return timed(self.stats, self.chunks.snapshot, self.c, self.shard)
        return timed(self.stats, snapshot_correlate, self.c)


def unrestorable(directory: Path, exc: SnapshotError) -> NoReturn:
    """A shard this process must resume cannot be restored: one line, exit 2, now.

    Before a start every snapshot is restored once (``flows.recovery_plan``),
    but a multi-machine process's share holds other processes' shards and
    each reads its own chunks only here, inside the flow, where an exception
    becomes a Bytewax panic whose message is lost (as ``flows.process``
    says of stopping a flow from outside).
    """
    from .recovery import set_aside

    print(f"rapidloop run: recovery dir {directory}: a shard's snapshot cannot be restored "
          f"({' '.join(str(exc).split())}); {set_aside(directory)}", file=sys.stderr,
          flush=True)
    os._exit(2)


@dataclass(frozen=True)
class ChunkSettings:
    """Where and how the correlate step keeps its snapshots' bulk (``flows.chunked``)."""

    directory: Path
    grace: int        # snapshots of a shard a chunk no longer named is kept for
    roll_after: int   # live file-log segments before the oldest is rolled forward
    write: bool = True   # False: snapshots are whole (chunks named are still read)

    def make(self) -> ChunkedSnapshots:
        return ChunkedSnapshots(self.directory, self.grace, self.roll_after)


def correlate_builder(settings: Settings, layout: ReplicaLayout, recovery: bool,
                      stats: JobStats, raw: tuple[dict[str, str], Limits] | None = None,
                      chunks: ChunkSettings | None = None
                      ) -> Callable[[bytes | None], CorrelateLogic]:
    """``raw``: the flow's input kinds and the parser's limits, when its pieces come raw
    (each shard parses). ``chunks``: keep the snapshots' files and ids in chunks (with
    recovery on), else whole."""
    def build(resume: bytes | None) -> CorrelateLogic:
        kept = chunks.make() if chunks is not None and recovery else None
        try:
            c = restore_correlate(settings, resume, kept) if resume else Correlator(settings)
        except SnapshotError as exc:
            if chunks is None:
                raise
            unrestorable(chunks.directory.parent, exc)
        intake = (Intake(GivenNewestParser(raw[1]), raw[0]) if raw is not None else None)
        return CorrelateLogic(c, layout, recovery, stats, intake,
                              kept if chunks is not None and chunks.write else None)
    return build


class DecideLogic(StatefulBatchLogic[Piece, list[Decision], bytes | None]):
    def __init__(self, state: tuple[Decider, UnitAssembler], recovery: bool,
                 stats: JobStats) -> None:
        self.decider, self.assembler = state
        self.recovery = recovery
        self.stats = stats

    def on_batch(self, pieces: list[Piece]) -> tuple[list[list[Decision]], bool]:
        out: list[list[Decision]] = []
        now = time.time()
        for piece in pieces:
            for unit in self.assembler.add(piece):
                # a list, which Decider.process reads as it is (a generator it would copy)
                decided = self.decider.process([it for _, it in unit.items], now)
                if decided:
                    out.append(decided)
        lat = self.decider.latencies
        stats = self.stats
        if lat:
            with stats.lock:
                stats.latencies.extend(lat)
            lat.clear()
        stats.labels_seen = max(stats.labels_seen, self.decider.ensemble.labels_seen)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if not self.recovery:
            return None
        return timed(self.stats, snapshot_decide, self.decider, self.assembler)


def decide_builder(settings: Settings, allow: AllowList, recovery: bool, stats: JobStats
                   ) -> Callable[[bytes | None], DecideLogic]:
    def build(resume: bytes | None) -> DecideLogic:
        state = (restore_decide(settings, allow, resume) if resume
                 else (Decider(settings, allow), UnitAssembler()))
        return DecideLogic(state, recovery, stats)
    return build


class EncodeDecisions:
    """Stamp ``decided_at`` (the only wall-clock field), count and serialise."""

    def __init__(self, stats: JobStats) -> None:
        self.stats = stats

    def __call__(self, kv: tuple[str, list[Decision]]) -> list[KV]:
        now = time.time()
        out: list[KV] = []
        counts = self.stats.decisions
        for d in kv[1]:
            d.decided_at = now
            counts[(d.action, d.scope)] += 1
            out.append((d.sha256.encode(), encode_decision(d)))
        return out


class ActiveFeedLogic(StatefulBatchLogic[list[KV], list[KV], bytes | None]):
    """Encoded decisions → the compacted feed's records (a tombstone's value is None).

    ``live``: the feed's clock is also the wall clock, and a timer at the next expiry
    lapses decisions while nothing arrives (``stream.active_clock``).
    """

    def __init__(self, feed: ActiveFeed, recovery: bool, live: bool,
                 stats: JobStats | None = None) -> None:
        self.feed = feed
        self.recovery = recovery
        self.live = live
        self.stats = stats if stats is not None else JobStats()

    def on_batch(self, batches: list[list[KV]]) -> tuple[list[list[KV]], bool]:
        out = self._tombstones(self.feed.advance(time.time())) if self.live else []
        for batch in batches:
            for _, value in batch:
                d = orjson.loads(value)
                for key, rec in self.feed.process([d]):
                    out.append((key.encode(), value if rec is d else None))
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        due = self.feed.next_lapse() if self.live else None
        return None if due is None else datetime.fromtimestamp(due, tz=UTC)

    def on_notify(self) -> tuple[list[list[KV]], bool]:
        out = self._tombstones(self.feed.advance(time.time()))
        return ([out] if out else []), StatefulBatchLogic.RETAIN

    @staticmethod
    def _tombstones(records: list[tuple[str, Any]]) -> list[KV]:
        return [(key.encode(), None) for key, _ in records]

    def snapshot(self) -> bytes | None:
        return timed(self.stats, snapshot_feed, self.feed) if self.recovery else None


def active_feed_builder(recovery: bool, live: bool, stats: JobStats | None = None
                        ) -> Callable[[bytes | None], ActiveFeedLogic]:
    def build(resume: bytes | None) -> ActiveFeedLogic:
        return ActiveFeedLogic(restore_feed(resume) if resume else ActiveFeed(), recovery,
                               live, stats)
    return build


def unwrap_feed(kv: tuple[str, list[KV]]) -> list[KV]:
    return kv[1]
