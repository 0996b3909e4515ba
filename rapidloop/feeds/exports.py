"""The decisions in force, in the shapes SOC tools already ingest.

A SOC runs a SIEM, a threat-intelligence platform and an EDR console, not a
Kafka consumer. Each export here takes what ``rapidloop.feeds.active.in_force``
returns (one view: the operator's, or one tenant's) and writes it as:

The tools' formats hold one decision per file: the operator's view is the
global decisions, a tenant's view the global decisions and its own org
decisions (``for_tools``); CSV keeps every decision of the view.

* ``stix``: a STIX 2.1 bundle, one ``indicator`` per file blocked in force
  (``[file:hashes.'SHA-256' = '…']``, ``valid_until`` = the block's
  ``expires_at``, ``confidence`` = the score × 100), created by one
  ``identity`` (rapidloop). Ids are UUIDv5 of the target and the decision,
  so exporting the same decisions twice gives the same ids, and a block that
  changed gets a new indicator. Lifted blocks are simply absent: the export
  is a snapshot of what is in force.
* ``defender``: Microsoft Defender for Endpoint indicators
  (``indicatorType`` ``FileSha256``; ``block`` → ``Block``, ``allow`` →
  ``Allowed``), ready for the indicators batch import. An indicator applies
  to a whole Defender tenant, so device-scoped decisions are left out (they
  are enforced through ``rapidloop active`` or the decisions topic).
* ``misp``: one MISP event with a ``sha256`` attribute per file blocked in
  force (``to_ids`` true, ``first_seen`` = the decision's event time).
* ``csv``: one row per decision in force, every scope.

>>> from rapidloop.schemas.wire import read_decision
>>> d = read_decision({"decision_id": "d1", "sha256": "ab" * 32, "action": "block",
...      "scope": "global", "org_id": None, "device_id": None, "score": 0.97,
...      "reasons": ["sandbox verdict"], "model_version": "ens-3",
...      "event_ts": "2026-11-28T10:00:00.000Z", "expires_at": "2026-12-28T10:00:00.000Z",
...      "decided_at": None})
>>> (ind,) = defender([d])
>>> ind["action"], ind["indicatorType"], ind["severity"], ind["expirationTime"]
('Block', 'FileSha256', 'High', '2026-12-28T10:00:00.000Z')
>>> [o["type"] for o in stix([d], "2026-11-28T12:00:00.000Z")["objects"]]
['identity', 'indicator']
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from typing import Any

import orjson

from rapidloop.schemas.wire import DecisionRecord

FORMATS = ("stix", "defender", "misp", "csv")
_NS = uuid.UUID("8f4b7c1e-3d2a-5e6f-9a0b-1c2d3e4f5a6b")   # rapidloop's UUIDv5 namespace
IDENTITY_ID = f"identity--{uuid.uuid5(_NS, 'rapidloop')}"
_DEFENDER_ACTION = {"block": "Block", "allow": "Allowed", "audit": "Audit"}
CSV_FIELDS = ("sha256", "action", "scope", "org_id", "device_id", "score", "event_ts",
              "expires_at", "decision_id", "model_version", "reasons")
_AS_WRITTEN = {"event_ts": "event_ts_text", "expires_at": "expires_at_text"}   # times: verbatim


def for_tools(active: list[DecisionRecord], tenant: bool) -> list[DecisionRecord]:
    """What a SOC tool of this view should hold: one decision per file, never a device's.

    The operator's view (``tenant`` false) is the global decisions: another
    tenant's org decisions mean nothing in one tool. A tenant's view is the
    global decisions and its own org decisions, the broadest first
    (``in_force`` already gave its own org decision precedence over a global one).
    """
    out: list[DecisionRecord] = []
    seen: set[str] = set()
    for d in active:
        if d.scope == "device" or (not tenant and d.scope != "global"):
            continue
        if d.sha256 not in seen:
            seen.add(d.sha256)
            out.append(d)
    return out


def _blocks(active: list[DecisionRecord]) -> list[DecisionRecord]:
    return [d for d in active if d.action == "block"]


def _reasons(d: DecisionRecord, limit: int = 3) -> str:
    return "; ".join(d.reasons[:limit])


def _where(d: DecisionRecord) -> str:
    if d.scope == "global":
        return "every organization"
    if d.scope == "org":
        return f"organization {d.org_id}"
    return f"device {d.device_id} of {d.org_id}"


def _severity(score: float) -> str:
    return "High" if score >= 0.9 else "Medium" if score >= 0.7 else "Low"


def stix(active: list[DecisionRecord], created: str) -> dict[str, Any]:
    """A STIX 2.1 bundle of the blocks in ``active`` (pass it through :func:`for_tools`);
    ``created`` (RFC 3339) stamps the bundle."""
    objects: list[dict[str, Any]] = [{
        "type": "identity", "spec_version": "2.1", "id": IDENTITY_ID,
        "created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
        "name": "rapidloop", "identity_class": "system",
        "description": "rapid-protection loop: block decisions from correlated sensor "
                       "reports, online classifiers and sandbox/analyst verdicts"}]
    for d in _blocks(active):
        sha = d.sha256
        ts = str(d.event_ts_text)
        ind: dict[str, Any] = {
            "type": "indicator", "spec_version": "2.1",
            "id": f"indicator--{uuid.uuid5(_NS, d.decision_id or sha)}",
            "created_by_ref": IDENTITY_ID, "created": ts, "modified": ts,
            "name": f"rapidloop block of {sha[:16]}… ({_where(d)})",
            "description": _reasons(d),
            "indicator_types": ["malicious-activity"],
            "pattern": f"[file:hashes.'SHA-256' = '{sha}']",
            "pattern_type": "stix", "pattern_version": "2.1",
            "valid_from": ts,
            "confidence": max(0, min(100, round((d.score or 0.0) * 100))),
            "labels": [f"scope:{d.scope}"],
        }
        if d.expires_at_text:
            ind["valid_until"] = d.expires_at_text
        objects.append(ind)
    return {"type": "bundle", "id": f"bundle--{uuid.uuid5(_NS, created + str(len(objects)))}",
            "objects": objects}


def defender(active: list[DecisionRecord]) -> list[dict[str, Any]]:
    """Defender for Endpoint indicators of the decisions in ``active`` (pass it through
    :func:`for_tools`: an indicator holds for a whole Defender tenant)."""
    out = []
    for d in active:
        action = _DEFENDER_ACTION.get(str(d.action))
        if action is None or d.scope == "device":
            continue
        score = d.score or 0.0
        block = action == "Block"
        out.append({
            "indicatorValue": d.sha256,
            "indicatorType": "FileSha256",
            "action": action,
            "title": f"rapidloop {d.action} ({_where(d)})",
            "description": _reasons(d) or "rapidloop decision",
            "expirationTime": d.expires_at_text,
            "severity": _severity(score) if block else "Informational",
            "generateAlert": block,
            "recommendedActions": ("Isolate the file and review the devices that ran it"
                                   if block else "None: allowed by the organization"),
            "application": "rapidloop",
        })
    return out


def misp(active: list[DecisionRecord], date: str) -> dict[str, Any]:
    """One MISP event (``date``: YYYY-MM-DD) with a ``sha256`` attribute per block."""
    attrs = [{
        "uuid": str(uuid.uuid5(_NS, f"attr|{d.decision_id or d.sha256}")),
        "type": "sha256", "category": "Payload delivery", "to_ids": True,
        "value": d.sha256,
        "comment": f"{_where(d)}: {_reasons(d)}"[:1024],
        "first_seen": d.event_ts_text,
    } for d in _blocks(active)]
    return {"Event": {
        "uuid": str(uuid.uuid5(_NS, f"event|{date}|{len(attrs)}")),
        "info": f"rapidloop: files blocked in force ({len(attrs)})",
        "date": date, "threat_level_id": "2", "analysis": "2", "distribution": "0",
        "Attribute": attrs}}


def to_csv(active: list[DecisionRecord]) -> str:
    """Every decision in ``active`` as a CSV row (reasons joined with "; ")."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for d in active:
        w.writerow([_csv_cell(d, f) for f in CSV_FIELDS])
    return buf.getvalue()


def _csv_cell(d: DecisionRecord, name: str) -> Any:
    if name == "reasons":
        return "; ".join(d.reasons)
    value = getattr(d, _AS_WRITTEN.get(name, name))
    return "" if value is None else value


def render(fmt: str, active: list[DecisionRecord], at_rfc3339: str, tenant: bool) -> bytes:
    """``active`` (``in_force``'s view; ``tenant``: one tenant's) in format ``fmt`` (one of
    :data:`FORMATS`), as the bytes of a file. CSV keeps every decision of the view; the
    tools' formats hold :func:`for_tools`."""
    tools = for_tools(active, tenant)
    makers: dict[str, Callable[[], Any]] = {
        "stix": lambda: stix(tools, at_rfc3339),
        "defender": lambda: defender(tools),
        "misp": lambda: misp(tools, at_rfc3339[:10]),
    }
    if fmt == "csv":
        return to_csv(active).encode()
    if fmt not in makers:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    return orjson.dumps(makers[fmt](), option=orjson.OPT_INDENT_2) + b"\n"
