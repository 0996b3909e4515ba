"""The expected-cost terms: exposure, siblings, vouching and learned verdict reliability,
on the real Correlator and Decider (no Bytewax, no Kafka)."""

from __future__ import annotations

import dataclasses

from rapidloop.base.config import load_config
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.cost import Terms, vouching
from rapidloop.operators.decide import Decider
from rapidloop.operators.stacking import logit
from rapidloop.operators.trust import OrgTrust
from rapidloop.schemas.model import Decision, Feedback, FileInfo, Report

from .helpers import T0, feedback, report, sha

CFG = load_config(env={})


def named(sha256: str, name: str, org: str = "org-1", ts: float = T0, **kw) -> Report:
    r = report(sha256, org=org, ts=ts, **kw)
    return dataclasses.replace(r, file=FileInfo(name, 1000, "pe", False, None, "downloads"))


def run(events: list[Report | Feedback]) -> tuple[Decider, list[Decision]]:
    c, d = Correlator.from_config(CFG), Decider.from_config(CFG)
    out: list[Decision] = []
    for i, ev in enumerate(events):
        items, _ = c.process([(i, ev)], 0.0)
        out += d.process([x for _, x in items], 0.0)
    return d, out


def test_the_bar_rises_with_exposure_and_the_evidence_adds_up() -> None:
    one = Terms(logit(0.95), 0.0, 0.0, 1)
    assert one.clears(0.9, 1.0)
    assert not dataclasses.replace(one, orgs=40).clears(0.9, 1.0)
    assert dataclasses.replace(one, orgs=40, siblings=3.0).clears(0.9, 1.0)
    assert not dataclasses.replace(one, vouching=1.0).clears(0.9, 1.0)
    (line,) = one.lines(0.9, 1.0)
    assert line == "expected cost: log-odds +2.9 = +2.9 vs bar +2.2 (seen in 1 orgs)"


def test_vouching_counts_earned_trust_only_and_is_bounded() -> None:
    t = OrgTrust(1.0, 1.0, 3.0, 100)
    assert vouching(t, ["new-1", "new-2"], [], 1.0, 3.0) == 0.0   # never settled: nothing
    for _ in range(3):
        t.settle(["honest"], malicious=True)   # three "benign" proven right
    assert 1.0 < vouching(t, ["honest"], [], 1.0, 3.0) < 3.0
    assert vouching(t, ["honest"], ["honest"], 1.0, 3.0) == 0.0   # an accuser is no voucher
    for i in range(5):
        for _ in range(3):
            t.settle([f"h{i}"], malicious=True)
    assert vouching(t, [f"h{i}" for i in range(5)], [], 1.0, 3.0) == 3.0
    t.settle(["liar"], malicious=False)        # a "benign" on malware: below unknown
    assert vouching(t, ["liar"], [], 1.0, 3.0) == 0.0


def test_a_campaigns_next_wave_inherits_its_siblings_verdicts() -> None:
    """Waves named invoice_N.exe: once trusted verdicts condemned two, a third wave is
    blocked for everyone on its first report from a tenant whose accusations held."""
    bad = ("process_injection", "persistence")
    events: list[Report | Feedback] = []
    for i in range(CFG.models.min_class_labels + 2):   # past the cold start
        b, g = sha(0xB000 + i), sha(0xC000 + i)
        events += [named(b, f"invoice_{100 + i}.exe", ts=T0 + 10 * i, behaviors=bad,
                         verdict=0.8),
                   named(g, f"tool{i}.exe", ts=T0 + 10 * i + 1),
                   feedback(b, "malicious", ts=T0 + 10 * i + 5),
                   feedback(g, "benign", ts=T0 + 10 * i + 6)]
    new = sha(0xD00D)
    events.append(named(new, "invoice_9931.exe", org="org-1", ts=T0 + 5000, behaviors=bad,
                        verdict=0.3))
    decider, out = run(events)
    (g,) = [d for d in out if d.sha256 == new and d.scope == "global"]
    assert g.action == "block"
    assert g.reasons[0].startswith("its siblings (same name pattern, signer and type)")
    assert any(r.startswith("expected cost:") and "siblings +" in r for r in g.reasons)
    clean, condemned = decider.lineage.record("pe|-|invoice_#.exe")
    assert (clean, condemned) == (0, CFG.models.min_class_labels + 2)


def test_analysts_overturning_the_sandbox_lower_its_weight_on_every_replica() -> None:
    events: list[Report | Feedback] = []
    for i in range(10):
        h = sha(0xE000 + i)
        events += [named(h, f"app{i}.exe", ts=T0 + i),
                   feedback(h, "malicious", "sandbox", ts=T0 + 100 + i),
                   feedback(h, "benign", "analyst", ts=T0 + 200 + i)]
    decider, _ = run(events)
    rel = decider.reliability
    assert rel is not None and rel.record["sandbox"] == (0, 10)
    assert rel.reliability("sandbox") < CFG.policy.verdict_reliability.sandbox
    assert decider.policy.reliability is rel   # the policy weighs verdicts by what was learned
    # an org_report never scores a trusted source
    decider2, _ = run([named(sha(1), "a.exe"), feedback(sha(1), "malicious", "sandbox"),
                       feedback(sha(1), "benign", "org_report", org="org-1", ts=T0 + 9)])
    assert decider2.reliability is not None and decider2.reliability.record == {}


def test_a_payload_inherits_its_condemned_droppers_verdict() -> None:
    """A file reported as dropped by a file trusted verdicts condemned starts suspect."""
    from rapidloop.operators.policy import Policy
    p = Policy.from_config(CFG)
    p.lineage.learn("script|-|update_#.js", sha(0xD1), malicious=True)
    assert p.terms(0.5, None, (), [], 1, parent=sha(0xD1)).siblings == (
        CFG.policy.parent_condemned)
    assert p.terms(0.5, None, (), [], 1, parent=sha(0xD2)).siblings == 0.0
    p.lineage.learn("script|-|update_#.js", sha(0xD1), malicious=False)   # cleared after all
    assert p.terms(0.5, None, (), [], 1, parent=sha(0xD1)).siblings == 0.0
