"""Does a report accuse its file on its own evidence?

Correlation must count organizations that *independently* found a file
suspicious, not organizations that merely saw it. A report accuses its file
when its own evidence, scored alone by the prior (its behaviours, its sensor
verdicts, its signature and path, a flagged parent), reaches the device
threshold, or it shows a behaviour strong enough to block a device on. The
pooled history of the file, which other tenants shaped, plays no part.

>>> from rapidloop.base.config import load_config
>>> from rapidloop.schemas.model import FileInfo, Report
>>> acc = Accusation.from_config(load_config(env={}))
>>> f = FileInfo(name="x.exe", size=1, type="pe", signed=False, signer=None, path="temp")
>>> r = Report("r1", 0.0, "org-1", "dev-1", "a" * 64, "edr", f, ("ransomware_encryption",), {})
>>> acc.accuses(r)
True
"""

from __future__ import annotations

from typing import Any

from rapidloop.base.config import Config
from rapidloop.schemas.model import Report

from .features import PATH_KEY, behavior_key
from .prior import Prior
from .settings import AccusationSettings

_MEMO_SIZE = 1 << 14   # distinct claims remembered (behaviours, verdict, signature, path)


class Accusation:
    """The report-level suspicion test of ``[policy]``; stateless but for a memo.

    The test reads only a report's own claims, and sensors repeat the same
    few claims (behaviours, a verdict of a few digits, signed or not, the
    path) over and over: each answer is kept (``_memo``, a bounded table:
    when full it starts over, which only costs time, never correctness), so
    the prior scores a claim once, not once per report. It holds no state: a
    restored correlator makes a new one from its settings.
    """

    __slots__ = ("_memo", "prior", "strong", "threshold")

    def __init__(self, settings: AccusationSettings, prior: Prior) -> None:
        """``prior``: the job's shared rule (``Settings.prior``)."""
        self.prior = prior
        self.threshold = settings.threshold
        self.strong = settings.strong
        self._memo: dict[tuple[Any, ...], bool] = {}

    @classmethod
    def from_config(cls, cfg: Config) -> Accusation:
        """The test of ``cfg``, with a prior of its own (tools and tests; a job's
        correlators share the job's)."""
        return cls(AccusationSettings.from_config(cfg), Prior.from_config(cfg))

    def accuses(self, r: Report, parent_flagged: float = 0.0, top: float | None = None
                ) -> bool:
        """``top``, when given, is the report's strongest sensor verdict (0.0 without any),
        as the correlator already has it from ``FileState.observe``: not taken again."""
        behaviors = r.behaviors
        if not self.strong.isdisjoint(behaviors):
            return True
        verdicts = r.verdicts
        if not behaviors and not verdicts:
            return False   # nothing claimed: the common case, decided without scoring
        f = r.file
        if top is None:
            top = max(verdicts.values(), default=0.0)
        key = (behaviors, top, f.signed, f.path, parent_flagged)
        memo = self._memo
        got = memo.get(key)
        if got is None:
            own: dict[str, float] = {behavior_key(b): 1.0 for b in behaviors}
            own["verdict_max"] = top
            own["signed"] = 1.0 if f.signed else 0.0
            own[PATH_KEY.get(f.path) or f"path_{f.path}"] = 1.0
            own["parent_flagged"] = parent_flagged
            got = self.prior.score(own) >= self.threshold
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            memo[key] = got
        return got
