"""Spreading work over shards, deterministically.

The loop has two keyed stages: the correlator (file state), keyed by shard of
the sha256, and the decider (model replica + enforcement), keyed by replica;
each shard belongs to one replica (on the same worker, see
``flows.placement``), so reports stay on one worker from correlation to
decision. Verdicts must reach *every* model replica, so the correlator
broadcasts them, and that is where order could go astray: a replica could
learn a label before or after a report depending on how the runtime
happened to chunk work. To make results independent of timing, worker
count and replica count, input is handled in *units* (one source batch):
every shard receives a piece of every unit, a decider processes a unit only
once it holds a piece from every shard, merges them back in input order,
and takes units of one source in sequence. A report is then always scored
by a model that has learned exactly the labels before it in the input, so
replaying the same input gives the same decisions, always.

>>> shard_of("0000000f" + "0" * 56, 8), shard_key(3)
(7, '003')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rapidloop.schemas.model import Feedback, Report


def shard_of(sha256: str, shards: int) -> int:
    """Stable shard of a (normalised, hex) sha256: uniform because hashes are."""
    return int(sha256[:8], 16) % shards


def shard_key(shard: int) -> str:
    return f"{shard:03d}"


@dataclass(slots=True)
class Piece:
    """The part of one input unit that concerns one shard.

    ``unit`` names the input unit (unique per source batch); ``seq`` is its
    position in its source, or None for sources whose order carries no
    meaning across units (live Kafka). ``items`` are ``(index_in_unit,
    payload)`` pairs so pieces can be merged back into input order.
    ``expect`` is how many pieces the receiving decider must hold before
    processing the unit: every shard's, or 1 for a unit without events.
    """

    shard: int
    source: str
    unit: str
    seq: int | None
    expect: int
    items: list[tuple[int, Any]] = field(default_factory=list)
    arrived: float = 0.0


def split_unit(source: str, unit: str, seq: int | None, events: list[Report | Feedback],
               shards: int, arrived: float) -> list[tuple[str, Piece]]:
    """One piece per shard (empty ones included, so every shard sees every unit).

    Every unit with events is a barrier: a verdict, or a report of a file
    that already has a verdict (a lesson), teaches every replica, and which
    reports will do so is only known once the correlator has seen them.
    """
    expect = shards if events else 1
    pieces = [Piece(s, source, unit, seq, expect, [], arrived) for s in range(shards)]
    for i, ev in enumerate(events):
        pieces[int(ev.sha256[:8], 16) % shards].items.append((i, ev))
    return [(shard_key(s), p) for s, p in enumerate(pieces)]


def route(piece: Piece, owner: str, replicas: list[str], copies: list[tuple[int, Any]]
          ) -> list[tuple[str, Piece]]:
    """Stage one's output: its own piece to its replica, verdict copies to all the others.

    ``piece.items`` already holds the stage-one outputs for ``piece.shard``;
    ``owner`` is the key of the replica that decides for the shard, and
    ``copies`` are the (index, payload) pairs every other replica must see.
    Every replica so receives exactly one piece of every unit from every
    shard: the shard's own, or its copies.
    """
    out = [(owner, piece)]
    if piece.expect > 1:
        for key in replicas:
            if key != owner:
                out.append((key, Piece(piece.shard, piece.source, piece.unit, piece.seq,
                                       piece.expect, list(copies), piece.arrived)))
    return out


class UnitAssembler:
    """Holds pieces until a unit is complete; releases sequenced units in source order."""

    def __init__(self) -> None:
        self.pending: dict[str, list[Piece]] = {}        # unit -> pieces so far
        self.complete: dict[tuple[str, int], Piece] = {}  # (source, seq) -> waiting its turn
        self.next_seq: dict[str, int] = {}

    def add(self, piece: Piece) -> list[Piece]:
        """Add a piece; return the units (merged pieces) now ready, in order."""
        if piece.expect == 1:
            unit: Piece | None = piece
        else:
            parts = self.pending.setdefault(piece.unit, [])
            parts.append(piece)
            unit = None
            if len(parts) == piece.expect:
                unit = _merge(self.pending.pop(piece.unit))
        if unit is None:
            return []
        if unit.seq is None:
            return [unit]
        self.complete[(unit.source, unit.seq)] = unit
        ready: list[Piece] = []
        src = unit.source
        nxt = self.next_seq.get(src, 0)
        while (src, nxt) in self.complete:
            ready.append(self.complete.pop((src, nxt)))
            nxt += 1
        self.next_seq[src] = nxt
        return ready

    def __len__(self) -> int:
        return len(self.pending) + len(self.complete)


def _merge(parts: list[Piece]) -> Piece:
    items = [it for p in parts for it in p.items]
    items.sort(key=lambda it: it[0])
    first = parts[0]
    return Piece(first.shard, first.source, first.unit, first.seq, first.expect, items,
                 min(p.arrived for p in parts))
