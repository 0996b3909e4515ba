"""Decisions as they are made: read straight off the topic, one readable line each.

Reads every partition of the decisions topic directly (assigned, no consumer
group, nothing committed), so tailing never disturbs the job or another tail.
Each line says what (action), where (scope, org, device), which file, how
sure (score) and why (the reasons):

    01:02:03Z BLOCK   global                   3f2a…9c1d  score 0.97  seen in 4 orgs within 1h

Decisions carry sensor-supplied strings (ids, reasons naming files), so
control characters are replaced before anything reaches the terminal.
:func:`format_decision` and :func:`json_line` write the lines;
:func:`follow` reads the topic, handing what is not a decision (an
unreadable message, a client error) to a ``say`` callback: printing stays in
the CLI (``rapidloop tail``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from rapidloop.base.kafka import describe_error, quiet
from rapidloop.schemas.wire import DecisionRecord, InvalidMessage, read_decision
from rapidloop.tools.explain import clean as _clean
from rapidloop.tools.explain import target

ACTION_COLORS = {"block": "1;31", "allow": "1;32", "unblock": "1;36", "audit": "1;33"}
DIM = "2"
_WHERE_WIDTH = 24
_MAX_FIELD = 64
_WARN_INTERVAL_S = 10.0
_UNREADABLE_SHOWN = 80   # characters of an unreadable message quoted in its warning
_BATCH = 500             # messages asked of the consumer at a time
_POLL_S = 0.2            # how long one ask waits: also how often a --timeout is checked


# ---------------------------------------------------------------- formatting

def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


def _utc(t: float | None) -> datetime | None:
    if t is None:
        return None
    try:
        return datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):   # a time no datetime holds (year 0)
        return None


def _clock(d: DecisionRecord) -> str:
    """When it was decided (event time, else when it was emitted), as ``HH:MM:SSZ``."""
    ts = _utc(d.event_ts) or _utc(d.decided_at)
    if ts is not None:
        return ts.strftime("%H:%M:%SZ")
    return clean(d.event_ts_text or d.decided_at_text or "--:--:--", 9).ljust(9)


def clean(value: Any, limit: int = _MAX_FIELD) -> str:
    """A field as safe, bounded terminal text (``tools.explain.clean``, a tail's width)."""
    return _clean(value, limit)


def _short_hash(value: Any) -> str:
    text = clean(value or "?")
    return f"{text[:4]}…{text[-4:]}" if len(text) > 12 else text


def format_decision(d: DecisionRecord, color: bool) -> str:
    """One decision as one line a person can read: when, what, where, which file, why.

    Never raises: a field that is missing or of the wrong type shows as ``?``.
    """
    action_text = clean(d.action or "?", 10).upper()
    score_text = f"{d.score:.2f}" if d.score is not None else "?"
    why = "; ".join(clean(r, 200) for r in d.reasons) or "(no reason given)"
    parts = [
        _paint(_clock(d), DIM, color),
        _paint(f"{action_text:<7}", ACTION_COLORS.get(str(d.action), ""), color),
        f"{target(d, _MAX_FIELD, _MAX_FIELD):<{_WHERE_WIDTH}}",
        _paint(_short_hash(d.sha256), DIM, color),
        f" score {score_text}",
        f" {why}",
    ]
    expires = _utc(d.expires_at)
    if expires is not None:
        parts.append(_paint(f"(until {expires.strftime('%Y-%m-%d %H:%MZ')})", DIM, color))
    return " ".join(parts)


def json_line(value: bytes) -> str:
    """A decision's raw JSON, kept to one line (``--json``: one line per decision)."""
    text = value.decode("utf-8", "replace")
    if "\n" in text or "\r" in text:   # keep it one line per decision
        try:
            return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            return text.replace("\r", "\\r").replace("\n", "\\n")
    return text


# ---------------------------------------------------------------- consuming

class _Warnings:
    """Client errors (broker gone, ...) to ``say``, each kind at most every few seconds."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.last: dict[int, float] = {}

    def __call__(self, error: Any) -> None:
        now = time.monotonic()
        if now - self.last.get(error.code(), float("-inf")) >= _WARN_INTERVAL_S:
            self.last[error.code()] = now
            self.say(describe_error(error))


def follow(conf: dict[str, Any], parts: list[tuple[str, int]], *, from_beginning: bool,
           say: Callable[[str], None]) -> Iterator[tuple[bytes, DecisionRecord] | None]:
    """Each decision on the partitions ``parts`` as it comes, as (raw value, record).

    None ends each poll of the consumer (what came with it, maybe nothing), so
    a caller can flush and stop on time as well as on count; close the
    iterator to close the consumer. A message that is not a decision is left
    out, in both modes (the output carries decisions only), and named to
    ``say`` instead; so are client errors (broker gone, ...).
    """
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    consumer_conf = quiet(conf)
    consumer_conf.update({"group.id": consumer_conf.get("group.id", "rapidloop-tail"),
                          "enable.auto.commit": False, "enable.auto.offset.store": False,
                          "error_cb": _Warnings(say)})
    consumer = Consumer(consumer_conf)
    start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    consumer.assign([TopicPartition(t, p, start) for t, p in parts])
    try:
        while True:
            for msg in consumer.consume(_BATCH, _POLL_S):
                if msg.error() is not None:
                    continue   # partition events; client errors went to the error callback
                value = msg.value() or b""
                try:
                    decision = read_decision(value)
                except InvalidMessage as exc:
                    say(f"unreadable message at {msg.topic()}#{msg.partition()}@"
                        f"{msg.offset()} ({exc}): "
                        f"{clean(value.decode('utf-8', 'replace'), _UNREADABLE_SHOWN)}")
                    continue
                yield value, decision
            yield None
    finally:
        consumer.close()
