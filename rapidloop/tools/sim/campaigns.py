"""Malware campaigns: where each starts, how its waves of new hashes spread across
organizations, and which rogue tenant will defend them.

A campaign starts in one tenant and reaches others in bursts (several devices
of an org within minutes), rotating to a new hash every wave; droppers drop a
payload of another family. The schedule is drawn per epoch from the traffic
stream (seed and start time), so a live run started "now" meets fresh
campaigns in the same benign world.
"""

from __future__ import annotations

import random
from typing import Any

from .catalog import (
    ACTIVE_SOURCES,
    CAMPAIGN_FAMILIES,
    FAMILIES,
    STOLEN_SIGNERS,
    Family,
    Fleet,
    SimFile,
    file_size,
    new_sha,
)
from .events import Push
from .params import MAX_CAMPAIGN_SHARE, QUIET_SHARE, SimParams, format_ts

SIGHTING = 0                             # the schedule's kind for a campaign sighting


class Campaigns:
    """The campaigns planned so far (``campaigns``, as world.json lists them) and their
    files (``files``, for the ground truth)."""

    def __init__(self, p: SimParams, fleet: Fleet, whitewashers: list[int]) -> None:
        self.p = p
        self.fleet = fleet
        self.whitewashers = whitewashers
        self.files: list[SimFile] = []
        self.campaigns: list[dict[str, Any]] = []

    def plan_epoch(self, epoch: int, rng: random.Random, push: Push
                   ) -> tuple[int, list[tuple[int, list[SimFile], float]]]:
        """Schedule this epoch's campaigns; returns the number of reports planned and what
        the whitewashers will defend (rogue, hashes, wave start)."""
        p = self.p
        e0 = p.start + epoch * p.duration_s
        e1 = e0 + p.duration_s
        hour = 3600.0 * min(1.0, p.duration_s / 86400.0)  # a "scaled hour" for short runs
        families = list(CAMPAIGN_FAMILIES)
        rng.shuffle(families)
        planned: list[tuple[float, SimFile, int, int, str, bool]] = []
        defend: list[tuple[int, list[SimFile], float]] = []   # whitewasher, hashes, wave start
        for c in range(p.campaigns):
            fam = FAMILIES[families[c % len(families)]]
            cid = f"c{epoch}-{c:02d}"
            origin = rng.randrange(p.orgs)
            t0 = e0 + rng.uniform(0.02, 0.45) * p.duration_s
            life = rng.uniform(0.15, 0.35) * p.duration_s
            waves = []
            pool = [o for o in range(p.orgs) if o != origin]
            for w in range(p.hashes_per_campaign):
                # Quiet variants (sandbox-aware, sleeping) of families static ML catches
                # show few or no behaviours: caught by static scores, not by what they do.
                quiet = fam.static[1] >= 0.7 and rng.random() < QUIET_SHARE
                f = self._file(rng, fam, cid, w, quiet=quiet)
                payload = (self._file(rng, FAMILIES[fam.payload], cid, w, parent=f)
                           if fam.payload else None)
                t_w = t0 + life * w / p.hashes_per_campaign + rng.uniform(0, 0.1) * hour
                n_orgs = min(p.orgs, 3 + w + rng.randint(0, 2))
                others = rng.sample(pool, n_orgs - 1)
                spread = rng.uniform(1.0, 4.0) * hour
                offsets = sorted(rng.uniform(0.05, 1.0) * spread for _ in others)
                hits = [(origin, 0.0), *zip(others, offsets, strict=True)]
                for ww in self.whitewashers:
                    if rng.random() < p.rogue_whitewash_share:
                        # sometimes the whitewasher was really hit; sometimes it only heard
                        if rng.random() < 0.5 and all(o != ww for o, _ in hits):
                            hits.append((ww, rng.uniform(0.05, 1.0) * spread))
                        defend.append((ww, [f] if payload is None else [f, payload], t_w))
                for org, off in hits:
                    self._burst(rng, planned, f, payload, org, t_w + off, hour)
                waves.append({"wave": w, "sha256": f.sha,
                              "payload_sha256": payload.sha if payload else None,
                              "start": format_ts(t_w),
                              "orgs": [self.fleet.org_ids[o] for o, _ in hits]})
            self.campaigns.append({"campaign": cid, "family": fam.name,
                                   "origin_org": self.fleet.org_ids[origin], "start": format_ts(t0),
                                   "waves": waves})
        planned = [e for e in planned if e[0] < e1]
        cap = int(p.reports * MAX_CAMPAIGN_SHARE)
        if len(planned) > cap:  # tiny runs: keep each hash's first sighting per org
            essential = [e for e in planned if e[5]]
            rest = [e for e in planned if not e[5]]
            keep = rng.sample(rest, max(0, min(len(rest), cap - len(essential))))
            planned = sorted(essential + keep, key=lambda e: e[0])
        for t, f, org, dev, source, _ in planned:
            push(t, SIGHTING, (f, org, dev, source))
        return len(planned), defend

    def _file(self, rng: random.Random, fam: Family, cid: str, wave: int,
              parent: SimFile | None = None, quiet: bool = False) -> SimFile:
        name = rng.choice(fam.names).replace("{n}", str(rng.randrange(1000, 99999)))
        signer = rng.choice(STOLEN_SIGNERS) if rng.random() < fam.signed_share else None
        f = SimFile(new_sha(rng), "malicious", "campaign",
                  {"name": name, "size": file_size(rng, 4e5 if fam.file_type == "pe" else 6e4),
                   "type": fam.file_type, "signed": signer is not None, "signer": signer,
                   "path": rng.choice(fam.paths)},
                  round(rng.uniform(max(0.6, fam.static[0]), fam.static[1]) if quiet
                        else rng.uniform(*fam.static), 3),
                  core=fam.core, optional=fam.optional, core_p=0.3 if quiet else 0.85,
                  opt_p=0.05 if quiet else 0.3, min_one=not quiet,
                  sig_lag=rng.uniform(2, 8) * 3600.0 if fam.signature else None,
                  sources=ACTIVE_SOURCES)
        f.family = fam.name
        f.quiet = quiet
        f.campaign = cid
        f.wave = wave
        f.role = "payload" if parent else ("dropper" if fam.payload else "primary")
        if parent is not None:
            f.parent = parent.sha
        self.files.append(f)
        return f

    def _burst(self, rng: random.Random, planned: list[tuple[float, SimFile, int, int, str,
                                                               bool]],
               f: SimFile, payload: SimFile | None, org: int, t: float, hour: float) -> None:
        """Several devices of one org hit within minutes; droppers drop their payload."""
        size = self.fleet.sizes[org]
        k = min(size, rng.randint(2, 8))
        first = first_payload = True
        for dev in rng.sample(range(size), k):
            td = t + rng.uniform(0, hour / 3)
            for r in range(rng.randint(1, 3)):
                src = "behavior" if r == 0 else rng.choice(("edr", "antivirus", "asr", "network"))
                planned.append((td, f, org, dev, src, first))
                first = False
                td += rng.uniform(1, 120)
            if payload is not None:
                tp = td + rng.uniform(5, 120)
                for r in range(rng.randint(1, 2)):
                    planned.append((tp, payload, org, dev, "edr" if r == 0 else "behavior",
                                    first_payload))
                    first_payload = False
                    tp += rng.uniform(1, 60)

    # -- the stream --
