"""Abuse of the loop itself: one tenant must not be able to steer it against others.

These run the real Correlator and Decider (prior, learners, policy) on
hand-built report streams, without Bytewax or Kafka; the end-to-end version
(through ``rapidloop replay``) is in ``tests/integration/test_faults.py``.
"""

from __future__ import annotations

from rapidloop.base.config import load_config
from rapidloop.operators.allowlist import AllowList
from rapidloop.operators.correlate import Correlator, Sighting
from rapidloop.operators.decide import Decider
from rapidloop.operators.policy import Enforcement, Policy, Scored
from rapidloop.schemas.model import Decision, Feedback, Report

from .helpers import T0, feedback, report, sha

CFG = load_config(env={})
BAD = ("ransomware_encryption", "credential_dumping", "process_injection")
H = sha(0xF00D)


def warm_up(t0: float = T0 - 50_000) -> list[Report | Feedback]:
    """Verdicts on other files, so the models are past their cold start (no global blocks
    by correlation before the models were checked against any verdict)."""
    events: list[Report | Feedback] = []
    for i in range(CFG.models.min_class_labels + 2):
        bad, good = sha(0xB000 + i), sha(0xC000 + i)
        events += [report(bad, org="warm", ts=t0 + 10 * i, behaviors=BAD, verdict=0.9),
                   report(good, org="warm", ts=t0 + 10 * i + 1, signed=True, signer="Contoso"),
                   feedback(bad, "malicious", ts=t0 + 10 * i + 5),
                   feedback(good, "benign", ts=t0 + 10 * i + 6)]
    return events


def run(events: list[Report | Feedback], allowlist: AllowList | None = None,
        warm: bool = False) -> list[Decision]:
    """Decisions about H (the file under attack) from the real operators."""
    c, d = Correlator.from_config(CFG), Decider.from_config(CFG, allowlist)
    out: list[Decision] = []
    for i, ev in enumerate([*warm_up(), *events] if warm else events):
        items, _ = c.process([(i, ev)], 0.0)
        out += d.process([x for _, x in items], 0.0)
    return [x for x in out if x.sha256 == H]


def benign(org: str, ts: float, sha256: str = H) -> Report:
    return report(sha256, org=org, device="pc", ts=ts, signed=True, signer="Contoso")


def poison(n_devices: int, t0: float, signed: bool = True, sha256: str = H,
           org: str = "evil") -> list[Report]:
    """One tenant claims the file misbehaved, with top sensor verdicts, on many devices."""
    return [report(sha256, org=org, device=f"d{i}", ts=t0 + i, behaviors=BAD, verdict=0.99,
                   signed=signed, signer="Contoso" if signed else None)
            for i in range(n_devices)]


def others(decisions: list[Decision], org: str = "evil") -> list[tuple[str, str, str | None]]:
    """Decisions that reach anyone but ``org``: global ones and other orgs' targets."""
    return [(d.action, d.scope, d.org_id) for d in decisions if d.org_id != org]


# ------------------------------------------------- one tenant cannot block for others

def test_one_tenant_many_devices_cannot_block_for_others() -> None:
    for n_others, signed in [(0, True), (4, True), (4, False), (30, True), (30, False)]:
        events: list[Report | Feedback] = [benign(f"good-{k}", T0 + k) for k in range(n_others)]
        events += poison(500, T0 + 100, signed)
        events += [benign(f"good-{k}", T0 + 1000 + k) for k in range(n_others)]
        out = run(events)
        assert others(out) == [], (n_others, signed, others(out))
        if n_others == 0:
            # the tenant can still block a file only it runs for itself, on its own evidence
            # (with others running it clean, its claims count as one org of many, and the
            # cost of blocking software many run is the bar: operators.cost)
            assert any(d.action == "block" and d.org_id == "evil" for d in out)


def test_a_first_sight_block_is_lifted_when_the_fleet_runs_the_file_unaccused() -> None:
    """A tenant whose accusations were confirmed before ("warm") may block a file only it
    has seen for everyone; if it lied, the organizations that then run the file clean lift
    it, and a tenant never confirmed cannot place such a block at all."""
    events: list[Report | Feedback] = poison(20, T0 + 100, signed=False, org="warm")
    first = [(d.action, d.scope) for d in run(events, warm=True)]
    assert ("block", "global") in first
    events += [benign(f"good-{k}", T0 + 1000 + 10 * k) for k in range(12)]
    out = [d for d in run(events, warm=True) if d.scope == "global"]
    assert [d.action for d in out] == ["block", "unblock"]
    assert out[1].reasons == [f"seen in {CFG.policy.release_min_orgs} orgs, "
                              "accused by no other than the first"]
    assert others(run(poison(20, T0 + 100, signed=False), warm=True)) == []


def test_evidence_from_several_tenants_still_blocks_globally() -> None:
    """The anti-poisoning rule must not stop a real campaign seen in several orgs."""
    events: list[Report | Feedback] = []
    for k in range(3):
        events += poison(2, T0 + 100 * k, signed=False, org=f"victim-{k}")
    out = run(events, warm=True)
    assert ("block", "global", None) in others(out, org="")
    # during the cold start (no verdict seen yet) correlation blocks orgs, not everyone
    cold = run(events)
    assert ("block", "global", None) not in others(cold, org="")
    assert {d.org_id for d in cold if d.scope == "org"} == {f"victim-{k}" for k in range(3)}


def test_lone_accuser_rule_at_policy_level() -> None:
    p, e = Policy.from_config(CFG), Enforcement()
    sc = Scored(0.999, {"prior": 0.999}, "ens-50")   # clears the cost bar of a 5-org file
    evil = poison(1, T0)[0]
    out = p.on_sighting(e, Sighting(evil, {}, [1, 1, 5], 5, 0.0, ["evil"]), sc)
    assert [(d.scope, d.org_id) for d in out] == [("org", "evil")]
    # another org's clean sighting, same pooled score, seen in 5 orgs: nothing
    clean = benign("good-1", T0 + 1)
    assert p.on_sighting(e, Sighting(clean, {}, [2, 2, 5], 5, 0.0, ["evil"]), sc) == []
    # two orgs of unknown trust (0.5 each) are not yet enough corroboration...
    second = poison(1, T0 + 2, org="good-2")[0]
    out = p.on_sighting(e, Sighting(second, {}, [3, 3, 5], 5, 0.0, ["evil", "good-2"]), sc)
    assert [(d.scope, d.org_id) for d in out] == [("org", "good-2")]
    # ...a third is
    third = poison(1, T0 + 3, org="good-3")[0]
    out = p.on_sighting(e, Sighting(third, {}, [4, 4, 5], 5, 0.0,
                                    ["evil", "good-2", "good-3"]), sc)
    assert ("global", "block") in [(d.scope, d.action) for d in out]


def test_trusted_organizations_corroborate_sooner() -> None:
    p, e = Policy.from_config(CFG), Enforcement()
    sc = Scored(0.99, {"prior": 0.99}, "ens-50")
    for _ in range(5):   # their past accusations were confirmed by the sandbox
        p.trust.settle(["o1", "o2"], malicious=True)
    r = poison(1, T0, org="o2")[0]
    out = p.on_sighting(e, Sighting(r, {}, [2, 2, 2], 2, 0.0, ["o1", "o2"]), sc)
    assert ("global", "block") in [(d.scope, d.action) for d in out]
    # an organization whose accusations were refuted counts for little
    p2, e2 = Policy.from_config(CFG), Enforcement()
    for _ in range(5):
        p2.trust.settle(["liar"], malicious=False)
    out = p2.on_sighting(e2, Sighting(r, {}, [3, 3, 3], 3, 0.0, ["liar", "o1", "o2"]), sc)
    assert ("global", "block") not in [(d.scope, d.action) for d in out]


def test_model_only_scores_never_block_globally() -> None:
    """No accusing report at all (the learners' own judgement): the org, not everyone."""
    p, e = Policy.from_config(CFG), Enforcement()
    sc = Scored(0.99, {"logreg": 0.99}, "ens-30")
    out = p.on_sighting(e, Sighting(report(H, org="o1"), {}, [3, 3, 3], 3, 0.0), sc)
    assert {(d.scope, d.org_id) for d in out} == {("org", "o1")}


# ------------------------------------------- org_report benign never unblocks for others

def test_org_report_benign_never_unblocks_for_others() -> None:
    events: list[Report | Feedback] = []
    for k in range(3):
        events += poison(2, T0 + 100 * k, signed=False, org=f"o{k}")
    events.append(feedback(H, "malicious", "sandbox", ts=T0 + 500))
    events.append(feedback(H, "benign", "org_report", org="o0", ts=T0 + 600))
    events += poison(1, T0 + 700, signed=False, org="o0")   # its own devices keep reporting
    out = run(events)
    after = [d for d in out if d.event_ts >= T0 + 600]
    assert after, out
    assert all(d.org_id == "o0" for d in after), [(d.action, d.scope, d.org_id) for d in after]
    assert not any(d.action == "unblock" and d.scope in ("global", "org") for d in after)
    assert ("allow", "org", "o0") in [(d.action, d.scope, d.org_id) for d in after]


def test_org_reports_do_not_teach_the_shared_models() -> None:
    d = Decider.from_config(CFG)
    c = Correlator.from_config(CFG)
    events: list[Report | Feedback] = [report(sha(i), org="evil", ts=T0 + i) for i in range(50)]
    events += [feedback(sha(i), "benign", "org_report", org="evil", ts=T0 + 100 + i)
               for i in range(50)]
    for i, ev in enumerate(events):
        items, _ = c.process([(i, ev)], 0.0)
        d.process([x for _, x in items], 0.0)
    assert d.ensemble.model_version == Decider.from_config(CFG).ensemble.model_version


# ----------------------------------------------------------- the allow-list always wins

def test_allowlist_wins_over_any_score_and_verdict() -> None:
    by_hash = AllowList([H])
    by_signer = AllowList(signers=["Contoso"])
    events: list[Report | Feedback] = []
    for k in range(6):
        events += poison(3, T0 + 100 * k, signed=True, org=f"o{k}")
    events.append(feedback(H, "malicious", "sandbox", ts=T0 + 900))
    events.append(feedback(H, "malicious", "org_report", org="o1", ts=T0 + 901))
    for allow in (by_hash, by_signer):
        assert [d for d in run(events, allow) if d.action == "block"] == []
    p = Policy.from_config(CFG, by_hash)
    top = Scored(1.0, {"prior": 1.0}, "ens-9")
    r = poison(1, T0, signed=False)[0]
    assert p.on_sighting(Enforcement(), Sighting(r, {}, [99, 99, 99], 99, 0.0), top) == []


# ------------------------------- a prevalent signed file needs a trusted verdict globally

def test_prevalent_signed_file_needs_trusted_verdict() -> None:
    orgs = CFG.policy.prevalent_orgs + 5
    events: list[Report | Feedback] = [benign(f"good-{k}", T0 + k) for k in range(orgs)]
    # every org (not one tenant) now reports it misbehaving with top verdicts, still signed
    for k in range(orgs):
        events += poison(2, T0 + 1000 + 10 * k, signed=True, org=f"good-{k}")
    out = run(events)
    assert not any(d.scope == "global" for d in out)
    # (each org acts for itself through its own org_report: a file 30 orgs run is dear to
    # block on the score alone, operators.cost)
    out = run([*events, feedback(H, "malicious", "analyst", ts=T0 + 5000)])
    (g,) = [d for d in out if d.scope == "global"]
    assert (g.action, g.reasons[0]) == ("block", "analyst verdict malicious")
