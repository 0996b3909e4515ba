"""What endpoint sensors say about a file: behaviours, scores, and their quirks.

A file's truth (its family's behaviours, its static score) reaches the wire
through a sensor that sees part of it: static-only sources (antivirus,
network) mostly report no behaviour, scores are jittered, AV signatures
catch up with a family hours after its first sighting. Drawn worlds add
quirks: devices whose sensors send no scores, and one org's sensors
glitching for a while.
"""

from __future__ import annotations

import random
from typing import Any

from .catalog import Fleet, SimFile
from .params import SimParams

_STATIC_ONLY_SOURCES = frozenset(("antivirus", "network"))


def behaviors(f: SimFile, source: str, rng: random.Random) -> list[str]:
    """The behaviours one sensor of ``source`` reports for ``f``."""
    rnd = rng.random
    if source in _STATIC_ONLY_SOURCES and rnd() < 0.7:
        return ["c2_beacon"] if source == "network" and "c2_beacon" in f.behaviors_core \
            else []
    out = [b for b in f.behaviors_core if rnd() < f.core_p]
    if f.min_one and not out and f.behaviors_core:
        out.append(f.behaviors_core[int(rnd() * len(f.behaviors_core))])
    if f.behaviors_opt:
        out.extend(b for b in f.behaviors_opt if rnd() < f.opt_p)
    return out


def verdicts(f: SimFile, t: float, source: str, rng: random.Random) -> dict[str, float]:
    """The scores one sensor of ``source`` attaches at event time ``t``."""
    rnd = rng.random
    if source == "network" or rnd() < 0.03:
        return {}
    static = f.static + (rnd() - 0.5) * 0.06
    static = round(0.0 if static < 0 else 1.0 if static > 1 else static, 3)
    if source != "antivirus":
        return {"static_ml": static}
    av = f.av
    if f.sig_lag is not None and f.first_t is not None and t >= f.first_t + f.sig_lag:
        av = 1.0  # the signature update has shipped
    return {"static_ml": static, "av_signature": av}


class SensorQuirks:
    """Silent devices and one org's glitch (drawn worlds only)."""

    def __init__(self, p: SimParams, fleet: Fleet, rogue_orgs: dict[int, Any]) -> None:
        """Drawn worlds' sensor quirks, each from a random stream of its own.

        Silent devices (``silent_share`` of every org's fleet, by a hash of the
        device number) send reports without scores. A glitch makes one honest
        org's sensors misbehave for ``glitch_s`` of event time: ``static_ml``
        near 1.0, or ``glitch_behavior``, on every report. The org is one of
        the tenth biggest honest orgs, so the glitch is big enough to be
        noticed. The files stay what they are: a benign file reported during
        a glitch is benign in truth.
        """
        self.silent_below = int(p.silent_share * 2 ** 32)
        self.silent_salt: list[int] = []
        if self.silent_below:
            rng = random.Random(f"rapidloop-silent:{p.seed}")
            self.silent_salt = [rng.getrandbits(32) for _ in range(p.orgs)]
        self.glitch_org = -1
        self.glitch_t0 = self.glitch_t1 = p.start
        self.glitched = 0
        if p.glitch_mode is not None and p.glitch_s > 0:
            rng = random.Random(f"rapidloop-glitch:{p.seed}")
            honest = sorted((o for o in range(p.orgs) if o not in rogue_orgs),
                            key=lambda o: -fleet.sizes[o]) or list(range(p.orgs))
            self.glitch_org = rng.choice(honest[:max(1, len(honest) // 10)])
            self.glitch_t0 = p.start + p.glitch_start_s
            self.glitch_t1 = self.glitch_t0 + p.glitch_s
        self.active = bool(self.silent_below) or self.glitch_org >= 0
        self.p = p

    def apply(self, rep: dict[str, Any], t: float, org: int, dev: int,
              rng: random.Random) -> None:
        """Silent devices drop their scores; a glitching org's sensors misbehave."""
        if self.silent_below and \
                (dev * 2654435761 + self.silent_salt[org]) & 0xFFFFFFFF < self.silent_below:
            rep["verdicts"] = {}
        if org == self.glitch_org and self.glitch_t0 <= t < self.glitch_t1:
            self.glitched += 1
            if self.p.glitch_mode == "static_ml":
                rep["verdicts"] = {**rep["verdicts"],
                                   "static_ml": round(0.96 + 0.04 * rng.random(), 3)}
            elif self.p.glitch_behavior not in rep["behaviors"]:
                rep["behaviors"] = [*rep["behaviors"], self.p.glitch_behavior]
