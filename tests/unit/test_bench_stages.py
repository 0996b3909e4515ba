"""bench.stages: every stage of the job gets a figure, and the timing leaves no trace.

No assertion here is about speed (figures about speed come from ``make
bench``); these check that the split is complete and consistent on a tiny
simulated world, that nesting bills each call to its own stage, and that the
methods patched for timing are the originals again afterwards.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench.stages import PATCHES, STAGES, Overhead, StageClock, measure, simulate, stage_table

TINY_REPORTS = 2_000   # a world of a few thousand events: the whole test in a few seconds
ORIGINALS = {(cls, name): cls.__dict__.get(name) for cls, name, _ in PATCHES}   # before any run


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    world = tmp_path_factory.mktemp("stages") / "world"
    simulate(world, TINY_REPORTS)
    return measure(world, runs=1)


def test_every_stage_has_a_non_negative_figure(figures: dict[str, Any]) -> None:
    assert list(figures["stages"]) == list(STAGES)
    for name, st in figures["stages"].items():
        for key in ("us_per_event", "us_per_report", "share", "overhead_subtracted_us_per_event"):
            assert math.isfinite(st[key]) and st[key] >= 0.0, (name, key, st[key])
    # every stage of this world's pipeline does some work: none is silently unmeasured
    assert all(st["calls_per_event"] > 0 for st in figures["stages"].values())


def test_shares_sum_to_one_and_total_is_the_sum(figures: dict[str, Any]) -> None:
    stages = figures["stages"].values()
    assert sum(st["share"] for st in stages) == pytest.approx(1.0)
    assert figures["total_us_per_event"] == pytest.approx(sum(st["us_per_event"]
                                                              for st in stages))
    w = figures["world"]
    assert w["messages"] > w["reports"] >= TINY_REPORTS
    assert figures["total_us_per_report"] == pytest.approx(
        figures["total_us_per_event"] * w["messages"] / w["reports"])


def test_plain_pass_and_table(figures: dict[str, Any]) -> None:
    assert figures["plain_events_per_s"] > 0 and figures["plain_us_per_event"] > 0
    table = stage_table(figures)
    assert table.splitlines()[0].startswith("| stage")
    for label in STAGES.values():
        assert label in table


def test_patched_methods_are_restored(figures: dict[str, Any]) -> None:
    for (cls, name), original in ORIGINALS.items():
        assert cls.__dict__.get(name) is original, f"{cls.__name__}.{name} still wrapped"


def test_nested_calls_are_billed_to_their_own_stage() -> None:
    clock = StageClock(("outer", "inner"))

    class Work:
        def outer(self) -> None:
            self.inner()
            self.inner()

        def inner(self) -> None:
            sum(range(1000))

    Work.inner = clock.wrap(Work.inner, "inner")  # type: ignore[method-assign]
    Work.outer = clock.wrap(Work.outer, "outer")  # type: ignore[method-assign]
    Work().outer()
    assert clock.calls == {"outer": 1, "inner": 2}
    assert clock.nested == {"outer": 2, "inner": 0}
    assert min(clock.ns.values()) >= 0
    over = Overhead(inner_ns=10.0, outer_ns=100.0)
    assert clock.overhead(over) == {"outer": 10.0 + 2 * 100.0, "inner": 2 * 10.0}
    assert all(v >= 0.0 for v in clock.corrected(over).values())
