"""The settled fast path (``stream.settled_fast_path``) skips the models for reports of files
whose fate is settled; the decisions must be exactly those of scoring every report.

The operators are driven in-process as the flow drives them (parse, correlate, decide, one
shard), over simulated worlds of several seeds, once with the fast path and once without.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rapidloop.base.config import load_config
from rapidloop.cli import main
from rapidloop.operators.correlate import Correlator, Sighting
from rapidloop.operators.decide import Decider
from rapidloop.operators.policy import Enforcement
from rapidloop.schemas.intake import FEEDBACK, REPORT, Intake
from rapidloop.schemas.wire import Limits, WireParser

from .helpers import feed_world

BATCH = 500


def decide(world: Path, fast: bool) -> tuple[list[tuple], int]:
    """Every decision of the world (without decided_at) and how many reports were skipped."""
    cfg = load_config(env={"RAPIDLOOP_STREAM__SETTLED_FAST_PATH": str(fast).lower()})
    intake = Intake(WireParser(Limits.from_config(cfg)), {"reports": REPORT,
                                                          "feedback": FEEDBACK})
    correlator, decider = Correlator.from_config(cfg), Decider.from_config(cfg)
    skipped = 0
    settled = decider.policy.settled

    def counting(enf: Enforcement | None, s: Sighting) -> bool:   # a probe around the rule
        nonlocal skipped
        out = settled(enf, s)
        skipped += out
        return out

    decider.policy.settled = counting   # type: ignore[method-assign]
    out = [(d.decision_id, d.sha256, d.action, d.scope, d.org_id, d.device_id, d.score,
            tuple(d.reasons), d.event_ts, d.expires_at)
           for d in feed_world(world, correlator, decider, intake, BATCH)]
    return out, skipped


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_same_decisions_with_and_without_the_fast_path(tmp_path: Path, seed: int) -> None:
    world = tmp_path / "w"
    assert main(["simulate", "--out", str(world), "--seed", str(seed), "--reports", "15000",
                 "--orgs", "30"]) == 0
    fast, skipped = decide(world, True)
    slow, none = decide(world, False)
    assert none == 0 and skipped > 0   # the path was taken, and only when asked for
    assert fast == slow
