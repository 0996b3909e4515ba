"""A seeded fleet simulator: the world rapidloop is built to protect, in miniature.

It exists so the engine can be exercised end to end without real sensors: a
day of traffic from organizations of very different sizes, benign software
whose popularity is heavy-tailed (so "seen in many orgs" is not by itself a
sign of malice), hard negatives (admin, backup, installer, remote-access and
scripting tools that *behave* like malware), malware campaigns that start in
one tenant and spread to others in bursts while rotating hashes, delayed and
slightly noisy sandbox verdicts (biased towards files that look suspicious, as
real submission pipelines are), rogue tenants that lie to poison the shared
verdict, and the dirt of real pipelines (redelivered duplicates, skewed clocks,
malformed lines).

Rogue tenants look like any other org (same id scheme, same benign traffic);
only ``world.json`` says who they are. A *flooder* sends bursts of fabricated,
maximally scary reports (and ``org_report`` malicious feedback) about popular
signed benign software from many of its devices, hoping its volume passes for
consensus and gets the files blocked for everyone. A *whitewasher* learns of
campaign hashes after they start (sometimes it was really hit, sometimes not)
and sends ``org_report`` benign feedback plus fabricated clean reports (no
behaviours, low verdicts, no or a forged signer), hoping to get real malware
unblocked for everyone. Every rogue line is a valid contract message: the
engine has to see through lies, not parse errors.

Worlds drawn per seed (:mod:`rapidloop.tools.worldparams`) set a few more knobs:
hard negatives picked apart at a share of all reports and spread across orgs,
sandbox detonation by a coverage of hashes rather than two fixed shares,
devices whose sensors send no scores, and one org's sensors glitching for an
hour or two. Their defaults leave the fixed world byte-identical.

Design constraints and why:

* **Streaming.** :meth:`Simulator.events` is a generator in event-time order.
  Benign traffic is drawn as sorted uniform order statistics one at a time, so
  any number of reports costs O(1) memory; everything scheduled for later
  (campaign sightings, dropped payloads, verdicts, redeliveries) waits in a
  heap whose size is bounded by the number of hashes, not reports.
* **Deterministic.** Every random draw comes from ``random.Random`` instances
  seeded with strings (stable across processes, unlike ``hash()``), and the
  output is serialised with stable key order, so the same parameters give the
  same bytes. The benign *world* (orgs, fleets, software catalogue) depends on
  the seed only; the *traffic* (campaigns, sightings, ids) also on the start
  time, so a live run started "now" gets fresh campaigns and report ids while
  the benign world the engine has learned stays the same.
* **Exact volume.** One epoch (``duration_s`` of event time) carries exactly
  ``reports`` report lines (campaign sightings + rogue fabrications + benign
  sightings + redelivered duplicates + malformed lines), unless campaigns alone
  need more.
* **Truth stays outside.** Labels, campaigns and families never appear in the
  wire data; they are available from :meth:`Simulator.truth` for evaluation.

The parts, one concept each, live in :mod:`rapidloop.tools.sim`: the parameters
(``params``), the benign world (``catalog``), campaigns (``campaigns``),
rogue tenants (``rogues``), what sensors say (``sensors``), sandbox and
analyst verdicts (``verdicts``), malformed lines (``dirt``) and the files
(``output``). This module is the stream that ties them together, and the
public surface every caller imports.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import orjson

from rapidloop.tools.sim.campaigns import SIGHTING, Campaigns
from rapidloop.tools.sim.catalog import FAMILIES, Catalog, Family, Fleet, SimFile
from rapidloop.tools.sim.dirt import corrupt_feedback, corrupt_report
from rapidloop.tools.sim.events import FEEDBACK, REPORT, Event, SimStats
from rapidloop.tools.sim.output import WriteResult, write_files, write_truth
from rapidloop.tools.sim.params import (
    DRAWN_ONLY,
    SimParams,
    SimulationError,
    format_ts,
    parse_ts,
)
from rapidloop.tools.sim.rogues import ROGUE_FEEDBACK, ROGUE_REPORT, Rogues
from rapidloop.tools.sim.sensors import SensorQuirks, behaviors, verdicts
from rapidloop.tools.sim.verdicts import VERDICT, VerdictPipeline

__all__ = ["FAMILIES", "FEEDBACK", "REPORT", "Event", "Family", "SimParams", "SimStats",
           "SimulationError", "Simulator", "WriteResult", "format_ts", "parse_ts", "write_files",
           "write_truth"]

RAW_FEEDBACK = 2          # the schedule's kind for a prepared raw line (duplicate, malformed)


class Simulator:
    """A seeded world and its event stream; call :meth:`events` once."""

    def __init__(self, params: SimParams) -> None:
        params.validate()
        self.p = params
        self.stats = SimStats()
        world = random.Random(f"rapidloop-world:{params.seed}")
        self.fleet = Fleet.draw(world, params.orgs, params.devices_min, params.devices_max,
                                params.org_size_alpha)
        self.catalog = Catalog(world, params, self.fleet)
        # A separate stream, so rogue knobs never reshape the benign world.
        self.rogues = Rogues(random.Random(f"rapidloop-rogues:{params.seed}"), params,
                             self.fleet, self.catalog)
        self.quirks = SensorQuirks(params, self.fleet, self.rogues.devices)
        self.verdicts = VerdictPipeline(params, self.stats)
        self.planner = Campaigns(params, self.fleet, self.rogues.whitewashers)
        self.campaigns = self.planner.campaigns
        start_ms = math.floor(params.start * 1000.0 + 0.5)
        self._traffic_key = f"{params.seed}:{start_ms}"
        tag = hashlib.blake2b(self._traffic_key.encode(), digest_size=4).hexdigest()
        self._report_prefix = f"r-{tag}-"
        self._feedback_prefix = f"f-{tag}-"
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._n_reports = 0
        self._n_feedback = 0
        self._recent: list[tuple[bytes, bytes | None, float]] = []
        self._rng = random.Random(f"rapidloop-traffic:{self._traffic_key}")

    @property
    def org_ids(self) -> list[str]:
        return self.fleet.org_ids

    @property
    def org_sizes(self) -> list[int]:
        return self.fleet.sizes

    @property
    def benign(self) -> list[SimFile]:
        """Every benign file of the world (apps, hard negatives, in-house software)."""
        return self.catalog.benign

    # -- the stream --

    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, payload))

    def events(self) -> Iterator[Event]:
        """Every report and feedback line, in (scheduled) event-time order."""
        p = self.p
        rng = self._rng
        rnd = rng.random
        heap = self._heap
        pop = heapq.heappop
        stats = self.stats
        epoch = 0
        while p.epochs is None or epoch < p.epochs:
            stats.epochs = epoch + 1
            n_campaign, defend = self.planner.plan_epoch(epoch, rng, self._push)
            stats.campaign_reports += n_campaign
            n_campaign += self.rogues.plan(epoch, rng, defend, self._push)
            slots = max(0, p.reports - n_campaign)
            n_dup = min(slots, round(p.reports * p.duplicate_share))
            n_mal = min(slots - n_dup, round(p.reports * p.malformed_share))
            if self.catalog.hard_list:
                # benign picks (redeliveries replay the same mix) carry hard_negative_reports
                # of all report lines
                picks = (slots - n_mal) * self.catalog.global_share
                target = (p.hard_negative_reports or 0.0) * p.reports
                self.catalog.hard_q = min(1.0, target / picks) if picks > 0 else 0.0
            e0 = p.start + epoch * p.duration_s
            span = p.duration_s
            u = 0.0
            for k in range(slots, 0, -1):
                # k-th smallest of k uniforms: sorted event times, one at a time.
                u = 1.0 - (1.0 - u) * rnd() ** (1.0 / k)
                t = e0 + u * span
                while heap and heap[0][0] <= t:
                    yield self._scheduled(pop(heap))
                r = rnd() * k
                if r < n_dup:
                    n_dup -= 1
                    if self._recent:
                        yield self._duplicate(rng)
                        continue
                elif r < n_dup + n_mal:
                    n_mal -= 1
                    yield self._malformed_report(t, rng)
                    continue
                yield self._benign(t, rng)
            epoch += 1
        while heap:
            yield self._scheduled(pop(heap))

    def _benign(self, t: float, rng: random.Random) -> Event:
        f, org, dev = self.catalog.pick(rng)
        names, cum = f.sources  # type: ignore[misc]
        i = bisect_right(cum, rng.random() * cum[-1])
        return self._report(t, f, org, dev, names[i if i < len(names) else -1], rng)

    def _scheduled(self, item: tuple[float, int, int, Any]) -> Event:
        t, _, kind, payload = item
        if kind == SIGHTING:
            f, org, dev, source = payload
            return self._report(t, f, org, dev, source, self._rng)
        if kind == VERDICT:
            return self._feedback(t, *payload)
        if kind == ROGUE_REPORT:
            f, org, dev, source, mode = payload
            self.stats.rogue_reports += 1
            rep = self.rogues.fabricate(t, f, org, dev, source, mode, self._next_report_id(),
                                        self.fleet, self._rng)
            return self._emit(t, f, org, rep, self._rng)
        if kind == ROGUE_FEEDBACK:
            self.stats.rogue_feedback += 1
            return self._feedback(t, *payload)
        value, key, dup = payload  # RAW_FEEDBACK: a prepared raw feedback line
        if dup:
            self.stats.feedback_duplicates += 1
        else:
            self.stats.feedback_malformed += 1
        self.stats.feedback += 1
        self._track_t(t)
        return Event(FEEDBACK, t, key, value, not dup, dup)

    def _track_t(self, t: float) -> None:
        st = self.stats
        if st.first_t is None:
            st.first_t = t
        st.last_t = t

    def _report_dict(self, t: float, f: SimFile, org: int, dev: int, source: str,
                     rng: random.Random) -> dict[str, Any]:
        rnd = rng.random
        p = self.p
        ts = t + (rnd() * 2.0 - 1.0) * p.jitter_s if rnd() < p.jitter_share else t
        rep = {
            "report_id": self._next_report_id(),
            "ts": ts,
            "org_id": self.fleet.org_ids[org],
            "device_id": self.fleet.device_id(org, dev),
            "sha256": f.sha_upper if rnd() < p.uppercase_share else f.sha,
            "source": source,
            "file": f.file,
            "behaviors": behaviors(f, source, rng),
            "verdicts": verdicts(f, t, source, rng),
            "parent_sha256": f.parent,
        }
        if self.quirks.active:
            self.quirks.apply(rep, t, org, dev, rng)
        return rep

    def _next_report_id(self) -> str:
        self._n_reports += 1
        return f"{self._report_prefix}{self._n_reports:010d}"

    def _report(self, t: float, f: SimFile, org: int, dev: int, source: str,
                rng: random.Random) -> Event:
        return self._emit(t, f, org, self._report_dict(t, f, org, dev, source, rng), rng)

    def _emit(self, t: float, f: SimFile, org: int, rep: dict[str, Any],
              rng: random.Random) -> Event:
        """Serialise a report and do the bookkeeping every sighting needs."""
        ts = rep["ts"]
        rep["ts"] = format_ts(ts)
        value = orjson.dumps(rep)
        if f.first_seen is None:
            f.first_seen = ts
            f.first_t = t
            suspicious = bool(rep["behaviors"]) or rep["verdicts"].get("static_ml", 0.0) >= 0.5
            self.verdicts.first_sighting(f, t, rng, suspicious, self._push)
        f.last_seen = ts
        f.reports += 1
        orgs = f.orgs
        if org not in orgs:
            orgs.add(org)
            if f.kind == "hard_negative" and rng.random() < self.p.org_report_share:
                # a tenant's false-positive report about a tool it knows is fine
                self._push(t + rng.uniform(600, 7200), VERDICT, (f, "benign", "org_report", org))
        recent = self._recent
        recent.append((value, f.sha_b, t))
        if len(recent) > 16:
            del recent[0]
        st = self.stats
        st.reports += 1
        self._track_t(t)
        return Event(REPORT, t, f.sha_b, value, False, False)

    def _feedback(self, t: float, f: SimFile, verdict: str, source: str,
                  org: int | None) -> Event:
        rng = self._rng
        p = self.p
        self._n_feedback += 1
        fb = {"feedback_id": f"{self._feedback_prefix}{self._n_feedback:08d}",
              "ts": format_ts(t), "sha256": f.sha, "verdict": verdict, "source": source,
              "org_id": self.fleet.org_ids[org] if org is not None else None}
        value = orjson.dumps(fb)
        if rng.random() < p.duplicate_share:
            self._push(t + rng.uniform(0.5, 30), RAW_FEEDBACK, (value, f.sha_b, True))
        if rng.random() < p.malformed_share:
            raw, key, reason = corrupt_feedback(fb, f.sha_b, rng)
            self.stats.malformed_by_reason[f"feedback_{reason}"] += 1
            self._push(t + rng.uniform(0.5, 30), RAW_FEEDBACK, (raw, key, False))
        st = self.stats
        st.feedback += 1
        st.feedback_by_source[source] += 1
        self._track_t(t)
        return Event(FEEDBACK, t, f.sha_b, value, False, False)

    def _duplicate(self, rng: random.Random) -> Event:
        """A redelivery: the very same bytes (same report_id) of a recent report."""
        value, key, t = self._recent[int(rng.random() * len(self._recent))]
        st = self.stats
        st.reports += 1
        st.report_duplicates += 1
        return Event(REPORT, t, key, value, False, True)

    def _malformed_report(self, t: float, rng: random.Random) -> Event:
        f, org, dev = self.catalog.pick(rng)
        rep = self._report_dict(t, f, org, dev, "antivirus", rng)
        rep["ts"] = format_ts(rep["ts"])
        raw, key, reason = corrupt_report(rep, f.sha_b, rng)
        st = self.stats
        st.reports += 1
        st.report_malformed += 1
        st.malformed_by_reason[reason] += 1
        self._track_t(t)
        return Event(REPORT, t, key, raw, True, False)

    # -- ground truth --

    def files(self) -> Iterator[SimFile]:
        yield from self.catalog.benign
        yield from self.planner.files

    def truth(self) -> Iterator[dict[str, Any]]:
        """One record per hash that was sighted: label, campaign, family, first seen."""
        for f in self.files():
            if f.first_seen is not None:
                yield f.truth(self.org_ids)

    def world(self) -> dict[str, Any]:
        """The parameters, tenants and campaign timelines: what an evaluator needs besides
        per-hash labels."""
        p = self.p
        params = asdict(p)
        params["start"] = format_ts(p.start)
        fields = SimParams.__dataclass_fields__
        for name in DRAWN_ONLY:
            if not p.varied and params[name] == fields[name].default:
                del params[name]
        if p.sandbox_coverage is not None:   # detonation goes by coverage, not these
            del params["sandbox_share"], params["sandbox_suspicious_share"]
        extra: dict[str, Any] = {}
        q = self.quirks
        if q.glitch_org >= 0:
            extra["glitch"] = {"org_id": self.org_ids[q.glitch_org], "mode": p.glitch_mode,
                               "behavior": p.glitch_behavior if p.glitch_mode == "behavior"
                               else None, "start": format_ts(q.glitch_t0),
                               "end": format_ts(q.glitch_t1), "reports": q.glitched}
        return {"params": params,
                "orgs": [{"org_id": o, "devices": s}
                         for o, s in zip(self.org_ids, self.org_sizes, strict=True)],
                "campaigns": self.campaigns,
                "rogues": {
                    "orgs": [self.org_ids[o] for o in self.rogues.devices],
                    "flooders": [self.org_ids[o] for o, _ in self.rogues.flooders],
                    "whitewashers": [self.org_ids[o] for o in self.rogues.whitewashers],
                    "targets": list(self.rogues.attacked),
                    "whitewashed": list(self.rogues.defended),
                    "reports": self.stats.rogue_reports,
                    "feedback": self.stats.rogue_feedback,
                },
                **extra,
                "stats": self.stats.as_dict()}
