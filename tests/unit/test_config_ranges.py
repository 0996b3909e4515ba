"""Settings out of range, or misspelt, are one line naming the key, the value and the rule."""

from __future__ import annotations

import pytest

from rapidloop.base.config import ConfigError, load_config


def test_the_defaults_are_in_range() -> None:
    load_config(env={})


@pytest.mark.parametrize(("key", "value", "says"), [
    ("POLICY__GLOBAL_BLOCK_SCORE", "7", "policy.global_block_score = 7.0: must be in [0, 1]"),
    ("SIMULATE__LABEL_NOISE", "1.5", "simulate.label_noise = 1.5: must be in [0, 1]"),
    ("POLICY__VERDICT_RELIABILITY__SANDBOX", "1.2",
     "policy.verdict_reliability.sandbox = 1.2: must be in [0, 1]"),
    ("KAFKA__CONSUME_BATCH", "0", "kafka.consume_batch = 0: must be > 0"),
    ("STREAM__GC_GEN0_THRESHOLD", "0", "stream.gc_gen0_threshold = 0: must be > 0"),
    ("POLICY__ORG_BLOCK_TTL_S", "0", "policy.org_block_ttl_s = 0: must be > 0"),
    ("POLICY__EXPOSURE_WEIGHT", "-1", "policy.exposure_weight = -1.0: must be >= 0"),
    ("SIMULATE__VARY_ORGS", "[400, 100]",
     "simulate.vary_orgs = [400, 100]: a range [low, high] with 0 <= low <= high"),
    ("WINDOWS__SIZES_S", "[600, 86400, 3600]",
     "windows.sizes_s = [600, 86400, 3600]: window lengths > 0, ascending"),
])
def test_a_value_out_of_range_is_refused_in_one_line(key: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={f"RAPIDLOOP_{key}": value})
    assert str(exc.value) == says


def test_the_priors_weights_may_be_negative() -> None:
    cfg = load_config(env={"RAPIDLOOP_MODELS__PRIOR_BIAS": "-8.0"})
    assert cfg.models.prior_bias == -8.0


def test_a_misspelt_key_gets_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown setting policy.global_blok_score "
                                          r"\(did you mean policy.global_block_score\?\)"):
        load_config(env={"RAPIDLOOP_POLICY__GLOBAL_BLOK_SCORE": "0.9"})
