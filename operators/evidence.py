"""Evidence counted by organization, so one tenant's volume is never consensus.

A file's history pools every tenant's reports. Pooled *report* counts are
what a rogue tenant controls: 3,000 fabricated reports claiming ransomware
behaviour about a popular installer make "ransomware in 50% of reports" true
of the pool, and one fabricated sensor verdict of 0.99 makes the pooled
maximum 0.99. Every other tenant's score would then rise on claims it never
made.

``OrgEvidence`` keeps, per file, what each *organization* claimed, in a few
bytes: which organizations reported each behaviour (up to ``cap`` of them),
the two organizations with the strongest sensor verdicts, and the signature
the most organizations agree on. From it, ``robust`` rewrites the pooled
features so each organization counts once:

* a behaviour's share is the share of *organizations* that reported it
  (while fewer than ``cap`` did; past that, the report share stands), so
  neither a flood of fabricated reports nor a flood of clean ones moves it
  by more than one organization's worth;
* the strongest sensor verdict is the second organization's best once two
  organizations have seen the file (the first organization's alone if it is
  the only one);
* the file is signed (by a signer) only if most organizations that saw it say
  so: a rogue claiming "unsigned" or a forged vendor about a file others see
  differently is outvoted.

With one organization (a file new to the fleet) nothing changes: a tenant's
own evidence always counts fully for that tenant's own decisions.

>>> ev = OrgEvidence(cap=8)
>>> for org in ("a", "b", "c"):
...     ev.observe(org, ("persistence",), 0.1, True, "Vendor")
>>> for _ in range(50):
...     ev.observe("rogue", ("ransomware_encryption",), 0.99, False, None)
>>> f = {"beh_ransomware_encryption": 50 / 53, "verdict_max": 0.99, "signed": 0.0}
>>> ev.robust(f, orgs_ever=4)
>>> f["beh_ransomware_encryption"], f["verdict_max"], f["signed"]
(0.25, 0.1, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .features import BEHAVIOR_KEY, behavior_key


class OrgEvidence:
    """Who claimed what about one file, by organization; small, its state plain data."""

    __slots__ = ("beh_orgs", "cap", "signatures", "top")

    def __init__(self, cap: int = 8) -> None:
        self.cap = cap
        self.beh_orgs: dict[str, list[str]] | None = None     # behaviour → orgs (≤ cap)
        self.top: list[tuple[float, str]] = []                # best verdict of the 2 best orgs
        self.signatures: dict[tuple[bool, str | None], list[str]] | None = None

    def parts(self) -> tuple[Any, ...]:
        """The state as plain data for a snapshot (the cap is a setting, not state)."""
        return (self.beh_orgs, self.top, self.signatures)

    @classmethod
    def from_parts(cls, cap: int, parts: tuple[Any, ...]) -> OrgEvidence:
        """The inverse of ``parts``, with the caller's cap."""
        ev = cls.__new__(cls)
        ev.cap = cap
        ev.beh_orgs, ev.top, ev.signatures = parts
        return ev

    def observe(self, org: str, behaviors: Sequence[str], verdict: float, signed: bool,
                signer: str | None) -> None:
        """Fold one report's claims in (``verdict``: its strongest sensor verdict)."""
        cap = self.cap
        if behaviors:
            beh = self.beh_orgs
            if beh is None:
                beh = self.beh_orgs = {}
            for b in behaviors:
                orgs = beh.get(b)
                if orgs is None:
                    beh[b] = [org]
                elif len(orgs) < cap and org not in orgs:
                    orgs.append(org)
        top = self.top
        # Nothing changes for a verdict no better than the second best (most reports of a
        # file many organizations see): the loop below would neither raise nor add one.
        if verdict > 0.0 and (len(top) < 2 or verdict > top[1][0]):
            for i, (v, o) in enumerate(top):
                if o == org:
                    if verdict > v:
                        top[i] = (verdict, org)
                        top.sort(reverse=True)
                    break
            else:
                if len(top) < 2 or verdict > top[-1][0]:
                    top.append((verdict, org))
                    top.sort(reverse=True)
                    del top[2:]
        key = (signed, signer if signed else None)
        sigs = self.signatures
        if sigs is None:
            self.signatures = {key: [org]}
        else:
            orgs = sigs.get(key)
            if orgs is None:
                if len(sigs) < 4:   # a handful of distinct claims is already a dispute
                    sigs[key] = [org]
            elif len(orgs) < cap and org not in orgs:
                orgs.append(org)

    def signature(self) -> tuple[bool, str | None]:
        """The signature most organizations report; ties go to "unsigned"."""
        sigs = self.signatures
        if not sigs:
            return False, None
        if len(sigs) == 1:   # no dispute: the common case
            for key in sigs:
                return key
        return max(sigs.items(), key=lambda kv: (len(kv[1]), not kv[0][0]))[0]

    def robust(self, features: dict[str, float], orgs_ever: int) -> None:
        """Rewrite pooled features in place so that each organization counts once."""
        if orgs_ever <= 1:
            return
        # Runs for nearly every report (most files are seen by several organizations):
        # the known behaviours' keys, min() and an undisputed signature are read inline.
        cap = self.cap
        beh = self.beh_orgs
        if beh:
            keys = BEHAVIOR_KEY
            for b, orgs in beh.items():
                if len(orgs) < cap:
                    features[keys.get(b) or behavior_key(b)] = len(orgs) / orgs_ever
        top = self.top
        if len(top) == 2:
            second = top[1][0]
            features["verdict_max"] = second
            mean = features.get("verdict_mean", 0.0)
            features["verdict_mean"] = second if second < mean else mean   # min(mean, second)
        sigs = self.signatures   # one claim (no dispute): signature()'s common case, inline
        signed = next(iter(sigs))[0] if sigs and len(sigs) == 1 else self.signature()[0]
        features["signed"] = 1.0 if signed else 0.0
