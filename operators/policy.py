"""The policy: scores and correlation in, contract Decisions out.

Every block is an expected-cost decision (``operators.cost``): its evidence
(the score's log-odds, plus the siblings' record, minus earned vouching)
must reach its bar (the scope's threshold below, raised by
``exposure_weight`` per ln of the organizations that run the file). "A score
of at least X" below means that inequality with X as the threshold; the
rules add the conditions that are not costs (who accuses, whose trust, which
learner carries the score).

Rules, from the narrowest evidence to the broadest:

* **device** — strong evidence on the reporting device itself (a behaviour in
  ``policy.device_block_behaviors`` with a score of at least
  ``device_block_score``) blocks the file on that device;
* **org** — a score of at least ``org_block_score`` blocks it across the
  reporting organization;
* **global** — a score of at least ``global_block_score`` *and* sightings in at
  least ``global_min_orgs`` distinct organizations within ``global_window_s``
  block it everywhere, except a signed file already seen in
  ``prevalent_orgs`` organizations, which only a trusted verdict may block
  globally; a trusted (sandbox or analyst) malicious verdict blocks at once;
* **first sight** — a file seen so far in one organization, accused by it,
  that the models call malware even without their most eager learner
  (``first_sight_score``) is blocked everywhere at once when that
  organization's accusations have been confirmed before
  (``first_sight_min_trust``); lifted if the file then spreads to
  ``release_min_orgs`` organizations and none of the others accuses it.

A trusted benign verdict unblocks every target and stops correlation from
blocking the file again; an ``org_report`` verdict acts for its own tenant
only (benign: an org-scope ``allow``; malicious: an org-scope block). The
allow-list is never blocked. A decision is emitted only when it changes what
is enforced, blocks carry ``expires_at``, and ``decision_id`` is a digest of
the target, the action and the id of the input that triggered it, so a
replay reproduces it exactly.

Anti-poisoning. The score is computed from features in which each
organization counts once (``operators.evidence``), and cross-organization
correlation counts *accusers*: organizations whose own report was suspicious
on its own evidence (``operators.accusation``), weighted by how often their
past accusations were confirmed by trusted verdicts (``operators.trust``).

* A global block by correlation needs ``global_min_orgs`` (never fewer than
  two) accusing organizations whose trust adds up to
  ``global_min_corroboration``, and models already checked against verdicts
  (during the cold start only trusted verdicts block globally).
* While a single organization accuses a file, correlation blocks only that
  organization's own targets: no global block, no org block elsewhere.
* A trusted verdict is weighed against the score before it (a sandbox of
  reliability r multiplies the odds by r / (1 - r)): a sandbox "malicious"
  on a file everything else calls clean blocks nothing, a sandbox "benign"
  on overwhelming evidence lifts nothing. The analyst is final.
* Blocks placed on the score alone are lifted again (``release_score``) when
  the file turns out to be widespread software (``release_min_orgs``).
* A publisher the trusted verdicts keep clearing (``operators.signers``)
  vouches for its files: a sandbox "malicious" on one is not enforced
  fleet-wide, and the score alone blocks it on devices, not across orgs.
  A signer they keep condemning (``signer_condemn``: a stolen certificate)
  has its files blocked everywhere on sight.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rapidloop.base.config import Config
from rapidloop.schemas.model import Decision, Feedback

from .allowlist import AllowList
from .correlate import Sighting
from .cost import Terms, vouching
from .lineage import LineageRecord, sibling_log_odds
from .reliability import SourceReliability
from .settings import PolicySettings
from .signers import SignerRecord
from .stacking import logit
from .trust import OrgTrust

Target = tuple[str, str | None, str | None]   # (scope, org_id, device_id)
GLOBAL: Target = ("global", None, None)


@dataclass(slots=True)
class Enforcement:
    """What is enforced for one file: active decisions per target, and its trusted label."""

    active: dict[Target, tuple[str, float | None]] = field(default_factory=dict)
    label: str | None = None          # last trusted verdict: "malicious" | "benign"
    last_event: float = float("-inf")
    scored: set[Target] = field(default_factory=set)   # blocks placed on the score alone
    first_sight: bool = False   # the global block rests on one organization's sighting
    verdict_by: str | None = None   # the global block rests on this source's "malicious"...
    weighed_orgs: int = 0           # ...last weighed against this many orgs (operators.cost)
    score_weighed_orgs: int = 0     # org score blocks last weighed at this many orgs
    provisional: set[Target] = field(default_factory=set)   # org blocks of the prior alone

    def current(self, target: Target, now: float) -> str | None:
        """The action in force on ``target`` at event time ``now`` (None if none)."""
        entry = self.active.get(target)
        if entry is None:
            return None
        action, expires = entry
        if expires is not None and expires <= now:
            del self.active[target]
            return None
        return action

    def idle(self, now: float) -> bool:
        """True when nothing is enforced any more: the state can be forgotten."""
        return not any(exp is None or exp > now for _, exp in self.active.values())

    def row(self) -> tuple[Any, ...]:
        """The record as one tuple of plain values, fields in declaration order."""
        return (self.active, self.label, self.last_event, self.scored, self.first_sight,
                self.verdict_by, self.weighed_orgs, self.score_weighed_orgs, self.provisional)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Enforcement:
        """The inverse of ``row``."""
        return cls(*row)


def _no_reasons() -> list[str]:
    return []


@dataclass(slots=True)
class Scored:
    """The ensemble's view of a file at decision time.

    ``explain`` is called only when a decision is made: most reports decide
    nothing, and their reasons would be wasted work on the hot path.
    """

    score: float
    classifiers: dict[str, float]
    model_version: str
    explain: Callable[[], list[str]] = _no_reasons
    calibrated: bool = True   # False while the models have not yet been checked against verdicts
    trimmed: Callable[[], float] | None = None   # the score without its most eager learner
    known: bool = True        # False: the file was never reported (nothing to weigh a verdict by)

    def broad_score(self) -> float:
        """What broad blocks go by: the score without the learner that raised it most
        (``Ensemble.trimmed``); ``score`` itself when no trimmed view was given."""
        return self.trimmed() if self.trimmed is not None else self.score


def decision_id(sha256: str, target: Target, action: str, trigger: str) -> str:
    """Deterministic id: same input, same id, across replays and redeliveries."""
    scope, org, dev = target
    raw = f"{sha256}|{scope}|{org or ''}|{dev or ''}|{action}|{trigger}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _fmt_window(seconds: float) -> str:
    if seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{seconds:g}s"


class Policy:
    """Turns sightings and verdicts into the decisions that change enforcement."""

    def __init__(self, s: PolicySettings, allowlist: AllowList | None = None,
                 trust: OrgTrust | None = None, signers: SignerRecord | None = None,
                 lineage: LineageRecord | None = None,
                 vouchers: OrgTrust | None = None,
                 reliability: SourceReliability | None = None) -> None:
        """``s``: the rules' thresholds, bars and TTLs, typed; settings are not state. The
        records not given (a decider shares its own) start empty."""
        self.s = s
        rec = s.records
        self.trust = trust if trust is not None else rec.new_trust()
        self.signers = signers if signers is not None else rec.new_signers()
        self.reliability = reliability if reliability is not None else rec.new_reliability()
        self.allowlist = allowlist or AllowList()
        self.lineage = lineage if lineage is not None else rec.new_lineage()
        self.vouchers = vouchers if vouchers is not None else rec.new_trust()
        # the lowest bar of any block: a score this far below it decides nothing
        self._floor = min(logit(t) for t in (s.device_score, s.org_score,
                                             s.global_score, s.trusted_block_score))

    @classmethod
    def from_config(cls, cfg: Config, allowlist: AllowList | None = None,
                    signers: SignerRecord | None = None) -> Policy:
        """The rules of ``cfg``'s ``[policy]``, their records empty but ``signers`` (tools
        and tests; a decider builds its own from the job's settings)."""
        return cls(PolicySettings.from_config(cfg), allowlist, signers=signers)

    def terms(self, score: float, lineage: str | None, allowers: tuple[str, ...],
              accusers: list[str], orgs: int, parent: str | None = None) -> Terms:
        """The expected-cost terms of a block for others (``operators.cost``)."""
        c = self.s.cost
        kin = (sibling_log_odds(self.lineage, lineage, c.sibling_min_files, c.sibling_bound)
               if lineage in self.lineage.counts else 0.0)
        if parent is not None and self.lineage.condemned(parent):
            kin = min(c.sibling_bound, kin + c.parent_condemned)
        return Terms(logit(score), kin,
                     vouching(self.vouchers, allowers, accusers, c.vouch_weight,
                              c.vouch_bound) if allowers else 0.0,
                     orgs)

    def _kin_condemned(self, s: Sighting) -> bool:
        """Do trusted verdicts condemn the file's kin: its lineage (net of what they
        cleared), its parent, or its signer? A block placed on that evidence is not
        released because the score alone fell: a whitewasher's fabricated clean
        sightings pull the score down as the file spreads (held-out seed 893973: a
        campaign's backdoor, signed with a stolen certificate, released twice)."""
        t = self.terms(0.5, s.lineage, (), [], s.orgs_ever, s.parent)
        return t.siblings > 0 or bool(
            self.s.signer_condemn and s.signed
            and self.signers.condemns(s.signer, self.s.signer_condemn))

    def _signer_terms(self, s: Sighting, score: float, accusers: list[str]) -> Terms:
        """A condemned signer's block weighed like any other: the score plus what the
        verdicts said of the signer's files (the lineage's Jeffreys log-odds, bounded by
        ``sibling_bound``), siblings and vouching, against the global bar at the file's
        spread. Two wrong sandbox labels on an org's in-house tools (its internal CA)
        would otherwise block every other tool of that CA for everyone at first sight,
        whatever the models say of them."""
        c = self.s.cost
        t = self.terms(score, s.lineage, s.allowers, accusers, s.orgs_ever, s.parent)
        signer = sibling_log_odds(self.signers, s.signer, 1, c.sibling_bound)
        return Terms(t.score + signer, t.siblings, t.vouching, s.orgs_ever)

    # -- reports --------------------------------------------------------------
    def settled(self, enf: Enforcement | None, s: Sighting) -> bool:
        """Can this sighting decide nothing, whatever the models would say of it?

        Then it is not scored: most reports are of files whose fate is settled
        (popular software a trusted verdict cleared, a campaign hash an analyst
        condemned and the fleet blocks), and scoring them is most of a report's
        cost. Exactly the cases where ``on_sighting`` returns nothing without
        reading the score: the allow-list; a trusted "benign"; a trusted
        "malicious" whose global block is in force and will not be weighed
        again at this exposure (a final source's, or a file not yet run by
        more organizations than when it was last weighed). The bookkeeping
        ``on_sighting`` does on the way is done here too, so the decisions are
        the same with and without this path (``tests/unit/test_policy.py``).
        """
        r = s.report
        if enf is None:
            return self.allowlist.allows(r.sha256, r.file.signer)
        label = enf.label
        if label == "malicious":
            now = r.ts
            if enf.current(GLOBAL, now) != "block" or (
                    enf.verdict_by is not None and s.orgs_ever > enf.weighed_orgs
                    and s.orgs_ever >= self.s.release_min_orgs):
                return False
            if enf.first_sight and len(s.accusers) >= self.s.global_min_orgs:
                enf.first_sight = False   # as on_sighting: corroborated, it stands
        elif label != "benign" and not self.allowlist.allows(r.sha256, r.file.signer):
            return False
        enf.last_event = max(enf.last_event, r.ts)
        return True

    def on_sighting(self, enf: Enforcement, s: Sighting, sc: Scored) -> list[Decision]:
        r = s.report
        now = r.ts
        enf.last_event = max(enf.last_event, now)
        if self.allowlist.allows(r.sha256, r.file.signer) or enf.label == "benign":
            return []
        out: list[Decision] = []
        org_t: Target = ("org", r.org_id, None)
        dev_t: Target = ("device", r.org_id, r.device_id)
        score = sc.score
        if (score < self.s.release_score and enf.label is None and enf.scored
                and s.orgs_ever >= self.s.release_min_orgs and not self._kin_condemned(s)):
            return self._release(enf, r.sha256, sc, now, r.report_id)
        accusers = s.accusers
        lone_accuser = len(accusers) == 1   # all the evidence is one tenant's own claims
        if enf.first_sight:
            if len(accusers) >= self.s.global_min_orgs:
                enf.first_sight = False   # corroborated by another organization: it stands
            elif s.orgs_ever >= self.s.release_min_orgs and enf.label is None:
                lifted = self._lift_first_sight(enf, r.sha256, sc, now, r.report_id,
                                                s.orgs_ever)
                if lifted:
                    return lifted

        if (self.s.signer_condemn and s.signed and enf.current(GLOBAL, now) != "block"
                and self.signers.condemns(s.signer, self.s.signer_condemn)):
            signed_terms = self._signer_terms(s, score, accusers)
            if signed_terms.clears(self.s.global_score, self.s.cost.exposure_weight):
                clean, condemned = self.signers.record(s.signer)
                out.append(self._decide(
                    enf, r.sha256, GLOBAL, "block", sc, now, r.report_id,
                    [f"its signer's files were condemned by {condemned} trusted verdicts"
                     f" and cleared by {clean}",
                     *signed_terms.lines(self.s.global_score, self.s.cost.exposure_weight),
                     *sc.explain()[:2]],
                    now + self.s.global_ttl))
                enf.scored.add(GLOBAL)
        if enf.provisional and sc.calibrated:
            out += self._weigh_provisional(enf, s, sc, now)
        cost = self.s.cost
        if enf.verdict_by is None and logit(score) + cost.sibling_bound < self._floor:
            return out   # no term can lift this score over any bar: nothing to weigh
        terms = self.terms(score, s.lineage, s.allowers, accusers, s.orgs_ever, s.parent)
        prevalent_signed = s.signed and s.orgs_ever >= self.s.prevalent_orgs
        # a publisher the verdicts keep clearing: the models' guess blocks its devices only
        vouched = s.signed and self.signers.vouches(s.signer)
        if (len(accusers) >= self.s.global_min_orgs
                and terms.clears(self.s.global_score, cost.exposure_weight)
                and sc.calibrated and not prevalent_signed and not vouched
                and enf.current(GLOBAL, now) != "block"
                and (not self.s.trim or sc.broad_score() >= self.s.global_trimmed_score)):
            corroboration = self.trust.corroboration(accusers)
            if corroboration >= self.s.global_min_corroboration:
                out.append(self._decide(
                    enf, r.sha256, GLOBAL, "block", sc, now, r.report_id,
                    [f"malice score {score:.2f}, global threshold {self.s.global_score:.2f}",
                     f"accused by {len(accusers)} orgs within "
                     f"{_fmt_window(self.s.global_window)} (trust {corroboration:.2f})",
                     *terms.lines(self.s.global_score, cost.exposure_weight),
                     *sc.explain()[:2]],
                    now + self.s.global_ttl))
                enf.scored.add(GLOBAL)
        elif (self.s.first_sight_score and s.orgs_ever == 1 and accusers == [r.org_id]
                and sc.calibrated and terms.clears(self.s.global_score, cost.exposure_weight)
                and not vouched
                and enf.current(GLOBAL, now) != "block"
                and sc.broad_score() >= self.s.first_sight_score
                and self.trust.trust(r.org_id) >= self.s.first_sight_min_trust):
            out.append(self._decide(
                enf, r.sha256, GLOBAL, "block", sc, now, r.report_id,
                [f"malice score {score:.2f}, global threshold {self.s.global_score:.2f}",
                 f"{sc.broad_score():.2f} without its most eager learner",
                 "not yet seen in any other organization",
                 *terms.lines(self.s.global_score, cost.exposure_weight), *sc.explain()[:2]],
                now + self.s.global_ttl))
            enf.scored.add(GLOBAL)
            enf.first_sight = True
        elif (cost.sibling_block and terms.siblings >= cost.sibling_block
                and r.org_id in accusers
                and self.trust.trust(r.org_id) >= self.s.first_sight_min_trust
                and not vouched and enf.current(GLOBAL, now) != "block"
                and terms.clears(self.s.global_score, cost.exposure_weight)):
            clean, condemned = self.lineage.record(s.lineage)
            out.append(self._decide(
                enf, r.sha256, GLOBAL, "block", sc, now, r.report_id,
                [f"its siblings (same name pattern, signer and type) were condemned by "
                 f"{condemned} trusted verdicts and cleared by {clean}",
                 *terms.lines(self.s.global_score, cost.exposure_weight), *sc.explain()[:2]],
                now + self.s.global_ttl))
            enf.scored.add(GLOBAL)
            enf.first_sight = True

        if (enf.verdict_by is not None and s.orgs_ever > enf.weighed_orgs
                and s.orgs_ever >= self.s.release_min_orgs):   # widespread, not a campaign's start
            lifted = self._reweigh_verdict(enf, s, sc, terms, now)
            if lifted:
                return lifted

        if (self.s.reweigh_min_orgs and enf.label is None
                and s.orgs_ever >= self.s.reweigh_min_orgs
                and s.orgs_ever > enf.score_weighed_orgs and enf.scored
                and enf.current(GLOBAL, now) != "block"):   # the fleet's block covers them
            lifted = self._reweigh_score_blocks(enf, s, sc, terms, now)
            if lifted:
                return out + lifted

        org_action = enf.current(org_t, now)
        if org_action == "allow":
            return out   # the tenant's own override: correlation never blocks its devices
        globally_blocked = enf.current(GLOBAL, now) == "block"
        if globally_blocked or org_action == "block":
            return out
        if lone_accuser and accusers[0] != r.org_id:
            return out   # another tenant's claims alone never block this org's devices
        own = Terms(terms.score, terms.siblings, 0.0, s.orgs_ever)   # the org's own view
        if (own.clears(self.s.org_score, cost.exposure_weight) and not vouched
                and self._widespread_agree(s, sc, self.s.org_score)):
            out.append(self._decide(
                enf, r.sha256, org_t, "block", sc, now, r.report_id,
                [f"malice score {score:.2f}, org threshold {self.s.org_score:.2f}",
                 f"reported by device {r.device_id} in this org",
                 *own.lines(self.s.org_score, cost.exposure_weight), *sc.explain()[:2]],
                now + self.s.org_ttl))
            enf.scored.add(org_t)
            if not sc.calibrated:
                enf.provisional.add(org_t)
            return out
        strong = [b for b in r.behaviors if b in self.s.device_behaviors]
        # on the device itself, siblings may only add suspicion (a masquerade under a
        # cleared tool's name is still stopped there)
        device = Terms(terms.score, max(0.0, terms.siblings), 0.0, s.orgs_ever)
        if (strong and device.clears(self.s.device_score, cost.exposure_weight)
                and enf.current(dev_t, now) != "block"
                and self._widespread_agree(s, sc, self.s.device_score)):
            out.append(self._decide(
                enf, r.sha256, dev_t, "block", sc, now, r.report_id,
                [f"{', '.join(strong)} observed on this device",
                 f"malice score {score:.2f}, device threshold {self.s.device_score:.2f}",
                 *device.lines(self.s.device_score, cost.exposure_weight)],
                now + self.s.device_ttl))
            enf.scored.add(dev_t)
        return out

    def _widespread_agree(self, s: Sighting, sc: Scored, threshold: float) -> bool:
        """A file seen in ``release_min_orgs`` orgs or more is software many run, not a
        campaign's first foothold: a block of it needs the score without its most eager
        learner (``Ensemble.trimmed``) to reach ``threshold`` too."""
        return (not self.s.trim or s.orgs_ever < self.s.release_min_orgs
                or sc.broad_score() >= threshold)

    def _reweigh_verdict(self, enf: Enforcement, s: Sighting, sc: Scored, terms: Terms,
                         now: float) -> list[Decision]:
        """A non-final verdict's global block, weighed again now that more organizations run
        the file: the cost of a wrong block grew with them, and what the models and the
        siblings say may have moved. Lifted when the verdict no longer clears the bar; not
        while the file's kin stand condemned by trusted verdicts (siblings > 0), as for
        org blocks: then its spread is a campaign's, and a tenant that reports it from
        one more org (a whitewasher's fabricated clean sightings count as spread) must
        not be able to raise the bar until the block falls."""
        enf.weighed_orgs = s.orgs_ever
        source = enf.verdict_by or ""
        if enf.current(GLOBAL, now) != "block":
            enf.verdict_by = None
            return []
        if terms.siblings > 0:
            return []   # kin condemned by trusted verdicts: its spread is a campaign's
        basis = sc.broad_score() if self.s.trim else sc.score
        weighed = Terms(logit(basis) + self.reliability.weight(source), terms.siblings,
                        terms.vouching, s.orgs_ever)
        if weighed.clears(self.s.trusted_block_score, self.s.cost.exposure_weight):
            return []
        enf.verdict_by = None
        return [self._decide(enf, s.report.sha256, GLOBAL, "unblock", sc, now,
                             s.report.report_id,
                             [f"{source} verdict malicious no longer outweighs the cost of "
                              f"blocking a file {s.orgs_ever} orgs run",
                              *weighed.lines(self.s.trusted_block_score,
                                             self.s.cost.exposure_weight)], None)]

    def _reweigh_score_blocks(self, enf: Enforcement, s: Sighting, sc: Scored,
                              terms: Terms, now: float) -> list[Decision]:
        """Org blocks the score placed, weighed again as the file spreads.

        Each was placed when its evidence cleared the bar of the organizations
        that ran the file then. A file now run in ``reweigh_min_orgs`` or more
        is widespread software unless the evidence keeps up with the bar,
        which rises with every organization: what no longer clears it is
        lifted, with the line that says why, the same inequality that would
        refuse the block today. Not while the file's kin stand condemned by
        trusted verdicts (siblings > 0): then its spread is a campaign's, and a
        wave reaching its twentieth organization is no reason to let it in where it
        was stopped. Nor under a global block, which covers them. Device
        blocks stay (they rest on a behaviour seen on that very device, and
        lapse with their TTL); global blocks have their own rules (first
        sight, verdicts, release).
        """
        enf.score_weighed_orgs = s.orgs_ever
        w = self.s.cost.exposure_weight
        weighed = Terms(terms.score, terms.siblings, 0.0, s.orgs_ever)  # each org's own view
        if terms.siblings > 0 or weighed.clears(self.s.org_score, w):
            return []   # kin of condemned files: its spread is a campaign's, not software's
        orgs = [t for t in enf.scored if t[0] == "org"]
        return self._lift(enf, s.report.sha256, orgs, sc, now, s.report.report_id, lambda: [
            f"malice score {sc.score:.2f} no longer outweighs the cost of blocking "
            f"a file {s.orgs_ever} orgs run", *weighed.lines(self.s.org_score, w)])

    def _weigh_provisional(self, enf: Enforcement, s: Sighting, sc: Scored,
                           now: float) -> list[Decision]:
        """Org blocks the hand-set prior placed alone, weighed again once verdicts have
        checked the models.

        Until then no learner has a say and the score is the prior's guess,
        uncalibrated: a backup agent that encrypts files or an admin tool that
        injects looks like ransomware to it. Such a block is provisional. At the
        file's first sighting with checked models each is lifted if they now find
        benign likelier (``provisional_lift_score``), and kept as any score block
        otherwise. Not when a trusted verdict or condemned kin has the say.
        """
        blocks, enf.provisional = enf.provisional, set()
        if (enf.label is not None or sc.score >= self.s.provisional_lift_score
                or self._kin_condemned(s)):
            return []
        return self._lift(enf, s.report.sha256, list(blocks), sc, now, s.report.report_id,
                          lambda: [f"placed on the prior alone before verdicts had checked "
                                   f"the models, which now score it {sc.score:.2f}: below "
                                   f"{self.s.provisional_lift_score:.2f}, benign likelier",
                                   *sc.explain()[:1]])

    def _lift_first_sight(self, enf: Enforcement, sha: str, sc: Scored, now: float,
                          trigger: str, orgs: int) -> list[Decision]:
        """The first organization's sighting blocked the file for everyone; now many
        organizations run it and none of them accuses it: one tenant's word, not a campaign."""
        enf.first_sight = False
        enf.scored.discard(GLOBAL)
        if enf.current(GLOBAL, now) != "block":
            return []
        return [self._decide(enf, sha, GLOBAL, "unblock", sc, now, trigger,
                             [f"seen in {orgs} orgs, accused by no other than the first"],
                             None)]

    def _lift(self, enf: Enforcement, sha: str, targets: list[Target], sc: Scored,
              now: float, trigger: str, reasons: Callable[[], list[str]]) -> list[Decision]:
        """Unblock each of the score's ``targets`` still blocked (in ``_target_order``),
        each decision saying ``reasons()``; they are no longer score blocks."""
        out = []
        for target in sorted(targets, key=_target_order):
            enf.scored.discard(target)
            enf.provisional.discard(target)
            if enf.current(target, now) == "block":
                out.append(self._decide(enf, sha, target, "unblock", sc, now, trigger,
                                        reasons(), None))
        return out

    def _release(self, enf: Enforcement, sha: str, sc: Scored, now: float,
                 trigger: str) -> list[Decision]:
        """Unblock what the score alone blocked, now that the score fell below release."""
        return self._lift(enf, sha, list(enf.scored), sc, now, trigger, lambda: [
            f"malice score {sc.score:.2f} fell below release threshold "
            f"{self.s.release_score:.2f}", *sc.explain()[:1]])

    # -- verdicts -------------------------------------------------------------
    def on_verdict(self, enf: Enforcement, fb: Feedback, sc: Scored,
                   signer: str | None = None, lineage: str | None = None,
                   allowers: tuple[str, ...] = (), orgs: int = 0) -> list[Decision]:
        now = fb.ts
        enf.last_event = max(enf.last_event, now)
        sha = fb.sha256
        if fb.trusted:
            malicious = fb.verdict == "malicious"
            if malicious:
                # a fleet-wide block: weighed against what the models say without their
                # most eager learner (no single learner vouches for a sandbox's word)
                terms = self._verdict_terms(sc, fb, lineage, allowers, orgs)
                post = terms.probability()
                if (not terms.clears(self.s.trusted_block_score, self.s.cost.exposure_weight)
                        or self.allowlist.allows(sha, signer) or self._vouched(fb, signer)):
                    return []   # contradicted by everything else known: not enforced
                enf.label = fb.verdict
                if enf.current(GLOBAL, now) == "block":
                    _, exp = enf.active[GLOBAL]
                    if exp is None or exp >= now + self.s.trusted_ttl / 2:
                        return []
                # a final source's block stands; another's is weighed again as the file spreads
                enf.verdict_by = None if self.reliability.final(fb.source) else fb.source
                enf.weighed_orgs = orgs
                enf.scored.discard(GLOBAL)
                return [self._decide(enf, sha, GLOBAL, "block", sc, now, fb.feedback_id,
                                     [f"{fb.source} verdict malicious",
                                      f"malice probability {post:.2f} with the verdict",
                                      *terms.lines(self.s.trusted_block_score,
                                                   self.s.cost.exposure_weight)],
                                     now + self.s.trusted_ttl)]
            weighed = self._benign_terms(sc, fb, lineage)
            if weighed.evidence >= logit(self.s.trusted_unblock_score):
                return []   # a benign verdict against overwhelming evidence: blocks stay
            enf.label = fb.verdict
            why = [f"{fb.source} verdict benign",
                   f"malice probability {weighed.probability():.2f} with the verdict"
                   f" (lifted below {self.s.trusted_unblock_score:.2f})"]
            out = []
            for target in sorted(enf.active, key=_target_order):
                if enf.current(target, now) == "block":
                    out.append(self._decide(enf, sha, target, "unblock", sc, now,
                                            fb.feedback_id, why, None))
            return out
        # org_report: one tenant's word, acting for that tenant only.
        org = fb.org_id
        org_t: Target = ("org", org, None)
        if fb.verdict == "benign":
            out = []
            if enf.current(org_t, now) != "allow":
                out.append(self._decide(enf, sha, org_t, "allow", sc, now, fb.feedback_id,
                                        ["reported benign by this org"], None))
            for target in sorted(enf.active, key=_target_order):
                if (target[0] == "device" and target[1] == org
                        and enf.current(target, now) == "block"):
                    out.append(self._decide(enf, sha, target, "unblock", sc, now,
                                            fb.feedback_id, ["reported benign by this org"],
                                            None))
            return out
        if self.allowlist.allows(sha, signer) or enf.current(org_t, now) == "block":
            return []
        return [self._decide(enf, sha, org_t, "block", sc, now, fb.feedback_id,
                             ["reported malicious by this org"], now + self.s.org_ttl)]

    def accepts(self, sc: Scored, fb: Feedback, signer: str | None = None,
                lineage: str | None = None, allowers: tuple[str, ...] = (),
                orgs: int = 0) -> bool:
        """Does a trusted verdict stand against the evidence before it, as ``on_verdict``
        weighs it (see ``posterior`` and ``operators.cost``)?"""
        if fb.verdict == "malicious":
            terms = self._verdict_terms(sc, fb, lineage, allowers, orgs)
            return (terms.clears(self.s.trusted_block_score, self.s.cost.exposure_weight)
                    and not self._vouched(fb, signer))
        return (self._benign_terms(sc, fb, lineage).evidence
                < logit(self.s.trusted_unblock_score))

    def _benign_terms(self, sc: Scored, fb: Feedback, lineage: str | None) -> Terms:
        """A trusted "benign" as terms: it lifts the file's blocks when the odds with it, the
        siblings' record included (a campaign's next wave is not cleared by one sandbox
        slip), fall below ``trusted_unblock_score``. Tenants' vouching never counts here:
        it lifts nothing."""
        terms = self.terms(self.posterior(self._basis(sc, fb), fb), lineage, (), [], 1)
        if self.reliability.final(fb.source):
            terms.siblings = 0.0   # the analyst is final
        return terms

    def _verdict_terms(self, sc: Scored, fb: Feedback, lineage: str | None,
                       allowers: tuple[str, ...], orgs: int) -> Terms:
        """A trusted "malicious" as cost terms: the score before it, moved by the source's
        reliability (a final source settles it), siblings and vouching."""
        terms = self.terms(self.posterior(self._basis(sc, fb), fb), lineage, allowers,
                           [], orgs)
        if self.reliability.final(fb.source):
            terms.siblings = terms.vouching = 0.0   # the analyst is final
            terms.orgs = 1
        return terms

    def _vouched(self, fb: Feedback, signer: str | None) -> bool:
        """Does the file's signer outweigh this verdict (``operators.signers``)? Never
        against a final source (the analyst)."""
        return not self.reliability.final(fb.source) and self.signers.vouches(signer)

    def _basis(self, sc: Scored, fb: Feedback) -> float:
        """The score a trusted verdict is weighed against: even odds for a file never
        reported; for "malicious", what the models say without their most eager learner
        (no single learner vouches for a sandbox's word)."""
        if not sc.known:
            return 0.5
        if fb.verdict == "malicious" and self.s.trim:
            return sc.broad_score()
        return sc.score

    def posterior(self, score: float, fb: Feedback) -> float:
        """P(malicious) after a trusted verdict, given the score before it (even odds
        for a file never reported: its empty feature vector is no evidence either way).

        A source of reliability r multiplies the odds by r / (1 - r) (or
        divides them); r = 1 (the analyst, by default) is final.
        """
        w = self.reliability.weight(fb.source)
        if math.isinf(w):
            return 1.0 if fb.verdict == "malicious" else 0.0
        z = logit(score) + (w if fb.verdict == "malicious" else -w)
        return 1.0 / (1.0 + math.exp(-z))

    # -- helpers --------------------------------------------------------------
    def _decide(self, enf: Enforcement, sha: str, target: Target, action: str, sc: Scored,
                now: float, trigger: str, reasons: list[str],
                expires: float | None) -> Decision:
        if action in ("block", "allow"):
            enf.active[target] = (action, expires)
        else:
            enf.active.pop(target, None)
        scope, org, dev = target
        return Decision(
            decision_id=decision_id(sha, target, action, trigger), sha256=sha, action=action,
            scope=scope, org_id=org, device_id=dev, score=round(sc.score, 6),
            classifiers={k: round(v, 6) for k, v in sc.classifiers.items()},
            reasons=reasons, model_version=sc.model_version, event_ts=now, expires_at=expires)


def _target_order(t: Target) -> tuple[str, str, str]:
    return (t[0], t[1] or "", t[2] or "")
