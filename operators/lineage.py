"""Siblings: what trusted verdicts have said about files of the same lineage.

A campaign changes its hash with every wave, and a vendor ships a new build
of its tool every week: a file judged only by its own hash starts from
nothing each time. What carries over is the lineage: the name pattern it is
distributed under (digits masked: ``invoice_4821.exe`` and
``invoice_77.exe`` are one pattern), its signer (or none) and its type. The
next wave of ``Rechnung_#.pdf.exe`` (unsigned, PE) is suspect on its first
sighting because its elder siblings were condemned, and so is a file whose
parent (the file reported to have dropped or launched it) was condemned; the next build of an
unsigned remote-admin tool whose builds the sandbox kept clearing is not
blocked for everyone on one scary report.

Only trusted verdicts (sandbox, analyst) write the record, each file once
with its latest verdict (``SignerRecord``'s bookkeeping, keyed by lineage
instead of signer), so no tenant can make a lineage suspect or clean. The
signer in the key is the one most organizations report, and the name the one
the file was first reported under. Replicated like the models: every replica
sees every trusted verdict in the same order.

The record speaks as a log-odds term (``sibling_log_odds``): the Jeffreys
posterior of malice among the lineage's judged files, against even odds,
bounded by ``bound``, and nothing until ``min_files`` files were judged.

>>> lineage_key("Invoice_4821.exe", None, "pe")
'pe|-|invoice_#.exe'
>>> rec = LineageRecord(max_files=100)
>>> for i in range(4):
...     rec.learn(lineage_key(f"invoice_{i}.exe", None, "pe"), f"sha-{i}", malicious=True)
>>> round(sibling_log_odds(rec, "pe|-|invoice_#.exe", min_files=2, bound=3.0), 2)
2.2
>>> sibling_log_odds(rec, "pe|-|setup.exe", min_files=2, bound=3.0)
0.0
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from .signers import SignerRecord

_DIGITS = re.compile(r"\d+")


@lru_cache(maxsize=1 << 16)
def lineage_key(name: str, signer: str | None, file_type: str) -> str:
    """The lineage a file belongs to: type, signer and name pattern (digits masked)."""
    return f"{file_type}|{signer or '-'}|{_DIGITS.sub('#', name.lower())}"


class LineageRecord(SignerRecord):
    """Per-lineage counts of files with a trusted verdict (clean, condemned); bounded."""

    __slots__ = ()

    def __init__(self, max_files: int) -> None:
        super().__init__(vouch_clean=0, max_files=max_files)

    def condemned(self, sha256: str) -> bool:
        """Is the file's own latest trusted verdict "malicious" (a dropper's children are
        its payloads)?"""
        judged = self.files.get(sha256)
        return judged is not None and judged[1]


def sibling_log_odds(record: SignerRecord, key: str | None, min_files: int,
                     bound: float) -> float:
    """How far the lineage's judged files move a new sibling's log-odds of malice."""
    if not key:
        return 0.0
    clean, condemned = record.record(key)
    if clean + condemned < min_files:
        return 0.0
    z = math.log((condemned + 0.5) / (clean + 0.5))
    return max(-bound, min(bound, z))
