"""Sandbox and analyst verdicts: which hashes get one, when, and how often it is wrong.

Verdicts are triggered by a hash's first sighting, as in a real pipeline, and
arrive after a delay (detonation takes minutes, an analyst hours). Their
labels are what the engine learns from, so their biases are the world's:
see :meth:`VerdictPipeline.first_sighting`.
"""

from __future__ import annotations

import math
import random

from .catalog import SimFile
from .events import Push, SimStats
from .params import SANDBOX_GAIN, SimParams

VERDICT = 1                              # the schedule's kind for a verdict


class VerdictPipeline:
    """Submits first sightings to the sandbox (and some to analysts) and schedules the
    verdicts; with ``sandbox_coverage`` it keeps the share of hashes detonated."""

    def __init__(self, p: SimParams, stats: SimStats) -> None:
        self.p = p
        self.stats = stats
        self._n_suspicious = self._n_calm = 0  # first sightings so far (sandbox_coverage)...
        self._given = 0.0                      # ...and the sum of their detonation chances

    def first_sighting(self, f: SimFile, t: float, rng: random.Random, suspicious: bool,
                       push: Push) -> None:
        """Verdicts are triggered by a hash's first sighting, as in a real pipeline.

        Sandboxes are scarce, so real pipelines submit what *looks* suspicious
        (a behaviour, or a static score of 0.5 or more) far more often than
        the rest. The labels a learner sees are therefore biased towards hard
        cases: evasive malware that only behaves badly is labelled about as
        often as loud malware, and benign tools that behave like malware are
        labelled far more often than ordinary apps.
        """
        p = self.p
        if p.sandbox_coverage is None:
            submit = p.sandbox_suspicious_share if suspicious else p.sandbox_share
        else:
            submit = self._detonation_chance(suspicious)
        if rng.random() < submit:
            verdict = f.label
            if rng.random() < p.label_noise:
                verdict = "benign" if verdict == "malicious" else "malicious"
                f.noisy += 1
                self.stats.noisy_verdicts += 1
            push(t + rng.uniform(*p.sandbox_delay_s), VERDICT, (f, verdict, "sandbox", None))
        share = {"malicious": p.analyst_share,
                 "benign": p.analyst_share / 3 if f.kind == "hard_negative"
                 else p.analyst_share / 100}[f.label]
        if rng.random() < share:
            push(t + rng.uniform(1200, 6 * 3600), VERDICT, (f, f.label, "analyst", None))

    def _detonation_chance(self, suspicious: bool) -> float:
        """The chance to detonate a new hash when a world fixes the coverage instead.

        How many first sightings look suspicious depends on the world (its
        campaigns, its hard negatives), so the mix is counted as hashes come:
        calm ones go at x, suspicious ones at ``sandbox_bias`` * x (at most
        1), with x such that the share of all hashes so far would be
        ``sandbox_coverage``. The mix drifts over a day (popular, calm
        software is first seen early, campaigns later), so x is also scaled
        by exp(SANDBOX_GAIN * the detonations owed so far, in hashes at that
        share): the expected coverage keeps to the share all day, whatever the
        order, while every moment's rates keep the ratio ``sandbox_bias``
        (over a day, the drift brings it down to about two thirds).
        """
        if suspicious:
            self._n_suspicious += 1
        else:
            self._n_calm += 1
        s, c = self._n_suspicious, self._n_calm
        bias = self.p.sandbox_bias
        coverage = self.p.sandbox_coverage or 0.0
        x = coverage * (s + c) / (bias * s + c)
        if coverage > 0:
            owed = (coverage * (s + c - 1) - self._given) / coverage
            x *= math.exp(max(-5.0, min(5.0, SANDBOX_GAIN * owed)))
        chance = min(1.0, bias * x if suspicious else x)
        self._given += chance
        return chance
