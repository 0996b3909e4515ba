"""Fuzzing the parsing path: hostile and broken input never stops the job.

Hypothesis mutates valid Reports and Feedback into wrong types, huge strings
and arrays, deep nesting, NaN and infinities, invalid UTF-8, wrong-length
hashes, times far in the past and future, unknown fields and 1 MB values, and
throws well over 10,000 of them at ``Intake`` (the job's parse step) with the
default ``[limits]``. Every message must come out as an event or as a dead
letter whose error is specific (a known category, naming what was wrong);
nothing raises; dead letters and memory stay bounded whatever the input size.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rapidloop.base.config import load_config
from rapidloop.operators.eventtime import read_time
from rapidloop.schemas.intake import Intake
from rapidloop.schemas.model import Feedback, RawMessage, Report
from rapidloop.schemas.wire import MAX_TS, RAW_TEXT_CAP, Limits, WireParser

CFG = load_config(env={})
LIMITS = Limits.from_config(CFG)
KINDS = {"rep": "report", "fb": "feedback"}
MIN_MESSAGES = 10_000

# Every category a dead letter may carry; "internal" (a parser bug) is not one of them.
CODES = {"too_large", "invalid_utf8", "invalid_json", "not_object", "wrong_type",
         "missing_field", "too_long", "empty_string", "bad_sha256", "bad_enum",
         "out_of_range", "bad_time", "time_out_of_range", "empty"}

GOOD_REPORT: dict[str, Any] = {
    "report_id": "r-1", "ts": "2026-11-28T10:00:00.000Z", "org_id": "org-1",
    "device_id": "org-1-dev-1", "sha256": "ab" * 32, "source": "edr",
    "file": {"name": "x.exe", "size": 1000, "type": "pe", "signed": False, "signer": None,
             "path": "downloads"},
    "behaviors": ["process_injection"], "verdicts": {"static_ml": 0.9},
    "parent_sha256": None,
}
GOOD_FEEDBACK: dict[str, Any] = {
    "feedback_id": "f-1", "ts": "2026-11-28T10:00:00.000Z", "sha256": "cd" * 32,
    "verdict": "malicious", "source": "sandbox", "org_id": None,
}
REPORT_STRINGS = ("report_id", "org_id", "device_id", "source")
REPORT_FIELDS = (*GOOD_REPORT, "file.name", "file.size", "file.type", "file.signed",
                 "file.signer", "file.path")
MEGABYTE = 1 << 20

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=20)


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    head, _, rest = path.partition(".")
    if rest:
        obj[head] = dict(obj[head])
        obj[head][rest] = value
    else:
        obj[head] = value


def _encode(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj)


# Each mutation returns (message bytes, the dead-letter codes it must get; None: maybe valid).
Mutation = tuple[bytes, set[str] | None, str]


@st.composite
def wrong_type(draw: st.DrawFn) -> Mutation:
    field = draw(st.sampled_from(REPORT_FIELDS))
    value = draw(json_values)
    obj = dict(GOOD_REPORT)
    _set(obj, field, value)
    return _encode(obj), None, "report"


@st.composite
def huge_string(draw: st.DrawFn) -> Mutation:
    field = draw(st.sampled_from((*REPORT_STRINGS, "file.name", "file.signer")))
    n = draw(st.integers(LIMITS.max_string_len + 1, 200_000))
    obj = dict(GOOD_REPORT)
    _set(obj, field, draw(st.sampled_from("aé\x00\u2028")) * n)
    data = _encode(obj)
    return data, ({"too_large"} if len(data) > LIMITS.max_message_bytes else {"too_long"}), \
        "report"


@st.composite
def huge_array(draw: st.DrawFn) -> Mutation:
    n = draw(st.integers(LIMITS.max_list_len + 1, 20_000))
    obj = dict(GOOD_REPORT)
    if draw(st.booleans()):
        obj["behaviors"] = ["persistence"] * n
    else:
        obj["verdicts"] = {f"v{i}": 0.5 for i in range(max(n, LIMITS.max_verdicts + 1))}
    data = _encode(obj)
    return data, ({"too_large"} if len(data) > LIMITS.max_message_bytes else {"too_long"}), \
        "report"


@st.composite
def deep_nesting(draw: st.DrawFn) -> Mutation:
    depth = draw(st.integers(50, 5000))
    where = draw(st.sampled_from(("sha256", "file", "behaviors", "verdicts", "unknown", "top")))
    nest = "[" * depth + "]" * depth
    if where == "top":
        data = nest.encode()
        codes = {"invalid_json", "not_object"}
    else:
        base = _encode({k: v for k, v in GOOD_REPORT.items() if k != where})
        data = base[:-1] + f',"{where}":{nest}}}'.encode()
        codes = None if where == "unknown" else {"wrong_type", "invalid_json"}
    if len(data) > LIMITS.max_message_bytes:
        codes = {"too_large"}
    return data, codes, "report"


@st.composite
def bad_number(draw: st.DrawFn) -> Mutation:
    token = draw(st.sampled_from(("NaN", "Infinity", "-Infinity", "1e999", "-1e400", "nan",
                                  "inf", "0x10", "+1", "01", "1.", ".5")))
    field = draw(st.sampled_from(("verdicts.static_ml", "file.size")))
    obj = dict(GOOD_REPORT)
    _set(obj, field, "@@")
    data = _encode(obj).replace(b'"@@"', token.encode())
    return data, {"invalid_json"}, "report"


@st.composite
def out_of_range_number(draw: st.DrawFn) -> Mutation:
    obj = dict(GOOD_REPORT)
    if draw(st.booleans()):
        v = draw(st.one_of(st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
                           st.floats(min_value=1.000001, allow_nan=False,
                                     allow_infinity=False)))
        obj["verdicts"] = {"static_ml": v}
    else:
        obj["file"] = {**GOOD_REPORT["file"],
                       "size": draw(st.one_of(st.integers(min_value=-(2**63), max_value=-1),
                                              st.integers(min_value=2**53, max_value=2**64 - 1)))}
    return _encode(obj), {"out_of_range"}, "report"


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Mutation:
    data = bytearray(_encode(GOOD_REPORT))
    junk = draw(st.sampled_from((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                                 b"\xc0\xaf", b"\x80")))
    pos = draw(st.integers(0, len(data)))
    data[pos:pos] = junk
    return bytes(data), {"invalid_utf8", "invalid_json"}, "report"


@st.composite
def bad_hash(draw: st.DrawFn) -> Mutation:
    field = draw(st.sampled_from(("sha256", "parent_sha256")))
    value = draw(st.one_of(
        st.text(alphabet="0123456789abcdefABCDEF", max_size=200).filter(lambda s: len(s) != 64),
        st.text(min_size=64, max_size=64).filter(
            lambda s: bool(s.lower().strip("0123456789abcdef")))))
    obj = dict(GOOD_REPORT)
    obj[field] = value
    return _encode(obj), {"bad_sha256"}, "report"


@st.composite
def bad_time(draw: st.DrawFn) -> Mutation:
    kind = draw(st.sampled_from(("past", "future", "garbage")))
    if kind == "past":
        y = draw(st.integers(1, 1999))
        ts, codes = f"{y:04d}-06-15T12:00:00.000Z", {"time_out_of_range"}
    elif kind == "future":
        y = draw(st.integers(2100, 9999))
        ts, codes = f"{y:04d}-06-15T12:00:00.000Z", {"time_out_of_range"}
    else:
        ts = draw(st.sampled_from(("2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                                   "2026-11-28", "2026-11-28T25:00:00Z", "yesterday",
                                   "2026-11-28T10:00:00", "")) | st.text(max_size=30))
        codes = {"bad_time", "time_out_of_range"}
    obj = dict(GOOD_REPORT) if draw(st.booleans()) else dict(GOOD_FEEDBACK)
    obj["ts"] = ts
    return _encode(obj), codes, "report" if "report_id" in obj else "feedback"


@st.composite
def unknown_fields(draw: st.DrawFn) -> Mutation:
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=20).filter(
        lambda k: k not in GOOD_REPORT and k not in GOOD_FEEDBACK), json_values,
        min_size=1, max_size=8))
    obj = {**(GOOD_REPORT if draw(st.booleans()) else GOOD_FEEDBACK), **extra}
    return _encode(obj), set(), "report" if "report_id" in obj else "feedback"  # valid


@st.composite
def megabyte(draw: st.DrawFn) -> Mutation:
    field = draw(st.sampled_from(("report_id", "file.name", "behaviors", "unknown")))
    obj = dict(GOOD_REPORT)
    big: Any = "x" * MEGABYTE
    if field == "behaviors":
        big = [big]
    _set(obj, field, big)
    return _encode(obj), {"too_large"}, "report"


@st.composite
def feedback_mutation(draw: st.DrawFn) -> Mutation:
    field = draw(st.sampled_from(tuple(GOOD_FEEDBACK)))
    obj = dict(GOOD_FEEDBACK)
    if draw(st.booleans()):
        del obj[field]
    else:
        obj[field] = draw(json_values)
    return _encode(obj), None, "feedback"


@st.composite
def raw_bytes(draw: st.DrawFn) -> Mutation:
    return draw(st.binary(max_size=300)), None, draw(st.sampled_from(("report", "feedback")))


mutations = st.one_of(wrong_type(), huge_string(), huge_array(), deep_nesting(), bad_number(),
                      out_of_range_number(), invalid_utf8(), bad_hash(), bad_time(),
                      unknown_fields(), megabyte(), feedback_mutation(), raw_bytes())


def _check_event(ev: Report | Feedback) -> None:
    """An accepted message is within every limit."""
    lim = LIMITS
    assert len(ev.sha256) == 64 and not ev.sha256.strip("0123456789abcdef")
    assert 946684800.0 <= ev.ts < MAX_TS and math.isfinite(ev.ts)
    if isinstance(ev, Report):
        for s in (ev.report_id, ev.org_id, ev.device_id, ev.source, ev.file.name):
            assert len(s) <= lim.max_string_len
        assert len(ev.behaviors) <= lim.max_list_len
        assert len(ev.verdicts) <= lim.max_verdicts
        assert all(0.0 <= v <= 1.0 for v in ev.verdicts.values())
        assert 0 <= ev.file.size < 2**53
    else:
        assert ev.verdict in ("malicious", "benign")


def test_fuzzed_messages_become_events_or_specific_dead_letters() -> None:
    total = {"messages": 0, "dead": 0, "accepted": 0}

    @settings(max_examples=700, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.lists(mutations, min_size=15, max_size=15))
    def run(batch: list[Mutation]) -> None:
        intake = Intake(WireParser(LIMITS), KINDS)
        raws = [RawMessage("rep" if kind == "report" else "fb", data, b"k", 0, i)
                for i, (data, _, kind) in enumerate(batch)]
        unit = intake.parse(raws, now=1.0, seq=0)
        assert len(unit.events) + len(unit.dead) == len(batch)   # nothing vanishes
        assert "internal" not in unit.dead_codes, unit.dead
        assert set(unit.dead_codes) <= CODES
        by_offset = {d.offset: d for d in unit.dead}
        for i, (data, want, _) in enumerate(batch):
            dl = by_offset.get(i)
            if want == set():
                assert dl is None, (data[:200], dl)
            elif want is not None:
                assert dl is not None, data[:200]
            if dl is not None:
                assert dl.error and len(dl.error) <= 2048
                assert len(dl.raw) <= RAW_TEXT_CAP + 100
                if want:
                    assert any(c in dl.error for c in _phrases(want)), (want, dl.error)
        for ev in unit.events:
            _check_event(ev)
        # Handed on decoded, as the merge of files does (RawMessage.decoded): judged the same.
        handed = [RawMessage(r.topic, r.value, r.key, r.partition, r.offset, _decoded(r.value))
                  for r in raws]
        twin = Intake(WireParser(LIMITS), KINDS).parse(handed, now=1.0, seq=0)
        assert twin.events == unit.events
        assert [(d.offset, d.error) for d in twin.dead] == [(d.offset, d.error)
                                                            for d in unit.dead]
        total["messages"] += len(batch)
        total["dead"] += len(unit.dead)
        total["accepted"] += len(unit.events)

    run()
    assert total["messages"] >= MIN_MESSAGES, total
    assert total["dead"] >= MIN_MESSAGES // 2, total


_PHRASES = {
    "too_large": "more than the limit", "invalid_utf8": "not valid UTF-8",
    "invalid_json": "not valid JSON", "not_object": "must be a JSON object",
    "wrong_type": "must be", "too_long": "more than", "bad_sha256": "64 hex characters",
    "out_of_range": "must be", "bad_time": "field 'ts'", "time_out_of_range": "field 'ts'",
    "missing_field": "missing required field", "empty_string": "must not be empty",
    "bad_enum": "must be one of",
}


def _decoded(value: bytes) -> tuple[dict[str, Any], float | None] | None:
    """What the merge of files hands on with a line (``flows.file_io._timed_lines``)."""
    _, _, obj, ts = read_time(value, float("-inf"))
    return (obj, ts) if type(obj) is dict else None


def _phrases(codes: set[str]) -> list[str]:
    return [_PHRASES[c] for c in codes]


def test_memory_stays_bounded_on_huge_messages() -> None:
    """Megabyte values cost their own bytes, never a multiple: dead letters are capped."""
    intake = Intake(WireParser(LIMITS), KINDS)
    big = _encode({**GOOD_REPORT, "report_id": "x" * (4 * MEGABYTE)})
    nested = b"[" * 200_000 + b"]" * 200_000
    bad_utf8 = b"\xff" * (2 * MEGABYTE)
    msgs = [RawMessage("rep", v, None, 0, i) for i, v in enumerate([big, nested, bad_utf8] * 50)]
    tracemalloc.start()
    try:
        unit = intake.parse(msgs, now=1.0, seq=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not unit.events and len(unit.dead) == 150
    assert set(unit.dead_codes) == {"too_large"}
    # 150 dead letters of at most RAW_TEXT_CAP characters each (3 bytes per replaced byte),
    # against 150 inputs of 0.4 to 4 MB: the inputs are never copied whole.
    assert peak < 150 * (3 * RAW_TEXT_CAP + 4096) + 8 * MEGABYTE, peak
    assert all(len(d.raw) <= RAW_TEXT_CAP + 100 and "truncated" in d.raw for d in unit.dead)
