"""What the simulator emits: one line of output at a time, and the counts of what it was.

>>> Event(REPORT, 0.0, b"ab", b"{}", False, False).kind
'report'
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from .params import format_ts

REPORT = "report"
FEEDBACK = "feedback"

# How a part schedules a line for later: (event time, kind, payload) onto the stream's heap.
Push = Callable[[float, int, Any], None]


class Event(NamedTuple):
    """One line of output: ``kind`` is REPORT or FEEDBACK, ``t`` the scheduled event time."""

    kind: str
    t: float
    key: bytes | None
    value: bytes
    malformed: bool
    duplicate: bool


@dataclass(slots=True)
class SimStats:
    """What was emitted; the CLI's summary line and the world file come from here."""

    reports: int = 0
    report_malformed: int = 0
    report_duplicates: int = 0
    feedback: int = 0
    feedback_malformed: int = 0
    feedback_duplicates: int = 0
    feedback_by_source: Counter[str] = field(default_factory=Counter)
    malformed_by_reason: Counter[str] = field(default_factory=Counter)
    noisy_verdicts: int = 0
    campaign_reports: int = 0
    rogue_reports: int = 0
    rogue_feedback: int = 0
    first_t: float | None = None
    last_t: float | None = None
    epochs: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["feedback_by_source"] = dict(sorted(self.feedback_by_source.items()))
        out["malformed_by_reason"] = dict(sorted(self.malformed_by_reason.items()))
        out["first_t"] = format_ts(self.first_t) if self.first_t is not None else None
        out["last_t"] = format_ts(self.last_t) if self.last_t is not None else None
        return out
