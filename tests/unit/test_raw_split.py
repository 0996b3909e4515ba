"""Split raw, parse on the shard: the same events and dead letters as one central parser.

The live event-time source hands on raw messages; each shard parses its own
(``operators/sharding.py``: ``split_raw``, ``SkewReference``, ``parse_piece``).
The one piece of global parser state, the newest accepted time that the
future-skew rule compares with, is kept exact by ``SkewReference``: these
tests hold the sharded parse to one ``WireParser`` over the same messages in
the same order, message by message, on streams with broken clocks (a day
ahead, far behind), bad messages whose time is fine, duplicate and
upper-case hashes, tenant topics and tiny skews. And the merged Kafka
source's one-decode reading gives the event-time merge exactly its own
``merge_time``.
"""

from __future__ import annotations

import contextlib
import pickle
import random
from typing import Any

import orjson
import pytest

from rapidloop.flows.kafka_io import read_fields
from rapidloop.operators.eventtime import _NEVER, DEFAULT_MAX_JUMP_S, merge_time
from rapidloop.operators.sharding import (
    RawPiece,
    SkewReference,
    parse_piece,
    shard_of,
    split_raw,
)
from rapidloop.schemas.intake import FEEDBACK, REPORT, Intake, TopicKind
from rapidloop.schemas.model import RawMessage
from rapidloop.schemas.timefmt import format_ts, parse_ts
from rapidloop.schemas.wire import GivenNewestParser, Limits, WireParser

from .helpers import run_flow

T0 = 1_795_000_000.0
KINDS: dict[str, str] = {
    "rep": REPORT, "fb": FEEDBACK,
    "rep.tenant.org-7": TopicKind(REPORT, "org-7"),
    "fb.tenant.org-7": TopicKind(FEEDBACK, "org-7"),
}


def _raw_items(msgs: list[RawMessage], last: dict[Any, float]) -> list[tuple[Any, ...]]:
    """What the merged Kafka source hands on for ``msgs``: each message with the route and
    time its one decode found (``read_fields``), ``last`` the merge's time per partition."""
    items = []
    for m in msgs:
        name = (m.topic, m.partition)
        _, last[name], r, ts = read_fields(m.value, last.get(name, _NEVER), DEFAULT_MAX_JUMP_S)
        items.append((m.topic, m.value, m.key, m.partition, m.offset, r, ts))
    return items


def _report(rng: random.Random, ts: Any, sha: str, org: str) -> dict[str, Any]:
    return {"report_id": f"r{rng.randrange(10**9)}", "ts": ts, "org_id": org,
            "device_id": f"{org}/d{rng.randrange(5)}", "sha256": sha,
            "file": {"name": "x.exe", "size": 10, "type": "pe", "signed": False,
                     "path": "downloads"}}


def _value(rng: random.Random, t: float, prev: float, topic: str, skew: float
           ) -> bytes | None:
    """A message at about time ``t``: mostly good, some broken in the ways that matter."""
    sha = f"{rng.randrange(1 << 256):064x}"
    roll = rng.random()
    ts: Any = format_ts(t)
    if roll < 0.04:
        ts = format_ts(t + rng.choice([1, 2, 3, 30]) * 86400.0)    # a clock days ahead
    elif roll < 0.06:
        ts = format_ts(t + skew + rng.uniform(-120, 120))         # near the skew's edge
    elif roll < 0.07:
        ts = format_ts(prev + skew + rng.uniform(-2, 2))          # right at it
    elif roll < 0.08:
        ts = format_ts(t - rng.uniform(0, 5) * 86400.0)           # late
    elif roll < 0.09:
        ts = rng.choice([None, 5, "yesterday", "1999-01-01T00:00:00Z", "2101-01-01T00:00:00Z"])
    if rng.random() < 0.03:
        sha = sha.upper()
    org = rng.choice(["org-1", "org-2", "org-7"])
    if topic.startswith("fb"):
        obj: dict[str, Any] = {"feedback_id": f"f{rng.randrange(10**9)}", "ts": ts,
                               "sha256": sha, "verdict": rng.choice(["malicious", "benign"]),
                               "source": rng.choice(["sandbox", "org_report"]), "org_id": org}
    else:
        obj = _report(rng, ts, sha, org)
    bad = rng.random()
    if bad < 0.03:
        obj["sha256"] = sha[:40]                                    # good time, bad hash
    elif bad < 0.05:
        del obj["org_id" if topic.startswith("rep") else "ts"]
    elif bad < 0.06:
        return b"{not json"
    elif bad < 0.065:
        return None
    elif bad < 0.07:
        return orjson.dumps([obj])
    elif bad < 0.075:
        obj["sha256"] = "0x" + sha[2:]
    return orjson.dumps(obj)


def _stream(seed: int, n: int, skew: float = 86400.0) -> list[RawMessage]:
    rng = random.Random(seed)
    out = []
    t = T0
    offsets: dict[tuple[str, int], int] = {}
    for _ in range(n):
        prev = t
        t += rng.expovariate(1 / 30.0)
        if rng.random() < 0.002:
            t += rng.choice([2, 40]) * 86400.0        # the whole input jumps ahead
        topic = rng.choice([*KINDS, "rep", "rep", "rep", "unknown"])
        part = rng.randrange(3)
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        key = rng.choice([None, b"k"])
        out.append(RawMessage(topic, _value(rng, t, prev, topic, skew), key, part, off))
    return out


def _central(msgs: list[RawMessage], limits: Limits) -> tuple[dict[int, Any], list[Any]]:
    """One parser over the input, message by message: index → event; the dead letters."""
    intake = Intake(WireParser(limits), KINDS)
    events, dead = {}, []
    for i, m in enumerate(msgs):
        unit = intake.parse([m], 0.0)
        if unit.events:
            events[i] = unit.events[0]
        dead += [(d.topic, d.partition, d.offset, d.error) for d in unit.dead]
    return events, dead


def _sharded(msgs: list[RawMessage], limits: Limits, shards: int, batch: int,
             slack: float) -> tuple[dict[int, Any], list[Any], int]:
    skew = SkewReference(KINDS, limits, slack_s=slack)
    intakes = [Intake(GivenNewestParser(limits), KINDS) for _ in range(shards)]
    events, dead = {}, []
    last: dict[tuple[str, int | None], float] = {}
    for seq, start in enumerate(range(0, len(msgs), batch)):
        unit = msgs[start:start + batch]
        items = _raw_items(unit, last)
        pieces = split_raw(seq, items, skew.refs(items), shards, 0.0)
        assert [k for k, _ in pieces] == [f"{s:03d}" for s in range(shards)]
        for _, piece in pieces:
            piece = pickle.loads(pickle.dumps(piece))      # as it crosses workers
            assert isinstance(piece, RawPiece) and piece.expect == shards
            got = parse_piece(intakes[piece.shard], piece, 0.0)
            for idx, ev in got.events:
                assert shard_of(ev.sha256, shards) == piece.shard
                events[start + idx] = ev
            dead += [(d.topic, d.partition, d.offset, d.error) for d in got.dead]
    return events, dead, skew.parsed


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("skew_s, batch, slack", [(86400.0, 200, 60.0), (86400.0, 7, 0.0),
                                                  (60.0, 50, 60.0), (0.0, 31, 60.0)])
def test_sharded_parse_is_the_central_parse(seed: int, skew_s: float, batch: int,
                                            slack: float) -> None:
    msgs = _stream(seed, 3000, skew_s)
    limits = Limits(max_future_skew_s=skew_s)
    want_events, want_dead = _central(msgs, limits)
    got_events, got_dead, parsed = _sharded(msgs, limits, 4, batch, slack)
    assert got_events == want_events
    assert sorted(got_dead, key=repr) == sorted(want_dead, key=repr)
    # the stream has what makes the rule bite, and the central side parsed little of it
    assert any("after the newest accepted time" in d[3] for d in want_dead)
    if skew_s == 86400.0 and slack:
        assert parsed < len(msgs) / 4


def test_the_rule_quotes_the_same_newest_time() -> None:
    good = orjson.dumps(_report(random.Random(1), format_ts(T0), "ab" * 32, "org-1"))
    ahead = orjson.dumps(_report(random.Random(2), format_ts(T0 + 2 * 86400), "cd" * 32,
                                 "org-1"))
    bad_hash = orjson.dumps({**orjson.loads(good), "sha256": "x", "ts": format_ts(T0 + 50)})
    msgs = [RawMessage("rep", v, None, 0, i) for i, v in enumerate([good, bad_hash, ahead])]
    want_events, want_dead = _central(msgs, Limits())
    got_events, got_dead, _ = _sharded(msgs, Limits(), 8, 3, 60.0)
    assert got_events == want_events and sorted(got_dead) == sorted(want_dead)
    assert f"newest accepted time {format_ts(T0)}" in want_dead[-1][3]


@pytest.mark.parametrize("value", [
    b'{"ts": "2026-01-01T00:00:00Z", "sha256": "' + b"ab" * 32 + b'"}',
    b'{"ts": "2026-01-03T00:00:00Z"}', b'{"ts": "1999-01-01T00:00:00Z"}',
    b'{"ts": "2030-01-01T00:00:00Z"}', b'{"ts": 5}', b'{"ts": null}', b"{}", b"[1]",
    b'"str"', b"not json", None, b'{"ts": "2026-01-01T00:00:00+02:00", "sha256": 7}',
    b'{"ts": "2026-13-01T00:00:00Z"}', b'{"sha256": "zz", "ts": "2026-01-01T00:00:00.5Z"}',
])
@pytest.mark.parametrize("last", [_NEVER, 1_767_225_600.0, 1_767_225_600.0 - 86400 * 3])
def test_read_fields_is_merge_time(value: bytes | None, last: float) -> None:
    mt, new_last, route, ts = read_fields(value, last, DEFAULT_MAX_JUMP_S)
    assert (mt, new_last) == merge_time(value, last, DEFAULT_MAX_JUMP_S)
    obj = None
    with contextlib.suppress(Exception):
        obj = orjson.loads(value)  # type: ignore[arg-type]
    sha = obj.get("sha256") if isinstance(obj, dict) else None
    if isinstance(sha, str) and len(sha) == 64:
        assert route is not None and route % 8 == shard_of(sha.lower(), 8)
    if ts is not None:
        assert isinstance(obj, dict) and isinstance(obj["ts"], str)


# ------------------------------------------------------------ the flow, routed or parsed

class _Routed:
    """Marks a TestingSource as routed (batches of ReadItems), as KafkaMergedSource is."""

    routed = True


def _flow_outputs(batches: list[Any], routed: bool, workers: int) -> tuple[list[Any], list[Any]]:
    from bytewax.testing import TestingSource

    source: Any = TestingSource(batches)
    if routed:
        source = type("RoutedTestingSource", (_Routed, TestingSource), {})(batches)
    rows, dead = run_flow(source, {"reports": REPORT, "feedback": FEEDBACK}, workers, 2)
    return rows, sorted((d["topic"], d["partition"], d["offset"], d["error"]) for d in dead)


def test_the_routed_flow_decides_what_the_parsed_flow_decides(tmp_path: Any) -> None:
    from rapidloop.cli import main
    from rapidloop.flows.file_io import merged_lines

    assert main(["simulate", "--out", str(tmp_path), "--seed", "3", "--reports", "5000",
                 "--orgs", "20"]) == 0
    msgs = list(merged_lines([(str(tmp_path / "reports.jsonl.gz"), "reports"),
                              (str(tmp_path / "feedback.jsonl.gz"), "feedback")]))
    rng = random.Random(3)
    for i in rng.sample(range(len(msgs)), 40):           # broken clocks and broken messages
        m = msgs[i]
        if m.value and rng.random() < 0.5:
            obj = orjson.loads(m.value)
            obj["ts"] = format_ts(parse_ts(obj["ts"]) + rng.choice([2, -11]) * 86400.0)
            msgs[i] = RawMessage(m.topic, orjson.dumps(obj), m.key, m.partition, m.offset)
        else:
            msgs[i] = RawMessage(m.topic, b'{"sha256": "' + b"ab" * 32 + b'", "ts": 3}',
                                 m.key, m.partition, m.offset)
    batches = [msgs[i:i + 300] for i in range(0, len(msgs), 300)]
    parsed = [(seq, b) for seq, b in enumerate(batches)]
    routed = []
    last: dict[Any, float] = {}
    for seq, b in enumerate(batches):
        routed.append((seq, _raw_items(b, last)))
    want = _flow_outputs(parsed, False, 1)
    assert want[0] and any("after the newest accepted time" in d[3] for d in want[1])
    assert _flow_outputs(routed, True, 1) == want
    assert _flow_outputs(routed, True, 2) == want


def test_messages_alike_in_a_piece_keep_their_own_outcome() -> None:
    """A source that numbers nothing (offset None) still gets each message its outcome."""
    good = orjson.dumps(_report(random.Random(4), format_ts(T0), "ab" * 32, "org-1"))
    items = [(i, "rep", v, None, None, None, None)
             for i, v in enumerate([b"bad", good, b"bad", good])]
    got = parse_piece(Intake(GivenNewestParser(Limits()), KINDS),
                      RawPiece(0, "replay#0", 0, 1, items, 0.0), 0.0)
    assert [i for i, _ in got.events] == [1, 3] and len(got.dead) == 2
