"""The contract's messages as typed, slotted records.

These are what the stream carries between operators once the wire has been
parsed and validated (see ``rapidloop.schemas.wire``). Times are float seconds
since the Unix epoch (UTC) inside the engine; they are rendered as RFC 3339
only at the wire. Slots keep per-event objects small and cheap to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FILE_TYPES = ("pe", "script", "document", "archive", "elf", "other")
FILE_PATHS = ("downloads", "temp", "system", "program_files", "user", "other")
BEHAVIORS = (
    "process_injection", "credential_dumping", "ransomware_encryption", "persistence",
    "defense_evasion", "lateral_movement", "c2_beacon", "obfuscated_script",
    "office_child_process", "privilege_escalation", "exfiltration", "discovery",
)
VERDICTS = ("malicious", "benign")
TRUSTED_SOURCES = ("sandbox", "analyst")
FEEDBACK_SOURCES = ("sandbox", "analyst", "org_report")
ACTIONS = ("block", "allow", "unblock", "audit")
SCOPES = ("device", "org", "global")


@dataclass(slots=True)
class FileInfo:
    name: str = ""
    size: int = 0
    type: str = "other"
    signed: bool = False
    signer: str | None = None
    path: str = "other"


@dataclass(slots=True)
class Report:
    """One sensor's sighting of a file. ``ts`` is event time in epoch seconds."""

    report_id: str
    ts: float
    org_id: str
    device_id: str
    sha256: str
    source: str = "other"
    file: FileInfo = field(default_factory=FileInfo)
    behaviors: tuple[str, ...] = ()
    verdicts: dict[str, float] = field(default_factory=dict)
    parent_sha256: str | None = None


@dataclass(slots=True)
class Feedback:
    """A verdict on a file: the loop's teacher."""

    feedback_id: str
    ts: float
    sha256: str
    verdict: str
    source: str
    org_id: str | None = None

    @property
    def trusted(self) -> bool:
        return self.source in TRUSTED_SOURCES


@dataclass(slots=True)
class Decision:
    """What enforcement points apply to one target (sha256, scope, org, device)."""

    decision_id: str
    sha256: str
    action: str
    scope: str
    org_id: str | None
    device_id: str | None
    score: float
    classifiers: dict[str, float]
    reasons: list[str]
    model_version: str
    event_ts: float
    expires_at: float | None
    decided_at: float | None = None  # stamped when emitted


@dataclass(slots=True)
class RawMessage:
    """Bytes as they arrived, with where they came from (for dead letters).

    ``decoded``: what a reader that had to decode the value already (the
    event-time merge of files reads every message's time) found: the JSON
    object and the ``parse_ts`` of its ``ts`` (None if not a readable time
    string), so the parser does not decode it twice. Only a JSON object is
    handed on; the parser judges the message exactly as from the bytes.
    """

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None
    offset: int | None = None
    decoded: tuple[dict[str, Any], float | None] | None = field(default=None, compare=False,
                                                                 repr=False)


@dataclass(slots=True)
class DeadLetter:
    """Input that could not be used, and exactly why."""

    error: str
    topic: str
    partition: int | None
    offset: int | None
    key: str | None
    raw: str
    ts: float  # wall clock
