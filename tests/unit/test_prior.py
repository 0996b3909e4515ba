"""The prior: the hand-set rule that scores files before the learners know anything."""

from __future__ import annotations

import math

import pytest

from rapidloop.base.config import load_config
from rapidloop.operators.features import BEHAVIOR_FEATURES, FEATURE_NAMES
from rapidloop.operators.prior import (
    Prior,
    sigmoid,
)


@pytest.fixture
def prior() -> Prior:
    return Prior.from_config(load_config(env={}))


def test_feature_names_are_unique_and_cover_every_behaviour():
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert len(BEHAVIOR_FEATURES) == 12 and set(BEHAVIOR_FEATURES) <= set(FEATURE_NAMES)


def test_score_is_the_documented_logistic_rule(prior: Prior):
    m = load_config(env={}).models
    f = {"verdict_max": 0.8, "beh_credential_dumping": 0.5, "beh_discovery": 1.0,
         "signed": 0.0, "path_temp": 1.0, "parent_flagged": 1.0}
    z = (m.prior_bias + m.prior_verdict_weight * 0.8
         + m.behavior_weights.credential_dumping * 0.5 + m.behavior_weights.discovery * 1.0
         + m.prior_unsigned_weight + m.prior_path_weight + m.prior_parent_weight)
    assert prior.score(f) == pytest.approx(1.0 / (1.0 + math.exp(-z)))


def test_missing_features_mean_zero(prior: Prior):
    m = load_config(env={}).models
    assert prior.score({}) == pytest.approx(sigmoid(m.prior_bias + m.prior_unsigned_weight))
    assert prior.score({"signed": 1.0}) == pytest.approx(sigmoid(m.prior_bias))
    assert prior.score({"some_future_feature": 7.0, "signed": 1.0}) == prior.score({"signed": 1.0})


def test_evidence_moves_the_score_the_right_way(prior: Prior):
    base = {"verdict_max": 0.3, "signed": 1.0, "path_program_files": 1.0}
    s = prior.score(base)
    assert prior.score({**base, "beh_ransomware_encryption": 1.0}) > s
    assert prior.score({**base, "verdict_max": 0.9}) > s
    assert prior.score({**base, "signed": 0.0}) > s
    assert prior.score({**base, "path_program_files": 0.0, "path_downloads": 1.0}) > s
    assert prior.score({**base, "parent_flagged": 1.0}) > s


def test_scores_stay_in_unit_interval_without_overflow(prior: Prior):
    assert prior.score({"signed": 1.0, "verdict_max": -1e6}) == 0.0
    hot = {name: 1e6 for name in BEHAVIOR_FEATURES}
    assert prior.score(hot) == 1.0


def test_config_sets_the_weights():
    cfg = load_config(env={"RAPIDLOOP_MODELS__PRIOR_BIAS": "0.0",
                           "RAPIDLOOP_MODELS__PRIOR_VERDICT_WEIGHT": "0.0",
                           "RAPIDLOOP_MODELS__BEHAVIOR_WEIGHTS__DISCOVERY": "2.0"})
    p = Prior.from_config(cfg)
    assert p.score({"signed": 1.0, "verdict_max": 1.0}) == pytest.approx(0.5)
    assert p.score({"signed": 1.0, "beh_discovery": 1.0}) == pytest.approx(sigmoid(2.0))


def test_explain_names_the_strongest_terms_in_order(prior: Prior):
    f = {"verdict_max": 0.93, "beh_ransomware_encryption": 1.0, "beh_discovery": 1.0,
         "beh_credential_dumping": 0.5, "signed": 1.0, "path_temp": 1.0}
    assert prior.explain(f) == ["sensor verdict 0.93", "ransomware_encryption behaviour",
                                "credential_dumping behaviour"]
    terms = prior.contributions(f)
    assert [c for c, _ in terms] == sorted((c for c, _ in terms), reverse=True)
    assert "discovery behaviour" in [why for _, why in terms]   # present but too weak to cite


def test_explain_is_empty_without_real_evidence(prior: Prior):
    assert prior.explain({"signed": 1.0}) == []
    assert prior.explain({}) == ["unsigned"]   # unsigned is evidence in its own right
    assert prior.explain({"signed": 1.0, "beh_discovery": 0.5}) == []
    assert prior.explain({"parent_flagged": 1.0, "signed": 1.0}) == [
        "dropped or launched by a flagged file"]
