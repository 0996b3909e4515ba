"""The expected cost of a block, as terms a reader can follow.

A block is worth placing when what it prevents if the file is malicious
outweighs what it breaks if the file is benign:

    P(malicious) * value  >=  (1 - P(malicious)) * cost
    <=>  log-odds of malice  >=  log(cost / value)

The left side is *evidence*: the ensemble's calibrated score (or, for broad
blocks, the score without its most eager learner), plus what the file's
siblings were found to be (``operators.lineage``), minus what independent
tenants vouched for it with trust they earned (``vouching``). The right side
is the *bar*: each scope's threshold (``policy.*_block_score``) for a file
seen in one organization, raised by ``exposure_weight`` per unit of
ln(organizations that run the file): a global block of a file installed in
40 organizations breaks 40 organizations if it is wrong, and a campaign's
hash is in a handful when it is stopped. Across one organization, or on one
device, what a block breaks is smaller, but the same term holds as evidence:
software that 40 organizations run is software, and its scary behaviours are
what it does (a backup agent encrypts, an admin script moves laterally).
The same bar applies whatever raised the evidence, a sandbox verdict
included, so one wrong automated verdict on a popular program is not
enforced for everyone.

>>> t = Terms(score=logit(0.95), siblings=0.0, vouching=0.0, orgs=1)
>>> t.clears(0.9, exposure_weight=1.0)
True
>>> Terms(score=logit(0.95), siblings=0.0, vouching=0.0, orgs=40).clears(0.9, 1.0)
False
>>> Terms(score=logit(0.95), siblings=2.2, vouching=0.0, orgs=3).clears(0.9, 1.0)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from .stacking import logit
from .trust import OrgTrust


@dataclass(frozen=True, slots=True)
class CostSettings:
    """``[policy]``'s expected-cost settings, read once."""

    exposure_weight: float        # bar raised per ln(orgs that run the file), every scope
    parent_condemned: float       # siblings' term of a file whose parent trusted verdicts condemned
    sibling_min_files: int        # judged siblings before the lineage speaks
    sibling_bound: float          # the most the lineage moves the log-odds
    vouch_weight: float           # log-odds per unit of a voucher's earned trust
    vouch_bound: float            # the most independent tenants' vouching lowers them
    sibling_block: float          # siblings' term that blocks a new sibling for everyone


@dataclass(slots=True)
class Terms:
    """The cost decision's inputs for one file at one moment, in log-odds."""

    score: float       # the ensemble's (calibrated) log-odds of malice
    siblings: float    # + what trusted verdicts said of files of the same lineage
    vouching: float    # - independent tenants' benign word, weighed by earned trust
    orgs: int          # organizations that run the file (the exposure of a block)

    @property
    def evidence(self) -> float:
        return self.score + self.siblings - self.vouching

    def bar(self, threshold: float, exposure_weight: float) -> float:
        """log(cost / value) of a block whose threshold for a one-organization file is
        ``threshold``."""
        orgs = self.orgs
        return _logit_of(threshold) + (exposure_weight * math.log(orgs) if orgs > 1 else 0.0)

    def clears(self, threshold: float, exposure_weight: float) -> bool:
        return self.score + self.siblings - self.vouching >= self.bar(threshold,
                                                                       exposure_weight)

    def probability(self) -> float:
        """The evidence as P(malicious)."""
        z = max(-50.0, min(50.0, self.evidence))
        return 1.0 / (1.0 + math.exp(-z))

    def lines(self, threshold: float, exposure_weight: float) -> list[str]:
        """The terms as a reason: every one that is not zero, and the bar."""
        parts = [f"log-odds {self.score:+.1f}"]
        if self.siblings:
            parts.append(f"siblings {self.siblings:+.1f}")
        if self.vouching:
            parts.append(f"vouched for {-self.vouching:+.1f}")
        bar = self.bar(threshold, exposure_weight)
        where = f"seen in {self.orgs} orgs" if exposure_weight else "one device"
        return [f"expected cost: {' '.join(parts)} = {self.evidence:+.1f} vs bar {bar:+.1f}"
                f" ({where})"]


@lru_cache(maxsize=64)
def _logit_of(threshold: float) -> float:
    """A threshold's log-odds (the few configured thresholds, computed once)."""
    return logit(threshold)


def vouching(trust: OrgTrust, orgs: Iterable[str], exclude: Iterable[str],
             weight: float, bound: float) -> float:
    """What independent tenants' ``org_report`` benign is worth against a block for
    others: each voucher's earned trust above an unknown tenant's, in log-odds.

    A tenant never settled (or one whose word was refuted) adds nothing, so a
    whitewasher's fresh "benign" on its campaign weighs nothing, and the sum
    is bounded: vouching raises the bar for blocking others, it never lifts a
    block on its own.
    """
    skip = set(exclude)
    total = 0.0
    for org in orgs:
        if org not in skip:
            total += max(0.0, logit(trust.trust(org)) - logit(trust.a / (trust.a + trust.b)))
    return min(bound, weight * total)
