"""What shapes one simulated world: the parameters, and time on the wire.

Kept apart from the generator so the CLI, the eval suite and the world drawer
(:mod:`rapidloop.tools.worldparams`) can build and check parameters without the
machinery that uses them. The defaults of the settings are those of
``[simulate]`` in ``defaults.toml`` and nowhere else: parameters are built from
a configuration's section (:meth:`SimParams.from_config`), or from the
packaged one (:meth:`SimParams.defaults`), so a default changed there is
changed for every caller.

>>> SimParams.defaults().orgs
300
>>> SimParams.defaults(orgs=0)
Traceback (most recent call last):
...
rapidloop.tools.sim.params.SimulationError: orgs must be at least 1 (got 0)
>>> format_ts(parse_ts("2026-11-28T10:00:00Z"))
'2026-11-28T10:00:00.000Z'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any

from rapidloop.base.config import load_config
from rapidloop.schemas.model import BEHAVIORS

# --- the simulator's own constants, not settings of [simulate] -------------------------
# (ZIPF_S and ORG_SIZE_ALPHA are also the fixed world's values of two knobs only drawn
# worlds set: see the fields of the drawn worlds below.)
ZIPF_S = 1.1                    # popularity exponent of benign software
MAX_CAMPAIGN_SHARE = 0.25       # campaigns are thinned to at most this share of reports
QUIET_SHARE = 0.35              # waves of statically loud families that barely behave
MAX_ROGUE_SHARE = 0.05          # rogue reports are thinned to at most this share of reports
ORG_SIZE_ALPHA = 1.0            # Pareto exponent of fleet sizes: many small orgs, a few huge
ROGUE_TARGET_RANKS = (3, 80)    # flooders attack benign files of these popularity ranks
SANDBOX_GAIN = 0.02             # sandbox_coverage: how fast the detonation rate corrects
LOCAL_SHARE = 0.1               # share of an org's benign sightings of its in-house software
# SimParams fields that fixed worlds leave out of world.json unless set: their files
# stay byte-identical to those written before worlds were drawn per seed.
DRAWN_ONLY = ("varied", "org_size_alpha", "hard_negative_reports", "hard_negative_zipf",
               "sandbox_coverage", "sandbox_bias", "silent_share", "glitch_mode",
               "glitch_behavior", "glitch_start_s", "glitch_s")


class SimulationError(ValueError):
    """Parameters the simulator cannot work with."""


_DAY_CACHE: dict[int, str] = {}
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()


def format_ts(t: float) -> str:
    """RFC 3339 UTC with milliseconds and ``Z``; arithmetic, because strftime is the hot path."""
    ms = math.floor(t * 1000.0 + 0.5)
    sec, milli = divmod(ms, 1000)
    day, rem = divmod(sec, 86400)
    date = _DAY_CACHE.get(day)
    if date is None:
        date = _dt.date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
        _DAY_CACHE[day] = date
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{date}T{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


def parse_ts(text: str) -> float:
    """An RFC 3339 time as epoch seconds; a time without offset is taken as UTC."""
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise SimulationError(f"not an RFC 3339 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


# --- parameters ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class SimParams:
    """Everything that shapes one simulated world; ``epochs=None`` means forever.

    The settings of ``[simulate]`` have no default here: each comes from a
    configuration (:meth:`from_config`, :meth:`defaults`). What is not a
    setting there (the seed, how many epochs, the knobs only drawn worlds
    set) keeps a default that gives the fixed world.
    """

    seed: int = 1
    start: float                            # epoch seconds (simulate.start is RFC 3339)
    orgs: int
    devices_min: int
    devices_max: int
    benign_files: int
    campaigns: int
    hashes_per_campaign: int
    duration_s: float
    reports: int
    sandbox_share: float                    # hashes whose first report looks ordinary
    sandbox_suspicious_share: float         # hashes whose first report looks suspicious
    sandbox_delay_s: tuple[float, float]    # cloud detonation: minutes
    malformed_share: float
    duplicate_share: float
    label_noise: float
    analyst_share: float
    org_report_share: float
    hard_negative_share: float
    inhouse_share: float
    jitter_share: float
    jitter_s: float
    uppercase_share: float
    rogue_flooders: int                     # orgs flooding fake reports about benign files
    rogue_whitewashers: int                 # orgs vouching for real malware
    rogue_targets: int                      # popular benign files each flooder attacks
    rogue_flood_reports: int                # fabricated reports per flooder per duration
    rogue_whitewash_reports: int            # fabricated clean reports per whitewasher per duration
    rogue_whitewash_share: float            # share of campaign hashes a whitewasher defends
    rogue_devices: int                      # devices of its own a rogue reports from (at most)
    epochs: int | None = 1
    # Knobs of worlds drawn per seed (rapidloop.tools.worldparams). Their defaults reproduce the
    # one fixed world, and world.json lists them only when a world was drawn or one is set.
    varied: bool = False                    # drawn by worldparams.draw_world
    org_size_alpha: float = ORG_SIZE_ALPHA  # Pareto shape of fleet sizes
    hard_negative_reports: float | None = None  # share of all reports about hard negatives
    hard_negative_zipf: float = ZIPF_S      # ...and their popularity exponent among themselves
    sandbox_coverage: float | None = None   # share of hashes detonated (replaces the two shares)
    sandbox_bias: float = 8.0               # ...this many times likelier when suspicious-looking
    silent_share: float = 0.0               # devices whose sensors send no scores
    glitch_mode: str | None = None          # "static_ml" (scores near 1) or "behavior"...
    glitch_behavior: str | None = None      # ...(this flag on every report) of one org's sensors
    glitch_start_s: float = 0.0             # from start, for glitch_s of event time
    glitch_s: float = 0.0

    @classmethod
    def from_config(cls, section: Any, **overrides: Any) -> SimParams:
        """Parameters from ``cfg.simulate``, then ``overrides`` (None: not given, but for
        ``epochs``, where None means forever); SimulationError if the section lacks a
        setting no override gives."""
        given = {k: v for k, v in overrides.items() if v is not None or k == "epochs"}
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in given or f.name in ("seed", "epochs"):
                continue
            try:
                values[f.name] = getattr(section, f.name)
            except AttributeError:
                if f.default is dataclasses.MISSING:
                    raise SimulationError(f"simulate.{f.name} is not set") from None
        if "sandbox_delay_s" in values:
            delay = values["sandbox_delay_s"]
            if not (isinstance(delay, (list, tuple)) and len(delay) == 2):
                raise SimulationError("simulate.sandbox_delay_s must be [min, max] seconds")
            values["sandbox_delay_s"] = (float(delay[0]), float(delay[1]))
        values.update(given)
        if isinstance(values["start"], str):
            values["start"] = parse_ts(values["start"])
        params = cls(**values)
        params.validate()
        return params

    @classmethod
    def defaults(cls, **overrides: Any) -> SimParams:
        """The packaged ``[simulate]`` settings, then ``overrides`` (tests, doctests, code
        that wants a world without a configuration of its own)."""
        return cls.from_config(load_config(env={}).simulate, **overrides)

    def validate(self) -> None:
        """Raise SimulationError naming the first unusable setting."""
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SimulationError(what)
        need(self.orgs >= 1, f"orgs must be at least 1 (got {self.orgs})")
        need(1 <= self.devices_min <= self.devices_max,
             f"need 1 <= devices_min <= devices_max (got {self.devices_min}, {self.devices_max})")
        need(self.benign_files >= 1, f"benign_files must be at least 1 (got {self.benign_files})")
        need(self.campaigns >= 0, f"campaigns must be >= 0 (got {self.campaigns})")
        need(self.hashes_per_campaign >= 1,
             f"hashes_per_campaign must be at least 1 (got {self.hashes_per_campaign})")
        need(self.duration_s > 0, f"duration must be positive (got {self.duration_s:g}s)")
        need(self.reports >= 1, f"reports must be at least 1 (got {self.reports})")
        lo, hi = self.sandbox_delay_s
        need(0 <= lo <= hi, f"sandbox_delay_s must be [min, max] with 0 <= min <= max "
                            f"(got [{lo:g}, {hi:g}])")
        for name in ("sandbox_share", "sandbox_suspicious_share", "malformed_share",
                     "duplicate_share", "label_noise", "analyst_share", "org_report_share",
                     "hard_negative_share", "inhouse_share", "jitter_share", "uppercase_share",
                     "rogue_whitewash_share"):
            value = getattr(self, name)
            need(0.0 <= value <= 1.0, f"{name} must be within [0, 1] (got {value})")
        need(self.malformed_share + self.duplicate_share < 0.5,
             "malformed_share + duplicate_share must stay below 0.5")
        need(self.jitter_s >= 0, f"jitter_s must be >= 0 (got {self.jitter_s})")
        for name in ("rogue_flooders", "rogue_whitewashers", "rogue_targets",
                     "rogue_flood_reports", "rogue_whitewash_reports"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 0, f"{name} must be an integer >= 0 "
                                                        f"(got {value})")
        need(self.rogue_devices >= 1, f"rogue_devices must be at least 1 "
                                      f"(got {self.rogue_devices})")
        need(self.epochs is None or self.epochs >= 1, "epochs must be at least 1")
        need(math.isfinite(self.start), "start must be a finite time")
        for name in ("hard_negative_reports", "sandbox_coverage", "silent_share"):
            value = getattr(self, name)
            need(value is None or 0.0 <= value <= 1.0,
                 f"{name} must be within [0, 1] (got {value})")
        need(self.org_size_alpha > 0, f"org_size_alpha must be positive "
                                      f"(got {self.org_size_alpha})")
        need(self.hard_negative_zipf >= 0, f"hard_negative_zipf must be >= 0 "
                                           f"(got {self.hard_negative_zipf})")
        need(self.sandbox_bias >= 1, f"sandbox_bias must be at least 1 (got {self.sandbox_bias})")
        need(self.glitch_mode in (None, "static_ml", "behavior"),
             f"glitch_mode must be static_ml or behavior (got {self.glitch_mode!r})")
        need(self.glitch_mode != "behavior" or self.glitch_behavior in BEHAVIORS,
             f"glitch_behavior must be a behaviour (got {self.glitch_behavior!r})")
        need(self.glitch_start_s >= 0 and self.glitch_s >= 0,
             "glitch_start_s and glitch_s must be >= 0")
