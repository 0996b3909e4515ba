"""Everything known about one file, kept small and updated per sighting.

A report is only as suspicious as the file's whole history: how many devices
and organizations saw it, how recently, with which behaviours and which
sensor verdicts. ``FileState`` accumulates that history in bounded memory
(capped key sets, counts instead of lists) and turns it into the feature
vector the classifiers score (names in ``rapidloop.operators.features``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rapidloop.schemas.model import BEHAVIORS, FILE_PATHS, FILE_TYPES, Report

from .distinct import SlidingDistinct

_KNOWN_BEHAVIORS = frozenset(BEHAVIORS)
_BEH_KEYS = {b: f"beh_{b}" for b in BEHAVIORS}
_TYPE_KEYS = {t: f"type_{t}" for t in FILE_TYPES}
_PATH_KEYS = {p: f"path_{p}" for p in FILE_PATHS}
_VERDICT_STRONG = 0.5   # a sensor verdict this high counts as that sensor flagging the file
_SIZE_SCALE = 20.0      # log1p(bytes) / 20 keeps the size feature near [0, 1]


class FileState:
    """Prevalence, windows, behaviours, verdicts and attributes of one sha256."""

    __slots__ = (
        "beh_counts",
        "devices",
        "first_seen",
        "fpath",
        "ftype",
        "last_seen",
        "n_reports",
        "orgs",
        "parents",
        "signed",
        "signer",
        "size",
        "verdict_max",
        "verdict_sources",
        "verdict_sum",
    )

    def __init__(self, windows: Sequence[float], max_orgs: int, max_devices: int) -> None:
        self.first_seen = math.inf
        self.last_seen = -math.inf
        self.n_reports = 0
        self.verdict_max = 0.0
        self.verdict_sum = 0.0
        self.verdict_sources: set[str] = set()
        self.beh_counts: dict[str, int] = {}
        self.signed = False
        self.signer: str | None = None
        self.ftype = "other"
        self.fpath = "other"
        self.size = 0
        self.parents: list[str] = []
        self.orgs = SlidingDistinct(windows, max_orgs)
        self.devices = SlidingDistinct(windows, max_devices)

    def observe(self, r: Report, max_parents: int, max_behaviors: int) -> None:
        """Fold one (non-duplicate) report into the state."""
        ts = r.ts
        if ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
        self.n_reports += 1
        self.orgs.touch(r.org_id, ts)
        self.devices.touch(r.device_id, ts)
        if r.verdicts:
            top = max(r.verdicts.values())
            self.verdict_sum += top
            if top > self.verdict_max:
                self.verdict_max = top
            if len(self.verdict_sources) < max_behaviors:
                self.verdict_sources.update(
                    k for k, v in r.verdicts.items() if v >= _VERDICT_STRONG)
        counts = self.beh_counts
        for b in r.behaviors:
            if b in _KNOWN_BEHAVIORS:
                counts[b] = counts.get(b, 0) + 1
        f = r.file
        self.signed = f.signed
        self.signer = f.signer
        self.ftype = f.type
        self.fpath = f.path
        self.size = f.size
        p = r.parent_sha256
        if p is not None and p not in self.parents and len(self.parents) < max_parents:
            self.parents.append(p)

    def window_orgs(self, now: float) -> list[int]:
        return self.orgs.counts(now)

    def features(self, now: float, org_counts: list[int] | None = None,
                 org_trust: float = 0.5) -> dict[str, float]:
        """The feature vector at event time ``now`` (see features.FEATURE_NAMES)."""
        n = self.n_reports or 1
        orgs = org_counts if org_counts is not None else self.orgs.counts(now)
        devices = self.devices.counts(now)
        log1p = math.log1p
        feats: dict[str, float] = {
            "verdict_max": self.verdict_max,
            "verdict_mean": self.verdict_sum / n,
            "n_verdict_sources": log1p(len(self.verdict_sources)),
            "n_behaviors": float(len(self.beh_counts)),
            "signed": 1.0 if self.signed else 0.0,
            _TYPE_KEYS.get(self.ftype, "type_other"): 1.0,
            _PATH_KEYS.get(self.fpath, "path_other"): 1.0,
            "log_size": log1p(self.size) / _SIZE_SCALE,
            "has_parent": 1.0 if self.parents else 0.0,
            "log_devices": log1p(self.devices.ever),
            "log_orgs": log1p(self.orgs.ever),
            "orgs_10m": log1p(orgs[0]),
            "orgs_1h": log1p(orgs[1] if len(orgs) > 1 else orgs[-1]),
            "orgs_24h": log1p(orgs[-1]),
            "devices_1h": log1p(devices[1] if len(devices) > 1 else devices[-1]),
            "log_age_h": log1p(max(0.0, now - self.first_seen) / 3600.0),
            "log_reports": log1p(self.n_reports),
            "org_trust": org_trust,
        }
        for b, c in self.beh_counts.items():
            feats[_BEH_KEYS[b]] = c / n
        return feats
