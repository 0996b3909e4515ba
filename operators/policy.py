"""The policy: scores and correlation in, contract Decisions out.

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
  globally; a trusted (sandbox or analyst) malicious verdict blocks at once.

A trusted benign verdict unblocks every target and stops correlation from
blocking the file again; an ``org_report`` verdict acts for its own tenant
only (benign: an org-scope ``allow``; malicious: an org-scope block). The
allow-list is never blocked. A decision is emitted only when it changes what
is enforced, blocks carry ``expires_at``, and ``decision_id`` is a digest of
the target, the action and the id of the input that triggered it, so a
replay reproduces it exactly.

Anti-poisoning: the score is pooled over every tenant's reports of a file, so
one tenant's own claims (sensor verdicts, behaviours, however many devices)
could otherwise push it over the line for everyone. The policy therefore
remembers which organizations *accused* the file (a report whose own evidence
is suspicious: its prior score alone reaches ``device_block_score``, or a
behaviour of ``device_block_behaviors`` on the device) within
``global_window_s``. While that evidence comes from a single organization,
correlation blocks only that organization's own targets: no global block, no
org block elsewhere. Blocks driven by the models with no accusing report at
all, trusted verdicts and a tenant's own ``org_report`` are unaffected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from rapidloop.config import Config
from rapidloop.schemas.model import Decision, Feedback

from .allowlist import AllowList
from .correlate import Sighting
from .prior import Prior

Target = tuple[str, str | None, str | None]   # (scope, org_id, device_id)
GLOBAL: Target = ("global", None, None)
_MAX_ACCUSERS = 4   # only "one organization or several" matters; keep the most recent few


@dataclass(slots=True)
class Enforcement:
    """What is enforced for one file: active decisions per target, and its trusted label."""

    active: dict[Target, tuple[str, float | None]] = field(default_factory=dict)
    label: str | None = None          # last trusted verdict: "malicious" | "benign"
    last_event: float = float("-inf")
    accusers: dict[str, float] = field(default_factory=dict)   # org → last suspicious report

    def accuse(self, org: str, now: float) -> None:
        """Remember that ``org``'s own report of the file was suspicious (a few orgs at most)."""
        acc = self._accusers()
        if now > acc.get(org, float("-inf")):
            acc[org] = now
        if len(acc) > _MAX_ACCUSERS:
            del acc[min(acc, key=acc.__getitem__)]

    def accusing(self, since: float) -> list[str]:
        """Organizations whose own reports accused the file at or after ``since``."""
        return [org for org, ts in self._accusers().items() if ts >= since]

    def _accusers(self) -> dict[str, float]:
        try:
            return self.accusers
        except AttributeError:   # restored from a snapshot taken before the field existed
            self.accusers = {}
            return self.accusers

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

    def __init__(self, cfg: Config, allowlist: AllowList | None = None) -> None:
        p = cfg.policy
        self.device_score = p.device_block_score
        self.device_behaviors = frozenset(p.device_block_behaviors)
        self.org_score = p.org_block_score
        self.global_score = p.global_block_score
        self.global_min_orgs = p.global_min_orgs
        self.global_window = float(p.global_window_s)
        self.global_idx = [float(w) for w in cfg.windows.sizes_s].index(self.global_window)
        self.prevalent_orgs = p.prevalent_orgs
        self.ttl = {"device": float(p.device_block_ttl_s), "org": float(p.org_block_ttl_s),
                    "global": float(p.global_block_ttl_s)}
        self.trusted_ttl = float(p.trusted_block_ttl_s)
        self.allowlist = allowlist or AllowList()
        self.prior = Prior(cfg)

    def _accuses(self, s: Sighting) -> bool:
        """Is this report suspicious on its own evidence (not the file's pooled history)?"""
        r = s.report
        if any(b in self.device_behaviors for b in r.behaviors):
            return True
        f = r.file
        own: dict[str, float] = {f"beh_{b}": 1.0 for b in r.behaviors}
        own["verdict_max"] = max(r.verdicts.values(), default=0.0)
        own["signed"] = 1.0 if f.signed else 0.0
        own[f"path_{f.path}"] = 1.0
        own["parent_flagged"] = s.features.get("parent_flagged", 0.0)
        return self.prior.score(own) >= self.device_score

    # -- reports --------------------------------------------------------------
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
        if score >= self.device_score and self._accuses(s):   # only where a block could follow
            enf.accuse(r.org_id, now)
        accusers = enf.accusing(now - self.global_window)
        lone_accuser = len(accusers) == 1   # all the evidence is one tenant's own claims

        n_orgs = s.orgs_in_windows[self.global_idx]
        prevalent_signed = r.file.signed and s.orgs_ever >= self.prevalent_orgs
        if (score >= self.global_score and n_orgs >= self.global_min_orgs
                and not prevalent_signed and not lone_accuser
                and enf.current(GLOBAL, now) != "block"):
            out.append(self._decide(
                enf, r.sha256, GLOBAL, "block", sc, now, r.report_id,
                [f"malice score {score:.2f} ≥ global threshold {self.global_score:.2f}",
                 f"seen in {n_orgs} orgs within {_fmt_window(self.global_window)}",
                 *sc.explain()[:2]],
                now + self.ttl["global"]))

        org_action = enf.current(org_t, now)
        if org_action == "allow":
            return out   # the tenant's own override: correlation never blocks its devices
        globally_blocked = enf.current(GLOBAL, now) == "block"
        if globally_blocked or org_action == "block":
            return out
        if lone_accuser and accusers[0] != r.org_id:
            return out   # another tenant's claims alone never block this org's devices
        if score >= self.org_score:
            out.append(self._decide(
                enf, r.sha256, org_t, "block", sc, now, r.report_id,
                [f"malice score {score:.2f} ≥ org threshold {self.org_score:.2f}",
                 f"reported by device {r.device_id} in this org", *sc.explain()[:2]],
                now + self.ttl["org"]))
            return out
        strong = [b for b in r.behaviors if b in self.device_behaviors]
        if strong and score >= self.device_score and enf.current(dev_t, now) != "block":
            out.append(self._decide(
                enf, r.sha256, dev_t, "block", sc, now, r.report_id,
                [f"{', '.join(strong)} observed on this device",
                 f"malice score {score:.2f} ≥ device threshold {self.device_score:.2f}"],
                now + self.ttl["device"]))
        return out

    # -- verdicts -------------------------------------------------------------
    def on_verdict(self, enf: Enforcement, fb: Feedback, sc: Scored,
                   signer: str | None = None) -> list[Decision]:
        now = fb.ts
        enf.last_event = max(enf.last_event, now)
        sha = fb.sha256
        if fb.trusted:
            enf.label = fb.verdict
            if fb.verdict == "malicious":
                if self.allowlist.allows(sha, signer):
                    return []
                if enf.current(GLOBAL, now) == "block":
                    _, exp = enf.active[GLOBAL]
                    if exp is None or exp >= now + self.trusted_ttl / 2:
                        return []
                return [self._decide(enf, sha, GLOBAL, "block", sc, now, fb.feedback_id,
                                     [f"{fb.source} verdict malicious"],
                                     now + self.trusted_ttl)]
            out = []
            for target in sorted(enf.active, key=_target_order):
                if enf.current(target, now) == "block":
                    out.append(self._decide(enf, sha, target, "unblock", sc, now,
                                            fb.feedback_id, [f"{fb.source} verdict benign"],
                                            None))
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
                             ["reported malicious by this org"], now + self.ttl["org"])]

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
