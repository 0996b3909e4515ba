"""Everything known about one file, kept small and updated per sighting.

A report is only as suspicious as the file's whole history: how many devices
and organizations saw it, how recently, with which behaviours and which
sensor verdicts. ``FileState`` accumulates that history in bounded memory
(capped key sets, counts instead of lists) and turns it into the feature
vector the classifiers score (names in ``rapidloop.operators.features``).

A shard tracks up to millions of files and most are seen once, on one
device, with no behaviour, no strong sensor verdict and no parent, so what
such a file does not have costs nothing: the verdict sources and parents are
tuples (the shared empty tuple until something arrives) and the behaviour
counts a dict made on the first behaviour. With the one-key form of
``SlidingDistinct`` that keeps a file near half a KiB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from rapidloop.schemas.model import BEHAVIORS, Report

from .distinct import SlidingDistinct
from .evidence import OrgEvidence
from .features import BEHAVIOR_KEY, FEATURE_NAMES, PATH_KEY, TYPE_KEY

_KNOWN_BEHAVIORS = frozenset(BEHAVIORS)
_BEH_KEYS = BEHAVIOR_KEY
_ZEROS = dict.fromkeys(FEATURE_NAMES, 0.0)
_TYPE_KEYS = TYPE_KEY
_PATH_KEYS = PATH_KEY
_VERDICT_STRONG = 0.5   # a sensor verdict this high counts as that sensor flagging the file
_SIZE_SCALE = 20.0      # log1p(bytes) / 20 keeps the size feature near [0, 1]
_INF = math.inf
_NEG_INF = -math.inf


class FileState:
    """Prevalence, windows, behaviours, verdicts and attributes of one sha256."""

    __slots__ = (
        "accusers",
        "allowers",
        "beh_counts",
        "devices",
        "evidence",
        "first_seen",
        "fpath",
        "ftype",
        "label",
        "last_seen",
        "n_reports",
        "name",
        "orgs",
        "parents",
        "signed",
        "signer",
        "since_label",
        "size",
        "verdict_max",
        "verdict_sources",
        "verdict_sum",
        "verdicts",
    )

    def __init__(self, windows: Sequence[float], max_orgs: int, max_devices: int) -> None:
        self.first_seen = _INF
        self.last_seen = _NEG_INF
        self.n_reports = 0
        self.verdict_max = 0.0
        self.verdict_sum = 0.0
        self.verdict_sources: tuple[str, ...] = ()      # names that scored >= 0.5, distinct
        self.beh_counts: dict[str, int] | None = None   # known behaviour -> reports showing it
        self.signed = False
        self.signer: str | None = None
        self.ftype = "other"
        self.fpath = "other"
        self.size = 0
        self.parents: tuple[str, ...] = ()
        self.orgs = SlidingDistinct(windows, max_orgs)
        self.devices = SlidingDistinct(windows, max_devices)
        self.accusers: dict[str, float] | None = None   # org → last report that accused the file
        self.evidence: OrgEvidence | None = None        # made when a second org sees the file
        self.label: str | None = None                   # last trusted verdict
        self.since_label = 0                            # sightings since that verdict
        self.name = ""                                  # the name it was first reported under
        self.allowers: tuple[str, ...] = ()             # orgs whose org_report called it benign
        self.verdicts: tuple[tuple[str, str], ...] = ()  # trusted (source, verdict), oldest first

    def observe(self, r: Report, max_parents: int, max_behaviors: int,
                org_id: str | None = None, device_id: str | None = None,
                evidence_orgs: int = 8) -> float:
        """Fold one (non-duplicate) report into the state; returns the report's strongest
        sensor verdict (0.0 without any), which the correlator's accusation test reads too.

        ``org_id``/``device_id``, when given, are equal to the report's and
        replace them as the stored keys (the correlator passes one shared
        object per distinct id, so a million files do not hold a million
        copies of the same organization's name).
        """
        ts = r.ts
        if ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
        self.n_reports += 1
        org = org_id or r.org_id
        orgs = self.orgs
        verdicts = r.verdicts
        top = max(verdicts.values()) if verdicts else 0.0   # the report's strongest verdict
        f = r.file
        ev = self.evidence
        if ev is None and orgs.ever:
            first = orgs.first_key()
            if first is not None and org != first:   # a second organization: claims now
                ev = self.evidence = self._seed_evidence(evidence_orgs, first)   # count per org
        if ev is not None:
            ev.observe(org, r.behaviors, top, f.signed, f.signer)
        if self.label is not None:
            self.since_label += 1
        orgs.touch(org, ts)
        self.devices.touch(device_id or r.device_id, ts)
        if verdicts:
            self.verdict_sum += top
            if top > self.verdict_max:
                self.verdict_max = top
            srcs = self.verdict_sources
            if top >= _VERDICT_STRONG and len(srcs) < max_behaviors:   # else none is strong
                new = tuple(k for k, v in verdicts.items()
                            if v >= _VERDICT_STRONG and k not in srcs)
                if new:
                    self.verdict_sources = srcs + new
        behaviors = r.behaviors
        if behaviors:
            counts = self.beh_counts
            for b in behaviors:
                if b in _KNOWN_BEHAVIORS:
                    if counts is None:
                        counts = self.beh_counts = {}
                    counts[b] = counts.get(b, 0) + 1
        if not self.name:
            self.name = f.name
        self.signed = f.signed
        self.signer = f.signer
        self.ftype = f.type
        self.fpath = f.path
        self.size = f.size
        p = r.parent_sha256
        if p is not None and p not in self.parents and len(self.parents) < max_parents:
            self.parents += (p,)
        return top

    def _seed_evidence(self, cap: int, first_org: str) -> OrgEvidence:
        """Per-organization evidence, started when a second organization sees the file:
        until then everything pooled came from the one organization there was."""
        ev = OrgEvidence(cap)
        ev.observe(first_org, tuple(self.beh_counts or ()), self.verdict_max, self.signed,
                   self.signer)
        return ev

    def accuse(self, org: str, ts: float, max_accusers: int) -> None:
        """Remember that ``org``'s own report of the file was suspicious (a few orgs at most)."""
        acc = self.accusers
        if acc is None:
            acc = self.accusers = {}
        if ts > acc.get(org, float("-inf")):
            acc[org] = ts
        if len(acc) > max_accusers:
            del acc[min(acc, key=acc.__getitem__)]

    def allow(self, org: str, max_allowers: int) -> None:
        """Remember that ``org`` vouched for the file (an ``org_report`` benign)."""
        if org not in self.allowers and len(self.allowers) < max_allowers:
            self.allowers += (org,)

    def accusing(self, since: float) -> list[str]:
        """Organizations whose own reports accused the file at or after ``since``."""
        acc = self.accusers
        return [org for org, ts in acc.items() if ts >= since] if acc else []

    def signature(self) -> tuple[bool, str | None]:
        """(signed, signer) as most organizations report it (one tenant cannot forge it)."""
        if self.evidence is not None:
            return self.evidence.signature()
        return self.signed, self.signer

    def window_orgs(self, now: float) -> list[int]:
        return self.orgs.counts(now)

    def features(self, now: float, org_counts: list[int] | None = None,
                 org_trust: float = 0.5) -> dict[str, float]:
        """The feature vector at event time ``now`` (see features.FEATURE_NAMES).

        Runs for every report: each attribute is read once, into a local.
        """
        n_reports = self.n_reports
        n = n_reports or 1
        orgs_ever = self.orgs.ever
        orgs = org_counts if org_counts is not None else self.orgs.counts(now)
        devices = self.devices
        beh_counts = self.beh_counts
        log1p = math.log1p
        feats = _ZEROS.copy()   # every feature, in FEATURE_NAMES order: already dense
        feats["verdict_max"] = self.verdict_max
        feats["verdict_mean"] = self.verdict_sum / n
        feats["n_verdict_sources"] = log1p(len(self.verdict_sources))
        if beh_counts:
            feats["n_behaviors"] = float(len(beh_counts))
        if self.signed:
            feats["signed"] = 1.0
        feats[_TYPE_KEYS.get(self.ftype, "type_other")] = 1.0
        feats[_PATH_KEYS.get(self.fpath, "path_other")] = 1.0
        feats["log_size"] = log1p(self.size) / _SIZE_SCALE
        if self.parents:
            feats["has_parent"] = 1.0
        feats["log_devices"] = log1p(devices.ever)
        feats["log_orgs"] = log1p(orgs_ever)
        feats["orgs_10m"] = log1p(orgs[0])
        feats["orgs_1h"] = log1p(orgs[1] if len(orgs) > 1 else orgs[-1])
        feats["orgs_24h"] = log1p(orgs[-1])
        # the 1 h window, or the only one: the same choice as for orgs_1h
        feats["devices_1h"] = log1p(devices.count(now, 1 if len(devices.windows) > 1 else 0))
        age = now - self.first_seen
        feats["log_age_h"] = log1p((age if age > 0.0 else 0.0) / 3600.0)   # max(0.0, age)
        feats["log_reports"] = log1p(n_reports)
        feats["org_trust"] = org_trust
        if beh_counts:
            for b, c in beh_counts.items():
                feats[_BEH_KEYS[b]] = c / n
        evidence = self.evidence
        if evidence is not None:
            evidence.robust(feats, orgs_ever)
        return feats

    def row(self) -> tuple[Any, ...]:
        """The state as one flat tuple of plain values, for a shard's snapshot: the
        fields of ``ROW`` in order, then the evidence, orgs and devices parts.

        Snapshots hold every file of a shard each epoch; a tuple of plain
        values pickles several times faster than slotted objects, which go
        through ``copyreg`` one by one.
        """
        ev = self.evidence
        return (*_row_values(self), None if ev is None else ev.parts(), self.orgs.parts(),
                self.devices.parts())

    @classmethod
    def from_row(cls, row: tuple[Any, ...], windows: tuple[float, ...], max_orgs: int,
                 max_devices: int, evidence_orgs: int) -> FileState:
        """The inverse of ``row``, with the caller's settings (windows and caps)."""
        st = cls.__new__(cls)
        for name, value in zip(ROW, row, strict=False):
            setattr(st, name, value)
        ev, orgs, devices = row[len(ROW):]
        st.evidence = None if ev is None else OrgEvidence.from_parts(evidence_orgs, ev)
        st.orgs = SlidingDistinct.from_parts(windows, max_orgs, orgs)
        st.devices = SlidingDistinct.from_parts(windows, max_devices, devices)
        return st


ROW = ("beh_counts", "first_seen", "fpath", "ftype", "last_seen", "n_reports", "parents",
       "signed", "signer", "size", "verdict_max", "verdict_sources", "verdict_sum",
       "accusers", "label", "since_label", "name", "allowers", "verdicts")
"""The plain fields of a snapshot row, in order (``Correlator``'s state: a change here is
a new version of it, with a migration)."""
_row_values = attrgetter(*ROW)
