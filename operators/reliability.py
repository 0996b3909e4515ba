"""How often each verdict source turns out wrong, learned from being contradicted.

A sandbox verdict moves the odds of malice by r / (1 - r), r its
reliability. A constant r is a guess about one deployment's sandbox: one
that mislabels 3 % of files is trusted like one that mislabels 0.5 %, and a
wrong "malicious" on a popular program is then enforced for everyone. Here r
is a Beta posterior: the configured reliability is the prior
(``policy.verdict_reliability``, worth ``policy.reliability_prior_n``
verdicts), and every time a *final* source (the analyst, reliability 1)
rules on a file another source judged too, that source's verdict counts as
confirmed or contradicted. A source whose verdicts analysts keep overturning
loses weight; one they keep confirming gains it, up to its evidence.

Only trusted sources are scored, and only against a final one: no tenant's
word (``org_report``) can make the sandbox look wrong. Replicated like the
models: every replica sees every trusted verdict in the same order.

>>> rel = SourceReliability({"sandbox": 0.99, "analyst": 1.0}, prior_n=100)
>>> round(rel.reliability("sandbox"), 3), rel.reliability("analyst")
(0.99, 1.0)
>>> for _ in range(10):
...     rel.judge((("sandbox", "malicious"),), "analyst", "benign")
>>> round(rel.reliability("sandbox"), 3), rel.record["sandbox"]
(0.9, (0, 10))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


class SourceReliability:
    """Per-source (confirmed, contradicted) counts over a Beta prior."""

    __slots__ = ("prior", "prior_n", "record")

    def __init__(self, prior: Mapping[str, float], prior_n: float) -> None:
        self.prior = dict(prior)
        self.prior_n = prior_n
        self.record: dict[str, tuple[int, int]] = {}

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """The record as plain data (the prior is a setting)."""
        return self.record

    def restore(self, state: dict[str, tuple[int, int]]) -> None:
        """Take up the record ``snapshot`` saved."""
        self.record = dict(state)

    def final(self, source: str) -> bool:
        """Is ``source``'s word final (reliability 1: never contradicted, never scored)?"""
        return self.prior.get(source, 1.0) >= 1.0

    def reliability(self, source: str) -> float:
        r0 = self.prior.get(source, 1.0)
        if r0 >= 1.0:
            return 1.0
        right, wrong = self.record.get(source, (0, 0))
        return (r0 * self.prior_n + right) / (self.prior_n + right + wrong)

    def weight(self, source: str) -> float:
        """log(r / (1 - r)): how far one verdict of ``source`` moves the log-odds."""
        r = self.reliability(source)
        if r >= 1.0:
            return math.inf
        r = max(r, 0.5)
        return math.log(r / (1.0 - r))

    def judge(self, earlier: Iterable[tuple[str, str]], source: str, verdict: str) -> None:
        """A verdict of ``source`` on a file that ``earlier`` (source, verdict) pairs judged
        before: a final source scores the others; another source is scored by an earlier
        final one."""
        record = self.record
        if self.final(source):
            for src, said in earlier:
                if not self.final(src):
                    right, wrong = record.get(src, (0, 0))
                    record[src] = (right + 1, wrong) if said == verdict else (right, wrong + 1)
            return
        finals = [said for src, said in earlier if self.final(src)]
        if finals:
            right, wrong = record.get(source, (0, 0))
            record[source] = (right + 1, wrong) if finals[-1] == verdict else (right, wrong + 1)
