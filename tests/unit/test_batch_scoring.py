"""Scoring a batch at once (``Ensemble.score_batch``, used by ``Decider.process`` for the
sightings between two labels) gives the per-report scores bit for bit, and the same decisions.

The per-report path (``Ensemble.score``) is the reference. Equality is asserted exactly (every
float operation of the batch path is the scalar path's, in the same order) and, for the record,
within 1e-9; the largest difference seen is printed. Timings are ``bench.stages``'s business:
nothing here is timed.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from river import linear_model, optim

from rapidloop.base.config import load_config
from rapidloop.cli import main
from rapidloop.operators.classifiers import (
    Ensemble,
    dense,
    evidence_bound,
    feature_matrix,
    learner_p_true,
    learner_p_true_many,
    make_learners,
    row_sums,
)
from rapidloop.operators.correlate import Correlator, Sighting
from rapidloop.operators.decide import BATCH_MIN, Decider
from rapidloop.operators.features import FEATURE_NAMES
from rapidloop.operators.policy import Enforcement, Scored
from rapidloop.operators.settings import ModelSettings
from rapidloop.operators.stacking import LOGIT_CLIP
from rapidloop.schemas.intake import FEEDBACK, REPORT, Intake
from rapidloop.schemas.wire import Limits, WireParser

from .helpers import feed_world
from .test_classifiers import PROBES, STACK, synthetic_stream

BATCH = 500
PER_REPORT = 1 << 30   # batch_min no run reaches: every report scored alone (the reference)
TOLERANCE = 1e-9


def odd_vectors(rng: random.Random) -> list[dict[str, float]]:
    """Vectors off the correlator's beaten path: sparse, unknown keys, out of order,
    non-finite, extreme, and an empty one."""
    dense_shuffled = {n: rng.random() for n in rng.sample(FEATURE_NAMES, len(FEATURE_NAMES))}
    return [{}, {"unknown_feature": 3.0}, {"signed": 1.0, "verdict_max": math.nan},
            {"log_orgs": math.inf, "orgs_1h": -math.inf}, dense_shuffled,
            dict.fromkeys(FEATURE_NAMES, 1e9), dict.fromkeys(FEATURE_NAMES, -1e9),
            {**dict.fromkeys(FEATURE_NAMES, 0.0), "verdict_max": 1.0, "signed": True}]


def assert_same(ens: Ensemble, batch: list[dict[str, float]]) -> float:
    """score_batch against _score, vector by vector; returns the largest difference."""
    got = ens.score_batch(batch)
    worst = 0.0
    for f, (score, per_model, learned) in zip(batch, got, strict=True):
        ref_score, ref_learned, ref_per_model = ens._score(f)
        worst = max(worst, abs(score - ref_score), abs(learned - ref_learned),
                    *(abs(per_model[k] - v) for k, v in ref_per_model.items()))
        assert abs(score - ref_score) <= TOLERANCE
        assert (score, learned) == (ref_score, ref_learned)
        assert per_model == ref_per_model and list(per_model) == list(ref_per_model)
        # the same types too: River's sigmoid says 0 or 1 (ints) past ±30, and a
        # decision's classifiers are rounded and serialised as they come
        assert [type(v) for v in per_model.values()] == [type(v) for v in
                                                          ref_per_model.values()]
    return worst


@pytest.mark.parametrize("env", [{}, STACK], ids=["sum", "stack"])
def test_batch_scores_equal_per_report_scores_at_every_stage_of_learning(env):
    """Fresh (the prior alone), one class only (the base rate), a few labels of each (the
    evidence bound clamps), many (it does not); the tree has split by the end."""
    rng = random.Random(17)
    ens = Ensemble.from_config(load_config(env=env))
    stream = synthetic_stream(1300, seed=21)
    benign_first = sorted(stream[:40], key=lambda s: s[1]) + stream[40:]
    batch = PROBES[:120] + odd_vectors(rng)
    worst = assert_same(ens, batch)
    for i, (f, y, _) in enumerate(benign_first, 1):
        ens.learn(f, y)
        if i in (1, 5, 30, 45, 80, 200, 700, 1300):
            worst = max(worst, assert_same(ens, batch))
    assert ens.learners["tree"].n_nodes > 1
    assert evidence_bound(ens.n_malicious, ens.n_benign) >= LOGIT_CLIP   # nothing clamped
    print(f"\n[batch scoring] largest |difference| on synthetic vectors: {worst:.3g}")


def test_each_vectorised_learner_equals_its_per_vector_score():
    rng = random.Random(5)
    learners = make_learners(ModelSettings.from_config(load_config(env={})))
    rows = PROBES[:60] + odd_vectors(rng)
    x = feature_matrix(rows)
    for i, (f, y, _) in enumerate(synthetic_stream(1500, seed=9)):
        if i % 250 == 0:
            for model in learners.values():
                assert learner_p_true_many(model, x, rows) == [
                    learner_p_true(model, dense(r)) for r in rows]
        for model in learners.values():
            model.learn_one(dense(f), y)
    assert learners["tree"].n_nodes > 1


def test_a_learner_without_a_vectorised_path_is_scored_one_by_one():
    model = linear_model.LogisticRegression(optimizer=optim.SGD(0.05),
                                            loss=optim.losses.Hinge())
    rows = PROBES[:20]
    for f, y, _ in synthetic_stream(100):
        model.learn_one(dense(f), y)
    assert learner_p_true_many(model, feature_matrix(rows), rows) == [
        learner_p_true(model, dense(r)) for r in rows]


def test_row_sums_add_left_to_right_as_a_loop_does():
    """``sum(axis=1)`` pairs terms; a running sum adds them in the loop's order, whose
    last bit can differ (large terms of both signs make it visible)."""
    rng = random.Random(2)
    rows = [[rng.choice((1e16, -1e16, 1.0, -0.7, 3.3)) * rng.random() for _ in range(41)]
            for _ in range(500)]

    def loop(row: list[float]) -> float:
        total = 0.0
        for v in row:
            total += v
        return total

    assert row_sums(np.array(rows)).tolist() == [loop(r) for r in rows]


def test_the_prior_of_a_batch_is_the_prior_of_each_vector():
    rng = random.Random(4)
    cfg = load_config(env={})
    prior = Ensemble.from_config(cfg).prior
    rows = [dict(zip(FEATURE_NAMES, (rng.random() * rng.choice((0, 1, 3)) for _ in FEATURE_NAMES),
                     strict=True)) for _ in range(500)]
    rows += [dense(f) for f in PROBES[:100]]
    assert prior.logit_many(feature_matrix(rows)).tolist() == [prior.logit(f) for f in rows]


def test_batch_reasons_are_the_per_report_reasons():
    """``explain`` of a batch-scored vector says what it says right after ``score``."""
    ens = Ensemble.from_config(load_config(env={}))
    for f, y, _ in synthetic_stream(400):
        ens.learn(f, y)
    batch = [{"verdict_max": 0.95, "beh_ransomware_encryption": 1.0, "signed": 1.0},
             *PROBES[:80]]
    said = ens.score_batch(batch)
    for f, (score, _, learned) in zip(batch, said, strict=True):
        mine = ens.explain(f, (learned, ens.learner_weight, score))
        ens.score(f)
        assert mine == ens.explain(f)
    assert any(r.startswith("classifiers trained on") for r in
               ens.explain(batch[0], (said[0][2], ens.learner_weight, said[0][0])))


# -- the decider: batch scoring on and off, over simulated worlds ------------------------


def decide(world: Path, batch_min: int, fast: bool = True
           ) -> tuple[list[tuple], list[tuple], int]:
    """Every decision of the world (without decided_at), what the policy read for every
    sighting it was given, in order, and how many sightings were scored in batches."""
    cfg = load_config(env={"RAPIDLOOP_STREAM__SETTLED_FAST_PATH": str(fast).lower()})
    intake = Intake(WireParser(Limits.from_config(cfg)), {"reports": REPORT,
                                                          "feedback": FEEDBACK})
    correlator, decider = Correlator.from_config(cfg), Decider.from_config(cfg, batch_min=batch_min)
    read: list[tuple] = []
    on_sighting = decider.policy.on_sighting
    batched = 0
    scored_batch = decider._scored_batch

    def probe(enf: Enforcement, s: Sighting, sc: Scored) -> list:   # what the policy read
        read.append((sc.score, sc.classifiers, sc.model_version, sc.calibrated,
                     sc.broad_score(), tuple(sc.explain())))
        return on_sighting(enf, s, sc)

    def counting(batch: list[dict[str, float]]) -> list[Scored]:
        nonlocal batched
        batched += len(batch)
        return scored_batch(batch)

    decider.policy.on_sighting = probe   # type: ignore[method-assign]
    decider._scored_batch = counting     # type: ignore[method-assign]
    out = [(d.decision_id, d.sha256, d.action, d.scope, d.org_id, d.device_id, d.score,
            tuple(d.reasons), d.event_ts, d.expires_at, d.model_version,
            tuple(sorted(d.classifiers.items())))
           for d in feed_world(world, correlator, decider, intake, BATCH)]
    return out, read, batched


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_same_decisions_and_scores_with_batch_scoring(tmp_path: Path, seed: int) -> None:
    world = tmp_path / "w"
    assert main(["simulate", "--out", str(world), "--seed", str(seed), "--reports", "15000",
                 "--orgs", "30"]) == 0
    ref, ref_read, none = decide(world, PER_REPORT)
    every, every_read, batched = decide(world, 1)
    assert none == 0 and batched > len(every_read) // 2   # most reports scored in batches
    assert every == ref and len(ref) > 0
    assert len(every_read) == len(ref_read)
    worst = max((abs(a[0] - b[0]) for a, b in zip(every_read, ref_read, strict=True)),
                default=0.0)
    assert worst <= TOLERANCE
    assert every_read == ref_read   # bit for bit: scores, per-model scores, trimmed, reasons
    default, _, _ = decide(world, BATCH_MIN)
    assert default == ref
    print(f"\n[batch scoring] seed {seed}: {len(ref)} decisions, {len(ref_read)} reports "
          f"scored, {batched} in batches; largest |score difference| {worst:.3g}")


def test_same_decisions_with_batch_scoring_without_the_settled_fast_path(tmp_path: Path) -> None:
    """Without the fast path every sighting is scored, and none is left out of a batch."""
    world = tmp_path / "w"
    assert main(["simulate", "--out", str(world), "--seed", "5", "--reports", "8000",
                 "--orgs", "20"]) == 0
    ref, ref_read, _ = decide(world, PER_REPORT, fast=False)
    every, every_read, batched = decide(world, 1, fast=False)
    assert every == ref and every_read == ref_read and len(ref) > 0
    assert batched == len(every_read)
