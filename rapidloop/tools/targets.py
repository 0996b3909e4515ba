"""The quality bar a world's evaluation is held to, and whether it holds.

Figures alone leave the comparisons to the reader; a tuning session, a
release check or a CI job wants the verdict: which targets hold, and by how
much the others miss. The bar is ``[evaluate]`` in the configuration, so a
team can hold itself to a stricter one.

One seed can flatter a policy, so the bar has two halves. Every world must
clear a floor (the *worst-seed* bars: ``check``), and the typical world must
clear a higher one (the *median-over-seeds* bars: ``check_median``): a
policy that is excellent on average but lets one world in ten through is
caught by the first, one that merely scrapes by everywhere by the second.
The ensemble AUC is shown beside the per-world bars for information: it is a
means (ranking files well), not one of the outcomes the loop is held to.

>>> from rapidloop.base.config import load_config
>>> fig = {"protection_rate": 0.95, "median_time_to_global_s": 420.0,
...        "benign_hashes_blocked_global": 1, "collateral_rate": 0.0002,
...        "multi_org_blocked_before_third_org": 0.65,
...        "poisoned_global_blocks": 0, "malware_unblocked_for_others": 0,
...        "classifiers": {"ensemble": {"roc_auc": 0.991}, "nb": {"roc_auc": 0.985}}}
>>> [(c.name, c.held) for c in check(fig, load_config(env={}))]   # doctest: +NORMALIZE_WHITESPACE
[('protection', True), ('benign global', True), ('collateral', True),
 ('before 3rd org', False), ('poisoning', True), ('ensemble AUC', True)]
>>> worse = {**fig, "protection_rate": 0.94, "median_time_to_global_s": None}
>>> [(c.name, c.held) for c in check_median([fig, worse, fig], load_config(env={}))]
... # doctest: +NORMALIZE_WHITESPACE
[('protection', True), ('benign global', False), ('collateral', True),
 ('time to global', False)]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rapidloop.base.config import Config

Figures = Mapping[str, Any]


@dataclass(frozen=True)
class Check:
    """One target on one world (or one aggregate of worlds): held or not, figure and bar as
    text. ``bar`` is False for a check shown for information, which no verdict counts."""

    name: str
    held: bool
    value: str
    target: str
    bar: bool = True


# --- the figures each bar reads --------------------------------------------------------------
# A figure is None when it does not apply to the world (no rogue tenant, no hash reached three
# orgs); such a world holds that bar. A time that never came is inf (JSON writes it as null, so
# ``time to global`` reads None as never).

def figure_of(key: str, none: float | None = None) -> Callable[[Figures], float | None]:
    def get(fig: Figures) -> float | None:
        v = fig.get(key)
        return none if v is None else float(v)
    return get


def poisoned(fig: Figures) -> float | None:
    parts = [fig.get("poisoned_global_blocks"), fig.get("malware_unblocked_for_others")]
    if all(p is None for p in parts):
        return None
    return float(sum(int(p or 0) for p in parts))


def fmt_minutes(seconds: float | None) -> str:
    if seconds is None or math.isinf(seconds):
        return "never"
    return f"{seconds / 60:.1f} min"


def fmt_count(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


@dataclass(frozen=True)
class Bar:
    """One target: the figure it reads, which way is better, how to print it, and the
    ``[evaluate]`` settings of its worst-seed and median-over-seeds thresholds (None: the
    issue sets no bar on that side)."""

    name: str
    figure: Callable[[Figures], float | None]
    higher_is_better: bool
    fmt: Callable[[float], str]
    world_key: str | None
    median_key: str | None
    na: str = "n/a"

    def worst(self, figs: Sequence[Figures]) -> float | None:
        """The worst value over the worlds (those where the figure applies)."""
        vals = [v for v in map(self.figure, figs) if v is not None]
        if not vals:
            return None
        return min(vals) if self.higher_is_better else max(vals)

    def median(self, figs: Sequence[Figures]) -> float | None:
        """The median over the worlds where the figure applies (never = inf sorts last)."""
        vals = [v for v in map(self.figure, figs) if v is not None]
        return statistics.median(vals) if vals else None

    def judge(self, value: float | None, threshold: float) -> Check:
        if value is None:
            return Check(self.name, True, self.na, self._target(threshold))
        held = value >= threshold if self.higher_is_better else value <= threshold
        return Check(self.name, held, self.fmt(value), self._target(threshold))

    def _target(self, threshold: float) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.fmt(threshold)}"


BARS: tuple[Bar, ...] = (
    Bar("protection", figure_of("protection_rate"), True, lambda v: f"{v:.3f}",
        "min_protection", "median_min_protection"),
    Bar("benign global", figure_of("benign_hashes_blocked_global"), False, fmt_count,
        "max_benign_global", "median_max_benign_global"),
    Bar("collateral", figure_of("collateral_rate"), False, lambda v: f"{v * 100:.3f}%",
        "max_collateral", "median_max_collateral"),
    Bar("before 3rd org", figure_of("multi_org_blocked_before_third_org"), True,
        lambda v: f"{v:.2f}", "min_before_third_org", None,
        na="n/a (no malicious hash reached 3 orgs)"),
    Bar("poisoning", poisoned, False, fmt_count, "max_poisoned", None, na="no rogue tenant"),
    Bar("time to global", figure_of("median_time_to_global_s", math.inf), False, fmt_minutes,
        None, "median_max_time_to_global_s"),
)


def check(fig: Figures, cfg: Config) -> list[Check]:
    """The worst-seed bars against one world's figures (``vars(Result)`` or its JSON), and
    the ensemble AUC for information."""
    out = [b.judge(b.figure(fig), float(getattr(cfg.evaluate, b.world_key)))
           for b in BARS if b.world_key]
    out.append(_auc(fig.get("classifiers") or {}, float(cfg.evaluate.min_ensemble_auc)))
    return out


def check_worst(figs: Sequence[Figures], cfg: Config) -> list[Check]:
    """The worst-seed bars against the worst figure of each over ``figs``: a bar holds when
    it holds on every world."""
    return [b.judge(b.worst(figs), float(getattr(cfg.evaluate, b.world_key)))
            for b in BARS if b.world_key]


def check_median(figs: Sequence[Figures], cfg: Config) -> list[Check]:
    """The median-over-seeds bars against the median of each figure over ``figs``."""
    return [b.judge(b.median(figs), float(getattr(cfg.evaluate, b.median_key)))
            for b in BARS if b.median_key]


def aggregate(figs: Sequence[Figures]) -> dict[str, dict[str, float | None]]:
    """Every bar's figure over ``figs``: ``{"worst": {name: value}, "median": {...}}``
    (None where the figure applies to no world; inf for a time that never came)."""
    return {"worst": {b.name: b.worst(figs) for b in BARS},
            "median": {b.name: b.median(figs) for b in BARS}}


def _auc(classifiers: Mapping[str, Mapping[str, Any]], floor: float) -> Check:
    def auc(name: str) -> float:
        v = classifiers.get(name, {}).get("roc_auc")
        return math.nan if v is None else float(v)

    ens = auc("ensemble")
    others = {n: auc(n) for n in classifiers if n != "ensemble"}
    others = {n: v for n, v in others.items() if math.isfinite(v)}
    if not math.isfinite(ens):
        return Check("ensemble AUC", False, "n/a (one class of labels)", f">= {floor:.2f}",
                     bar=False)
    best = max(others, key=others.__getitem__) if others else None
    held = ens >= floor and all(ens > v for v in others.values())
    against = f", best alone {best} {others[best]:.4f}" if best else ""
    return Check("ensemble AUC", held, f"{ens:.4f}{against}",
                 f">= {floor:.2f} and above each", bar=False)


def verdict_lines(checks: list[Check]) -> list[str]:
    """The checks as aligned lines: "held" or "MISSED", the figure, the bar. A check shown
    for information reads "(held)" or "(miss)" so that nobody counts it as a bar."""
    width = max(len(c.name) for c in checks)

    def mark(c: Check) -> str:
        if c.bar:
            return "held  " if c.held else "MISSED"
        return "(held)" if c.held else "(miss)"

    def target(c: Check) -> str:
        return c.target if c.bar else f"{c.target}; for information"
    return [f"  {mark(c)} {c.name:<{width}}  {c.value}  ({target(c)})" for c in checks]
