"""Does a report accuse its file on its own evidence?

Correlation must count organizations that *independently* found a file
suspicious, not organizations that merely saw it. A report accuses its file
when its own evidence, scored alone by the prior (its behaviours, its sensor
verdicts, its signature and path, a flagged parent), reaches the device
threshold, or it shows a behaviour strong enough to block a device on. The
pooled history of the file, which other tenants shaped, plays no part.

>>> from rapidloop.config import load_config
>>> from rapidloop.schemas.model import FileInfo, Report
>>> acc = Accusation(load_config(env={}))
>>> f = FileInfo(name="x.exe", size=1, type="pe", signed=False, signer=None, path="temp")
>>> r = Report("r1", 0.0, "org-1", "dev-1", "a" * 64, "edr", f, ("ransomware_encryption",), {})
>>> acc.accuses(r)
True
"""

from __future__ import annotations

from rapidloop.config import Config
from rapidloop.schemas.model import Report

from .features import PATH_KEY, behavior_key
from .prior import Prior


class Accusation:
    """The report-level suspicion test of ``[policy]``; stateless."""

    __slots__ = ("prior", "strong", "threshold")

    def __init__(self, cfg: Config) -> None:
        self.prior = Prior(cfg)
        self.threshold = float(cfg.policy.device_block_score)
        self.strong = frozenset(cfg.policy.device_block_behaviors)

    def accuses(self, r: Report, parent_flagged: float = 0.0) -> bool:
        if any(b in self.strong for b in r.behaviors):
            return True
        if not r.behaviors and not r.verdicts:
            return False   # nothing claimed: the common case, decided without scoring
        f = r.file
        own: dict[str, float] = {behavior_key(b): 1.0 for b in r.behaviors}
        own["verdict_max"] = max(r.verdicts.values(), default=0.0)
        own["signed"] = 1.0 if f.signed else 0.0
        own[PATH_KEY.get(f.path) or f"path_{f.path}"] = 1.0
        own["parent_flagged"] = parent_flagged
        return self.prior.score(own) >= self.threshold
