"""How far each organization's accusations have proven right.

Correlation across tenants is only as good as the tenants: a fleet whose
sensors (or whose operator) cry wolf should not count as much as one whose
accusations keep being confirmed. Every trusted verdict (sandbox, analyst)
on a file settles the accusations made about it: each organization whose own
reports accused the file gains a confirmation (malicious) or a refutation
(benign). An organization's trust is the posterior mean of a Beta prior:

    trust = (confirmed + a) / (confirmed + refute_weight * refuted + a + b)

An organization never seen settled has trust ``a / (a + b)`` (0.5 by
default): neither rewarded nor suspected. A refutation weighs
``refute_weight`` times a confirmation, because crying wolf on a good file
costs more than it helps to be right about a bad one. Trust is replicated
like the models: every replica sees every trusted verdict in the same order.

>>> t = OrgTrust(a=1.0, b=1.0, refute_weight=3.0, max_orgs=100)
>>> t.trust("org-1")
0.5
>>> t.settle(["org-1", "org-2"], malicious=True)
>>> t.settle(["org-2"], malicious=False)
>>> round(t.trust("org-1"), 3), round(t.trust("org-2"), 3)
(0.667, 0.333)
"""

from __future__ import annotations

from collections.abc import Iterable


class OrgTrust:
    """Per-organization Beta trust from settled accusations; bounded."""

    __slots__ = ("a", "b", "max_orgs", "record", "refute_weight")

    def __init__(self, a: float, b: float, refute_weight: float, max_orgs: int) -> None:
        self.a = a
        self.b = b
        self.refute_weight = refute_weight
        self.max_orgs = max_orgs
        self.record: dict[str, tuple[int, int]] = {}   # org → (confirmed, refuted)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """The record as plain data (the prior and the bound are settings)."""
        return self.record

    def restore(self, state: dict[str, tuple[int, int]]) -> None:
        """Take up the record ``snapshot`` saved."""
        self.record = dict(state)

    def trust(self, org: str) -> float:
        confirmed, refuted = self.record.get(org, (0, 0))
        return (confirmed + self.a) / (confirmed + self.refute_weight * refuted
                                       + self.a + self.b)

    def settle(self, accusers: Iterable[str], malicious: bool) -> None:
        """A trusted verdict on a file these organizations accused."""
        record = self.record
        for org in accusers:
            confirmed, refuted = record.pop(org, (0, 0))   # re-insert: most recent last
            record[org] = (confirmed + 1, refuted) if malicious else (confirmed, refuted + 1)
        while len(record) > self.max_orgs:   # forget the longest-unsettled organization
            del record[next(iter(record))]

    def corroboration(self, orgs: Iterable[str]) -> float:
        """The summed trust of independent accusing organizations."""
        return sum(self.trust(o) for o in orgs)
