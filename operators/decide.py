"""Stage two of the loop: score, learn, and decide, for one shard.

A ``Decider`` holds one replica of the classifier ensemble and the
enforcement state of the files its shard owns. Sightings of its own files are
scored and handed to the policy; every trusted verdict, whichever shard owns
the file, teaches the replica (the correlator broadcasts verdicts), so all
replicas learn from every label while reports are spread over all shards.
Only trusted verdicts (sandbox, analyst) teach: one tenant's ``org_report``
acts for that tenant but never moves the shared models.

Reports are scored a run at a time: the sightings between two labels see
the same models, so they are scored together (``Ensemble.score_batch``,
bit for bit the per-report scores) before the policy reads them one by one,
in order. A label is learned where it stands, and the reports after it are
scored by the models that learned it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from rapidloop.base.config import Config
from rapidloop.schemas.model import Decision

from .allowlist import AllowList
from .classifiers import Ensemble
from .correlate import Sighting, Verdict
from .lineage import LineageRecord
from .policy import Enforcement, Policy, Scored
from .reliability import SourceReliability
from .settings import DeciderSettings, Settings
from .signers import SignerRecord
from .snapshot import register
from .trust import OrgTrust

KIND = "decider"
# version 2: each file's enforcement row ends with its provisional org blocks (none before)
register(KIND, 2, {1: lambda state: {**state, "states": {
    sha: (*row, set()) for sha, row in state["states"].items()}}})

# Fewest sightings between two labels worth scoring as one batch: a batch costs ~40 µs of
# numpy calls whatever its size, then ~5 µs a report, against ~14 µs a report scored
# alone; from 5 reports on a batch is cheaper (measured on River 0.26.1, numpy 2.4, 2 cores;
# between two labels of ``python -m bench.stages``'s world there are ~25 on average).
BATCH_MIN = 6


def teaches(item: Sighting | Verdict) -> bool:
    """Does ``Decider.process`` teach the ensemble this item (so later reports see new
    models)? Exactly the verdicts it passes to ``Ensemble.learn``."""
    return (isinstance(item, Verdict) and item.features is not None
            and (item.lesson or item.feedback.trusted))


class Decider:
    """Per-shard ensemble replica, policy and enforcement state; its state plain data
    (``snapshot``)."""

    def __init__(self, settings: Settings, allowlist: AllowList | None = None,
                 batch_min: int = BATCH_MIN) -> None:
        """``settings``: the job's, read once and shared by every replica (with its prior)."""
        s: DeciderSettings = settings.decider
        self.settings = s
        self.ensemble = Ensemble(s.models, settings.prior)
        rec = s.policy.records
        self.trust: OrgTrust = rec.new_trust()
        self.signers: SignerRecord = rec.new_signers()
        self.lineage: LineageRecord = rec.new_lineage()
        self.vouchers: OrgTrust = rec.new_trust()
        self.reliability: SourceReliability = rec.new_reliability()
        self.policy = Policy(s.policy, allowlist, self.trust, self.signers, self.lineage,
                             self.vouchers, self.reliability)
        self.states: dict[str, Enforcement] = {}
        self.now = float("-inf")
        self.next_sweep = float("-inf")
        # sightings between labels scored as one batch from this many (tests pass a huge
        # number for the per-report reference path, 1 to batch every run)
        self.batch_min = int(batch_min)
        self.latencies: list[float] = []   # event-arrival → decision, seconds (drained by the flow)

    @classmethod
    def from_config(cls, cfg: Config, allowlist: AllowList | None = None,
                    batch_min: int = BATCH_MIN) -> Decider:
        """A replica of a job of ``cfg`` on its own (tools and tests; a job's replicas share
        one ``Settings``)."""
        return cls(Settings.from_config(cfg), allowlist, batch_min)

    def snapshot(self) -> dict[str, Any]:
        """What the replica learned and enforces, as plain data (``operators.snapshot``):
        the ensemble, the records of organizations, signers, siblings, vouchers and
        sources, every file's enforcement. Settings (the policy's, the allow-list) are
        not state; nor are the latencies the flow drains."""
        return {"ensemble": self.ensemble.snapshot(), "trust": self.trust.snapshot(),
                "signers": self.signers.snapshot(), "lineage": self.lineage.snapshot(),
                "vouchers": self.vouchers.snapshot(),
                "reliability": self.reliability.snapshot(),
                "states": {sha: enf.row() for sha, enf in self.states.items()},
                "now": self.now, "next_sweep": self.next_sweep}

    @classmethod
    def from_snapshot(cls, settings: Settings, state: dict[str, Any],
                      allowlist: AllowList | None = None,
                      batch_min: int = BATCH_MIN) -> Decider:
        """The replica ``snapshot`` saved, with ``settings`` and ``allowlist``."""
        d = cls(settings, allowlist, batch_min)
        d.ensemble.restore(state["ensemble"])
        d.trust.restore(state["trust"])
        d.signers.restore(state["signers"])
        d.lineage.restore(state["lineage"])
        d.vouchers.restore(state["vouchers"])
        d.reliability.restore(state["reliability"])
        from_row = Enforcement.from_row
        d.states = {sha: from_row(row) for sha, row in state["states"].items()}
        d.now, d.next_sweep = state["now"], state["next_sweep"]
        return d

    def _scored(self, features: dict[str, float], eager: bool = False) -> Scored:
        """The ensemble's view now; ``eager`` when the models learn before the policy reads it
        (a verdict is learned first), so the trimmed view is of the same models."""
        ens = self.ensemble
        score, per_model = ens.score(features)
        if eager:
            now = ens.trimmed(per_model)
            trimmed: Callable[[], float] = lambda: now  # noqa: E731
        else:
            trimmed = lambda: ens.trimmed(per_model)  # noqa: E731
        return Scored(score, per_model, ens.model_version, lambda: ens.explain(features),
                      ens.learners_ready, trimmed)

    def _scored_batch(self, batch: Sequence[dict[str, float]]) -> list[Scored]:
        """``_scored`` of every vector of a batch, scored together by models no label
        changes in between: the same scores, versions, reasons and trimmed views."""
        ens = self.ensemble
        version, ready, weight = ens.model_version, ens.learners_ready, ens.learner_weight
        explain, trimmed = ens.explain, ens.trimmed
        return [Scored(score, per_model, version, partial(explain, f, (learned, weight, score)),
                       ready, partial(trimmed, per_model))
                for f, (score, per_model, learned) in zip(batch, ens.score_batch(batch),
                                                          strict=True)]

    def _score_run(self, items: Sequence[Sighting | Verdict], start: int
                   ) -> tuple[dict[int, Scored], int]:
        """The sightings from ``start`` up to the next item that teaches (the run's end,
        returned too), scored as one batch, by index, when there are at least
        ``batch_min`` of them; else none (they are scored one by one).

        With the settled fast path, sightings of files with a trusted label are
        left out: nearly all of them are settled (``Policy.settled``) and never
        read a score (a fifth of all sightings on a simulated world, 3 in 5,000
        not settled). Which are left out changes only what is computed in
        advance: a sighting without a score here is scored alone when needed.
        """
        run: list[int] = []
        end = len(items)
        states = self.states if self.settings.fast else None
        for j in range(start, end):
            item = items[j]
            if isinstance(item, Sighting):
                if states is not None and j != start:
                    enf = states.get(item.report.sha256)
                    if enf is not None and enf.label is not None:
                        continue
                run.append(j)
            elif teaches(item):
                end = j
                break
        if len(run) < self.batch_min:
            return {}, end
        scored = self._scored_batch([items[j].features for j in run])   # type: ignore[union-attr]
        return dict(zip(run, scored, strict=True)), end

    def process(self, items: Iterable[Sighting | Verdict], now_wall: float) -> list[Decision]:
        out: list[Decision] = []
        states = self.states
        fast = self.settings.fast
        items = items if isinstance(items, list) else list(items)
        ahead: dict[int, Scored] = {}   # scored in advance, by index, up to run_end
        ahead_version = -1              # the ensemble's labels_seen when they were scored
        run_end = 0
        ensemble = self.ensemble
        for i, item in enumerate(items):
            if isinstance(item, Sighting):
                r = item.report
                if r.ts > self.now:
                    self.now = r.ts
                enf = states.get(r.sha256)
                if fast and self.policy.settled(enf, item):
                    continue   # nothing the models say could change what is decided
                fresh = enf is None
                if enf is None:
                    enf = Enforcement()
                if i >= run_end or ahead_version != ensemble.labels_seen:
                    ahead, run_end = self._score_run(items, i)   # (a label: the models moved)
                    ahead_version = ensemble.labels_seen
                scored = ahead.pop(i, None)
                if scored is None:   # a short run, or a sighting left out of the batch
                    scored = self._scored(item.features)
                decided = self.policy.on_sighting(enf, item, scored)
                if fresh and decided:   # most files never need state
                    states[r.sha256] = enf
            else:
                fb = item.feedback
                if fb.ts > self.now:
                    self.now = fb.ts
                if item.lesson:
                    if item.features is not None:
                        self.ensemble.learn(item.features, fb.verdict == "malicious",
                                            lesson=True)
                    continue
                # The policy weighs a verdict against the score before it is learned; every
                # replica does the same to settle the accusing organizations' trust.
                settles = fb.trusted and item.features is not None and bool(item.accusers)
                scored = (self._scored(item.features or {}, eager=True)
                          if item.owner or settles else None)
                if scored is not None and item.features is None:
                    scored.known = False
                if fb.trusted and item.features is not None:
                    if settles and scored and self.policy.accepts(
                            scored, fb, item.signer, item.lineage, item.allowers,
                            item.orgs_ever):
                        self.trust.settle(item.accusers, fb.verdict == "malicious")
                    self.ensemble.learn(item.features, fb.verdict == "malicious")
                decided = []
                if scored is not None and item.owner:
                    enf = states.setdefault(fb.sha256, Enforcement())
                    decided = self.policy.on_verdict(enf, fb, scored, item.signer,
                                                     item.lineage, item.allowers,
                                                     item.orgs_ever)
                if fb.trusted:
                    # after the policy: a verdict is weighed against the signer's other files
                    self.signers.learn(item.signer, fb.sha256, fb.verdict == "malicious")
                if fb.trusted and item.lineage:
                    self.lineage.learn(item.lineage, fb.sha256, fb.verdict == "malicious")
                if fb.trusted:
                    self.reliability.judge(item.earlier, fb.source, fb.verdict)
                if fb.trusted and item.allowers:
                    # a tenant's "benign" proven right or wrong: its word counts accordingly
                    self.vouchers.settle(item.allowers, fb.verdict == "benign")
            if decided:
                out.extend(decided)
                self.latencies.append(now_wall - item.arrived)
        if self.now >= self.next_sweep:
            self.sweep()
        return out

    def sweep(self) -> int:
        """Forget files with nothing enforced and no recent events or trusted label."""
        now, s = self.now, self.settings
        # the cheap test first: most files were seen lately, and idle() walks a dict
        labelled, unlabelled = now - s.label_ttl, now - s.idle_ttl
        gone = [sha for sha, enf in self.states.items()
                if enf.last_event < (labelled if enf.label else unlabelled) and enf.idle(now)]
        for sha in gone:
            del self.states[sha]
        self.next_sweep = now + s.sweep_interval
        return len(gone)
