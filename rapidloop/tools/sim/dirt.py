"""The dirt of real pipelines: lines that break the contract in the ways real ones do.

Every corrupted line still fits on one line (no raw newline), so a reader
that splits on newlines meets exactly one bad message per corruption, and
the engine must answer each with a dead letter that says what was wrong.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from .params import parse_ts

_REQUIRED = ("report_id", "ts", "org_id", "device_id", "sha256")


def corrupt_report(rep: dict[str, Any], key: bytes,
                   rng: random.Random) -> tuple[bytes, bytes | None, str]:
    """A line a real pipeline might deliver; never contains a raw newline."""
    kind = rng.choice(("invalid_json", "missing_field", "bad_sha256", "wrong_type",
                       "invalid_utf8", "bad_ts", "not_object", "out_of_range"))
    rep = dict(rep)
    if kind == "invalid_json":
        raw = orjson.dumps(rep)
        return raw[: rng.randint(1, len(raw) - 2)], key, kind
    if kind == "missing_field":
        field_ = rng.choice(_REQUIRED)
        del rep[field_]
        return orjson.dumps(rep), (None if field_ == "sha256" else key), kind
    if kind == "bad_sha256":
        sha = rep["sha256"]
        rep["sha256"] = rng.choice((sha[:63], sha + "0", "z" * 64, sha[:32], ""))
        return orjson.dumps(rep), None, kind
    if kind == "wrong_type":
        which = rng.choice(("ts", "sha256", "org_id", "size", "behaviors", "verdicts", "file"))
        if which == "ts":
            rep["ts"] = int(parse_ts(rep["ts"]))
        elif which == "sha256":
            rep["sha256"] = int(rep["sha256"][:12], 16)
            key = None
        elif which == "org_id":
            rep["org_id"] = None
        elif which == "size":
            rep["file"] = {**rep["file"], "size": "big"}
        elif which == "behaviors":
            rep["behaviors"] = "persistence,discovery"
        elif which == "verdicts":
            rep["verdicts"] = [0.5, 0.9]
        else:
            rep["file"] = rep["file"]["name"]
        return orjson.dumps(rep), key, kind
    if kind == "invalid_utf8":
        raw = orjson.dumps(rep).replace(b'"name":"', b'"name":"\xff\xfe', 1)
        return raw, key, kind
    if kind == "bad_ts":
        rep["ts"] = rng.choice(("2026-13-45T99:00:00Z", "yesterday", "", "1764288000"))
        return orjson.dumps(rep), key, kind
    if kind == "not_object":
        return orjson.dumps([rep["sha256"], rep["ts"]]), key, kind
    rep["verdicts"] = {"static_ml": rng.choice((1.7, -0.2, 42.0))}
    return orjson.dumps(rep), key, kind


def corrupt_feedback(fb: dict[str, Any], key: bytes,
                     rng: random.Random) -> tuple[bytes, bytes | None, str]:
    kind = rng.choice(("invalid_json", "missing_field", "bad_verdict", "org_report_no_org",
                       "bad_sha256"))
    fb = dict(fb)
    if kind == "invalid_json":
        raw = orjson.dumps(fb)
        return raw[: rng.randint(1, len(raw) - 2)], key, kind
    if kind == "missing_field":
        del fb[rng.choice(("feedback_id", "ts", "sha256", "verdict"))]
    elif kind == "bad_verdict":
        fb["verdict"] = rng.choice(("maybe", "MALWARE", "", 1))
    elif kind == "org_report_no_org":
        fb["source"] = "org_report"
        fb["org_id"] = None
    else:
        fb["sha256"] = fb["sha256"][:40]
        key = None
    return orjson.dumps(fb), key, kind

