"""The quality bar a world's evaluation is held to, and whether it holds.

Figures alone leave the comparisons to the reader; a tuning session, a
release check or a CI job wants the verdict: which targets hold on this
world, and by how much the others miss. The bar is ``[evaluate]`` in the
configuration, so a team can hold itself to a stricter one.

>>> from rapidloop.config import load_config
>>> fig = {"protection_rate": 0.95, "median_time_to_global_s": 420.0,
...        "benign_hashes_blocked_global": 1, "collateral_rate": 0.0002,
...        "poisoned_global_blocks": 0, "malware_unblocked_for_others": 0,
...        "classifiers": {"ensemble": {"roc_auc": 0.991}, "nb": {"roc_auc": 0.985}}}
>>> [(c.name, c.held) for c in check(fig, load_config(env={}))]   # doctest: +NORMALIZE_WHITESPACE
[('protection', True), ('time to global', True), ('benign global', False),
 ('collateral', True), ('poisoning', True), ('ensemble AUC', True)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rapidloop.config import Config


@dataclass(frozen=True)
class Check:
    """One target on one world: held or not, the figure and the bar, as text."""

    name: str
    held: bool
    value: str
    target: str


def _minutes(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "never"
    return f"{seconds / 60:.1f} min"


def check(fig: Mapping[str, Any], cfg: Config) -> list[Check]:
    """Every target against one world's figures (``vars(Result)`` or its JSON)."""
    bar = cfg.evaluate
    out = []
    prot = float(fig["protection_rate"])
    out.append(Check("protection", prot >= bar.min_protection, f"{prot:.3f}",
                     f">= {bar.min_protection:.2f}"))
    ttg = fig.get("median_time_to_global_s")
    ttg = math.inf if ttg is None else float(ttg)
    out.append(Check("time to global", ttg <= bar.max_median_time_to_global_s, _minutes(ttg),
                     f"median <= {_minutes(bar.max_median_time_to_global_s)}"))
    benign = int(fig["benign_hashes_blocked_global"])
    out.append(Check("benign global", benign <= bar.max_benign_global, str(benign),
                     f"<= {bar.max_benign_global}"))
    coll = float(fig["collateral_rate"])
    out.append(Check("collateral", coll <= bar.max_collateral, f"{coll * 100:.3f}%",
                     f"<= {bar.max_collateral * 100:g}%"))
    poisoned = [fig.get("poisoned_global_blocks"), fig.get("malware_unblocked_for_others")]
    if all(p is None for p in poisoned):
        out.append(Check("poisoning", True, "no rogue tenant", f"<= {bar.max_poisoned}"))
    else:
        total = sum(int(p or 0) for p in poisoned)
        out.append(Check("poisoning", total <= bar.max_poisoned,
                         f"{poisoned[0]} global / {poisoned[1]} unblocked",
                         f"<= {bar.max_poisoned}"))
    out.append(_auc(fig.get("classifiers") or {}, float(bar.min_ensemble_auc)))
    return out


def _auc(classifiers: Mapping[str, Mapping[str, Any]], floor: float) -> Check:
    def auc(name: str) -> float:
        v = classifiers.get(name, {}).get("roc_auc")
        return math.nan if v is None else float(v)

    ens = auc("ensemble")
    others = {n: auc(n) for n in classifiers if n != "ensemble"}
    others = {n: v for n, v in others.items() if math.isfinite(v)}
    if not math.isfinite(ens):
        return Check("ensemble AUC", False, "n/a (one class of labels)", f">= {floor:.2f}")
    best = max(others, key=others.__getitem__) if others else None
    held = ens >= floor and all(ens > v for v in others.values())
    against = f", best alone {best} {others[best]:.4f}" if best else ""
    return Check("ensemble AUC", held, f"{ens:.4f}{against}",
                 f">= {floor:.2f} and above each")


def verdict_lines(checks: list[Check]) -> list[str]:
    """The checks as aligned lines: "held" or "MISSED", the figure, the bar."""
    width = max(len(c.name) for c in checks)
    return [f"  {'held  ' if c.held else 'MISSED'} {c.name:<{width}}  {c.value}  ({c.target})"
            for c in checks]
