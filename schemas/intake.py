"""Turning a batch of raw messages into events and dead letters.

Every message that arrives is accounted for here: it becomes a Report or a
Feedback, or a DeadLetter that says exactly what was wrong with it. Nothing
raises past this point, so one bad message can never stop the job.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter

from .model import DeadLetter, Feedback, RawMessage, Report
from .wire import InvalidMessage, WireParser, dead_letter

REPORT = "report"
FEEDBACK = "feedback"
_topic = attrgetter("topic")


@dataclass(slots=True)
class Unit:
    """One source batch, parsed: the unit of deterministic processing."""

    source: str
    unit: str
    seq: int | None
    events: list[Report | Feedback]
    dead: list[DeadLetter]
    arrived: float
    counts: Counter[str] = field(default_factory=Counter)       # messages in, by topic
    dead_codes: Counter[str] = field(default_factory=Counter)   # dead letters, by reason code


class Intake:
    """Parses batches; ``kinds`` maps a topic (or input file) name to report/feedback."""

    def __init__(self, parser: WireParser, kinds: dict[str, str]) -> None:
        self.parser = parser
        self.kinds = kinds

    def parse(self, messages: list[RawMessage], now: float, seq: int | None = None,
              source: str | None = None) -> Unit:
        events: list[Report | Feedback] = []
        dead: list[DeadLetter] = []
        counts: Counter[str] = Counter(map(_topic, messages))   # counted in C, not per message
        codes: Counter[str] = Counter()
        report = self.parser.report
        feedback = self.parser.feedback
        kinds = self.kinds
        for msg in messages:
            kind = kinds.get(msg.topic)
            try:
                if msg.value is None:
                    raise InvalidMessage("empty", "message has no value")
                if kind == REPORT:
                    events.append(report(msg.value))
                elif kind == FEEDBACK:
                    events.append(feedback(msg.value))
                else:
                    raise InvalidMessage("unknown_topic", f"no parser for topic {msg.topic!r}")
            except InvalidMessage as exc:
                codes[exc.code] += 1
                dead.append(dead_letter(msg, str(exc), now))
            except Exception as exc:  # a parser bug must not stop the job either
                codes["internal"] += 1
                dead.append(dead_letter(msg, f"internal error: {type(exc).__name__}: {exc}", now))
        first = messages[0] if messages else None
        src = source or (f"{first.topic}:{first.partition}" if first else "empty")
        unit = (f"{src}#{seq}" if seq is not None
                else f"{src}@{first.offset if first else 0}:{now!r}")
        return Unit(src, unit, seq, events, dead, now, counts, codes)
