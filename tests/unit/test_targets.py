"""The quality bar: which targets hold on a world's figures, and the per-seed table."""

from __future__ import annotations

import math

from rapidloop.base.config import load_config
from rapidloop.tools.evalsuite import targets_table
from rapidloop.tools.targets import check, check_median, verdict_lines

GOOD = {"protection_rate": 0.95, "median_time_to_global_s": 240.0,
        "benign_hashes_blocked_global": 0, "collateral_rate": 0.0002,
        "multi_org_blocked_before_third_org": 0.8,
        "poisoned_global_blocks": 0, "malware_unblocked_for_others": 0,
        "classifiers": {"ensemble": {"roc_auc": 0.991}, "nb": {"roc_auc": 0.985},
                        "prior": {"roc_auc": 0.95}}}


def held(fig: dict, env: dict[str, str] | None = None) -> dict[str, bool]:
    return {c.name: c.held for c in check(fig, load_config(env=env or {}))}


def test_a_world_that_meets_every_target() -> None:
    assert all(held(GOOD).values())
    assert len(held(GOOD)) == 6


def median_held(figs: list[dict]) -> dict[str, bool]:
    return {c.name: c.held for c in check_median(figs, load_config(env={}))}


def test_each_miss_is_named() -> None:
    # the floor every world must clear
    assert not held({**GOOD, "protection_rate": 0.92})["protection"]
    assert not held({**GOOD, "benign_hashes_blocked_global": 3})["benign global"]
    assert not held({**GOOD, "collateral_rate": 0.0031})["collateral"]
    assert not held({**GOOD, "multi_org_blocked_before_third_org": 0.69})["before 3rd org"]
    assert not held({**GOOD, "malware_unblocked_for_others": 1})["poisoning"]
    # ...and the higher bar of the typical world (the median over seeds)
    assert all(median_held([GOOD, GOOD, GOOD]).values())
    assert not median_held([{**GOOD, "median_time_to_global_s": math.inf}] * 3)["time to global"]
    assert not median_held([{**GOOD, "median_time_to_global_s": None}] * 3)["time to global"]
    assert not median_held([{**GOOD, "benign_hashes_blocked_global": 1}] * 2 + [GOOD])[
        "benign global"]
    assert not median_held([{**GOOD, "collateral_rate": 0.0011}] * 3)["collateral"]
    assert not median_held([{**GOOD, "protection_rate": 0.94}] * 3)["protection"]


def test_the_ensemble_must_beat_every_classifier_not_tie() -> None:
    tie = {**GOOD, "classifiers": {"ensemble": {"roc_auc": 0.99}, "nb": {"roc_auc": 0.99}}}
    assert not held(tie)["ensemble AUC"]
    low = {**GOOD, "classifiers": {"ensemble": {"roc_auc": 0.979}, "nb": {"roc_auc": 0.9}}}
    assert not held(low)["ensemble AUC"]
    nan = {**GOOD, "classifiers": {"ensemble": {"roc_auc": math.nan}}}
    assert not held(nan)["ensemble AUC"]


def test_a_world_without_rogues_has_nothing_to_poison() -> None:
    fig = {**GOOD, "poisoned_global_blocks": None, "malware_unblocked_for_others": None}
    assert held(fig)["poisoning"]


def test_the_bar_is_configuration() -> None:
    stricter = {"RAPIDLOOP_EVALUATE__MIN_PROTECTION": "0.96"}
    assert not held(GOOD, stricter)["protection"]


def test_verdict_lines_and_the_per_seed_table() -> None:
    lines = verdict_lines(check({**GOOD, "benign_hashes_blocked_global": 3}, load_config(env={})))
    assert any(line.startswith("  MISSED benign global") and "3" in line for line in lines)
    rows = [{"targets": [vars(c) for c in check(f, load_config(env={}))]}
            for f in (GOOD, {**GOOD, "benign_hashes_blocked_global": 3})]
    table = targets_table([1, 2], rows)
    (row,) = [line for line in table.splitlines() if "benign global" in line]
    assert row.endswith("1 of 2")
    assert targets_table([], []) == "targets: none recorded"
