"""The JSON Schemas and the hand-written fast path must say the same thing.

One list of valid and invalid samples goes through both ``jsonschema``
(Draft 2020-12, with ``date-time`` format checking) and ``WireParser``, and
they must agree on which are valid. Each parse uses a fresh parser, so the
future-skew high-water mark never applies.

Rules a JSON Schema cannot state are not part of the agreement; they are
listed in ``SCHEMA_BLIND`` and tested to be exactly that: accepted by the
schema, rejected by the parser (message size, UTF-8 validity, the time bounds
``min_ts`` and year 2100, and the future skew against earlier messages).

``jsonschema`` only checks ``date-time`` when the optional
``rfc3339-validator`` is installed, so this module registers its own checker,
written from the RFC 3339 section 5.6 grammar independently of
``schemas.timefmt``.
"""

from __future__ import annotations

import calendar
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from rapidloop.schemas.model import Decision, RawMessage
from rapidloop.schemas.wire import (
    InvalidMessage,
    Limits,
    WireParser,
    dead_letter,
    decision_to_dict,
    encode_dead_letter,
    encode_decision,
    report_to_dict,
)
from rapidloop.schemas.wire import feedback_to_dict as fb_to_dict

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"
SHA = "0123456789abcdef" * 4
TS = "2026-11-29T01:02:03.456Z"

# RFC 3339 section 5.6, ABNF transcribed; the date and leap-second rules of 5.7 by hand.
_DATE_TIME = re.compile(
    r"(?P<y>[0-9]{4})-(?P<m>[0-9]{2})-(?P<d>[0-9]{2})[Tt]"
    r"(?P<H>[0-9]{2}):(?P<M>[0-9]{2}):(?P<S>[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-](?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))")

FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    m = _DATE_TIME.fullmatch(value)
    if m is None:
        return False
    y, mo, d = int(m["y"]), int(m["m"]), int(m["d"])
    ok_date = 1 <= mo <= 12 and 1 <= d <= calendar.monthrange(y or 2000, mo)[1]
    ok_time = int(m["H"]) <= 23 and int(m["M"]) <= 59 and int(m["S"]) <= 60
    ok_off = m["oh"] is None or (int(m["oh"]) <= 23 and int(m["om"]) <= 59)
    return ok_date and ok_time and ok_off


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


SCHEMAS = {name: validator(name) for name in ("report", "feedback", "decision", "deadletter")}


def report(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"report_id": "r1", "ts": TS, "org_id": "org-1",
                            "device_id": "org-1/dev-1", "sha256": SHA}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def feedback(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"feedback_id": "f1", "ts": TS, "sha256": SHA,
                            "verdict": "malicious", "source": "sandbox"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


FULL_FILE = {"name": "a.exe", "size": 1024, "type": "pe", "signed": True, "signer": "Acme",
             "path": "downloads"}
S256 = "s" * 256

VALID_REPORTS: list[tuple[str, Any]] = [
    ("minimal", report()),
    ("full", report(source="edr", file=FULL_FILE, behaviors=["persistence", "c2_beacon"],
                    verdicts={"static_ml": 0.91, "av_signature": 0.0}, parent_sha256=SHA)),
    ("upper-case sha256", report(sha256=SHA.upper(), parent_sha256=SHA.upper())),
    ("parent null", report(parent_sha256=None)),
    ("ts with offset", report(ts="2026-11-29T03:02:03.456+02:00")),
    ("ts without fraction", report(ts="2026-11-29T01:02:03Z")),
    ("ts with microseconds", report(ts="2026-11-29T01:02:03.456789Z")),
    ("ts lower-case t and z", report(ts="2026-11-29t01:02:03.456z")),
    ("ts leap second", report(ts="2016-12-31T23:59:60Z")),
    ("ts leap day", report(ts="2024-02-29T00:00:00Z")),
    ("unknown fields", report(extension={"x": [1]}, file={**FULL_FILE, "zone": 3})),
    ("empty file", report(file={})),
    ("signer null", report(file={"signer": None})),
    ("empty file name", report(file={"name": ""})),
    ("integral float size", report(file={"size": 1024.0})),
    ("largest size", report(file={"size": 2**53 - 1})),
    ("every file type", report(file={"type": "archive", "path": "program_files"})),
    ("unknown and repeated behaviors", report(behaviors=["made_up", "persistence", "made_up"])),
    ("empty lists", report(behaviors=[], verdicts={})),
    ("integer verdicts", report(verdicts={"a": 0, "b": 1})),
    ("strings at the limit", report(report_id=S256, org_id=S256, device_id=S256, source=S256,
                                    file={"name": S256, "signer": S256},
                                    behaviors=[S256], verdicts={S256: 0.5})),
    ("lists at the limit", report(behaviors=["b"] * 64,
                                  verdicts={f"v{i}": 0.5 for i in range(32)})),
    ("non-ascii ids", report(org_id="ørg-ü", device_id="设备-1")),
]

INVALID_REPORTS: list[tuple[str, Any, str]] = [
    ("missing report_id", report(report_id=...), "missing_field"),
    ("missing ts", report(ts=...), "missing_field"),
    ("missing org_id", report(org_id=...), "missing_field"),
    ("missing device_id", report(device_id=...), "missing_field"),
    ("missing sha256", report(sha256=...), "missing_field"),
    ("empty report_id", report(report_id=""), "empty_string"),
    ("null org_id", report(org_id=None), "wrong_type"),
    ("numeric device_id", report(device_id=7), "wrong_type"),
    ("org_id too long", report(org_id=S256 + "s"), "too_long"),
    ("ts as a number", report(ts=1795914123), "wrong_type"),
    ("ts with a space", report(ts="2026-11-29 01:02:03Z"), "bad_time"),
    ("ts without offset", report(ts="2026-11-29T01:02:03.456"), "bad_time"),
    ("ts date only", report(ts="2026-11-29"), "bad_time"),
    ("ts day out of range", report(ts="2026-02-29T00:00:00Z"), "bad_time"),
    ("ts hour 24", report(ts="2026-11-29T24:00:00Z"), "bad_time"),
    ("ts offset without colon", report(ts="2026-11-29T01:02:03+0200"), "bad_time"),
    ("sha256 63 chars", report(sha256=SHA[:63]), "bad_sha256"),
    ("sha256 65 chars", report(sha256=SHA + "0"), "bad_sha256"),
    ("sha256 trailing newline", report(sha256=SHA + "\n"), "bad_sha256"),
    ("sha256 not hex", report(sha256="z" * 64), "bad_sha256"),
    ("sha256 empty", report(sha256=""), "bad_sha256"),
    ("sha256 a number", report(sha256=12345), "wrong_type"),
    ("source empty", report(source=""), "empty_string"),
    ("source a number", report(source=3), "wrong_type"),
    ("source null", report(source=None), "wrong_type"),
    ("file a string", report(file="a.exe"), "wrong_type"),
    ("file null", report(file=None), "wrong_type"),
    ("file.size negative", report(file={"size": -1}), "out_of_range"),
    ("file.size too large", report(file={"size": 2**53}), "out_of_range"),
    ("file.size fractional", report(file={"size": 1.5}), "wrong_type"),
    ("file.size a string", report(file={"size": "big"}), "wrong_type"),
    ("file.size a boolean", report(file={"size": True}), "wrong_type"),
    ("file.type unknown", report(file={"type": "exe"}), "bad_enum"),
    ("file.type upper case", report(file={"type": "PE"}), "bad_enum"),
    ("file.path unknown", report(file={"path": "desktop"}), "bad_enum"),
    ("file.path null", report(file={"path": None}), "wrong_type"),
    ("file.signed a string", report(file={"signed": "yes"}), "wrong_type"),
    ("file.signed a number", report(file={"signed": 1}), "wrong_type"),
    ("file.signer a number", report(file={"signer": 5}), "wrong_type"),
    ("file.name too long", report(file={"name": S256 + "s"}), "too_long"),
    ("behaviors a string", report(behaviors="persistence,discovery"), "wrong_type"),
    ("behaviors with a number", report(behaviors=["persistence", 3]), "wrong_type"),
    ("behaviors with an empty name", report(behaviors=[""]), "empty_string"),
    ("behaviors too many", report(behaviors=["b"] * 65), "too_long"),
    ("behavior name too long", report(behaviors=[S256 + "s"]), "too_long"),
    ("verdicts a list", report(verdicts=[0.5, 0.9]), "wrong_type"),
    ("verdict above 1", report(verdicts={"ml": 1.5}), "out_of_range"),
    ("verdict below 0", report(verdicts={"ml": -0.1}), "out_of_range"),
    ("verdict a string", report(verdicts={"ml": "0.5"}), "wrong_type"),
    ("verdict a boolean", report(verdicts={"ml": True}), "wrong_type"),
    ("verdict null", report(verdicts={"ml": None}), "wrong_type"),
    ("verdicts too many", report(verdicts={f"v{i}": 0.5 for i in range(33)}), "too_long"),
    ("verdict name empty", report(verdicts={"": 0.5}), "empty_string"),
    ("verdict name too long", report(verdicts={S256 + "s": 0.5}), "too_long"),
    ("parent_sha256 short", report(parent_sha256="abc"), "bad_sha256"),
    ("parent_sha256 a number", report(parent_sha256=1), "wrong_type"),
    ("an array", [report()], "not_object"),
    ("a string", "report", "not_object"),
    ("null", None, "not_object"),
]

VALID_FEEDBACK: list[tuple[str, Any]] = [
    ("minimal sandbox", feedback()),
    ("analyst benign with org null", feedback(source="analyst", verdict="benign", org_id=None)),
    ("sandbox with an org", feedback(org_id="org-1")),
    ("org_report with org", feedback(source="org_report", verdict="benign", org_id="org-1")),
    ("upper-case sha256", feedback(sha256=SHA.upper())),
    ("unknown fields", feedback(comment="looks like a backup tool")),
    ("ts with offset", feedback(ts="2026-11-28T20:02:03-05:00")),
]

INVALID_FEEDBACK: list[tuple[str, Any, str]] = [
    ("missing feedback_id", feedback(feedback_id=...), "missing_field"),
    ("missing ts", feedback(ts=...), "missing_field"),
    ("missing sha256", feedback(sha256=...), "missing_field"),
    ("missing verdict", feedback(verdict=...), "missing_field"),
    ("missing source", feedback(source=...), "missing_field"),
    ("empty feedback_id", feedback(feedback_id=""), "empty_string"),
    ("verdict unknown", feedback(verdict="suspicious"), "bad_enum"),
    ("verdict upper case", feedback(verdict="MALICIOUS"), "bad_enum"),
    ("verdict a boolean", feedback(verdict=True), "wrong_type"),
    ("source unknown", feedback(source="user"), "bad_enum"),
    ("source null", feedback(source=None), "wrong_type"),
    ("org_report without org_id", feedback(source="org_report"), "missing_field"),
    ("org_report with null org_id", feedback(source="org_report", org_id=None), "missing_field"),
    ("org_id empty", feedback(org_id=""), "empty_string"),
    ("org_id a number", feedback(org_id=3), "wrong_type"),
    ("org_id too long", feedback(org_id=S256 + "s"), "too_long"),
    ("sha256 not hex", feedback(sha256="g" * 64), "bad_sha256"),
    ("ts not a time", feedback(ts="yesterday"), "bad_time"),
    ("an array", [], "not_object"),
]

# Rules beyond what a JSON Schema can say: the schema accepts, the parser rejects.
SCHEMA_BLIND: list[tuple[str, str, bytes, str]] = [
    ("report before min_ts", "report", orjson.dumps(report(ts="1999-12-31T23:59:59Z")),
     "time_out_of_range"),
    ("report in 2100", "report", orjson.dumps(report(ts="2100-01-01T00:00:00Z")),
     "time_out_of_range"),
    ("feedback before min_ts", "feedback", orjson.dumps(feedback(ts="1970-01-01T00:00:00Z")),
     "time_out_of_range"),
    ("report over max_message_bytes", "report",
     orjson.dumps(report(padding="p" * Limits().max_message_bytes)), "too_large"),
    ("report with invalid UTF-8 in an unknown field", "report",
     orjson.dumps(report(note="NOTE")).replace(b"NOTE", b"N\xffTE"), "invalid_utf8"),
]


def schema_valid(kind: str, sample: Any) -> bool:
    return SCHEMAS[kind].is_valid(json.loads(orjson.dumps(sample)))


def parser_result(kind: str, sample: Any) -> str | None:
    """None when the parser accepts ``sample``, else the error code."""
    try:
        getattr(WireParser(), kind)(orjson.dumps(sample))
    except InvalidMessage as exc:
        return exc.code
    return None


def _ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in cases]


def test_each_rule_has_invalid_samples() -> None:
    assert len(INVALID_REPORTS) >= 15 and len(INVALID_FEEDBACK) >= 15
    codes = {c[2] for c in INVALID_REPORTS + INVALID_FEEDBACK} | {c[3] for c in SCHEMA_BLIND}
    assert codes >= {"invalid_utf8", "not_object", "missing_field", "wrong_type",
                     "bad_sha256", "bad_time", "time_out_of_range", "bad_enum", "out_of_range",
                     "too_long", "too_large", "empty_string"}


@pytest.mark.parametrize(("name", "sample"), VALID_REPORTS, ids=_ids(VALID_REPORTS))
def test_valid_reports_agree(name: str, sample: Any) -> None:
    assert schema_valid("report", sample), name
    assert parser_result("report", sample) is None


@pytest.mark.parametrize(("name", "sample", "code"), INVALID_REPORTS, ids=_ids(INVALID_REPORTS))
def test_invalid_reports_agree(name: str, sample: Any, code: str) -> None:
    assert not schema_valid("report", sample), name
    assert parser_result("report", sample) == code


@pytest.mark.parametrize(("name", "sample"), VALID_FEEDBACK, ids=_ids(VALID_FEEDBACK))
def test_valid_feedback_agrees(name: str, sample: Any) -> None:
    assert schema_valid("feedback", sample), name
    assert parser_result("feedback", sample) is None


@pytest.mark.parametrize(("name", "sample", "code"), INVALID_FEEDBACK,
                         ids=_ids(INVALID_FEEDBACK))
def test_invalid_feedback_agrees(name: str, sample: Any, code: str) -> None:
    assert not schema_valid("feedback", sample), name
    assert parser_result("feedback", sample) == code


@pytest.mark.parametrize(("name", "kind", "value", "code"), SCHEMA_BLIND,
                         ids=_ids(SCHEMA_BLIND))
def test_rules_the_schema_cannot_express(name: str, kind: str, value: bytes, code: str) -> None:
    text = value.decode("utf-8", "replace")
    assert SCHEMAS[kind].is_valid(json.loads(text)), name
    with pytest.raises(InvalidMessage) as info:
        getattr(WireParser(), kind)(value)
    assert info.value.code == code


def test_future_skew_is_beyond_the_schema_too() -> None:
    p = WireParser()
    p.report(orjson.dumps(report(ts="2026-11-01T00:00:00Z")))
    late = report(ts="2026-11-03T00:00:00Z")
    assert schema_valid("report", late)
    with pytest.raises(InvalidMessage, match="after the newest accepted time"):
        p.report(orjson.dumps(late))


# Field values drawn from good and bad pools: whatever the mix, both must agree.
_REPORT_POOLS: dict[str, list[Any]] = {
    "report_id": [..., "r1", "", 5, None, S256, S256 + "s"],
    "ts": [..., TS, "2026-11-29T01:02:03+01:00", "2026-11-29", "2026-11-31T00:00:00Z", 0],
    "org_id": [..., "org-1", None, ""],
    "device_id": [..., "dev", ["dev"]],
    "sha256": [..., SHA, SHA.upper(), SHA[:-1], "x" * 64, None],
    "source": [..., "edr", "other", "", None, 1],
    "file": [..., {}, FULL_FILE, {"size": -5}, {"type": "bin"}, {"signed": None}, [], "f",
             {"size": 2.0, "signer": None}, {"path": "temp", "name": 0}],
    "behaviors": [..., [], ["persistence"], ["a", "a"], "a", [None], ["b"] * 65],
    "verdicts": [..., {}, {"m": 0.5}, {"m": 2}, {"m": "x"}, {"": 0.1}, []],
    "parent_sha256": [..., None, SHA, "short", 0],
    "extra": [..., None, {"deep": [1, 2]}],
}


@settings(max_examples=400, deadline=None)
@given(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in _REPORT_POOLS.items()}))
def test_mixed_reports_agree(fields: dict[str, Any]) -> None:
    sample = {k: v for k, v in fields.items() if v is not ...}
    assert schema_valid("report", sample) == (parser_result("report", sample) is None)


_FEEDBACK_POOLS: dict[str, list[Any]] = {
    "feedback_id": [..., "f1", ""],
    "ts": [..., TS, "nope"],
    "sha256": [..., SHA, SHA[:10]],
    "verdict": [..., "malicious", "benign", "maybe", None],
    "source": [..., "sandbox", "analyst", "org_report", "org", 0],
    "org_id": [..., None, "org-1", "", 9],
}


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in _FEEDBACK_POOLS.items()}))
def test_mixed_feedback_agrees(fields: dict[str, Any]) -> None:
    sample = {k: v for k, v in fields.items() if v is not ...}
    assert schema_valid("feedback", sample) == (parser_result("feedback", sample) is None)


# --- what the job writes validates -----------------------------------------------------------

def _decision(scope: str, org: str | None, dev: str | None, **kw: Any) -> Decision:
    base: dict[str, Any] = dict(
        decision_id=f"{scope}-1", sha256=SHA, action="block", scope=scope, org_id=org,
        device_id=dev, score=0.97, classifiers={"prior": 0.9, "logreg": 1.0},
        reasons=["seen in 4 orgs within 1h"], model_version="m-3", event_ts=1795914123.456,
        expires_at=1795914123.456 + 86400, decided_at=1795914124.0)
    base.update(kw)
    return Decision(**base)


DECISIONS = [
    _decision("device", "org-1", "org-1/dev-1"),
    _decision("org", "org-1", None, action="allow", expires_at=None),
    _decision("global", None, None, action="unblock", score=0.0, classifiers={}, reasons=[]),
    _decision("global", None, None, action="audit", decided_at=None),
]


@pytest.mark.parametrize("decision", DECISIONS, ids=[d.decision_id for d in DECISIONS])
def test_decisions_validate(decision: Decision) -> None:
    v = SCHEMAS["decision"]
    assert v.is_valid(decision_to_dict(decision))
    assert v.is_valid(json.loads(encode_decision(decision)))


@pytest.mark.parametrize(("change", "value"), [
    ("org_id", "org-2"), ("device_id", "dev"), ("score", 1.2), ("action", "quarantine"),
    ("sha256", SHA.upper()), ("event_ts", "2026-11-29 01:02:03Z"), ("expires_at", 0),
    ("classifiers", {"prior": -0.5}),
])
def test_decision_schema_rejects(change: str, value: Any) -> None:
    d = decision_to_dict(_decision("global", None, None))
    d[change] = value
    assert not SCHEMAS["decision"].is_valid(d)


def test_scope_decides_which_ids_are_set() -> None:
    d = decision_to_dict(_decision("device", "org-1", None))
    assert not SCHEMAS["decision"].is_valid(d)
    d = decision_to_dict(_decision("org", "org-1", "dev"))
    assert not SCHEMAS["decision"].is_valid(d)


@pytest.mark.parametrize("raw", [
    RawMessage("rapidloop.reports", b'{"a": "\xff\xfe"}', b"\xffkey", 1, 99),
    RawMessage("reports.jsonl", b"not json", None, None, 17),
    RawMessage("rapidloop.feedback", None),
    RawMessage("rapidloop.reports", b"x" * 70_000, SHA.encode(), 0, 0),
])
def test_dead_letters_validate(raw: RawMessage) -> None:
    out = json.loads(encode_dead_letter(dead_letter(raw, "message is not valid JSON", 1.5e9)))
    SCHEMAS["deadletter"].validate(out)


def test_dead_letter_schema_rejects_missing_fields() -> None:
    out = json.loads(encode_dead_letter(dead_letter(RawMessage("t", b"x"), "bad", 0.0)))
    del out["key"]
    assert not SCHEMAS["deadletter"].is_valid(out)


@pytest.mark.parametrize(("name", "sample"), VALID_REPORTS, ids=_ids(VALID_REPORTS))
def test_written_reports_validate(name: str, sample: Any) -> None:
    r = WireParser().report(orjson.dumps(sample))
    assert SCHEMAS["report"].is_valid(report_to_dict(r)), name


@pytest.mark.parametrize(("name", "sample"), VALID_FEEDBACK, ids=_ids(VALID_FEEDBACK))
def test_written_feedback_validates(name: str, sample: Any) -> None:
    f = WireParser().feedback(orjson.dumps(sample))
    assert SCHEMAS["feedback"].is_valid(fb_to_dict(f)), name


def test_date_time_checker_is_active() -> None:
    assert not SCHEMAS["feedback"].is_valid(feedback(ts="2026-11-29T01:02:03"))
    assert SCHEMAS["feedback"].is_valid(feedback(ts="2026-11-29T01:02:03Z"))


def test_schema_limits_are_the_configured_defaults() -> None:
    lim = Limits()
    props = SCHEMAS["report"].schema["properties"]
    defs = SCHEMAS["report"].schema["$defs"]
    assert defs["id"]["maxLength"] == lim.max_string_len
    assert props["file"]["properties"]["name"]["maxLength"] == lim.max_string_len
    assert props["behaviors"]["maxItems"] == lim.max_list_len
    assert props["verdicts"]["maxProperties"] == lim.max_verdicts
    fb_props = SCHEMAS["feedback"].schema["properties"]
    assert fb_props["feedback_id"]["maxLength"] == fb_props["org_id"]["maxLength"] == 256
