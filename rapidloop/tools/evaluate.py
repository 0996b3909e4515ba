"""Scoring a replay against a simulated world's ground truth.

A world directory (from ``rapidloop simulate --out``) holds the input and,
beside it, the truth the engine never reads. This module replays the
decisions' effect over event time exactly as enforcement points would apply
them (the contract's most-specific-active-decision rule) and measures what
the loop is for (``rapidloop.schemas.enforcement``): malicious sightings that met a
block already in force (protection), benign sightings that did (collateral), how fast campaigns were
blocked everywhere, whether rogue tenants achieved anything, and how well
each classifier ranks files on the feedback stream (prequential: every label
is scored before it is learned).

"Blocked before its third org" is measured per hash as well as per campaign:
a campaign counts as stopped as soon as any one of its hashes is blocked, so
a world of many campaigns whose *other* hashes keep spreading can look
stopped; ``multi_org_blocked_before_third_org`` asks it of every malicious
hash that actually spread to three honest orgs.

The classifiers learn the feedback stream's labels, noise included (that is
what the engine gets), but their ranking is measured against the true label
of each file from ``truth.jsonl``: a sandbox that is wrong 1% of the time
should not make a perfect ranker look imperfect, nor reward a model for
reproducing the sandbox's mistakes.

Poisoning is judged from ``world.json``'s ``rogues`` (which orgs lie, which
benign files the flooders attacked, which malware the whitewashers vouched
for): a rogue may do what it likes within its own org, so only effects that
reach other tenants count.

:func:`evaluate_world` is the whole of ``rapidloop evaluate``'s work: the
world's input replayed (``rapidloop.flows.replay.decide_files``), its
decisions scored against the truth, and the classifiers judged.
"""

from __future__ import annotations

import gzip
import json
import math
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rapidloop.base.config import Config
from rapidloop.operators.correlate import Verdict
from rapidloop.schemas.enforcement import Timeline
from rapidloop.schemas.model import Feedback, Report
from rapidloop.schemas.wire import (
    DecisionRecord,
    InvalidMessage,
    Limits,
    WireParser,
    read_decision,
)
from rapidloop.tools.modelwalk import walk


def read_jsonl(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line:
                yield line


def world_file(world: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl.gz", f"{stem}.jsonl"):
        if (world / name).is_file():
            return world / name
    raise FileNotFoundError(f"{world} has no {stem}.jsonl(.gz)")


def load_events(world: Path, cfg: Config) -> tuple[list[Report], list[Feedback]]:
    """The world's valid, de-duplicated input (bad lines are the engine's business, not ours)."""
    parser = WireParser(Limits.from_config(cfg))
    reports: dict[str, Report] = {}
    for line in read_jsonl(world_file(world, "reports")):
        try:
            r = parser.report(line)
        except InvalidMessage:
            continue
        reports.setdefault(r.report_id, r)
    feedback: dict[str, Feedback] = {}
    for line in read_jsonl(world_file(world, "feedback")):
        try:
            fb = parser.feedback(line)
        except InvalidMessage:
            continue
        feedback.setdefault(fb.feedback_id, fb)
    rs = sorted(reports.values(), key=lambda r: r.ts)
    return rs, sorted(feedback.values(), key=lambda f: f.ts)


def load_truth(world: Path) -> dict[str, dict[str, Any]]:
    return {t["sha256"]: t for t in map(orjson.loads, read_jsonl(world / "truth.jsonl"))}


@dataclass
class Result:
    protection_rate: float = 0.0
    malicious_events: int = 0
    median_time_to_global_s: float = math.inf
    p90_time_to_global_s: float = math.inf
    malicious_hashes: int = 0
    globally_blocked_malicious: int = 0
    campaigns_stopped_before_third_org: float = 0.0
    # Malicious hashes whose honest sightings reached 3 distinct orgs, and the share of them
    # blocked globally strictly before the first report from the third (None: no such hash).
    multi_org_malicious_hashes: int = 0
    multi_org_blocked_before_third_org: float | None = None
    collateral_rate: float = 0.0
    benign_events: int = 0
    benign_hashes_blocked_global: int = 0
    benign_hashes_blocked_org: int = 0
    benign_hashes_blocked_device: int = 0     # ...at device scope, in honest orgs
    malicious_hashes_blocked_any: int = 0
    poisoned_global_blocks: int | None = None        # rogue targets ever blocked globally
    poisoned_local_blocks: int | None = None         # ...at org/device scope in honest orgs
    malware_unblocked_for_others: int | None = None  # whitewashed malware unblocked/allowed
    malicious_unblocked_beyond_rogues: int | None = None  # any malware, whatever the cause
    rogue_orgs: list[str] = field(default_factory=list)
    rogue_targets: int = 0
    rogue_whitewashed: int = 0
    rogue_reports: int = 0
    rogue_feedback: int = 0
    labels: dict[str, int] = field(default_factory=dict)   # trusted labels by true class
    classifiers: dict[str, dict[str, float]] = field(default_factory=dict)
    timeline: list[tuple[float, float, float]] = field(default_factory=list)  # hour, prot, coll
    learning: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return math.inf
    vs = sorted(values)
    return vs[min(len(vs) - 1, int(q * len(vs)))]


def score_decisions(reports: list[Report], truth: dict[str, dict[str, Any]],
                    decisions: Iterable[DecisionRecord | dict[str, Any] | bytes],
                    world_meta: dict[str, Any]) -> Result:
    """The figures of a replay's ``decisions`` over the world's ``reports`` and ``truth``.

    Every decision must say what it is about (``read_decision(strict=True)``): a
    decision without its file, action, scope or event time is an error, named.
    """
    decisions = [read_decision(d, strict=True) for d in decisions]   # each with an event_ts
    res = Result()
    timeline = Timeline(decisions)
    first_report: dict[str, float] = {}
    first_global: dict[str, float] = {}
    benign_global: set[str] = set()
    benign_org: set[str] = set()
    benign_device: set[str] = set()
    malicious_blocked: set[str] = set()
    # A rogue tenant's own devices are its business (its org_reports act for it alone, and
    # its fabricated reports are not sightings anyone needs protecting from): protection and
    # collateral are measured on the honest tenants' sightings.
    rogue_orgs = set((world_meta.get("rogues") or {}).get("orgs", []))
    for d in decisions:
        if d.action != "block":
            continue
        sha = d.sha256
        label = truth.get(sha, {}).get("label")
        if label == "malicious":
            malicious_blocked.add(sha)
        if d.scope == "global":
            t = d.event_ts
            first_global[sha] = min(t, first_global.get(sha, t))
            if label == "benign":
                benign_global.add(sha)
        elif label == "benign" and d.org_id not in rogue_orgs:
            if d.scope == "org":
                benign_org.add(sha)
            elif d.scope == "device":
                benign_device.add(sha)
    hourly: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # mal, mal_cov, ben, ben_cov
    t0 = reports[0].ts if reports else 0.0
    covered_mal = covered_ben = 0
    honest_orgs: dict[str, set[str]] = defaultdict(set)   # malicious hash -> orgs, up to 3
    third_org: dict[str, float] = {}                      # ...-> first report from its 3rd
    for r in reports:
        t = truth.get(r.sha256)
        if t is None or r.org_id in rogue_orgs:
            continue
        if t["label"] == "malicious" and r.sha256 not in third_org:
            seen = honest_orgs[r.sha256]
            seen.add(r.org_id)
            if len(seen) == 3:
                third_org[r.sha256] = r.ts
        seen_before = r.sha256 in first_report
        first_report.setdefault(r.sha256, r.ts)
        covered = timeline.blocked(r.sha256, r.org_id, r.device_id, r.ts, inclusive=False)
        h = hourly[int((r.ts - t0) // 3600)]
        if t["label"] == "malicious":
            if seen_before:
                res.malicious_events += 1
                covered_mal += covered
                h[0] += 1
                h[1] += covered
        else:
            res.benign_events += 1
            covered_ben += covered
            h[2] += 1
            h[3] += covered
    res.protection_rate = covered_mal / res.malicious_events if res.malicious_events else 1.0
    res.collateral_rate = covered_ben / res.benign_events if res.benign_events else 0.0
    mal = [s for s, t in truth.items() if t["label"] == "malicious" and s in first_report]
    res.malicious_hashes = len(mal)
    delays = [first_global[s] - first_report[s] if s in first_global else math.inf for s in mal]
    res.globally_blocked_malicious = sum(1 for d in delays if d != math.inf)
    res.malicious_hashes_blocked_any = len(malicious_blocked & set(mal))
    res.median_time_to_global_s = statistics.median(delays) if delays else math.inf
    res.p90_time_to_global_s = _pct(delays, 0.9)
    res.benign_hashes_blocked_global = len(benign_global)
    res.benign_hashes_blocked_org = len(benign_org)
    res.benign_hashes_blocked_device = len(benign_device)
    res.multi_org_malicious_hashes = len(third_org)
    res.multi_org_blocked_before_third_org = blocked_before(third_org, first_global)
    res.campaigns_stopped_before_third_org = _stopped_before_third_org(
        reports, truth, first_global)
    rogue = world_meta.get("rogues")
    if rogue is not None:
        _score_poisoning(res, rogue, truth, decisions, _first_said(reports, rogue))
    res.timeline = [(hour, (v[1] / v[0]) if v[0] else math.nan, (v[3] / v[2]) if v[2] else 0.0)
                    for hour, v in sorted(hourly.items())]
    return res


def blocked_before(deadline: dict[str, float], first_global: dict[str, float]) -> float | None:
    """Share of the hashes in ``deadline`` whose first global block came strictly before it.

    The first global block stands for "in force" (a block lifted before the deadline still
    counts): the question is whether the loop acted on the evidence in time, and lifted
    blocks are measured by protection. ``None`` when no hash has a deadline: a world in
    which nothing spread to three orgs says nothing about this, and 1.0 would flatter.

    >>> blocked_before({"a": 10.0, "b": 10.0, "c": 10.0}, {"a": 5.0, "b": 10.0})
    0.3333333333333333
    >>> blocked_before({}, {"a": 1.0}) is None
    True
    """
    if not deadline:
        return None
    hits = sum(1 for s, t in deadline.items() if first_global.get(s, math.inf) < t)
    return hits / len(deadline)


def params_line(meta: dict[str, Any]) -> str:
    """The notable drawn parameters of a world (``world.json`` ``"params"``), on one line.

    With per-seed worlds the figures of two seeds are not comparable without them: a
    seed of 300 campaigns and 2% label noise is another test than one of 10 campaigns.
    Tolerant of worlds that record fewer of them (older or fixed-world simulators):
    what is missing is left out. Sandbox coverage is the share of all hashes detonated
    when the world draws it, else the share of ordinary-looking hashes.

    >>> params_line({"params": {"orgs": 212, "campaigns": 48, "hard_negative_share": 0.061,
    ...     "hard_negative_reports": 0.2, "sandbox_coverage": 0.31, "label_noise": 0.02,
    ...     "reports": 200000}})
    'orgs 212, campaigns 48, hard negatives 6.1% (20.0% of reports), sandbox 31.0% of hashes, \
label noise 2.0%, reports 200,000'
    >>> params_line({"params": {"orgs": 300, "sandbox_share": 0.1}})
    'orgs 300, sandbox 10.0% of ordinary hashes'
    >>> params_line({})
    'parameters not recorded'
    """
    p = meta.get("params")
    if not isinstance(p, dict):
        return "parameters not recorded"

    def num(key: str) -> float | None:
        v = p.get(key)
        return None if isinstance(v, bool) or not isinstance(v, (int, float)) else float(v)

    parts = []
    for key in ("orgs", "campaigns"):
        if (v := num(key)) is not None:
            parts.append(f"{key} {v:,.0f}")
    if (hn := num("hard_negative_share")) is not None:
        share = num("hard_negative_reports")
        parts.append(f"hard negatives {hn:.1%}"
                     + (f" ({share:.1%} of reports)" if share is not None else ""))
    if (cov := num("sandbox_coverage")) is not None:
        parts.append(f"sandbox {cov:.1%} of hashes")
    elif (cov := num("sandbox_share")) is not None:
        parts.append(f"sandbox {cov:.1%} of ordinary hashes")
    if (noise := num("label_noise")) is not None:
        parts.append(f"label noise {noise:.1%}")
    if (n := num("reports")) is not None:
        parts.append(f"reports {n:,.0f}")
    return ", ".join(parts) or "parameters not recorded"


def _first_said(reports: list[Report], rogue: dict[str, Any]) -> dict[str, float]:
    """When a rogue tenant first reported each file (its feedback follows its reports)."""
    rogue_orgs = set(rogue.get("orgs", []))
    first: dict[str, float] = {}
    for r in reports:
        if r.org_id in rogue_orgs and (r.sha256 not in first or r.ts < first[r.sha256]):
            first[r.sha256] = r.ts
    return first


def _score_poisoning(res: Result, rogue: dict[str, Any], truth: dict[str, dict[str, Any]],
                     decisions: list[DecisionRecord], said: dict[str, float]) -> None:
    """What the rogue tenants achieved outside their own orgs.

    A decision "reaches beyond the rogues" when its scope is global, or it is
    an org/device decision for an org that is not a rogue: a rogue's lies
    may rightly move its own enforcement (it is that tenant's call), never
    anyone else's. It is the rogue's doing only once the rogue has spoken
    about the file (``said``): a noisy sandbox "benign" that unblocks a
    whitewashed hash hours before its whitewasher first reports it is the
    loop's own mistake, counted in ``malicious_unblocked_beyond_rogues``.
    """
    rogue_orgs = set(rogue.get("orgs", []))
    targets = set(rogue.get("targets", []))
    whitewashed = set(rogue.get("whitewashed", []))
    res.rogue_orgs = sorted(rogue_orgs)
    res.rogue_targets = len(targets)
    res.rogue_whitewashed = len(whitewashed)
    res.rogue_reports = int(rogue.get("reports", 0))
    res.rogue_feedback = int(rogue.get("feedback", 0))

    def beyond(d: DecisionRecord) -> bool:
        return d.scope == "global" or d.org_id not in rogue_orgs

    poisoned_global: set[str] = set()
    poisoned_local: set[str] = set()
    unblocked_whitewashed: set[str] = set()
    unblocked_any: set[str] = set()
    for d in decisions:
        sha, action = d.sha256, d.action
        after = sha in said and d.event_ts >= said[sha]
        if action == "block" and sha in targets and beyond(d) and after:
            (poisoned_global if d.scope == "global" else poisoned_local).add(sha)
        elif action in ("unblock", "allow") and beyond(d) \
                and truth.get(sha, {}).get("label") == "malicious":
            unblocked_any.add(sha)
            if sha in whitewashed and after:
                unblocked_whitewashed.add(sha)
    res.poisoned_global_blocks = len(poisoned_global)
    res.poisoned_local_blocks = len(poisoned_local)
    res.malware_unblocked_for_others = len(unblocked_whitewashed)
    res.malicious_unblocked_beyond_rogues = len(unblocked_any)


def _stopped_before_third_org(reports: list[Report], truth: dict[str, dict[str, Any]],
                              first_global: dict[str, float]) -> float:
    """Share of campaigns with a hash blocked globally before the campaign reached a 3rd org."""
    orgs: dict[str, list[str]] = defaultdict(list)
    third: dict[str, float] = {}
    for r in reports:
        camp = truth.get(r.sha256, {}).get("campaign")
        if camp is None or camp in third:
            continue
        if r.org_id not in orgs[camp]:
            orgs[camp].append(r.org_id)
            if len(orgs[camp]) == 3:
                third[camp] = r.ts
    campaigns = {t["campaign"] for t in truth.values() if t.get("campaign")}
    if not campaigns:
        return 1.0
    stopped = 0
    for camp in campaigns:
        blocks = [ts for s, ts in first_global.items() if truth.get(s, {}).get("campaign") == camp]
        if blocks and min(blocks) < third.get(camp, math.inf):
            stopped += 1
    return stopped / len(campaigns)


class _Prequential:
    """Streaming ROC AUC (exact, by rank) and log loss of one scorer."""

    def __init__(self) -> None:
        self.pairs: list[tuple[float, bool]] = []
        self.loss = 0.0

    def add(self, p: float, y: bool) -> None:
        self.pairs.append((p, y))
        q = min(max(p, 1e-6), 1 - 1e-6)
        self.loss += -math.log(q if y else 1 - q)

    def auc(self, upto: int | None = None) -> float:
        pairs = self.pairs[:upto] if upto else self.pairs
        pos = sum(1 for _, y in pairs if y)
        neg = len(pairs) - pos
        if not pos or not neg:
            return math.nan
        ranked = sorted(pairs, key=lambda t: t[0])
        rank_sum, i = 0.0, 0
        while i < len(ranked):
            j = i
            while j < len(ranked) and ranked[j][0] == ranked[i][0]:
                j += 1
            avg = (i + j + 1) / 2
            rank_sum += avg * sum(1 for k in range(i, j) if ranked[k][1])
            i = j
        return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)

    def log_loss(self) -> float:
        return self.loss / len(self.pairs) if self.pairs else math.nan


def prequential(cfg: Config, reports: list[Report], feedback: list[Feedback],
                truth: dict[str, dict[str, Any]] | None = None,
                labels: dict[str, int] | None = None,
                ) -> tuple[dict[str, dict[str, float]], dict[str, list[tuple[int, float]]]]:
    """Score each trusted label's file with every classifier before learning it, in
    event-time order, against the file's true label.

    Uses the same plain operators as the dataflow (one shard, one replica:
    every replica of the flow sees the same labels in the same order). The
    models learn the feedback's verdict (``modelwalk.walk``), noise and all;
    the score is compared with ``truth`` when it knows the file, else with
    the verdict. ``labels``, if given, receives counts of the trusted labels
    by true class and of the noisy ones.
    """
    truth = truth or {}
    stream: list[tuple[float, int, Report | Feedback]] = (
        [(r.ts, 0, r) for r in reports] + [(f.ts, 1, f) for f in feedback])
    stream.sort(key=lambda t: (t[0], t[1]))
    metrics: dict[str, _Prequential] = defaultdict(_Prequential)
    for item, ensemble in walk(cfg, (ev for _, _, ev in stream)):
        if isinstance(item, Verdict) and item.feedback.trusted and item.features:
            said = item.feedback.verdict == "malicious"
            true_label = truth.get(item.feedback.sha256, {}).get("label")
            y = said if true_label is None else true_label == "malicious"
            if labels is not None:
                labels["malicious" if y else "benign"] = labels.get(
                    "malicious" if y else "benign", 0) + 1
                labels["noisy"] = labels.get("noisy", 0) + (said != y)
            score, per = ensemble.score(item.features)
            for name, p in per.items():
                metrics[name].add(p, y)
            metrics["ensemble"].add(score, y)
    table = {name: {"roc_auc": m.auc(), "log_loss": m.log_loss(), "labels": len(m.pairs)}
             for name, m in metrics.items()}
    curves: dict[str, list[tuple[int, float]]] = {}
    for name, m in metrics.items():
        n = len(m.pairs)
        steps = sorted({max(20, n * k // 20) for k in range(1, 21)} & set(range(1, n + 1)))
        curves[name] = [(s, m.auc(s)) for s in steps]
    return table, curves


class WorldError(RuntimeError):
    """The directory is not a simulated world (one line: what is missing)."""


@dataclass
class Evaluation:
    """One world's figures, and what they were computed over."""

    result: Result
    meta: dict[str, Any]      # world.json: the world's parameters and rogues ({} if none)
    reports: int              # valid, de-duplicated reports
    decisions: int
    replay_s: float           # how long the replay of the input took


def evaluate_world(cfg: Config, world: Path) -> Evaluation:
    """Replay the world's input with ``cfg`` and score the decisions against its truth.

    WorldError if ``world`` is not a simulated world (``rapidloop simulate --out``).
    """
    from rapidloop.flows.replay import decide_files
    from rapidloop.schemas.intake import FEEDBACK, REPORT

    try:
        reports_path = world_file(world, "reports")
        feedback_path = world_file(world, "feedback")
        truth = load_truth(world)
    except (FileNotFoundError, OSError) as exc:
        raise WorldError(f"not a simulated world: {exc}") from None
    meta_path = world / "world.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decisions.jsonl"
        files = [(str(reports_path), str(reports_path)), (str(feedback_path), str(feedback_path))]
        decide_files(cfg, files, {str(reports_path): REPORT, str(feedback_path): FEEDBACK},
                     str(out))
        decisions = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    replay_s = time.perf_counter() - t0
    reports, feedback = load_events(world, cfg)
    res = score_decisions(reports, truth, decisions, meta)
    res.classifiers, res.learning = prequential(cfg, reports, feedback, truth, res.labels)
    return Evaluation(res, meta, len(reports), len(decisions), replay_s)
