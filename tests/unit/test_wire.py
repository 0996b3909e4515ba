"""The wire fast path: normalisation, error codes and messages, round trips, times."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rapidloop.base.config import load_config
from rapidloop.schemas.model import (
    BEHAVIORS,
    FILE_PATHS,
    FILE_TYPES,
    Decision,
    FileInfo,
    RawMessage,
)
from rapidloop.schemas.timefmt import _parse_general, format_ts, parse_ts
from rapidloop.schemas.wire import (
    RAW_TEXT_CAP,
    InvalidMessage,
    Limits,
    WireParser,
    dead_letter,
    decision_to_dict,
    encode_dead_letter,
    encode_decision,
    encode_feedback,
    encode_report,
    feedback_to_dict,
    report_to_dict,
)

SHA = "ab" * 32
TS = "2026-11-29T01:02:03.456Z"
T = 1795914123.456


def rep(**fields: Any) -> bytes:
    base: dict[str, Any] = {"report_id": "r1", "ts": TS, "org_id": "org-1",
                            "device_id": "org-1/dev-1", "sha256": SHA}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def fb(**fields: Any) -> bytes:
    base: dict[str, Any] = {"feedback_id": "f1", "ts": TS, "sha256": SHA,
                            "verdict": "malicious", "source": "sandbox"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def reject(value: bytes, kind: str = "report", parser: WireParser | None = None) -> InvalidMessage:
    p = parser or WireParser()
    with pytest.raises(InvalidMessage) as info:
        getattr(p, kind)(value)
    return info.value


# --- normalisation -------------------------------------------------------------------------

def test_minimal_report_takes_neutral_defaults() -> None:
    r = WireParser().report(rep())
    assert (r.report_id, r.ts, r.org_id, r.device_id, r.sha256) == (
        "r1", T, "org-1", "org-1/dev-1", SHA)
    assert r.source == "other"
    assert r.file == FileInfo()
    assert r.behaviors == ()
    assert r.verdicts == {}
    assert r.parent_sha256 is None


def test_full_report_is_normalised() -> None:
    r = WireParser().report(rep(
        sha256=SHA.upper(), parent_sha256=("CD" * 32), source="edr",
        file={"name": "a.exe", "size": 10.0, "type": "pe", "signed": True, "signer": "Acme",
              "path": "temp", "zone": "internet"},
        behaviors=["persistence", "made_up", "persistence", "c2_beacon", "made_up"],
        verdicts={"static_ml": 1, "av": 0, "x": 0.25}, extension={"anything": [1, 2]}))
    assert r.sha256 == SHA
    assert r.parent_sha256 == "cd" * 32
    assert r.file == FileInfo("a.exe", 10, "pe", True, "Acme", "temp")
    assert type(r.file.size) is int
    assert r.behaviors == ("persistence", "made_up", "c2_beacon")
    assert r.verdicts == {"static_ml": 1.0, "av": 0.0, "x": 0.25}
    assert all(type(v) is float for v in r.verdicts.values())


def test_partial_file_object_keeps_other_defaults() -> None:
    r = WireParser().report(rep(file={"size": 5, "signer": None}))
    assert r.file == FileInfo("", 5, "other", False, None, "other")


def test_feedback_parsing() -> None:
    p = WireParser()
    f = p.feedback(fb(sha256=SHA.upper()))
    assert (f.feedback_id, f.ts, f.sha256, f.verdict, f.source, f.org_id) == (
        "f1", T, SHA, "malicious", "sandbox", None)
    assert f.trusted
    g = p.feedback(fb(source="org_report", verdict="benign", org_id="org-9"))
    assert (g.source, g.org_id, g.trusted) == ("org_report", "org-9", False)


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "code", "message"), [
    (rep(org_id=...), "missing_field", "missing required field 'org_id'"),
    (rep(sha256=SHA[:63]), "bad_sha256", "field 'sha256' must be 64 hex characters, got 63"),
    (rep(sha256="z" * 64), "bad_sha256", "field 'sha256' must be 64 hex characters, got 'zzz"),
    (rep(sha256=12), "wrong_type", "field 'sha256' must be a string of 64 hex characters, got "
                                   "integer"),
    (rep(org_id=None), "wrong_type", "field 'org_id' must be a string, got null"),
    (rep(report_id=""), "empty_string", "field 'report_id' must not be empty"),
    (rep(device_id="d" * 257), "too_long", "field 'device_id' is 257 characters long, more "
                                           "than 256"),
    (rep(file={"size": -1}), "out_of_range", "field 'file.size' must be an integer >= 0"),
    (rep(file={"size": "big"}), "wrong_type", "field 'file.size' must be an integer >= 0, got "
                                              "string"),
    (rep(file={"size": True}), "wrong_type", "field 'file.size' must be an integer >= 0, got "
                                             "boolean"),
    (rep(file={"type": "exe"}), "bad_enum", "field 'file.type' must be one of pe, script, "
                                            "document, archive, elf, other, got 'exe'"),
    (rep(file={"path": 3}), "wrong_type", "field 'file.path' must be a string, got integer"),
    (rep(file="a.exe"), "wrong_type", "field 'file' must be an object, got string"),
    (rep(behaviors="persistence,discovery"), "wrong_type", "field 'behaviors' must be an array"),
    (rep(behaviors=["a", 3]), "wrong_type", "field 'behaviors[1]' must be a string, got integer"),
    (rep(behaviors=["x"] * 65), "too_long", "field 'behaviors' has 65 items, more than 64"),
    (rep(verdicts=[0.5]), "wrong_type", "field 'verdicts' must be an object of numbers"),
    (rep(verdicts={"ml": 1.5}), "out_of_range", "field 'verdicts.ml' must be a number in [0, 1],"
                                                " got 1.5"),
    (rep(verdicts={"ml": True}), "wrong_type", "field 'verdicts.ml' must be a number in [0, 1]"),
    (rep(verdicts={"": 0.5}), "empty_string", "field 'verdicts' has an empty classifier name"),
    (rep(verdicts={str(i): 0.0 for i in range(33)}), "too_long",
     "field 'verdicts' has 33 entries, more than 32"),
    (rep(ts=1795914123), "wrong_type", "field 'ts' must be an RFC 3339 time string, got integer"),
    (rep(ts="2026-11-29 01:02:03Z"), "bad_time", "field 'ts': not an RFC 3339 time"),
    (rep(ts="2026-02-29T00:00:00Z"), "bad_time", "field 'ts': day 29 out of range for month 2"),
    (rep(ts="1999-12-31T23:59:59.999Z"), "time_out_of_range",
     "field 'ts' '1999-12-31T23:59:59.999Z' is before the earliest accepted time "
     "2000-01-01T00:00:00.000Z"),
    (rep(ts="2100-01-01T00:00:00Z"), "time_out_of_range",
     "field 'ts' '2100-01-01T00:00:00Z' is not before 2100-01-01T00:00:00.000Z"),
    (rep(parent_sha256="x"), "bad_sha256", "field 'parent_sha256' must be 64 hex characters"),
    (b"[1, 2]", "not_object", "message must be a JSON object, got array"),
    (b'"report"', "not_object", "message must be a JSON object, got string"),
    (b'{"report_id": "r1", "ts": ', "invalid_json", "message is not valid JSON"),
    (b"", "invalid_json", "message is not valid JSON"),
    (b'{"report_id": "r\xff1"}', "invalid_utf8", "message is not valid UTF-8: invalid start "
                                                   "byte at byte 16"),
    (b'{"a": 1e400}', "invalid_json", "message is not valid JSON"),
])
def test_report_errors(value: bytes, code: str, message: str) -> None:
    exc = reject(value)
    assert exc.code == code
    assert str(exc).startswith(message), str(exc)


@pytest.mark.parametrize(("value", "code", "message"), [
    (fb(verdict=...), "missing_field", "missing required field 'verdict'"),
    (fb(verdict="suspicious"), "bad_enum", "field 'verdict' must be one of malicious, benign, "
                                           "got 'suspicious'"),
    (fb(source="user"), "bad_enum", "field 'source' must be one of sandbox, analyst, "
                                    "org_report, got 'user'"),
    (fb(source="org_report"), "missing_field",
     "field 'org_id' is required when source is 'org_report'"),
    (fb(source="org_report", org_id=None), "missing_field", "field 'org_id' is required"),
    (fb(org_id=""), "empty_string", "field 'org_id' must not be empty"),
    (fb(org_id=7), "wrong_type", "field 'org_id' must be a string, got integer"),
    (fb(feedback_id=["f"]), "wrong_type", "field 'feedback_id' must be a string, got array"),
])
def test_feedback_errors(value: bytes, code: str, message: str) -> None:
    exc = reject(value, "feedback")
    assert exc.code == code
    assert str(exc).startswith(message), str(exc)


def test_too_large_is_rejected_before_parsing() -> None:
    p = WireParser(Limits(max_message_bytes=100))
    exc = reject(b"{" + b" " * 200, parser=p)   # not JSON either: size wins
    assert exc.code == "too_large"
    assert str(exc) == "message is 201 bytes, more than the limit of 100"


def test_messages_never_quote_much_of_the_input() -> None:
    huge = "9" * 10_000
    for value in (rep(ts=huge), rep(sha256="g" * 64), rep(file={"type": huge}),
                  rep(parent_sha256="Z" * 64), fb(verdict=huge)):
        with pytest.raises(InvalidMessage) as info:
            WireParser().report(value) if b"report_id" in value else WireParser().feedback(value)
        assert len(str(info.value)) < 250, str(info.value)


def test_invalid_message_pickles() -> None:
    exc = pickle.loads(pickle.dumps(InvalidMessage("bad_enum", "field 'x' is bad")))
    assert (exc.code, str(exc)) == ("bad_enum", "field 'x' is bad")


# --- event time bounds ---------------------------------------------------------------------

def test_future_skew_is_measured_from_the_newest_accepted_ts() -> None:
    p = WireParser()
    assert p.newest_ts is None
    p.report(rep(ts="2099-06-01T00:00:00Z"))        # the first only has to be before 2100
    assert p.newest_ts == parse_ts("2099-06-01T00:00:00Z")
    p.report(rep(ts="2099-06-02T00:00:00Z"))        # exactly max_future_skew_s ahead
    exc = reject(rep(ts="2099-06-03T00:00:00.001Z"), parser=p)
    assert exc.code == "time_out_of_range"
    assert "more than 86400 s after the newest accepted time 2099-06-02T00:00:00.000Z" in str(exc)
    p.report(rep(ts="2026-01-01T00:00:00Z"))        # the past is fine
    assert p.newest_ts == parse_ts("2099-06-02T00:00:00Z")


def test_rejected_messages_do_not_move_the_mark_and_feedback_shares_it() -> None:
    p = WireParser(Limits(max_future_skew_s=60))
    p.feedback(fb(ts="2026-11-29T00:00:00Z"))
    reject(rep(ts="2026-11-29T00:00:30Z", sha256="short"), parser=p)   # bad for another reason
    assert p.newest_ts == parse_ts("2026-11-29T00:00:00Z")
    assert reject(rep(ts="2026-11-29T00:01:00.001Z"), parser=p).code == "time_out_of_range"
    p.report(rep(ts="2026-11-29T00:01:00Z"))
    assert p.newest_ts == parse_ts("2026-11-29T00:01:00Z")


def test_limits_default_to_the_configuration_defaults() -> None:
    assert Limits.from_config(load_config(env={})) == Limits()
    cfg = load_config(env={"RAPIDLOOP_LIMITS__MAX_STRING_LEN": "8"})
    p = WireParser(Limits.from_config(cfg))
    assert reject(rep(org_id="o" * 9), parser=p).code == "too_long"


def test_bad_min_ts_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"limits\.min_ts"):
        WireParser(Limits(min_ts="yesterday"))


# --- writing and round trips -------------------------------------------------------------

def test_report_round_trip() -> None:
    p = WireParser()
    r = p.report(rep(sha256=SHA.upper(), behaviors=["a", "a"], verdicts={"m": 1},
                     file={"name": "n", "size": 3, "type": "elf", "signed": True,
                           "signer": "s", "path": "user"}, parent_sha256="EF" * 32))
    again = p.report(encode_report(r))
    assert again == r
    d = report_to_dict(r)
    assert d["ts"] == TS
    assert d["behaviors"] == ["a"]
    assert encode_report(again) == encode_report(r)


def test_minimal_report_written_in_full() -> None:
    d = report_to_dict(WireParser().report(rep()))
    assert d == {"report_id": "r1", "ts": TS, "org_id": "org-1", "device_id": "org-1/dev-1",
                 "sha256": SHA, "source": "other",
                 "file": {"name": "", "size": 0, "type": "other", "signed": False,
                          "signer": None, "path": "other"},
                 "behaviors": [], "verdicts": {}, "parent_sha256": None}


def test_feedback_round_trip() -> None:
    p = WireParser()
    f = p.feedback(fb(source="org_report", org_id="o", ts="2026-11-29T02:02:03.456+01:00"))
    assert feedback_to_dict(f)["ts"] == TS
    assert p.feedback(encode_feedback(f)) == f


def _decision(**kw: Any) -> Decision:
    base: dict[str, Any] = dict(
        decision_id="d-1", sha256=SHA, action="block", scope="org", org_id="org-1",
        device_id=None, score=0.93, classifiers={"prior": 0.9, "logreg": 0.95},
        reasons=["seen in 4 orgs within 1h"], model_version="m-12", event_ts=T,
        expires_at=T + 86400, decided_at=T + 1.5)
    base.update(kw)
    return Decision(**base)


def test_decision_encoding() -> None:
    d = orjson.loads(encode_decision(_decision()))
    assert d == {"decision_id": "d-1", "sha256": SHA, "action": "block", "scope": "org",
                 "org_id": "org-1", "device_id": None, "score": 0.93,
                 "classifiers": {"prior": 0.9, "logreg": 0.95},
                 "reasons": ["seen in 4 orgs within 1h"], "model_version": "m-12",
                 "event_ts": TS, "decided_at": "2026-11-29T01:02:04.956Z",
                 "expires_at": "2026-11-30T01:02:03.456Z"}


def test_decision_without_expiry_or_stamp() -> None:
    d = decision_to_dict(_decision(expires_at=None, decided_at=None))
    assert d["expires_at"] is None
    assert parse_ts(d["decided_at"]) > T - 365 * 86400   # stamped with the wall clock


def test_dead_letter_keeps_everything_as_text() -> None:
    raw = RawMessage("rapidloop.reports", b'{"a": "\xff"}', b"k\xfe", 2, 41)
    dl = dead_letter(raw, "message is not valid UTF-8", 1795914123.456)
    assert (dl.topic, dl.partition, dl.offset) == ("rapidloop.reports", 2, 41)
    assert dl.raw == '{"a": "\ufffd"}'
    assert dl.key == "k\ufffd"
    assert orjson.loads(encode_dead_letter(dl)) == {
        "error": "message is not valid UTF-8", "topic": "rapidloop.reports", "partition": 2,
        "offset": 41, "key": "k\ufffd", "raw": '{"a": "\ufffd"}', "ts": TS}


def test_dead_letter_without_value_or_key_and_capped() -> None:
    dl = dead_letter(RawMessage("t", None), "message has no value", 0.0)
    assert (dl.raw, dl.key, dl.partition, dl.offset) == ("", None, None, None)
    big = dead_letter(RawMessage("t", b"x" * (RAW_TEXT_CAP + 10)), "too big", 0.0)
    assert big.raw.startswith("x" * RAW_TEXT_CAP)
    assert big.raw.endswith(f"[truncated: {RAW_TEXT_CAP + 10} bytes in all, "
                            f"first {RAW_TEXT_CAP} kept]")
    assert len(dead_letter(RawMessage("t", b""), "e" * 10_000, 0.0).error) <= 2048


# --- time format ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "epoch"), [
    ("1970-01-01T00:00:00Z", 0.0),
    ("1970-01-01T00:00:00.000Z", 0.0),
    ("2026-11-29T01:02:03.456Z", T),
    ("2026-11-29t01:02:03.456z", T),
    ("2026-11-29T03:32:03.456+02:30", T),
    ("2026-11-28T23:02:03.456-02:00", T),
    ("2026-11-29T01:02:03.456+00:00", T),
    ("2026-11-29T01:02:03.4560001Z", 1795914123.4560001),
    ("2026-11-29T01:02:03.4Z", 1795914123.4),
    ("2024-02-29T12:00:00Z", 1709208000.0),
    ("2016-12-31T23:59:60Z", 1483228800.0),   # a leap second
])
def test_parse_ts(text: str, epoch: float) -> None:
    assert parse_ts(text) == epoch


@pytest.mark.parametrize("text", [
    "", "2026-11-29", "2026-11-29T01:02:03", "2026-11-29 01:02:03Z", "20261129T010203Z",
    "2026-11-29T01:02Z", "2026-13-01T00:00:00Z", "2026-11-31T00:00:00Z", "2026-11-29T24:00:00Z",
    "2026-11-29T01:60:00Z", "2026-11-29T01:02:61Z", "2026-11-29T01:02:03.Z",
    "2026-11-29T01:02:03+0200", "2026-11-29T01:02:03+24:00", "+2026-11-29T01:02:03Z",
    "2026-11-29T01:02:03.456Z\n", "２026-11-29T01:02:03.456Z", "2026-11-29T01:02:03,456Z",
])
def test_parse_ts_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_ts(text)


def test_format_ts() -> None:
    assert format_ts(T) == TS
    assert format_ts(0.0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1.0005) == "1970-01-01T00:00:01.001Z"    # rounds to the millisecond
    assert format_ts(59.9996) == "1970-01-01T00:01:00.000Z"
    with pytest.raises(ValueError):
        format_ts(float("nan"))


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=946684800000, max_value=4102444799999))
def test_format_parse_round_trip(ms: int) -> None:
    text = format_ts(ms / 1000)
    assert len(text) == 24
    assert parse_ts(text) == ms / 1000
    assert format_ts(parse_ts(text)) == text
    assert _parse_general(text) == parse_ts(text)


_SHAPED = st.text(alphabet="0123456789-:TZ.+ tz", min_size=20, max_size=24)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(_SHAPED, st.integers(0, 10**13).map(lambda ms: format_ts(ms / 1000)).flatmap(
    lambda s: st.tuples(st.integers(0, 23), st.sampled_from("0123456789-:TZ.+ ")).map(
        lambda iv: s[:iv[0]] + iv[1] + s[iv[0] + 1:]))))
def test_fast_path_agrees_with_the_grammar(text: str) -> None:
    try:
        expected: float | None = _parse_general(text)
    except ValueError:
        expected = None
    try:
        got: float | None = parse_ts(text)
    except ValueError:
        got = None
    assert got == expected


# --- the fast path and the checked path agree ----------------------------------------------

_PRESENT_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 0.5, 1.0, 1.5, 1e300]),
    st.sampled_from(["", "x", "pe", "downloads", "other", "PE", "persistence", "sandbox",
                     "malicious", "benign", "org_report", SHA, SHA.upper(), "g" * 64, TS,
                     "2026-11-29T01:02:03Z", "1999-01-01T00:00:00Z", "d" * 257]),
    st.lists(st.sampled_from(["persistence", "x", "", 3]), max_size=3),
    st.dictionaries(st.sampled_from(["ml", "", "av", "n" * 257]),
                    st.one_of(st.sampled_from([0, 1, 2, 0.25, 1.5, True]), st.none()),
                    max_size=3),
)
_FIELD_VALUES = st.one_of(_PRESENT_VALUES, st.just(...))   # ...: leave the field out
_FILE_VALUES = st.one_of(
    _FIELD_VALUES,
    st.fixed_dictionaries({}, optional={k: _PRESENT_VALUES for k in
                                        ("name", "size", "type", "signed", "signer", "path")}))


def _outcome(fn: Any, value: bytes) -> Any:
    try:
        return fn(value)
    except InvalidMessage as exc:
        return ("rejected", exc.code, str(exc))


_GOOD_REPORT: dict[str, Any] = {
    "report_id": "r1", "ts": TS, "org_id": "org-1", "device_id": "org-1/dev-1", "sha256": SHA,
    "source": "edr", "behaviors": ["persistence"], "verdicts": {"ml": 0.5},
    "parent_sha256": SHA.upper(),
    "file": {"name": "x.exe", "size": 10, "type": "pe", "signed": True, "signer": "V",
             "path": "temp"}}
_GOOD_FEEDBACK: dict[str, Any] = {
    "feedback_id": "f1", "ts": TS, "sha256": SHA, "verdict": "benign", "source": "org_report",
    "org_id": "org-2"}


@settings(max_examples=3000, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_GOOD_REPORT)), _FIELD_VALUES, max_size=3),
       st.dictionaries(st.sampled_from(sorted(_GOOD_REPORT["file"])), _PRESENT_VALUES,
                       max_size=2),
       st.sets(st.sampled_from(sorted(_GOOD_REPORT["file"])), max_size=2))
def test_fast_report_path_agrees_with_the_checked_path(
        changes: dict[str, Any], file_changes: dict[str, Any], file_drops: set[str]) -> None:
    """A valid Report with a few fields changed or left out: both paths give the same
    result (or the same error) and move the newest-time mark alike."""
    fields = {**_GOOD_REPORT, **changes}
    if "file" not in changes:
        fields["file"] = {k: v for k, v in {**_GOOD_REPORT["file"], **file_changes}.items()
                          if k not in file_drops}
    value = rep(**fields)
    fast, checked = WireParser(), WireParser()
    got = _outcome(fast.report, value)
    assert got == _outcome(checked._report_checked, value)
    assert fast.newest_ts == checked.newest_ts


@settings(max_examples=2000, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_GOOD_FEEDBACK)), _FIELD_VALUES, max_size=3))
def test_fast_feedback_path_agrees_with_the_checked_path(changes: dict[str, Any]) -> None:
    value = fb(**{**_GOOD_FEEDBACK, **changes})
    fast, checked = WireParser(), WireParser()
    assert _outcome(fast.feedback, value) == _outcome(checked._feedback_checked, value)
    assert fast.newest_ts == checked.newest_ts


def test_enumerated_values_come_out_as_shared_constants() -> None:
    value = rep(file={"type": "pe", "path": "downloads"}, behaviors=["persistence"])
    for parse in (WireParser().report, WireParser()._report_checked):
        r = parse(value)
        assert r.file.type is FILE_TYPES[0] and r.file.path is FILE_PATHS[0]
        assert r.behaviors[0] is BEHAVIORS[3]
