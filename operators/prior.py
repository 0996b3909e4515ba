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

>>> from rapidloop.config import load_config
>>> prior = Prior(load_config(env={}))
>>> f = {"verdict_max": 0.93, "beh_ransomware_encryption": 1.0, "signed": 0.0}
>>> round(prior.score(f), 3), prior.explain(f)
(0.991, ['sensor verdict 0.93', 'ransomware_encryption behaviour', 'unsigned'])
>>> round(prior.score({"signed": 1.0}), 3)
0.007
"""

from __future__ import annotations

import math

from rapidloop.config import Config

SUSPICIOUS_PATHS = ("path_downloads", "path_temp")
INSTALLED_PATHS = ("path_program_files", "path_system")
EXPLAIN_MIN_LOGIT = 0.5       # terms adding less than this to the logit are not worth a reason
EXPLAIN_MAX_TERMS = 3


def sigmoid(z: float) -> float:
    """Logistic function, safe for large |z|.

    >>> sigmoid(0.0), sigmoid(-1000.0) < 1e-300
    (0.5, True)
    """
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class Prior:
    """The hand-set logistic rule of ``[models]``; stateless apart from its weights."""

    __slots__ = ("behavior_weights", "bias", "installed_weight", "parent_weight", "path_weight",
                 "prevalence_weight", "prevalent",
                 "unsigned_weight", "verdict_weight")

    def __init__(self, cfg: Config) -> None:
        m = cfg.models
        self.bias = float(m.prior_bias)
        self.verdict_weight = float(m.prior_verdict_weight)
        self.unsigned_weight = float(m.prior_unsigned_weight)
        self.path_weight = float(m.prior_path_weight)
        self.installed_weight = float(m.prior_installed_weight)
        self.parent_weight = float(m.prior_parent_weight)
        self.prevalence_weight = float(m.prior_prevalence_weight)
        self.prevalent = math.log1p(float(m.prior_prevalent_orgs))
        # Feature name → weight; unknown behaviour names in the config simply never match.
        self.behavior_weights: tuple[tuple[str, str, float], ...] = tuple(
            (f"beh_{name}", name, float(w)) for name, w in m.behavior_weights.as_dict().items()
            if w)

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

    def contributions(self, features: dict[str, float]) -> list[tuple[float, str]]:
        """(logit contribution, reason) for every term that moved the logit, largest first.

        >>> from rapidloop.config import load_config
        >>> Prior(load_config(env={})).contributions({"verdict_max": 0.5, "signed": 1.0})
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
