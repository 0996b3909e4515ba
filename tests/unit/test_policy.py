"""The policy's rules, one by one, without models, Bytewax or Kafka."""

from rapidloop.base.config import load_config
from rapidloop.operators.allowlist import AllowList
from rapidloop.operators.correlate import Sighting
from rapidloop.operators.policy import GLOBAL, Enforcement, Policy, Scored

from .helpers import T0, feedback, report, sha

CFG = load_config(env={})
H = sha(0xABC)


ACCUSERS = ["org-1", "org-2", "org-3"]   # three orgs of unknown trust: 1.5, just enough


def sighting(r, orgs=(1, 1, 1), ever=1, accusers=(), signed=None):
    return Sighting(r, {}, list(orgs), ever, 0.0, list(accusers),
                    r.file.signed if signed is None else signed)


def scored(score):
    return Scored(score, {"logreg": score, "prior": score}, "ens-0", lambda: ["because"])


def test_low_score_decides_nothing():
    p, e = Policy.from_config(CFG), Enforcement()
    assert p.on_sighting(e, sighting(report(H)), scored(0.1)) == []


def test_device_block_on_strong_behaviour():
    p, e = Policy.from_config(CFG), Enforcement()
    r = report(H, behaviors=("ransomware_encryption",))
    (d,) = p.on_sighting(e, sighting(r), scored(0.6))
    assert (d.action, d.scope, d.org_id, d.device_id) == ("block", "device", r.org_id, r.device_id)
    assert d.expires_at == r.ts + CFG.policy.device_block_ttl_s
    assert "ransomware_encryption observed on this device" in d.reasons[0]
    # same device again: nothing changes, nothing emitted
    assert p.on_sighting(e, sighting(report(H, behaviors=("ransomware_encryption",))),
                         scored(0.6)) == []


def test_org_then_global_block_and_only_changes_emitted():
    p, e = Policy.from_config(CFG), Enforcement()
    (d,) = p.on_sighting(e, sighting(report(H, org="org-1")), scored(0.86))
    assert (d.action, d.scope, d.org_id) == ("block", "org", "org-1")
    assert p.on_sighting(e, sighting(report(H, org="org-1")), scored(0.86)) == []
    # three orgs run it: the bar is logit(0.9) + ln 3 (operators.cost), a score of 0.97
    (g,) = p.on_sighting(e, sighting(report(H, org="org-2"), orgs=(3, 3, 3), ever=3,
                                     accusers=ACCUSERS), scored(0.98))
    assert (g.action, g.scope, g.org_id, g.device_id) == ("block", "global", None, None)
    assert "accused by 3 orgs within 1d (trust 1.50)" in g.reasons
    assert all("org-" not in reason for reason in g.reasons)   # no tenant names
    assert p.on_sighting(e, sighting(report(H, org="org-3"), orgs=(4, 4, 4)), scored(0.99)) == []


def test_high_score_in_one_org_is_not_global():
    p, e = Policy.from_config(CFG), Enforcement()
    out = p.on_sighting(e, sighting(report(H), orgs=(1, 1, 1)), scored(0.99))
    assert [d.scope for d in out] == ["org"]


def test_prevalent_signed_file_needs_trusted_verdict_for_global():
    p, e = Policy.from_config(CFG), Enforcement()
    r = report(H, signed=True, signer="Vendor")
    out = p.on_sighting(e, sighting(r, orgs=(30, 30, 30), ever=30, accusers=ACCUSERS),
                        scored(0.999))   # 30 orgs run it: the org bar is 0.994 (cost)
    assert [d.scope for d in out] == ["org"]
    (g,) = p.on_verdict(e, feedback(H, "malicious", "sandbox", ts=T0 + 1), scored(0.99))
    assert (g.scope, g.action, g.reasons[0]) == ("global", "block", "sandbox verdict malicious")


def test_trusted_benign_unblocks_everything_and_stops_correlation():
    p, e = Policy.from_config(CFG), Enforcement()
    p.on_sighting(e, sighting(report(H, org="org-1")), scored(0.9))
    p.on_sighting(e, sighting(report(H, org="org-2"), orgs=(3, 3, 3), accusers=ACCUSERS),
                  scored(0.95))
    out = p.on_verdict(e, feedback(H, "benign", "analyst", ts=T0 + 5), scored(0.95))
    assert sorted((d.action, d.scope, d.org_id) for d in out) == [
        ("unblock", "global", None), ("unblock", "org", "org-1")]
    again = sighting(report(H, org="org-9", ts=T0 + 9), orgs=(5, 5, 5))
    assert p.on_sighting(e, again, scored(0.99)) == []


def test_sandbox_verdicts_are_weighed_against_the_evidence():
    p = Policy.from_config(CFG)
    # a sandbox "malicious" on a file everything else calls clean blocks nothing...
    e = Enforcement()
    assert p.on_verdict(e, feedback(H, "malicious", "sandbox"), scored(0.01)) == []
    assert e.label is None
    # ...the analyst is final
    (g,) = p.on_verdict(e, feedback(H, "malicious", "analyst"), scored(0.01))
    assert (g.scope, g.action) == ("global", "block")
    # a sandbox "benign" against overwhelming evidence lifts nothing
    e = Enforcement()
    p.on_sighting(e, sighting(report(H, org="org-1")), scored(0.999))
    assert p.on_verdict(e, feedback(H, "benign", "sandbox", ts=T0 + 1), scored(0.999)) == []
    assert e.current(("org", "org-1", None), T0 + 2) == "block"
    # ...nor on strong evidence: unblocking a threat needs the odds with it below 0.2
    assert p.on_verdict(e, feedback(H, "benign", "sandbox", ts=T0 + 2), scored(0.97)) == []
    (u,) = p.on_verdict(e, feedback(H, "benign", "sandbox", ts=T0 + 3), scored(0.5))
    assert (u.action, u.scope) == ("unblock", "org")


def test_score_blocks_are_released_when_the_file_proves_widespread():
    p, e = Policy.from_config(CFG), Enforcement()
    (d,) = p.on_sighting(e, sighting(report(H, org="org-1")), scored(0.9))
    assert (d.action, d.scope) == ("block", "org")
    few = sighting(report(H, org="org-2", ts=T0 + 1), ever=3)
    assert p.on_sighting(e, few, scored(0.05)) == []      # a few orgs: one tenant could dilute
    many = sighting(report(H, org="org-2", ts=T0 + 2), ever=CFG.policy.release_min_orgs)
    (u,) = p.on_sighting(e, many, scored(0.05))
    assert (u.action, u.scope, u.org_id) == ("unblock", "org", "org-1")
    assert "fell below release threshold" in u.reasons[0]


def test_org_report_benign_allows_for_that_org_only():
    p, e = Policy.from_config(CFG), Enforcement()
    p.on_verdict(e, feedback(H, "malicious", "sandbox"), scored(0.9))
    (a,) = p.on_verdict(e, feedback(H, "benign", "org_report", org="org-7", ts=T0 + 1),
                        scored(0.9))
    assert (a.action, a.scope, a.org_id, a.expires_at) == ("allow", "org", "org-7", None)
    assert e.current(GLOBAL, T0 + 2) == "block"      # still blocked for everyone else
    # the allowing org's own devices are not blocked again by correlation
    r = report(H, org="org-7", behaviors=("ransomware_encryption",), ts=T0 + 3)
    assert p.on_sighting(e, sighting(r), scored(0.99)) == []


def test_org_report_malicious_blocks_that_org_only():
    p, e = Policy.from_config(CFG), Enforcement()
    (d,) = p.on_verdict(e, feedback(H, "malicious", "org_report", org="org-3"), scored(0.2))
    assert (d.action, d.scope, d.org_id) == ("block", "org", "org-3")


def test_allowlist_is_never_blocked():
    allow = AllowList.parse([H, "signer:Good Vendor"])
    p, e = Policy.from_config(CFG, allow), Enforcement()
    r = report(H, behaviors=("ransomware_encryption",))
    assert p.on_sighting(e, sighting(r, orgs=(9, 9, 9)), scored(1.0)) == []
    assert p.on_verdict(e, feedback(H, "malicious", "sandbox"), scored(1.0)) == []
    other = sha(5)
    r2 = report(other, signer="Good Vendor", signed=True)
    assert p.on_sighting(e, sighting(r2, orgs=(9, 9, 9)), scored(1.0)) == []


def test_blocks_expire_and_can_be_renewed():
    p, e = Policy.from_config(CFG), Enforcement()
    (d,) = p.on_sighting(e, sighting(report(H)), scored(0.9))
    later = d.expires_at + 1
    (d2,) = p.on_sighting(e, sighting(report(H, ts=later)), scored(0.9))
    assert d2.scope == "org" and d2.decision_id != d.decision_id


def test_decision_ids_are_deterministic():
    r = report(H, report_id="fixed")
    a = Policy.from_config(CFG).on_sighting(Enforcement(), sighting(r), scored(0.9))
    b = Policy.from_config(CFG).on_sighting(Enforcement(), sighting(r), scored(0.9))
    assert [d.decision_id for d in a] == [d.decision_id for d in b]


def doubted(score, trimmed):
    """A score one learner alone carries: without it the models say ``trimmed``."""
    return Scored(score, {"prior": score, "nb": 1.0}, "ens-20", lambda: ["because"],
                  True, lambda: trimmed)


def test_no_single_learner_blocks_a_widespread_file_across_an_org():
    widespread = CFG.policy.release_min_orgs
    p, e = Policy.from_config(CFG), Enforcement()
    assert p.on_sighting(e, sighting(report(H), ever=widespread), doubted(0.999, 0.3)) == []
    # the rest of the models agree: blocked
    (d,) = p.on_sighting(e, sighting(report(H), ever=widespread), doubted(0.999, 0.9))
    assert (d.action, d.scope) == ("block", "org")
    # a file still confined to a few orgs (where campaigns start) goes by the full score
    p, e = Policy.from_config(CFG), Enforcement()
    (d,) = p.on_sighting(e, sighting(report(H), ever=3), doubted(0.99, 0.3))
    assert (d.action, d.scope) == ("block", "org")


def test_global_correlation_needs_the_models_without_their_most_eager_learner():
    p, e = Policy.from_config(CFG), Enforcement()
    s = sighting(report(H, org="org-2"), orgs=(3, 3, 3), ever=3, accusers=ACCUSERS)
    out = p.on_sighting(e, s, doubted(0.98, CFG.policy.global_trimmed_score - 0.05))
    assert [d.scope for d in out] == ["org"]
    out = p.on_sighting(e, s, doubted(0.98, CFG.policy.global_trimmed_score + 0.05))
    assert [d.scope for d in out] == ["global"]
    off = load_config(env={"RAPIDLOOP_POLICY__TRIM_EAGER_LEARNER": "false"})
    out = Policy.from_config(off).on_sighting(Enforcement(), s, doubted(0.98, 0.1))
    assert [d.scope for d in out] == ["global"]


def test_sandbox_verdict_is_weighed_against_the_trimmed_score():
    p = Policy.from_config(CFG)
    fb = feedback(H, "malicious", "sandbox")
    # one learner alone thought it malicious; without it the file looks clean
    assert p.on_verdict(Enforcement(), fb, doubted(0.5, 0.01)) == []
    (d,) = p.on_verdict(Enforcement(), fb, doubted(0.5, 0.4))
    assert (d.action, d.scope) == ("block", "global")
    # a file never reported: even odds, so the sandbox's word stands
    unknown = Scored(0.001, {"prior": 0.001}, "ens-20", lambda: [], True, known=False)
    (d,) = p.on_verdict(Enforcement(), fb, unknown)
    assert (d.action, d.scope) == ("block", "global")


def test_first_sight_blocks_everywhere_when_the_models_are_sure_and_the_org_is_trusted():
    p = Policy.from_config(CFG)
    p.trust.settle(["org-1"], malicious=True)   # one accusation confirmed: trust 2/3
    first = sighting(report(H, org="org-1"), ever=1, accusers=["org-1"])
    out = p.on_sighting(Enforcement(), first, doubted(0.95, 0.9))
    assert [d.scope for d in out] == ["global"]
    assert "not yet seen in any other organization" in out[0].reasons
    assert all("org-" not in reason for reason in out[0].reasons)
    # ...not on one learner's word, nor from a tenant never confirmed, nor uncalibrated
    assert [d.scope for d in p.on_sighting(Enforcement(), first, doubted(0.95, 0.5))] == ["org"]
    stranger = sighting(report(H, org="org-9"), ever=1, accusers=["org-9"])
    assert [d.scope for d in p.on_sighting(Enforcement(), stranger, doubted(0.95, 0.9))] == [
        "org"]
    cold = Scored(0.95, {"prior": 0.95}, "ens-0", lambda: [], False, lambda: 0.95)
    assert [d.scope for d in p.on_sighting(Enforcement(), first, cold)] == ["org"]
    # ...nor once another organization has seen it without accusing it (correlation's call)
    second = sighting(report(H, org="org-1"), ever=2, accusers=["org-1"])
    assert [d.scope for d in p.on_sighting(Enforcement(), second, doubted(0.95, 0.9))] == [
        "org"]
    off = load_config(env={"RAPIDLOOP_POLICY__FIRST_SIGHT_SCORE": "0"})
    q = Policy.from_config(off)
    q.trust.settle(["org-1"], malicious=True)
    assert [d.scope for d in q.on_sighting(Enforcement(), first, doubted(0.95, 0.9))] == ["org"]


def test_a_widespread_file_is_not_blocked_on_a_device_on_one_learners_word():
    r = report(H, behaviors=("ransomware_encryption",))   # a backup agent, or ransomware
    many = sighting(r, ever=CFG.policy.release_min_orgs)
    # (ten orgs run it: the device bar is logit 0.5 + 1.5 ln 10, a score of 0.97: cost)
    assert Policy.from_config(CFG).on_sighting(Enforcement(), many, doubted(0.99, 0.1)) == []
    (d,) = Policy.from_config(CFG).on_sighting(Enforcement(), many, doubted(0.99, 0.55))
    assert d.scope == "device"
    (d,) = Policy.from_config(CFG).on_sighting(Enforcement(), sighting(r, ever=1),
                                               doubted(0.6, 0.1))
    assert d.scope == "device"   # one org: where campaigns start, the full score decides


def test_a_vouched_publisher_is_blocked_on_its_devices_not_across_orgs_on_a_guess():
    from rapidloop.operators.signers import SignerRecord
    record = SignerRecord(vouch_clean=3, max_files=100)
    for i in range(3):
        record.learn("Microsoft Corporation", sha(0x900 + i), malicious=False)
    p = Policy.from_config(CFG, signers=record)
    r = report(H, org="org-1", behaviors=("credential_dumping",), signed=True,
               signer="Microsoft Corporation")   # procdump, as naive Bayes sees it
    s = Sighting(r, {}, [3, 3, 3], 3, 0.0, ACCUSERS, True, "Microsoft Corporation")
    out = p.on_sighting(Enforcement(), s, doubted(0.98, 0.98))
    assert [d.scope for d in out] == ["device"]
    unknown = Sighting(r, {}, [3, 3, 3], 3, 0.0, ACCUSERS, True, "Nordic Digital ApS")
    assert [d.scope for d in p.on_sighting(Enforcement(), unknown, doubted(0.98, 0.98))] == [
        "global"]


def test_the_bar_of_a_block_for_others_rises_with_the_orgs_that_run_the_file():
    """Expected cost (operators.cost): the same score blocks a file three orgs run for
    everyone, and not one forty orgs run, where a mistake would break forty."""
    s3 = sighting(report(H, org="org-2"), orgs=(3, 3, 3), ever=3, accusers=ACCUSERS)
    s40 = sighting(report(H, org="org-2"), orgs=(3, 3, 40), ever=40, accusers=ACCUSERS)
    assert "global" in [d.scope for d in Policy.from_config(CFG).on_sighting(Enforcement(), s3,
                                                                   scored(0.98))]
    assert "global" not in [d.scope for d in Policy.from_config(CFG).on_sighting(Enforcement(), s40,
                                                                       scored(0.98))]
    (g,) = [d for d in Policy.from_config(CFG).on_sighting(Enforcement(), s3, scored(0.98))
            if d.scope == "global"]
    assert any(r.startswith("expected cost: log-odds +3.9") and "seen in 3 orgs" in r
               for r in g.reasons)
    # a sandbox "malicious" is held to the same bar
    fb = feedback(H, "malicious", "sandbox")
    assert Policy.from_config(CFG).on_verdict(Enforcement(), fb, scored(0.3), orgs=1)
    assert Policy.from_config(CFG).on_verdict(Enforcement(), fb, scored(0.3), orgs=60) == []


def test_siblings_condemned_by_trusted_verdicts_block_the_next_wave_at_first_sight():
    from rapidloop.operators.lineage import lineage_key
    p = Policy.from_config(CFG)
    p.trust.settle(["org-1"], malicious=True)   # a tenant whose accusations held before
    key = lineage_key("invoice_1.exe", None, "pe")
    for i in range(4):
        p.lineage.learn(key, sha(0x700 + i), malicious=True)
    r = report(H, org="org-1", behaviors=("process_injection",))
    s = Sighting(r, {}, [1, 1, 1], 1, 0.0, ["org-1"], False, None,
                 lineage_key("invoice_4821.exe", None, "pe"))
    out = p.on_sighting(Enforcement(), s, scored(0.7))
    assert [d.scope for d in out] == ["global"]
    assert out[0].reasons[0].startswith("its siblings (same name pattern, signer and type) "
                                        "were condemned by 4 trusted verdicts")
    # a lineage the verdicts keep clearing holds a scary report back instead
    q = Policy.from_config(CFG)
    for i in range(6):
        q.lineage.learn(key, sha(0x800 + i), malicious=False)
    assert [d.scope for d in q.on_sighting(Enforcement(), s, scored(0.9))] == ["device"]


def test_a_sandbox_block_is_weighed_again_as_the_file_spreads():
    """A sandbox "malicious" on a file one org ran: blocked for everyone. Once ten and more
    orgs run it and the models call it clean, the cost of a wrong block outweighs the
    verdict and it is lifted; an analyst's block is final."""
    p, e = Policy.from_config(CFG), Enforcement()
    (g,) = p.on_verdict(e, feedback(H, "malicious", "sandbox"), scored(0.5), orgs=1)
    assert (g.action, g.scope) == ("block", "global")
    few = sighting(report(H, org="org-5", ts=T0 + 10), ever=5)
    assert p.on_sighting(e, few, scored(0.05)) == []          # a campaign's first orgs
    many = sighting(report(H, org="org-40", ts=T0 + 20), ever=40)
    (u,) = p.on_sighting(e, many, scored(0.05))
    assert (u.action, u.scope) == ("unblock", "global")
    assert u.reasons[0] == ("sandbox verdict malicious no longer outweighs the cost of "
                            "blocking a file 40 orgs run")
    q, f = Policy.from_config(CFG), Enforcement()
    q.on_verdict(f, feedback(H, "malicious", "analyst"), scored(0.5), orgs=1)
    assert q.on_sighting(f, many, scored(0.05)) == []


def test_a_sandbox_benign_does_not_clear_a_file_whose_siblings_were_condemned():
    from rapidloop.operators.lineage import lineage_key
    key = lineage_key("invoice_1.exe", None, "pe")
    p, e = Policy.from_config(CFG), Enforcement()
    p.on_verdict(e, feedback(H, "malicious", "analyst"), scored(0.9))
    fb = feedback(H, "benign", "sandbox", ts=T0 + 5)
    assert p.accepts(scored(0.5), fb, lineage=key)           # nothing known of siblings
    for i in range(5):
        p.lineage.learn(key, sha(0x600 + i), malicious=True)
    assert not p.accepts(scored(0.5), fb, lineage=key)
    assert p.on_verdict(e, fb, scored(0.5), lineage=key) == []


def test_an_org_block_is_weighed_again_as_the_file_spreads():
    """Blocked in its first org at 0.97, the file turns out to run in 40: the org block is
    lifted with the line that says why; a device block placed on what that device saw stays."""
    p, e = Policy.from_config(CFG), Enforcement()
    r = report(H, org="org-1", behaviors=("process_injection",))
    (d,) = p.on_sighting(e, sighting(r), scored(0.97))
    assert (d.action, d.scope) == ("block", "org")
    e.scored.add(("device", "org-1", "dev-x"))      # as if a device block stood too
    e.active[("device", "org-1", "dev-x")] = ("block", None)
    later = report(H, org="org-9", ts=T0 + 60)
    (u,) = p.on_sighting(e, sighting(later, orgs=(40, 40, 40), ever=40), scored(0.97))
    assert (u.action, u.scope, u.org_id) == ("unblock", "org", "org-1")
    assert u.reasons[0] == "malice score 0.97 no longer outweighs the cost of blocking a file " \
                           "40 orgs run"
    assert u.reasons[1].startswith("expected cost: log-odds +3.5 = +3.5 vs bar +7.3")
    assert e.current(("device", "org-1", "dev-x"), T0 + 60) == "block"
    # evidence that keeps up with the bar keeps the block
    p, e = Policy.from_config(CFG), Enforcement()
    p.on_sighting(e, sighting(r), scored(0.97))
    out = p.on_sighting(e, sighting(later, orgs=(25, 25, 25), ever=25), scored(0.9999))
    assert [(d.action, d.org_id) for d in out] == [("block", "org-9")]   # and org-9's own
    assert e.current(("org", "org-1", None), T0 + 60) == "block"


def uncalibrated(score):
    """The ensemble before verdicts checked it: the hand-set prior's score alone."""
    return Scored(score, {"prior": score, "logreg": 0.5}, "ens-0", lambda: ["because"],
                  calibrated=False)


def test_an_org_block_of_the_prior_alone_is_lifted_when_the_checked_models_find_it_benign():
    """Before any verdict the prior scores a backup agent that encrypts files 0.95 and
    its org is blocked; the file's first sighting once verdicts have checked the models
    scores 0.1, and the block is lifted with the line that says why (device blocks and
    blocks the checked models placed are not provisional)."""
    p, e = Policy.from_config(CFG), Enforcement()
    (d,) = p.on_sighting(e, sighting(report(H, org="org-1")), uncalibrated(0.95))
    assert (d.action, d.scope, d.org_id) == ("block", "org", "org-1")
    assert e.provisional == {("org", "org-1", None)}
    assert p.on_sighting(e, sighting(report(H, org="org-1", ts=T0 + 5)), uncalibrated(0.2)) == []
    later = report(H, org="org-2", ts=T0 + 600)
    (u,) = p.on_sighting(e, sighting(later, orgs=(2, 2, 2), ever=2), scored(0.1))
    assert (u.action, u.scope, u.org_id) == ("unblock", "org", "org-1")
    assert u.reasons[0] == ("placed on the prior alone before verdicts had checked the models, "
                            "which now score it 0.10: below 0.50, benign likelier")
    assert not e.provisional and not e.scored
    # weighed once: a calibrated score that still finds malice likelier keeps the block
    p, e = Policy.from_config(CFG), Enforcement()
    p.on_sighting(e, sighting(report(H, org="org-1")), uncalibrated(0.95))
    assert p.on_sighting(e, sighting(later, orgs=(2, 2, 2), ever=2), scored(0.6)) == []
    assert not e.provisional and e.current(("org", "org-1", None), T0 + 600) == "block"
    assert p.on_sighting(e, sighting(report(H, org="org-3", ts=T0 + 700), orgs=(3, 3, 3),
                                     ever=3), scored(0.1)) == []   # now a score block
    # a trusted verdict has the say over the prior's block
    p, e = Policy.from_config(CFG), Enforcement()
    p.on_sighting(e, sighting(report(H, org="org-1")), uncalibrated(0.95))
    e.label = "malicious"
    assert p.on_sighting(e, sighting(later, orgs=(2, 2, 2), ever=2), scored(0.1)) == []
    assert e.current(("org", "org-1", None), T0 + 600) == "block"


def test_a_settled_sighting_decides_nothing_whatever_the_score():
    """``Policy.settled`` lets the decider skip the models: wherever it says so, the full rule
    decides nothing at any score and leaves the state as the fast path does."""
    import copy
    import random

    rng = random.Random(7)
    orgs = [f"org-{i}" for i in range(8)]
    allow = AllowList(hashes={sha(0xA11)})
    for trial in range(40):
        p, e = Policy.from_config(CFG, allow), Enforcement()
        h = sha(0xA11) if trial % 10 == 0 else sha(0x5E7 + trial)
        ts, seen, settled = T0, set(), 0
        for _ in range(60):
            ts += rng.uniform(1, 4000)
            if rng.random() < 0.15:
                verdict = rng.choice(["malicious", "benign"])
                source = rng.choice(["sandbox", "analyst"])
                p.on_verdict(e, feedback(h, verdict, source, ts=ts), scored(rng.random()),
                             orgs=len(seen))
                continue
            org = rng.choice(orgs)
            seen.add(org)
            s = sighting(report(h, org=org, ts=ts, behaviors=("ransomware_encryption",)),
                         orgs=(len(seen),) * 3, ever=len(seen),
                         accusers=rng.sample(sorted(seen), k=min(len(seen), 3)))
            fast = copy.deepcopy(e)
            if p.settled(fast, s):
                settled += 1
                for x in (0.0, 0.5, 0.999):
                    slow = copy.deepcopy(e)
                    assert p.on_sighting(slow, s, scored(x)) == []
                    assert (slow.last_event, slow.first_sight, slow.label) == (
                        fast.last_event, fast.first_sight, fast.label)
                e = fast
            else:
                p.on_sighting(e, s, scored(rng.choice([0.05, 0.9, 0.999])))
        assert trial % 10 or settled   # the allow-listed file is always settled
