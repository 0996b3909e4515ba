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

Where parsing happens. Sources that read one event-time order (the live
Kafka merge) hand on raw messages with the sha256 prefix they carry; the
unit is split *raw* (:func:`split_raw`) and each shard parses its own
messages (:func:`parse_piece`), so the worker that reads all input does not
also parse all of it, and what crosses workers is bytes, not parsed objects
(about 0.7 µs a message to pickle and unpickle against 14 µs for a Report).
Parsing is the same function either way, with one piece of state that is
global: the parser rejects a time more than ``limits.max_future_skew_s``
after the newest time it accepted before, in input order, across all
shards. :class:`SkewReference` keeps that rule exact on the reading worker
without parsing everything there: it tells each shard, for the rare message
whose verdict depends on that newest time, the exact time to compare with.

>>> shard_of("0000000f" + "0" * 56, 8), shard_key(3)
(7, '003')
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rapidloop.schemas.intake import FEEDBACK, REPORT, Intake
from rapidloop.schemas.model import DeadLetter, Feedback, RawMessage, Report
from rapidloop.schemas.timefmt import parse_ts
from rapidloop.schemas.wire import MAX_TS, GivenNewestParser, Limits

from .correlate import item_from_state, item_state
from .snapshot import register


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

    def snapshot(self) -> dict[str, Any]:
        """The pieces held and the next unit expected per source, as plain data (a
        piece's items by ``correlate.item_state``)."""
        return {"pending": [[unit, [_piece_state(p) for p in parts]]
                            for unit, parts in self.pending.items()],
                "complete": [[src, seq, _piece_state(p)]
                             for (src, seq), p in self.complete.items()],
                "next_seq": dict(self.next_seq)}

    @classmethod
    def from_snapshot(cls, state: dict[str, Any]) -> UnitAssembler:
        """The assembler ``snapshot`` saved."""
        asm = cls()
        asm.pending = {unit: [_piece_from_state(p) for p in parts]
                       for unit, parts in state["pending"]}
        asm.complete = {(src, seq): _piece_from_state(p) for src, seq, p in state["complete"]}
        asm.next_seq = dict(state["next_seq"])
        return asm


KIND = "unit-assembler"
register(KIND, 1)


def _piece_state(p: Piece) -> tuple[Any, ...]:
    return (p.shard, p.source, p.unit, p.seq, p.expect,
            [(i, item_state(it)) for i, it in p.items], p.arrived)


def _piece_from_state(state: tuple[Any, ...]) -> Piece:
    shard, source, unit, seq, expect, items, arrived = state
    return Piece(shard, source, unit, seq, expect,
                 [(i, item_from_state(it)) for i, it in items], arrived)


def _merge(parts: list[Piece]) -> Piece:
    items = [it for p in parts for it in p.items]
    items.sort(key=lambda it: it[0])
    first = parts[0]
    return Piece(first.shard, first.source, first.unit, first.seq, first.expect, items,
                 min(p.arrived for p in parts))


# --- raw units: split before parsing, parse on the shard -------------------------------------

SEQUENCED = "replay"
"""The source name of numbered units (the assembler takes them in sequence per source)."""

ReadItem = tuple[str, bytes | None, bytes | None, int | None, int | None, int | None,
                 float | None]
"""A message as a routed source reads it: ``(topic, value, key, partition, offset, route,
ts)``, a RawMessage's fields, then ``route``, the integer value of the first 8 hex digits
of the ``sha256`` its JSON holds (None if there is none that reads so), and ``ts``, its
``ts`` field as the parser reads it (None unless a string that reads as a time)."""


class RawPiece:
    """The raw messages of one unit that belong to one shard, not yet parsed.

    ``items`` are ``(index_in_unit, topic, value, key, partition, offset, ref)``:
    ``ref`` is None, or the exact newest accepted time the shard's parser must
    compare this message's time with (see :class:`SkewReference`). Pickled as
    one plain tuple: it is what crosses workers, once per shard and unit.
    """

    __slots__ = ("arrived", "expect", "items", "seq", "shard", "unit")

    def __init__(self, shard: int, unit: str, seq: int | None, expect: int,
                 items: list[tuple[Any, ...]], arrived: float) -> None:
        self.shard = shard
        self.unit = unit
        self.seq = seq
        self.expect = expect
        self.items = items
        self.arrived = arrived

    def __reduce__(self) -> tuple[Any, ...]:
        return (RawPiece, (self.shard, self.unit, self.seq, self.expect, self.items,
                           self.arrived))


def split_raw(seq: int, items: list[ReadItem], refs: list[float | None] | None, shards: int,
              arrived: float) -> list[tuple[str, RawPiece]]:
    """One raw piece per shard (empty ones included), like :func:`split_unit`.

    A message goes to the shard of its ``route``: a message the parser accepts
    has a valid sha256, whose shard that is; any other message becomes a dead
    letter wherever it is parsed, and one without a route goes to a fixed
    shard (its offset modulo the shard count). Every non-empty unit is a
    barrier (``expect == shards``): which messages are events is only known
    once they are parsed.
    """
    expect = shards if items else 1
    parts: list[list[tuple[Any, ...]]] = [[] for _ in range(shards)]
    for i, (topic, value, key, partition, offset, r, _) in enumerate(items):
        if r is None:
            r = offset if type(offset) is int else 0
        parts[r % shards].append((i, topic, value, key, partition, offset,
                                  None if refs is None else refs[i]))
    unit = f"{SEQUENCED}#{seq}"
    return [(shard_key(s), RawPiece(s, unit, seq, expect, part, arrived))
            for s, part in enumerate(parts)]


class SkewReference:
    """The future-skew rule of :class:`WireParser`, kept exact for parsers on every shard.

    The one parser of a single pipeline remembers the newest time it accepted
    and rejects a message whose time is more than ``max_future_skew_s`` after
    it. Parsed on its shard, a message must meet the same verdict, and a
    rejection must quote the same newest time. This runs on the reading
    worker, over every message in input order, with the time read from its
    JSON (which the event-time merge reads anyway); per message it says
    None (compare with nothing: the rule certainly passes) or the exact
    newest accepted time.

    How, without parsing everything here: ``lo`` is the newest time of the
    messages parsed here and accepted, a lower bound of the true newest. A
    time no more than the skew after ``lo`` certainly passes. Such a
    message is parsed here only when its time is ``slack`` past ``lo`` (so
    ``lo`` stays within ``slack`` of the truth, about one message per minute
    of event time), else remembered if it could raise the newest
    (``pending``). Only a message beyond ``lo`` + skew (a clock off by a day,
    or the very first messages) needs the exact newest: the pending messages
    are parsed then, newest first until one is accepted, and the answer is
    exact. Acceptance is decided by the same parser with the rule left out,
    which is sound because each message parsed so passes it.
    """

    PENDING_CAP = 50_000

    def __init__(self, kinds: dict[str, str], limits: Limits, slack_s: float = 60.0) -> None:
        self.kinds = kinds
        self.parser = GivenNewestParser(limits)
        self.skew = float(limits.max_future_skew_s)
        self.min_ts = parse_ts(limits.min_ts)
        self.slack = max(0.0, min(slack_s, self.skew / 2))
        self.lo: float | None = None
        self.pending: list[tuple[float, str, bytes]] = []
        self.parsed = 0            # messages parsed here (for tests and curiosity)

    def _accepts(self, topic: str, value: bytes | None) -> bool:
        """Whether the parser takes ``value`` (the skew rule left out), as Intake calls it."""
        kind = self.kinds.get(topic)
        if value is None:
            return False
        self.parsed += 1
        try:
            if kind == REPORT:
                self.parser.report(value)
            elif kind == FEEDBACK:
                self.parser.feedback(value)
            else:
                return False
        except Exception:
            return False
        return True

    def _resolve(self) -> float | None:
        """The exact newest accepted time so far: parse what is pending, newest first."""
        lo = self.lo
        for ts, topic, value in sorted(self.pending, key=lambda p: p[0], reverse=True):
            if lo is not None and ts <= lo:
                break
            if self._accepts(topic, value):
                lo = ts
                break
        self.pending.clear()
        self.lo = lo
        return lo

    def refs(self, items: list[ReadItem]) -> list[float | None] | None:
        """Per message of a unit (in input order): None or the exact newest accepted time
        to compare its time with. None when every entry is None."""
        skew, min_ts, slack = self.skew, self.min_ts, self.slack
        out: list[float | None] | None = None
        pending = self.pending
        for i, item in enumerate(items):
            ts = item[6]
            if ts is None or ts < min_ts or ts >= MAX_TS:
                continue              # rejected whatever the newest time: not accepted either
            lo = self.lo
            if lo is not None and not ts > lo + skew:
                if ts > lo + slack:
                    topic, value = items[i][0], items[i][1]
                    if self._accepts(topic, value):
                        self.lo = ts
                        if len(pending) > 1024:
                            pending[:] = [p for p in pending if p[0] > ts]
                elif ts > lo:
                    pending.append((ts, items[i][0], items[i][1]))   # type: ignore[arg-type]
                    if len(pending) > self.PENDING_CAP:
                        self._resolve()
                continue
            newest = self._resolve()
            if newest is None or not ts > newest + skew:
                if self._accepts(items[i][0], items[i][1]):
                    self.lo = ts if newest is None or ts > newest else newest
            else:
                if out is None:
                    out = [None] * len(items)
                out[i] = newest
        return out


@dataclass(slots=True)
class ParsedPiece:
    """What a shard's parser made of a raw piece: the events (with their index in the
    unit), the dead letters, their reason codes, and the newest event time."""

    events: list[tuple[int, Report | Feedback]]
    dead: list[DeadLetter]
    codes: Counter[str]
    newest: float


def parse_piece(intake: Intake, piece: RawPiece, now: float) -> ParsedPiece:
    """Parse a raw piece with ``intake`` (whose parser is a :class:`GivenNewestParser`),
    exactly as one parser over the whole input would have (see :class:`SkewReference`)."""
    parser = intake.parser
    events: list[tuple[int, Report | Feedback]] = []
    dead: list[DeadLetter] = []
    codes: Counter[str] = Counter()
    items = piece.items
    start = 0
    n = len(items)
    while start < n:
        ref = items[start][6]
        end = start + 1
        while end < n and items[end][6] == ref:
            end += 1
        parser.set_newest(ref)
        group = items[start:end]
        msgs = [RawMessage(it[1], it[2], it[3], it[4], it[5]) for it in group]
        unit = intake.parse(msgs, now)
        if not _attribute(group, unit.events, unit.dead, events):
            for it, msg in zip(group, msgs, strict=True):   # one by one: unambiguous
                one = intake.parse([msg], now)
                if one.events:
                    events.append((it[0], one.events[0]))
                dead.extend(one.dead)
                codes.update(one.dead_codes)
        else:
            dead.extend(unit.dead)
            codes.update(unit.dead_codes)
        start = end
    parser.set_newest(None)
    newest = max((ev.ts for _, ev in events), default=0.0)
    return ParsedPiece(events, dead, codes, newest)


def _attribute(group: list[tuple[Any, ...]], evs: list[Report | Feedback],
               dead: list[DeadLetter], out: list[tuple[int, Report | Feedback]]) -> bool:
    """Give each event its message's index: the messages that did not become dead letters
    (recognised by topic, partition and offset, in order) became the events, in order.
    False if that cannot be told for sure (two messages of the group alike)."""
    if len(evs) + len(dead) != len(group):
        return False
    d = e = 0
    pairs: list[tuple[int, Report | Feedback]] = []
    for k, it in enumerate(group):
        if d < len(dead):
            dl = dead[d]
            if dl.offset == it[5] and dl.partition == it[4] and dl.topic == it[1]:
                if any(o[5] == it[5] and o[4] == it[4] and o[1] == it[1]
                       for o in group[k + 1:]):
                    return False
                d += 1
                continue
        if e == len(evs):
            return False
        pairs.append((it[0], evs[e]))
        e += 1
    if d != len(dead) or e != len(evs):
        return False
    out.extend(pairs)
    return True
