"""The wire fast path: contract JSON in and out, checked by hand.

Every message the job reads goes through :class:`WireParser`, so it is plain
``orjson.loads`` followed by direct type and range checks, not a JSON Schema
validator (an order of magnitude slower). The JSON Schemas in ``json/`` state
the same rules for people and other tools; ``tests/unit/test_schemas.py``
runs one list of samples through both and requires them to agree.

A rejected message raises :class:`InvalidMessage`, whose ``code`` is a small,
stable category for metrics and whose text says exactly what was wrong. It
never quotes more than a short prefix of the input, because it ends up in a
dead letter next to the raw message anyway.

Parsing has two paths with one meaning. The *fast path* checks a whole
message inline, in one function, and returns None at the first thing it does
not like; it only ever accepts. The *checked path* (one small function per
rule) is the reference: it runs whenever the fast path declines and raises
the specific error, in the documented order. So a valid message costs one
pass without a function call per field, and a bad one still gets exactly the
dead-letter reason it always got. ``tests/unit/test_wire.py`` holds both paths
to the same results. Enumerated values (file type and path, behaviours,
a feedback's verdict and source) come out as the module's own constant strings,
so state that keeps them shares one object instead of one per message.

Writing is the mirror image: ``*_to_dict`` gives the contract's field names
and RFC 3339 times, ``encode_*`` the bytes of one message value.

Reading decisions back is the tools' side (explain, what-if, evaluate, tail,
active, export, serve, the client): :func:`read_decision` gives a
:class:`DecisionRecord`, the contract's Decision typed and read-only, decoded
once where the tools read it; :func:`decode_decision` stays the strict decoder
to the engine's own :class:`~rapidloop.schemas.model.Decision`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .model import (
    BEHAVIORS,
    FEEDBACK_SOURCES,
    FILE_PATHS,
    FILE_TYPES,
    VERDICTS,
    DeadLetter,
    Decision,
    Feedback,
    FileInfo,
    RawMessage,
    Report,
)
from .timefmt import format_ts, parse_ts, parse_ts_or_none

__all__ = [
    "MAX_FILE_SIZE",
    "MAX_TS",
    "RAW_TEXT_CAP",
    "DecisionRecord",
    "InvalidMessage",
    "Limits",
    "Target",
    "WireParser",
    "dead_letter",
    "decision_to_dict",
    "decode_decision",
    "encode_dead_letter",
    "encode_decision",
    "encode_feedback",
    "encode_report",
    "feedback_to_dict",
    "read_decision",
    "report_to_dict",
]

MAX_TS = 4102444800.0               # 2100-01-01T00:00:00Z: no sensor clock is that wrong
MAX_FILE_SIZE = 2**53 - 1           # the largest integer every JSON reader keeps exact
RAW_TEXT_CAP = 65536                # bytes of a dead-lettered message kept as text
_ERROR_CAP = 2048                   # characters of a dead letter's error text
_SHOW_CAP = 80                      # characters of input quoted in an error message

_HEX = "0123456789abcdef"
# Already lower-case hex, as sensors send it: one C match accepts it (the fast path's common
# case); anything else is lower-cased and checked against _HEX as the checked path does.
_LOWER_HEX64 = re.compile(r"[0-9a-f]{64}").fullmatch
_ABSENT: Any = object()
_LOADS = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
Decoded = tuple[dict[str, Any], float | None]
"""A value as a reader decoded it already: its JSON object and its ``ts``'s time
(``schemas.model.RawMessage.decoded``)."""


def _decode(value: bytes) -> tuple[Any, Any]:
    """``value``'s JSON (None if it is not JSON), its time not read yet (``_ABSENT``)."""
    try:
        return _LOADS(value), _ABSENT
    except _JSONDecodeError:
        return None, _ABSENT
# value -> the constant string itself: a dict lookup both validates and canonicalises
_FILE_TYPES = {t: t for t in FILE_TYPES}
_FILE_PATHS = {p: p for p in FILE_PATHS}
_VERDICTS = {v: v for v in VERDICTS}
_FEEDBACK_SOURCES = {f: f for f in FEEDBACK_SOURCES}
_BEHAVIORS = {b: b for b in BEHAVIORS}
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean",
               list: "array", dict: "object", type(None): "null"}


class InvalidMessage(ValueError):
    """A message that cannot be used; ``code`` is a stable category for metrics."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, str(self)))


@dataclass(slots=True)
class Limits:
    """Bounds on what one message may contain (``[limits]`` in the configuration)."""

    max_message_bytes: int = 65536
    max_string_len: int = 256
    max_list_len: int = 64
    max_verdicts: int = 32
    max_future_skew_s: float = 86400.0
    min_ts: str = "2000-01-01T00:00:00Z"

    @classmethod
    def from_config(cls, cfg: Any) -> Limits:
        lim = cfg.limits
        return cls(int(lim.max_message_bytes), int(lim.max_string_len), int(lim.max_list_len),
                   int(lim.max_verdicts), float(lim.max_future_skew_s), str(lim.min_ts))


# --- error helpers (cold path) -------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CAP else text[:_SHOW_CAP - 3] + "..."


def _short(name: str) -> str:
    return name if len(name) <= 40 else name[:37] + "..."


def _type_name(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _wrong_type(path: str, expected: str, value: Any) -> InvalidMessage:
    return InvalidMessage("wrong_type",
                          f"field '{path}' must be {expected}, got {_type_name(value)}")


def _missing(name: str) -> InvalidMessage:
    return InvalidMessage("missing_field", f"missing required field '{name}'")


def _load(value: bytes, max_bytes: int) -> dict[str, Any]:
    """Bytes to a JSON object, or the reason why not."""
    if len(value) > max_bytes:
        raise InvalidMessage("too_large",
                             f"message is {len(value)} bytes, more than the limit of {max_bytes}")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            str(value, "utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidMessage("invalid_utf8", f"message is not valid UTF-8: {bad.reason} "
                                 f"at byte {bad.start}") from None
        raise InvalidMessage("invalid_json", f"message is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise InvalidMessage("not_object", f"message must be a JSON object, got {_type_name(obj)}")
    return obj


# --- field checks ----------------------------------------------------------------------------

def _string(value: Any, path: str, max_len: int, nonempty: bool) -> str:
    if type(value) is not str:
        raise _wrong_type(path, "a string", value)
    n = len(value)
    if n > max_len:
        raise InvalidMessage("too_long",
                             f"field '{path}' is {n} characters long, more than {max_len}")
    if nonempty and not n:
        raise InvalidMessage("empty_string", f"field '{path}' must not be empty")
    return value


def _sha256(value: Any, path: str) -> str:
    if type(value) is not str:
        raise _wrong_type(path, "a string of 64 hex characters", value)
    if len(value) != 64:
        raise InvalidMessage("bad_sha256",
                             f"field '{path}' must be 64 hex characters, got {len(value)}")
    low = value.lower()
    if low.strip(_HEX):
        raise InvalidMessage("bad_sha256",
                             f"field '{path}' must be 64 hex characters, got {_show(value)}")
    return low


def _enum(value: Any, path: str, allowed: tuple[str, ...]) -> str:
    if type(value) is str and value in allowed:
        return allowed[allowed.index(value)]   # the constant, not the message's copy
    if type(value) is not str:
        raise _wrong_type(path, "a string", value)
    raise InvalidMessage("bad_enum",
                         f"field '{path}' must be one of {', '.join(allowed)}, got {_show(value)}")


def _file(value: Any, max_len: int) -> FileInfo:
    if type(value) is not dict:
        raise _wrong_type("file", "an object", value)
    get = value.get
    name = get("name", _ABSENT)
    name = "" if name is _ABSENT else _string(name, "file.name", max_len, False)
    size = get("size", 0)
    if type(size) is not int:
        if type(size) is not float or not size.is_integer():   # 1.0 is an integer in JSON
            raise _wrong_type("file.size", "an integer >= 0", size)
        size = int(size)
    if not 0 <= size <= MAX_FILE_SIZE:
        raise InvalidMessage("out_of_range", f"field 'file.size' must be an integer >= 0 "
                             f"(and <= {MAX_FILE_SIZE}), got {size}")
    ftype = get("type", _ABSENT)
    ftype = "other" if ftype is _ABSENT else _enum(ftype, "file.type", FILE_TYPES)
    signed = get("signed", False)
    if type(signed) is not bool:
        raise _wrong_type("file.signed", "a boolean", signed)
    signer = get("signer")
    if signer is not None:
        signer = _string(signer, "file.signer", max_len, False)
    fpath = get("path", _ABSENT)
    fpath = "other" if fpath is _ABSENT else _enum(fpath, "file.path", FILE_PATHS)
    return FileInfo(name, size, ftype, signed, signer, fpath)


def _behaviors(value: Any, max_items: int, max_len: int) -> tuple[str, ...]:
    if type(value) is not list:
        raise _wrong_type("behaviors", "an array of strings", value)
    if len(value) > max_items:
        raise InvalidMessage("too_long",
                             f"field 'behaviors' has {len(value)} items, more than {max_items}")
    for i, item in enumerate(value):
        if type(item) is not str or not item or len(item) > max_len:
            _string(item, f"behaviors[{i}]", max_len, True)
    return tuple(dict.fromkeys([_BEHAVIORS.get(b, b) for b in value]))


def _verdicts(value: Any, max_items: int, max_len: int) -> dict[str, float]:
    if type(value) is not dict:
        raise _wrong_type("verdicts", "an object of numbers", value)
    if len(value) > max_items:
        raise InvalidMessage("too_long",
                             f"field 'verdicts' has {len(value)} entries, more than {max_items}")
    out: dict[str, float] = {}
    for name, score in value.items():
        if not name:
            raise InvalidMessage("empty_string", "field 'verdicts' has an empty classifier name")
        if len(name) > max_len:
            raise InvalidMessage("too_long", f"field 'verdicts' has a classifier name longer "
                                 f"than {max_len} characters: {_show(name)}")
        t = type(score)
        if t is not float:
            if t is not int:
                raise _wrong_type(f"verdicts.{_short(name)}", "a number in [0, 1]", score)
            score = float(score)
        if not 0.0 <= score <= 1.0:   # also rejects NaN
            raise InvalidMessage("out_of_range",
                                 f"field 'verdicts.{_short(name)}' must be a number in [0, 1], "
                                 f"got {_show(score)}")
        out[name] = score
    return out


# --- fast-path helpers: None means "let the checked path say what is wrong" -----------------

def _hex64_fast(value: str) -> str | None:
    """A 64-character string as lower-case hex, or None if it is not hex (``_sha256``'s rule)."""
    if _LOWER_HEX64(value) is not None:
        return value
    low = value.lower()
    return None if low.strip(_HEX) else low


def _file_fast(value: Any, max_len: int) -> FileInfo | None:
    if type(value) is not dict:
        return None
    get = value.get
    name = get("name", "")
    if type(name) is not str or len(name) > max_len:
        return None
    size = get("size", 0)
    if type(size) is not int:
        if type(size) is not float or not size.is_integer():
            return None
        size = int(size)
    if not 0 <= size <= MAX_FILE_SIZE:
        return None
    ftype = get("type", "other")
    ftype = _FILE_TYPES.get(ftype) if type(ftype) is str else None
    signed = get("signed", False)
    signer = get("signer")
    fpath = get("path", "other")
    fpath = _FILE_PATHS.get(fpath) if type(fpath) is str else None
    if (ftype is None or fpath is None or type(signed) is not bool
            or (signer is not None and (type(signer) is not str or len(signer) > max_len))):
        return None
    return FileInfo(name, size, ftype, signed, signer, fpath)


def _float_scores(verdicts: dict[str, Any], max_len: int) -> dict[str, float] | None:
    """Verdicts with integer scores made floats, or None if any entry is not acceptable."""
    out: dict[str, float] = {}
    for name, score in verdicts.items():
        if not 0 < len(name) <= max_len:
            return None
        t = type(score)
        if t is not float:
            if t is not int:
                return None
            score = float(score)
        if not 0.0 <= score <= 1.0:
            return None
        out[name] = score
    return out


# --- the parser ------------------------------------------------------------------------------

class WireParser:
    """Parses and validates Report and Feedback message values.

    It remembers the newest event time it has accepted: a message more than
    ``max_future_skew_s`` after that comes from a broken clock and is rejected,
    so one bad sensor cannot drag event time (and every window) into the future.
    """

    __slots__ = ("_max_bytes", "_max_items", "_max_len", "_max_verdicts", "_min_ts",
                 "_newest", "_skew", "limits")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits = limits or Limits()
        self._max_bytes = limits.max_message_bytes
        self._max_len = limits.max_string_len
        self._max_items = limits.max_list_len
        self._max_verdicts = limits.max_verdicts
        self._skew = float(limits.max_future_skew_s)
        try:
            self._min_ts = parse_ts(limits.min_ts)
        except ValueError as exc:
            raise ValueError(f"limits.min_ts: {exc}") from None
        self._newest: float | None = None

    @property
    def newest_ts(self) -> float | None:
        """The newest event time accepted so far (None before the first message)."""
        return self._newest

    def set_newest(self, ts: float | None) -> None:
        """Compare the next messages' times with ``ts`` (None: with nothing), as if it were
        the newest accepted: a shard's parser is given the time one parser over the whole
        input would hold (``operators.sharding.SkewReference``)."""
        self._newest = ts

    def _ts(self, value: Any) -> float:
        if type(value) is not str:
            raise _wrong_type("ts", "an RFC 3339 time string", value)
        try:
            ts = parse_ts(value)
        except ValueError as exc:
            raise InvalidMessage("bad_time", f"field 'ts': {exc}") from None
        if ts < self._min_ts:
            raise InvalidMessage("time_out_of_range", f"field 'ts' {_show(value)} is before "
                                 f"the earliest accepted time {format_ts(self._min_ts)}")
        if ts >= MAX_TS:
            raise InvalidMessage("time_out_of_range", f"field 'ts' {_show(value)} is not "
                                 f"before {format_ts(MAX_TS)}")
        newest = self._newest
        if newest is not None and ts > newest + self._skew:
            raise InvalidMessage("time_out_of_range", f"field 'ts' {_show(value)} is more "
                                 f"than {self._skew:g} s after the newest accepted time "
                                 f"{format_ts(newest)}")
        return ts

    def _accepted(self, ts: float) -> None:
        newest = self._newest
        if newest is None or ts > newest:
            self._newest = ts

    def report(self, value: bytes, decoded: Decoded | None = None) -> Report:
        """One Report message value, validated and normalised. ``decoded``: the value's
        JSON object and the time its ``ts`` reads as, if a reader decoded it already
        (``RawMessage.decoded``): the same checks, without decoding it again."""
        if len(value) <= self._max_bytes:
            obj, ts = decoded if decoded is not None else _decode(value)
            if type(obj) is dict:
                r = self._report_fast(obj, ts)
                if r is not None:
                    self._accepted(r.ts)
                    return r
        return self._report_checked(value)

    def feedback(self, value: bytes, decoded: Decoded | None = None) -> Feedback:
        """One Feedback message value, validated and normalised (``decoded``: see
        :meth:`report`)."""
        if len(value) <= self._max_bytes:
            obj, ts = decoded if decoded is not None else _decode(value)
            if type(obj) is dict:
                f = self._feedback_fast(obj, ts)
                if f is not None:
                    self._accepted(f.ts)
                    return f
        return self._feedback_checked(value)

    def _ts_fast(self, value: Any, parsed: Any = _ABSENT) -> float | None:
        """``_ts`` for the fast path: the time if acceptable, else None. ``parsed``: the
        ``parse_ts`` of ``value`` if already read (None: not a string that reads)."""
        if parsed is not _ABSENT:
            if parsed is None:
                return None
            ts = parsed
        elif type(value) is not str:
            return None
        else:
            try:
                ts = parse_ts(value)
            except (ValueError, OverflowError):
                return None
        if ts < self._min_ts or ts >= MAX_TS:
            return None
        newest = self._newest
        if newest is not None and ts > newest + self._skew:
            return None
        return ts

    def _report_fast(self, obj: dict[str, Any], parsed: Any = _ABSENT) -> Report | None:
        """The whole Report check inline; None as soon as anything is off (see module doc)."""
        get = obj.get
        max_len = self._max_len
        report_id = get("report_id")
        org_id = get("org_id")
        device_id = get("device_id")
        sha256 = get("sha256")
        if not (type(report_id) is str and 0 < len(report_id) <= max_len
                and type(org_id) is str and 0 < len(org_id) <= max_len
                and type(device_id) is str and 0 < len(device_id) <= max_len
                and type(sha256) is str and len(sha256) == 64):
            return None
        sha256 = _hex64_fast(sha256)
        if sha256 is None:
            return None
        ts = self._ts_fast(get("ts"), parsed)
        if ts is None:
            return None
        source = get("source", "other")
        if type(source) is not str or not 0 < len(source) <= max_len:
            return None
        file = get("file", _ABSENT)
        if file is _ABSENT:
            file = FileInfo()
        else:
            file = _file_fast(file, max_len)
            if file is None:
                return None
        behaviors = get("behaviors", ())
        if behaviors:
            if type(behaviors) is not list or len(behaviors) > self._max_items:
                return None
            for b in behaviors:
                if type(b) is not str or not 0 < len(b) <= max_len:
                    return None
            if len(behaviors) == 1:   # the usual claim: one behaviour, nothing to dedup
                b = behaviors[0]
                behaviors = (_BEHAVIORS.get(b, b),)
            else:
                behaviors = tuple(dict.fromkeys([_BEHAVIORS.get(b, b) for b in behaviors]))
        elif type(behaviors) is list:
            behaviors = ()
        elif behaviors != ():   # absent is (); anything else falsy ("", 0, {}, null) is wrong
            return None
        verdicts = get("verdicts", _ABSENT)
        if verdicts is _ABSENT:
            verdicts = {}
        elif type(verdicts) is not dict or len(verdicts) > self._max_verdicts:
            return None
        else:
            for name, score in verdicts.items():
                if not 0 < len(name) <= max_len:
                    return None
                if type(score) is not float:
                    if type(score) is not int:
                        return None
                    verdicts = _float_scores(verdicts, max_len)   # rare: integers become floats
                    if verdicts is None:
                        return None
                    break
                if not 0.0 <= score <= 1.0:   # also rejects NaN
                    return None
        parent = get("parent_sha256")
        if parent is not None:
            if type(parent) is not str or len(parent) != 64:
                return None
            parent = _hex64_fast(parent)
            if parent is None:
                return None
        return Report(report_id, ts, org_id, device_id, sha256, source, file, behaviors,
                      verdicts, parent)

    def _feedback_fast(self, obj: dict[str, Any], parsed: Any = _ABSENT) -> Feedback | None:
        """The whole Feedback check inline; None as soon as anything is off."""
        get = obj.get
        max_len = self._max_len
        feedback_id = get("feedback_id")
        sha256 = get("sha256")
        verdict = get("verdict")
        source = get("source")
        if not (type(feedback_id) is str and 0 < len(feedback_id) <= max_len
                and type(sha256) is str and len(sha256) == 64
                and type(verdict) is str and type(source) is str):
            return None
        sha256 = _hex64_fast(sha256)
        if sha256 is None:
            return None
        verdict = _VERDICTS.get(verdict)
        source = _FEEDBACK_SOURCES.get(source)
        if verdict is None or source is None:
            return None
        ts = self._ts_fast(get("ts"), parsed)
        if ts is None:
            return None
        org_id = get("org_id")
        if org_id is not None:
            if type(org_id) is not str or not 0 < len(org_id) <= max_len:
                return None
        elif source == "org_report":
            return None
        return Feedback(feedback_id, ts, sha256, verdict, source, org_id)

    def _report_checked(self, value: bytes) -> Report:
        """The reference Report parse: every rule in order, raising the specific error."""
        obj = _load(value, self._max_bytes)
        max_len = self._max_len
        try:
            report_id = obj["report_id"]
            ts = obj["ts"]
            org_id = obj["org_id"]
            device_id = obj["device_id"]
            sha256 = obj["sha256"]
        except KeyError as exc:
            raise _missing(exc.args[0]) from None
        report_id = _string(report_id, "report_id", max_len, True)
        t = self._ts(ts)
        org_id = _string(org_id, "org_id", max_len, True)
        device_id = _string(device_id, "device_id", max_len, True)
        sha256 = _sha256(sha256, "sha256")
        get = obj.get
        source = get("source", _ABSENT)
        source = "other" if source is _ABSENT else _string(source, "source", max_len, True)
        file = get("file", _ABSENT)
        file = FileInfo() if file is _ABSENT else _file(file, max_len)
        behaviors = get("behaviors", _ABSENT)
        behaviors = (() if behaviors is _ABSENT
                     else _behaviors(behaviors, self._max_items, max_len))
        verdicts = get("verdicts", _ABSENT)
        verdicts = ({} if verdicts is _ABSENT
                    else _verdicts(verdicts, self._max_verdicts, max_len))
        parent = get("parent_sha256")
        if parent is not None:
            parent = _sha256(parent, "parent_sha256")
        self._accepted(t)
        return Report(report_id, t, org_id, device_id, sha256, source, file, behaviors,
                      verdicts, parent)

    def _feedback_checked(self, value: bytes) -> Feedback:
        """The reference Feedback parse: every rule in order, raising the specific error."""
        obj = _load(value, self._max_bytes)
        max_len = self._max_len
        try:
            feedback_id = obj["feedback_id"]
            ts = obj["ts"]
            sha256 = obj["sha256"]
            verdict = obj["verdict"]
            source = obj["source"]
        except KeyError as exc:
            raise _missing(exc.args[0]) from None
        feedback_id = _string(feedback_id, "feedback_id", max_len, True)
        t = self._ts(ts)
        sha256 = _sha256(sha256, "sha256")
        verdict = _enum(verdict, "verdict", VERDICTS)
        source = _enum(source, "source", FEEDBACK_SOURCES)
        org_id = obj.get("org_id")
        if org_id is not None:
            org_id = _string(org_id, "org_id", max_len, True)
        elif source == "org_report":
            raise InvalidMessage("missing_field",
                                 "field 'org_id' is required when source is 'org_report'")
        self._accepted(t)
        return Feedback(feedback_id, t, sha256, verdict, source, org_id)


class GivenNewestParser(WireParser):
    """A :class:`WireParser` that learns nothing: the newest accepted time it compares a
    message's time with is the one given to ``set_newest`` (None: no comparison)."""

    __slots__ = ()

    def _accepted(self, ts: float) -> None:
        return None


# --- writing ---------------------------------------------------------------------------------

def dead_letter(raw: RawMessage, error: str, now: float) -> DeadLetter:
    """The dead letter for ``raw``: its bytes as text (bad UTF-8 replaced), and why."""
    value = raw.value if raw.value is not None else b""
    if len(value) > RAW_TEXT_CAP:
        text = (str(value[:RAW_TEXT_CAP], "utf-8", "replace")
                + f"... [truncated: {len(value)} bytes in all, first {RAW_TEXT_CAP} kept]")
    else:
        text = str(value, "utf-8", "replace")
    key = str(raw.key, "utf-8", "replace") if raw.key is not None else None
    if len(error) > _ERROR_CAP:
        error = error[:_ERROR_CAP - 3] + "..."
    return DeadLetter(error, raw.topic, raw.partition, raw.offset, key, text, now)


def encode_dead_letter(dl: DeadLetter) -> bytes:
    return orjson.dumps({"error": dl.error, "topic": dl.topic, "partition": dl.partition,
                         "offset": dl.offset, "key": dl.key, "raw": dl.raw,
                         "ts": format_ts(dl.ts)})


def decision_to_dict(d: Decision) -> dict[str, Any]:
    """The contract's Decision; an unstamped ``decided_at`` is stamped with the wall clock."""
    decided = d.decided_at if d.decided_at is not None else time.time()
    return {"decision_id": d.decision_id, "sha256": d.sha256, "action": d.action,
            "scope": d.scope, "org_id": d.org_id, "device_id": d.device_id,
            "score": d.score, "classifiers": dict(d.classifiers), "reasons": list(d.reasons),
            "model_version": d.model_version, "event_ts": format_ts(d.event_ts),
            "decided_at": format_ts(decided),
            "expires_at": format_ts(d.expires_at) if d.expires_at is not None else None}


def decode_decision(value: bytes | dict[str, Any]) -> Decision:
    """A contract Decision as the typed object (fields added later are ignored).

    >>> d = Decision("id", "ab" * 32, "block", "global", None, None, 0.9, {}, ["r"], "m",
    ...              1.7e9, None, 1.7e9)
    >>> decode_decision(encode_decision(d)) == d
    True
    """
    try:
        obj = orjson.loads(value) if isinstance(value, bytes | bytearray) else value
        if not isinstance(obj, dict):
            raise InvalidMessage("type", "a decision is a JSON object")
        expires = obj.get("expires_at")
        decided = obj.get("decided_at")
        return Decision(str(obj["decision_id"]), str(obj["sha256"]), str(obj["action"]),
                        str(obj["scope"]), obj.get("org_id"), obj.get("device_id"),
                        float(obj.get("score") or 0.0), dict(obj.get("classifiers") or {}),
                        list(obj.get("reasons") or []), str(obj.get("model_version", "")),
                        parse_ts(obj["event_ts"]),
                        parse_ts(expires) if expires is not None else None,
                        parse_ts(decided) if decided is not None else None)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("json", f"not JSON: {exc}") from None
    except KeyError as exc:
        raise InvalidMessage("missing", f"a decision needs {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidMessage):
            raise
        raise InvalidMessage("type", f"not a decision: {exc}") from None


Target = tuple[str, str | None, str | None, str | None]   # (sha256, scope, org_id, device_id)


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A contract Decision as the tools read it back: typed, read-only, decoded once.

    The fields are :class:`~rapidloop.schemas.model.Decision`'s, with the same
    names and types, except that the tools read what they are given (decisions
    files of older releases, hand-written fixtures, whatever is on a topic) and
    show what they can: a field that is absent or not of its contract type
    reads as None (``sha256``: ``""``; ``classifiers`` and ``reasons``: empty,
    keeping only the entries of the right type). ``sha256`` is lower-case,
    ``reasons`` a tuple. Times are float epoch seconds (None: absent or not an
    RFC 3339 time) beside the strings they were read from (``*_text``), which
    outputs that repeat them (exports, CrowdSec's shape) write unchanged.
    ``raw`` is the JSON object as read: what contract outputs (``rapidloop
    active``, ``tail --json``) write again, byte for byte; two records are
    equal when they were read from equal objects.
    """

    decision_id: str | None
    sha256: str
    action: str | None
    scope: str | None
    org_id: str | None
    device_id: str | None
    score: float | None
    classifiers: dict[str, float]
    reasons: tuple[str, ...]
    model_version: str | None
    event_ts: float | None
    expires_at: float | None
    decided_at: float | None
    event_ts_text: str | None
    expires_at_text: str | None
    decided_at_text: str | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def target(self) -> Target:
        """Where it applies: (sha256, scope, org_id, device_id), the contract's target."""
        return (self.sha256, self.scope, self.org_id, self.device_id)


# read_decision(strict=True) needs these; they are what a tool cannot place a decision without
_REQUIRED = ("sha256", "action", "scope", "event_ts")


def _text(value: Any) -> str | None:
    return value if type(value) is str else None


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (float, int) else None


def read_decision(value: bytes | bytearray | dict[str, Any] | DecisionRecord,
                  strict: bool = False) -> DecisionRecord:
    """One decision (a JSON line, its object, or a record already read) as a record.

    Tolerant by default (see :class:`DecisionRecord`): only a line that is not
    JSON, or JSON that is not an object, raises :class:`InvalidMessage`.
    ``strict`` also requires what a decision cannot be placed without (a
    string ``sha256``, ``action`` and ``scope``, an RFC 3339 ``event_ts``) and
    names the field that is missing or wrong.

    >>> r = read_decision(b'{"sha256": "AB", "action": "block", "scope": "global", '
    ...                   b'"score": 1, "reasons": ["r", 2], "event_ts": "1970-01-01T00:01:00Z"}')
    >>> r.target, r.score, r.reasons, r.event_ts, r.event_ts_text, r.expires_at
    (('ab', 'global', None, None), 1.0, ('r', '2'), 60.0, '1970-01-01T00:01:00Z', None)
    >>> read_decision({"sha256": "ab", "event_ts": "yesterday"}, strict=True)
    Traceback (most recent call last):
    ...
    rapidloop.schemas.wire.InvalidMessage: missing required field 'action'
    """
    if isinstance(value, DecisionRecord):
        if strict:
            _check_required(value.raw)
        return value
    if isinstance(value, bytes | bytearray):
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessage("invalid_json", f"not JSON: {exc}") from None
    else:
        obj = value
    if type(obj) is not dict:
        raise InvalidMessage("not_object",
                             f"not a decision: a JSON object is needed, got {_type_name(obj)}")
    if strict:
        _check_required(obj)
    get = obj.get
    sha = get("sha256")
    classifiers = get("classifiers")
    reasons = get("reasons")
    event, expires, decided = get("event_ts"), get("expires_at"), get("decided_at")
    return DecisionRecord(
        _text(get("decision_id")), sha.lower() if type(sha) is str else "",
        _text(get("action")), _text(get("scope")), _text(get("org_id")), _text(get("device_id")),
        _number(get("score")),
        {k: float(v) for k, v in classifiers.items() if type(v) in (float, int)}
        if type(classifiers) is dict else {},
        tuple(r if type(r) is str else str(r) for r in reasons) if type(reasons) is list else (),
        _text(get("model_version")),
        parse_ts_or_none(event), parse_ts_or_none(expires), parse_ts_or_none(decided),
        _text(event), _text(expires), _text(decided), obj)


def _check_required(obj: dict[str, Any]) -> None:
    for name in _REQUIRED:
        if name not in obj:
            raise _missing(name)
        value = obj[name]
        if type(value) is not str:
            raise _wrong_type(name, "an RFC 3339 time string" if name == "event_ts"
                              else "a string", value)
    try:
        parse_ts(obj["event_ts"])
    except ValueError as exc:
        raise InvalidMessage("bad_time", f"field 'event_ts': {exc}") from None


def encode_decision(d: Decision) -> bytes:
    return orjson.dumps(decision_to_dict(d))


def report_to_dict(r: Report) -> dict[str, Any]:
    f = r.file
    return {"report_id": r.report_id, "ts": format_ts(r.ts), "org_id": r.org_id,
            "device_id": r.device_id, "sha256": r.sha256, "source": r.source,
            "file": {"name": f.name, "size": f.size, "type": f.type, "signed": f.signed,
                     "signer": f.signer, "path": f.path},
            "behaviors": list(r.behaviors), "verdicts": dict(r.verdicts),
            "parent_sha256": r.parent_sha256}


def encode_report(r: Report) -> bytes:
    return orjson.dumps(report_to_dict(r))


def feedback_to_dict(fb: Feedback) -> dict[str, Any]:
    return {"feedback_id": fb.feedback_id, "ts": format_ts(fb.ts), "sha256": fb.sha256,
            "verdict": fb.verdict, "source": fb.source, "org_id": fb.org_id}


def encode_feedback(fb: Feedback) -> bytes:
    return orjson.dumps(feedback_to_dict(fb))
