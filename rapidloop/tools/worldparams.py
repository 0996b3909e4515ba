"""Worlds drawn per seed: each seed first draws its own world parameters.

Why: with one fixed ``[simulate]`` world (300 orgs, 12 campaigns, 4 % hard
negatives...) for every seed, detection rules end up fitted to that one world,
and then meet real days (or an independent generator) with 200-400 orgs,
hundreds of campaigns, hard negatives in a third of the reports, sandbox
verdicts on a fifth to two fifths of the hashes, noisier labels, rogue
tenants, silent sensors and glitches. Drawing the world per seed makes every
evaluation over several seeds an evaluation over several *kinds* of day.

How: :func:`draw_world` takes the parameters built from the settings and the
command line, draws every varied knob uniformly within its ``vary_*`` range of
``[simulate]`` (:class:`VaryRanges`), from a random stream seeded by the seed
alone and used for nothing else, so the same seed and settings always give the
same world, and the world does not depend on the start time (a live run keeps
the world the engine learned). All knobs are drawn whatever is kept, so a
command-line ``--orgs`` leaves every other draw as it was. The simulator's
event streams are separate, and with ``vary`` off nothing here runs: the fixed
world is byte-for-byte what it was.

>>> from rapidloop.base.config import load_config
>>> from rapidloop.tools.simulator import SimParams
>>> ranges = VaryRanges.from_config(load_config().simulate)
>>> a, b = (draw_world(SimParams.defaults(seed=s), ranges) for s in (1, 2))
>>> a.varied and 100 <= a.orgs <= 400 and 10 <= a.campaigns <= 300
True
>>> a == draw_world(SimParams.defaults(seed=1), ranges), a == b
(True, False)
>>> draw_world(SimParams.defaults(seed=1, orgs=8), ranges, keep={"orgs"}).orgs
8
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from rapidloop.tools.simulator import SimParams, SimulationError

# What a glitching sensor may flag on every report: loud, commonly blocked behaviours.
GLITCH_BEHAVIORS = ("process_injection", "defense_evasion", "credential_dumping",
                    "persistence", "c2_beacon")
DAY_S = 86400.0

Range = tuple[float, float]
IntRange = tuple[int, int]


@dataclass(frozen=True, slots=True)
class VaryRanges:
    """The ``vary_*`` settings of ``[simulate]``: [low, high] of each drawn knob.

    Integer knobs are drawn with both ends included. ``sandbox_delay_s``
    bounds a world's own [min, max] delay; ``glitch_share`` is the chance a
    world has a sensor glitch at all, ``glitch_s`` its length for a day-long
    run (scaled down for shorter ones).
    """

    orgs: IntRange
    org_size_alpha: Range
    benign_files: IntRange
    hard_negative_share: Range
    hard_negative_reports: Range
    hard_negative_zipf: Range
    inhouse_share: Range
    campaigns: IntRange
    hashes_per_campaign: IntRange
    sandbox_coverage: Range
    sandbox_bias: Range
    sandbox_delay_s: Range
    label_noise: Range
    analyst_share: Range
    org_report_share: Range
    jitter_share: Range
    silent_share: Range
    rogue_flooders: IntRange
    rogue_whitewashers: IntRange
    rogue_targets: IntRange
    rogue_flood_reports: IntRange
    rogue_whitewash_reports: IntRange
    glitch_share: float
    glitch_s: Range

    @classmethod
    def from_config(cls, section: Any) -> VaryRanges:
        """Read ``vary_<knob>`` of each field; raise SimulationError naming a bad one."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f"vary_{f.name}"
            try:
                raw = getattr(section, key)
            except AttributeError:
                raise SimulationError(f"missing setting simulate.{key}") from None
            if f.name == "glitch_share":
                if not (isinstance(raw, (int, float)) and 0.0 <= raw <= 1.0):
                    raise SimulationError(f"simulate.{key} must be within [0, 1] (got {raw!r})")
                values[f.name] = float(raw)
                continue
            integer = f.type == "IntRange"
            kind = int if integer else (int, float)
            if not (isinstance(raw, (list, tuple)) and len(raw) == 2
                    and all(isinstance(v, kind) and not isinstance(v, bool) for v in raw)
                    and 0 <= raw[0] <= raw[1]):
                what = "integers" if integer else "numbers"
                raise SimulationError(f"simulate.{key} must be [low, high], {what} with "
                                      f"0 <= low <= high (got {raw!r})")
            values[f.name] = (raw[0], raw[1]) if integer else (float(raw[0]), float(raw[1]))
        return cls(**values)


def draw_world(base: SimParams, ranges: VaryRanges,
               keep: Collection[str] = ()) -> SimParams:
    """``base`` with every varied knob drawn for its seed, except those named in ``keep``.

    Raises SimulationError if the drawn world is unusable (e.g. a range
    outside what the simulator accepts).
    """
    rng = random.Random(f"rapidloop-vary:{base.seed}")
    drawn: dict[str, Any] = {}
    for f in dataclasses.fields(ranges):
        name = f.name
        if name in ("sandbox_delay_s", "glitch_share", "glitch_s"):
            continue
        lo, hi = getattr(ranges, name)
        drawn[name] = rng.randint(lo, hi) if f.type == "IntRange" else rng.uniform(lo, hi)
    lo, hi = ranges.sandbox_delay_s
    a, b = sorted(rng.uniform(lo, hi) for _ in range(2))
    drawn["sandbox_delay_s"] = (a, b)
    # A sensor glitch: every draw is made, so a world without one keeps the same others.
    glitch = rng.random() < ranges.glitch_share
    mode = rng.choice(("static_ml", "behavior"))
    behavior = rng.choice(GLITCH_BEHAVIORS)
    length = rng.uniform(*ranges.glitch_s) * min(1.0, base.duration_s / DAY_S)
    length = min(length, base.duration_s)
    at = rng.uniform(0.0, base.duration_s - length)
    drawn.update(glitch_mode=mode if glitch else None,
                 glitch_behavior=behavior if glitch and mode == "behavior" else None,
                 glitch_start_s=at if glitch else 0.0, glitch_s=length if glitch else 0.0)
    for name in keep:
        drawn.pop(name, None)
    params = dataclasses.replace(base, varied=True, **drawn)
    params.validate()
    return params


def summary(p: SimParams) -> str:
    """The drawn parameters that matter most, on one line (the CLI's summary).

    >>> p = SimParams.defaults(orgs=212, campaigns=48, hard_negative_reports=0.21,
    ...                        sandbox_coverage=0.3, label_noise=0.02)
    >>> summary(p).split(", ")  # doctest: +NORMALIZE_WHITESPACE
    ['orgs 212', 'campaigns 48x5', 'hard negatives 21% of reports', 'sandbox 30% of hashes',
     'label noise 2.0%', 'silent 0%', 'rogues 1+1', 'no glitch']
    """
    hard = (f"{p.hard_negative_reports:.0%} of reports" if p.hard_negative_reports is not None
            else f"{p.hard_negative_share:.0%} of files")
    sandbox = (f"{p.sandbox_coverage:.0%} of hashes" if p.sandbox_coverage is not None
               else f"{p.sandbox_share:.0%}/{p.sandbox_suspicious_share:.0%}")
    glitch = (f"glitch {p.glitch_mode}"
              f"{':' + p.glitch_behavior if p.glitch_behavior else ''} {p.glitch_s / 60:.0f}m"
              if p.glitch_mode else "no glitch")
    return (f"orgs {p.orgs}, campaigns {p.campaigns}x{p.hashes_per_campaign}, hard negatives "
            f"{hard}, sandbox {sandbox}, label noise {p.label_noise:.1%}, silent "
            f"{p.silent_share:.0%}, rogues {p.rogue_flooders}+{p.rogue_whitewashers}, {glitch}")
