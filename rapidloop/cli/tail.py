"""`rapidloop tail`: decisions as they are made, one readable line each (or raw JSON).

Reads every partition of the decisions topic directly (assigned, no consumer
group, nothing committed), so tailing never disturbs the job or another tail,
and starts at the end unless asked for the beginning. Each line says what
(action), where (scope, org, device), which file, how sure (score) and why
(the reasons):

    01:02:03Z BLOCK   global                   3f2a…9c1d  score 0.97  seen in 4 orgs within 1h

Decisions carry sensor-supplied strings (ids, reasons naming files), so
control characters are replaced before anything reaches the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from rapidloop.base.config import load_config
from rapidloop.base.kafka import (
    BrokerUnavailable,
    client_config,
    describe_error,
    quiet,
    topic_partitions,
)
from rapidloop.cli import CliError
from rapidloop.schemas.wire import DecisionRecord, InvalidMessage, read_decision

ACTION_COLORS = {"block": "1;31", "allow": "1;32", "unblock": "1;36", "audit": "1;33"}
DIM = "2"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WHERE_WIDTH = 24
_MAX_FIELD = 64
_WARN_INTERVAL_S = 10.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tail", help="show decisions as they are made",
                       description=__doc__.splitlines()[0])
    p.add_argument("--brokers", help="bootstrap servers (default: kafka.brokers from config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--topic", help="topic to read (default: kafka.decisions_topic from config)")
    p.add_argument("--json", action="store_true", help="print each decision as a raw JSON line")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the beginning of the topic instead of its end")
    p.add_argument("--max", type=int, metavar="N", help="exit after N decisions")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="exit after SECONDS without a new decision")
    p.set_defaults(func=run)


# ---------------------------------------------------------------- formatting

def _clean(value: Any, limit: int = _MAX_FIELD) -> str:
    """A field as safe, bounded terminal text."""
    text = _CONTROL.sub("?", value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


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
    return _clean(d.event_ts_text or d.decided_at_text or "--:--:--", 9).ljust(9)


def _where(d: DecisionRecord) -> str:
    scope, org, device = d.scope, d.org_id, d.device_id
    if scope == "global":
        return "global"
    if scope == "org":
        return f"org {_clean(org)}"
    if scope == "device":
        return f"device {_clean(org)}/{_clean(device)}"
    return _clean(scope or "?")


def _short_hash(value: Any) -> str:
    text = _clean(value or "?")
    return f"{text[:4]}…{text[-4:]}" if len(text) > 12 else text


def format_decision(d: DecisionRecord, color: bool) -> str:
    """One decision as one line a person can read: when, what, where, which file, why.

    Never raises: a field that is missing or of the wrong type shows as ``?``.
    """
    action_text = _clean(d.action or "?", 10).upper()
    score_text = f"{d.score:.2f}" if d.score is not None else "?"
    why = "; ".join(_clean(r, 200) for r in d.reasons) or "(no reason given)"
    parts = [
        _paint(_clock(d), DIM, color),
        _paint(f"{action_text:<7}", ACTION_COLORS.get(str(d.action), ""), color),
        f"{_where(d):<{_WHERE_WIDTH}}",
        _paint(_short_hash(d.sha256), DIM, color),
        f" score {score_text}",
        f" {why}",
    ]
    expires = _utc(d.expires_at)
    if expires is not None:
        parts.append(_paint(f"(until {expires.strftime('%Y-%m-%d %H:%MZ')})", DIM, color))
    return " ".join(parts)


def _json_line(value: bytes) -> str:
    text = value.decode("utf-8", "replace")
    if "\n" in text or "\r" in text:   # keep it one line per decision
        try:
            return json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            return text.replace("\r", "\\r").replace("\n", "\\n")
    return text


# ---------------------------------------------------------------- consuming

class _Warnings:
    """Client errors (broker gone, ...) on stderr, each kind at most every few seconds."""

    def __init__(self, err: TextIO) -> None:
        self.err = err
        self.last: dict[int, float] = {}

    def __call__(self, error: Any) -> None:
        now = time.monotonic()
        if now - self.last.get(error.code(), float("-inf")) >= _WARN_INTERVAL_S:
            self.last[error.code()] = now
            print(f"rapidloop tail: {describe_error(error)}", file=self.err, flush=True)


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    if args.max is not None and args.max < 1:
        raise CliError(f"--max must be at least 1 (got {args.max})")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be positive (got {args.timeout:g})")
    cfg = load_config(args.config)
    brokers = args.brokers or cfg.kafka.brokers
    topic = args.topic or cfg.kafka.decisions_topic
    conf = client_config(cfg, brokers)
    try:
        parts = topic_partitions(conf, [topic], cfg.kafka.connect_timeout_s)
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None

    out = sys.stdout
    color = out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    consumer_conf = quiet(conf)
    consumer_conf.update({"group.id": consumer_conf.get("group.id", "rapidloop-tail"),
                          "enable.auto.commit": False, "enable.auto.offset.store": False,
                          "error_cb": _Warnings(sys.stderr)})
    consumer = Consumer(consumer_conf)
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    consumer.assign([TopicPartition(t, p, start) for t, p in parts])
    shown = 0
    last_seen = time.monotonic()
    try:
        while True:
            msgs = consumer.consume(500, 0.2)
            for msg in msgs:
                if msg.error() is not None:
                    continue   # partition events; client errors went to the error callback
                value = msg.value() or b""
                try:   # in both modes: stdout carries decisions only, one per line
                    decision = read_decision(value)
                except InvalidMessage as exc:
                    print(f"rapidloop tail: unreadable message at {msg.topic()}#"
                          f"{msg.partition()}@{msg.offset()} ({exc}): "
                          f"{_clean(value.decode('utf-8', 'replace'), 80)}",
                          file=sys.stderr, flush=True)
                    continue
                line = _json_line(value) if args.json else format_decision(decision, color)
                out.write(line + "\n")
                shown += 1
                last_seen = time.monotonic()
                if args.max is not None and shown >= args.max:
                    out.flush()
                    return 0
            out.flush()
            if args.timeout is not None and time.monotonic() - last_seen >= args.timeout:
                return 0
    except BrokenPipeError:   # e.g. piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0
    finally:
        consumer.close()
