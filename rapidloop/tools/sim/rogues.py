"""Rogue tenants: orgs that lie to the loop, and the lies they tell.

A *flooder* sends bursts of fabricated, maximally scary reports (and
``org_report`` malicious feedback) about popular signed benign software from
many of its devices, hoping its volume passes for consensus and gets the
files blocked for everyone. A *whitewasher* learns of campaign hashes after
they start (sometimes it was really hit, sometimes not) and sends
``org_report`` benign feedback plus fabricated clean reports, hoping to get
real malware unblocked for everyone. Every rogue line is a valid contract
message: the engine has to see through lies, not parse errors. Rogues draw
from a random stream of their own, so their knobs never reshape the benign
world.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from .catalog import Catalog, Fleet, SimFile
from .events import Push
from .params import MAX_ROGUE_SHARE, ROGUE_TARGET_RANKS, SimParams

# What a flooder claims: the behaviours most policies block on sight, plus some colour.
_SCARY = ("ransomware_encryption", "credential_dumping", "process_injection")
_SCARY_EXTRA = ("defense_evasion", "c2_beacon", "persistence", "lateral_movement")
# What a whitewasher forges: a signer that would make a file look vendor-shipped.
_FORGED_SIGNERS = ("Microsoft Corporation", "Google LLC", "Adobe Inc.", "Zoom Video "
                   "Communications, Inc.")


ROGUE_REPORT, ROGUE_FEEDBACK = 3, 4       # the schedule's kinds for rogue lines


class Rogues:
    """Who the rogues are, the devices they report from, and what they attack or defend."""

    def __init__(self, rng: random.Random, p: SimParams, fleet: Fleet,
                 catalog: Catalog) -> None:
        """Pick the rogue tenants, the devices they report from and the flooders' targets.

        Rogues are drawn among orgs big enough to report from ``rogue_devices``
        devices (a flood from one laptop would be trivially discounted) and take
        at most a third of all orgs, so a tiny world keeps honest majorities.
        Flooders attack popular, mostly signed software: that is what hurts
        most when blocked everywhere, and what a naive consensus rule would
        happily block on volume.
        """
        self.p = p
        cap = p.orgs // 3
        n_flood = min(p.rogue_flooders, cap)
        n_white = min(p.rogue_whitewashers, cap - n_flood)
        order = sorted(range(p.orgs), key=lambda o: (fleet.sizes[o] < p.rogue_devices,
                                                     rng.random()))
        chosen = order[:n_flood + n_white]
        self.devices: dict[int, list[int]] = {
            o: sorted(rng.sample(range(fleet.sizes[o]),
                                 min(fleet.sizes[o], p.rogue_devices)))
            for o in chosen}
        lo, hi = ROGUE_TARGET_RANKS
        pool = [f for f in catalog.ranked[lo:hi] if f.kind == "app"] or \
            [f for f in catalog.ranked if f.kind == "app"] or list(catalog.ranked)
        signed = [f for f in pool if f.file["signed"]]
        unsigned = [f for f in pool if not f.file["signed"]]
        taken: set[str] = set()
        self.flooders: list[tuple[int, list[SimFile]]] = []
        for org in chosen[:n_flood]:
            targets: list[SimFile] = []
            for _ in range(p.rogue_targets):
                # mostly signed: the software every tenant runs and trusts
                prefer = signed if (rng.random() < 0.85 or not unsigned) else unsigned
                free = [f for f in prefer if f.sha not in taken] or \
                    [f for f in pool if f.sha not in taken]
                if not free:
                    break
                f = free[int(rng.random() * len(free))]
                taken.add(f.sha)
                targets.append(f)
            self.flooders.append((org, targets))
        self.whitewashers = chosen[n_flood:]
        self.attacked: dict[str, None] = {}      # insertion-ordered sets of sha256
        self.defended: dict[str, None] = {}

    def plan(self, epoch: int, rng: random.Random,
             defend: list[tuple[int, list[SimFile], float]], push: Push) -> int:
        """Schedule this epoch's rogue reports and feedback; returns the reports planned.

        Each (rogue, hash, burst) keeps its first report through thinning, and
        its ``org_report`` comes after that report, so a rogue's feedback never
        precedes a sighting of the file it is about.
        """
        p = self.p
        e0 = p.start + epoch * p.duration_s
        e1 = e0 + p.duration_s
        hour = 3600.0 * min(1.0, p.duration_s / 86400.0)
        reports: list[tuple[float, tuple[SimFile, int, int, str, str], bool]] = []
        feedback: list[tuple[float, tuple[SimFile, str, str, int]]] = []
        for org, targets in self.flooders:
            if not targets or not p.rogue_flood_reports:
                continue
            devs = self.devices[org]
            n_bursts = rng.randint(4, 10)
            weights = [0.2 + rng.random() for _ in range(n_bursts)]
            total = sum(weights)
            reported: set[str] = set()
            for w in weights:
                tb = e0 + rng.uniform(0.03, 0.95) * p.duration_s
                length = rng.uniform(0.1, 0.5) * hour
                n = max(len(targets), round(p.rogue_flood_reports * w / total))
                for f in targets:   # every burst names every target at least once
                    t = tb + rng.uniform(0.0, 60.0)
                    dev = devs[int(rng.random() * len(devs))]
                    reports.append((t, (f, org, dev, rng.choice(("behavior", "edr")), "flood"),
                                    True))
                    if f.sha not in reported or rng.random() < 0.3:
                        reported.add(f.sha)
                        feedback.append((t + rng.uniform(60.0, 600.0),
                                         (f, "malicious", "org_report", org)))
                for _ in range(n - len(targets)):
                    f = targets[int(rng.random() * len(targets))]
                    dev = devs[int(rng.random() * len(devs))]
                    src = rng.choice(("behavior", "edr", "antivirus"))
                    reports.append((tb + rng.random() * length, (f, org, dev, src, "flood"),
                                    False))
        n_hashes = Counter[int]()
        for ww, files, _ in defend:
            n_hashes[ww] += len(files)
        for ww, files, t_w in defend:
            devs = self.devices[ww]
            per_hash = max(3, round(p.rogue_whitewash_reports / n_hashes[ww]))
            for f in files:
                t_learn = t_w + rng.uniform(0.5, 3.0) * hour   # it hears of the file late
                reports.append((t_learn, (f, ww, devs[int(rng.random() * len(devs))],
                                          "antivirus", "clean"), True))
                feedback.append((t_learn + rng.uniform(60.0, 900.0),
                                 (f, "benign", "org_report", ww)))
                bursts = [t_learn + rng.uniform(0.0, 4.0) * hour
                          for _ in range(rng.randint(1, 3))]
                for _ in range(per_hash - 1):
                    dev = devs[int(rng.random() * len(devs))]
                    src = rng.choice(("antivirus", "edr", "behavior"))
                    tb = bursts[int(rng.random() * len(bursts))]
                    reports.append((tb + rng.random() * 0.3 * hour, (f, ww, dev, src, "clean"),
                                    False))
        reports = [r for r in reports if r[0] < e1]
        cap = int(p.reports * MAX_ROGUE_SHARE)
        if len(reports) > cap:   # small runs: thin the flood, keep each burst's opening
            essential = [r for r in reports if r[2]]
            rest = [r for r in reports if not r[2]]
            reports = essential + rng.sample(rest, max(0, min(len(rest), cap - len(essential))))
        for t, payload, _ in reports:
            push(t, ROGUE_REPORT, payload)
        for t, fb in feedback:
            if t < e1:
                push(t, ROGUE_FEEDBACK, fb)
        return len(reports)

    def fabricate(self, t: float, f: SimFile, org: int, dev: int, source: str, mode: str,
                  report_id: str, fleet: Fleet, rng: random.Random) -> dict[str, Any]:
        """A fabricated report: ``flood`` claims the worst, ``clean`` claims nothing at all.

        Both copy the file's real name, size and type (a lie has to be about the
        file others see), but not its sensors' opinion: a flooder reports the
        behaviours and scores that block on sight, a whitewasher no behaviour,
        near-zero scores and no signer or a forged one.
        """
        (self.attacked if mode == "flood" else self.defended)[f.sha] = None
        f.rogue = "target" if mode == "flood" else "whitewashed"
        rnd = rng.random
        file = f.file
        if mode == "flood":
            behaviors = [b for b in _SCARY if rnd() < 0.75] or [_SCARY[int(rnd() * 3)]]
            behaviors.extend(b for b in _SCARY_EXTRA if rnd() < 0.3)
            verdicts = {"static_ml": round(0.95 + 0.04 * rnd(), 3), "av_signature": 1.0}
            if rnd() < 0.6:   # "it was unsigned and in temp on my machine"
                file = {**file, "signed": False, "signer": None,
                        "path": ("temp", "downloads", "user")[int(rnd() * 3)]}
        else:
            behaviors = []
            verdicts = {"static_ml": round(0.01 + 0.07 * rnd(), 3), "av_signature": 0.0}
            if rnd() < 0.35:
                file = {**file, "signed": True, "path": "program_files",
                        "signer": _FORGED_SIGNERS[int(rnd() * len(_FORGED_SIGNERS))]}
            else:
                file = {**file, "signed": False, "signer": None}
        return {
            "report_id": report_id,
            "ts": t,
            "org_id": fleet.org_ids[org],
            "device_id": fleet.device_id(org, dev),
            "sha256": f.sha,
            "source": source,
            "file": file,
            "behaviors": behaviors,
            "verdicts": verdicts,
            "parent_sha256": None,
        }
