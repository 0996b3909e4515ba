"""The prior: a hand-set, readable scoring rule for before the learners know anything.

On a fresh deployment no verdict has arrived yet, so the online learners
have nothing to say; the loop must still block a ransomware sample on day
one. The prior is a fixed logistic rule an analyst can read and tune from
``[models]`` in the configuration:

    logit = prior_bias
          + prior_verdict_weight * verdict_max
          + Σ behavior_weights[b] * beh_b        (share of reports showing b)
          + prior_unsigned_weight * (1 - signed)
          + prior_path_weight * (path_downloads + path_temp)
          + prior_installed_weight * (path_program_files + path_system)
          + prior_parent_weight * parent_flagged
          + prior_prevalence_weight * max(0, log_orgs - log1p(prior_prevalent_orgs))
    score = sigmoid(logit)

Every term is a named piece of evidence, so ``explain`` can turn the largest
ones into decision reasons. The classifier ensemble hands over from this
rule to the learners as labels arrive (``classifiers.Ensemble``).

>>> from rapidloop.base.config import load_config
>>> prior = Prior.from_config(load_config(env={}))
>>> f = {"verdict_max": 0.93, "beh_ransomware_encryption": 1.0, "signed": 0.0}
>>> round(prior.score(f), 3), prior.explain(f)
(0.991, ['sensor verdict 0.93', 'ransomware_encryption behaviour', 'unsigned'])
>>> round(prior.score({"signed": 1.0}), 3)
0.007
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rapidloop.base.config import Config

from .features import FEATURE_NAMES, behavior_key

SUSPICIOUS_PATHS = ("path_downloads", "path_temp")
INSTALLED_PATHS = ("path_program_files", "path_system")
EXPLAIN_MIN_LOGIT = 0.5       # terms adding less than this to the logit are not worth a reason
EXPLAIN_MAX_TERMS = 3
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}   # feature → column of a batch


def sigmoid(z: float) -> float:
    """Logistic function, safe for large |z|.

    >>> sigmoid(0.0), sigmoid(-1000.0) < 1e-300
    (0.5, True)
    """
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class PriorSettings:
    """The rule's weights from ``[models]`` (``prior_*``, ``behavior_weights``), read once."""

    bias: float
    verdict_weight: float
    unsigned_weight: float
    path_weight: float
    installed_weight: float
    parent_weight: float
    prevalence_weight: float
    prevalent_orgs: float
    behavior_weights: tuple[tuple[str, float], ...]   # (behaviour, weight), zeros left out

    @classmethod
    def from_config(cls, cfg: Config) -> PriorSettings:
        m = cfg.models
        return cls(float(m.prior_bias), float(m.prior_verdict_weight),
                   float(m.prior_unsigned_weight), float(m.prior_path_weight),
                   float(m.prior_installed_weight), float(m.prior_parent_weight),
                   float(m.prior_prevalence_weight), float(m.prior_prevalent_orgs),
                   tuple((name, float(w)) for name, w in m.behavior_weights.as_dict().items()
                         if w))


class Prior:
    """The hand-set logistic rule of ``[models]``; stateless apart from its weights.

    Nothing in it changes once built, so one prior serves every operator of a
    job built from the same settings (``operators.settings.Settings``).
    """

    __slots__ = ("_terms", "behavior_weights", "bias", "installed_weight", "parent_weight",
                 "path_weight", "prevalence_weight", "prevalent", "unsigned_weight",
                 "verdict_weight")

    def __init__(self, s: PriorSettings) -> None:
        self.bias = s.bias
        self.verdict_weight = s.verdict_weight
        self.unsigned_weight = s.unsigned_weight
        self.path_weight = s.path_weight
        self.installed_weight = s.installed_weight
        self.parent_weight = s.parent_weight
        self.prevalence_weight = s.prevalence_weight
        self.prevalent = math.log1p(s.prevalent_orgs)
        # Feature name → weight; unknown behaviour names in the config simply never match.
        self.behavior_weights: tuple[tuple[str, str, float], ...] = tuple(
            (behavior_key(name), name, w) for name, w in s.behavior_weights)
        self._terms: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> Prior:
        """The rule of ``cfg``'s ``[models]``, for code holding a configuration rather than
        the job's settings (tools, tests); a job shares one (``Settings.prior``)."""
        return cls(PriorSettings.from_config(cfg))

    def logit(self, features: dict[str, float]) -> float:
        """The rule's log-odds for a feature vector (missing features are 0)."""
        get = features.get
        z = self.bias + self.verdict_weight * get("verdict_max", 0.0)
        for key, _, w in self.behavior_weights:
            v = get(key)
            if v:
                z += w * v
        z += self.unsigned_weight * (1.0 - get("signed", 0.0))
        z += self.path_weight * (get("path_downloads", 0.0) + get("path_temp", 0.0))
        z += self.installed_weight * (get("path_program_files", 0.0) + get("path_system", 0.0))
        z += self.parent_weight * get("parent_flagged", 0.0)
        spread = get("log_orgs", 0.0) - self.prevalent
        if spread > 0.0:
            z += self.prevalence_weight * spread
        return z

    def score(self, features: dict[str, float]) -> float:
        """Malice probability in [0, 1]."""
        return sigmoid(self.logit(features))

    def logit_many(self, x: np.ndarray) -> np.ndarray:
        """``logit`` of every row of a batch (columns in ``FEATURE_NAMES`` order), bit for bit.

        Every term of ``logit`` is a weight times one derived column (1 for
        the bias, the verdict, each behaviour, ``1 - signed``, the two path
        sums, the parent flag, the spread where it is positive, else 0), and
        the row's running sum (``cumsum`` adds left to right, where ``sum``
        may pair terms) adds them in ``logit``'s order: IEEE arithmetic gives
        a vector the results it gives a scalar. The derived columns are one
        matrix product plus a constant row: each is at most two features
        times ±1 (exact products) and a constant, so whatever order (or fused
        multiply-add) the product sums in, the one rounding is that of
        ``a + b`` or ``1.0 - signed`` in ``logit``. A term ``logit`` skips (a
        behaviour at 0.0, no spread) is added here as ``w * 0.0``, which
        changes no sum (at most the sign of a zero, which the sigmoid ignores).

        >>> from rapidloop.base.config import load_config
        >>> prior = Prior.from_config(load_config(env={}))
        >>> rows = [{"verdict_max": 0.9, "beh_c2_beacon": 0.5, "log_orgs": 4.0}, {"signed": 1.0}]
        >>> x = np.array([[f.get(n, 0.0) for n in FEATURE_NAMES] for f in rows])
        >>> prior.logit_many(x).tolist() == [prior.logit(f) for f in rows]
        True
        """
        derive, offset, weights = self._batch_terms()
        terms = x @ derive
        terms += offset
        spread = terms[:, -1]
        np.maximum(spread, 0.0, out=spread)   # a spread adds only where it is positive
        terms *= weights
        return np.cumsum(terms, axis=1)[:, -1]

    def _batch_terms(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features → derived columns, their constant row, every term's weight), in
        ``logit``'s order (kept by the rule, which is shared: every batch would rebuild them)."""
        got = self._terms
        if got is None:
            kept = [(_COLUMN[name], w) for name, _, w in self.behavior_weights
                    if name in _COLUMN]   # a behaviour no vector has adds nothing
            read = [_COLUMN["verdict_max"], *(j for j, _ in kept)]
            k = len(read)
            derive = np.zeros((len(FEATURE_NAMES), k + 6))
            offset = np.zeros(k + 6)
            offset[0] = 1.0                                  # the bias
            derive[read, np.arange(1, k + 1)] = 1.0          # the verdict, the behaviours
            derive[_COLUMN["signed"], k + 1] = -1.0          # 1 - signed
            offset[k + 1] = 1.0
            for t, (a, b) in enumerate((SUSPICIOUS_PATHS, INSTALLED_PATHS)):
                derive[[_COLUMN[a], _COLUMN[b]], k + 2 + t] = 1.0   # a + b
            derive[_COLUMN["parent_flagged"], k + 4] = 1.0
            derive[_COLUMN["log_orgs"], k + 5] = 1.0         # log_orgs - prevalent
            offset[k + 5] = -self.prevalent
            weights = np.array([self.bias, self.verdict_weight, *(w for _, w in kept),
                                self.unsigned_weight, self.path_weight, self.installed_weight,
                                self.parent_weight, self.prevalence_weight], dtype=np.float64)
            got = self._terms = (derive, offset, weights)
        return got

    def contributions(self, features: dict[str, float]) -> list[tuple[float, str]]:
        """(logit contribution, reason) for every term that moved the logit, largest first.

        >>> from rapidloop.base.config import load_config
        >>> prior = Prior.from_config(load_config(env={}))
        >>> prior.contributions({"verdict_max": 0.5, "signed": 1.0})
        [(2.5, 'sensor verdict 0.50')]
        """
        get = features.get
        terms: list[tuple[float, str]] = []
        v = get("verdict_max", 0.0)
        if v:
            terms.append((self.verdict_weight * v, f"sensor verdict {v:.2f}"))
        for key, name, w in self.behavior_weights:
            share = get(key)
            if share:
                terms.append((w * share, f"{name} behaviour"))
        unsigned = 1.0 - get("signed", 0.0)
        if unsigned:
            terms.append((self.unsigned_weight * unsigned, "unsigned"))
        for key in SUSPICIOUS_PATHS:
            if get(key):
                terms.append((self.path_weight * get(key, 0.0), f"runs from {key[5:]}"))
        spread = get("log_orgs", 0.0) - self.prevalent
        if spread > 0.0 and self.prevalence_weight:
            terms.append((self.prevalence_weight * spread, "widespread across organizations"))
        if get("parent_flagged"):
            terms.append((self.parent_weight * get("parent_flagged", 0.0),
                          "dropped or launched by a flagged file"))
        # Stable sort: ties keep the order above (verdict, behaviours, attributes).
        terms.sort(key=lambda t: -t[0])
        return terms

    def explain(self, features: dict[str, float]) -> list[str]:
        """The few terms that pushed the score up most, in words, for decision reasons."""
        return [why for c, why in self.contributions(features)
                if c >= EXPLAIN_MIN_LOGIT][:EXPLAIN_MAX_TERMS]
