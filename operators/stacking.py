"""The combiner: one calibrated score from several classifiers' opinions.

Thresholds in the policy (block a device at 0.5, an org at 0.85, everyone at
0.9) only mean something if the score is a calibrated probability. The
experts are not: naive Bayes is overconfident by construction, a tree
predicts leaf frequencies, the prior is hand-set. A logistic regression over
their log-odds, learned online from the same trusted labels (each label
scored *before* any model learns it, so the combiner sees out-of-sample
opinions), calibrates them and learns how far to trust each one; it also
ranks better than any of them alone when their mistakes differ.

It starts as the prior alone (weight 1 on the prior's log-odds, 0 elsewhere)
so a fresh deployment scores exactly like the hand-set rule, and an L2 pull
towards that start keeps a few early labels from swinging it.

``tied=True`` (``models.combiner = "sum"``, the default) shares one weight
among all experts: their log-odds are added, as independent evidence is,
and only the slope and the bias are learned (Platt scaling of the sum).
Two parameters settle in a few dozen verdicts where five take hundreds, and
the sum keeps each expert's ranking, where per-expert weights fitted on log
loss learn to mute an overconfident expert that ranks best (naive Bayes).

>>> s = Stacker(("prior", "nb"), lr=0.1, l2=0.0)
>>> round(s.predict({"prior": 0.9, "nb": 0.2}), 3)
0.9
>>> s.activate("nb")   # the ensemble does this once each class has enough labels
>>> for _ in range(200):
...     s.learn({"prior": 0.9, "nb": 0.01}, False)
...     s.learn({"prior": 0.9, "nb": 0.99}, True)
>>> s.predict({"prior": 0.9, "nb": 0.99}) > 0.9 > 0.1 > s.predict({"prior": 0.9, "nb": 0.01})
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable

LOGIT_CLIP = 12.0  # |log-odds| of an expert opinion is capped (p within about 6e-6 of 0 or 1)
_log = math.log


def logit(p: float) -> float:
    """Log-odds of ``p``, capped at ±LOGIT_CLIP.

    >>> logit(0.5), logit(1.0)
    (0.0, 12.0)
    """
    if p <= 0.0:
        return -LOGIT_CLIP
    if p >= 1.0:
        return LOGIT_CLIP
    z = _log(p / (1.0 - p))
    # max(-LOGIT_CLIP, min(LOGIT_CLIP, z)) as two comparisons (a NaN, were there one, comes
    # out as LOGIT_CLIP as from min): called several times per report, the builtins cost more
    z = z if z < LOGIT_CLIP else LOGIT_CLIP
    return z if z > -LOGIT_CLIP else -LOGIT_CLIP


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Stacker:
    """Online logistic regression over experts' log-odds, anchored at the first expert."""

    __slots__ = ("active", "anchor", "bias", "l2", "lr", "names", "tied", "weights")

    def __init__(self, names: Iterable[str], lr: float, l2: float, tied: bool = False) -> None:
        self.names = tuple(names)
        self.tied = tied
        self.anchor = {n: 1.0 if i == 0 or tied else 0.0 for i, n in enumerate(self.names)}
        self.weights = dict(self.anchor)
        self.bias = 0.0
        self.lr = lr
        self.l2 = l2
        # Experts allowed a say (the rest join when ready), in the fixed order of ``names``:
        # a set would iterate in per-process hash order, and float sums in another order
        # differ in the last bit between replicas. Tied: every expert from the start.
        self.active: tuple[str, ...] = self.names if tied else (self.names[0],)

    def snapshot(self) -> tuple[dict[str, float], float, tuple[str, ...]]:
        """(weights, bias, active experts) as plain data; the names, the anchor and the
        learning rates are settings."""
        return (self.weights, self.bias, self.active)

    def restore(self, state: tuple[dict[str, float], float, tuple[str, ...]]) -> None:
        """Take up the state ``snapshot`` saved."""
        weights, self.bias, active = state
        self.weights = dict(weights)
        self.active = tuple(active)

    def activate(self, name: str) -> None:
        if name not in self.active:
            self.active = tuple(n for n in self.names if n in self.active or n == name)

    def logit(self, opinions: dict[str, float]) -> float:
        w = self.weights
        return self.bias + sum(w[n] * logit(opinions[n]) for n in self.active)

    def predict(self, opinions: dict[str, float]) -> float:
        """Calibrated P(malicious) from each expert's P(malicious)."""
        return _sigmoid(self.logit(opinions))

    def contributions(self, opinions: dict[str, float]) -> dict[str, float]:
        """Each active expert's term on the combined log-odds (for explanations)."""
        return {n: self.weights[n] * logit(opinions[n]) for n in self.active}

    def learn(self, opinions: dict[str, float], y: bool, weight: float = 1.0) -> None:
        """One SGD step on log loss (scaled by ``weight``), with an L2 pull towards the anchor."""
        zs = {n: logit(opinions[n]) for n in self.active}
        p = _sigmoid(self.bias + sum(self.weights[n] * z for n, z in zs.items()))
        g = p - (1.0 if y else 0.0)
        lr, l2 = self.lr * weight, self.l2
        if self.tied:   # one slope on the sum of the log-odds (Platt)
            total = 0.0
            for z in zs.values():
                total += z
            a = self.weights[self.names[0]]
            a -= lr * (g * total / LOGIT_CLIP + l2 * (a - 1.0))
            for n in self.names:
                self.weights[n] = a
            self.bias -= lr * g
            return
        for n, z in zs.items():
            w = self.weights[n]
            self.weights[n] = w - lr * (g * z / LOGIT_CLIP + l2 * (w - self.anchor[n]))
        self.bias -= lr * g
