"""Signer reputation: the record, and the policy's use of it, without Bytewax or Kafka."""

from __future__ import annotations

import pickle

from rapidloop.base.config import load_config
from rapidloop.operators.correlate import Correlator, Sighting
from rapidloop.operators.decide import Decider
from rapidloop.operators.policy import Enforcement, Policy, Scored
from rapidloop.operators.signers import SignerRecord
from rapidloop.operators.snapshot import loads_plain
from rapidloop.schemas.model import Decision, Feedback, Report

from .helpers import T0, feedback, report, sha

CFG = load_config(env={})
BEACON = ("c2_beacon", "persistence", "discovery")   # a remote-access tool, or a backdoor


def test_each_file_counts_once_with_its_latest_verdict() -> None:
    r = SignerRecord(vouch_clean=3, max_files=100)
    r.learn("Vendor", sha(1), malicious=True)
    r.learn("Vendor", sha(1), malicious=False)   # the analyst overturns the sandbox
    r.learn("Vendor", sha(1), malicious=False)
    assert r.record("Vendor") == (1, 0)
    r.learn(None, sha(2), malicious=True)        # unsigned: nothing to learn
    assert r.record(None) == (0, 0) and r.counts == {"Vendor": (1, 0)}


def test_a_condemned_file_raises_the_bar() -> None:
    r = SignerRecord(vouch_clean=3, max_files=100)
    for i in range(5):
        r.learn("Vendor", sha(i), malicious=False)
    assert r.vouches("Vendor")
    r.learn("Vendor", sha(99), malicious=True)
    assert not r.vouches("Vendor")               # 5 clean, 1 condemned: 6 needed
    r.learn("Vendor", sha(5), malicious=False)
    assert r.vouches("Vendor")
    assert not SignerRecord(vouch_clean=0, max_files=100).vouches("Vendor")   # off


def test_the_record_is_bounded() -> None:
    r = SignerRecord(vouch_clean=3, max_files=10)
    for i in range(50):
        r.learn(f"Signer {i}", sha(i), malicious=False)
    assert len(r.files) == 10 and len(r.counts) == 10
    assert r.record("Signer 49") == (1, 0) and r.record("Signer 0") == (0, 0)
    back = SignerRecord(vouch_clean=3, max_files=10)
    back.restore(loads_plain(pickle.dumps(r.snapshot())))
    assert list(back.counts.items()) == list(r.counts.items()) and back.files == r.files


def scored(score: float) -> Scored:
    return Scored(score, {"prior": score}, "ens-9", lambda: [], True, lambda: score)


def test_a_vouched_signer_outweighs_one_sandbox_verdict_but_not_the_analyst() -> None:
    record = SignerRecord(vouch_clean=3, max_files=100)
    for i in range(3):
        record.learn("Vendor", sha(i), malicious=False)
    p = Policy.from_config(CFG, signers=record)
    fb = feedback(sha(7), "malicious", "sandbox")
    assert p.on_verdict(Enforcement(), fb, scored(0.9), "Vendor") == []
    assert not p.accepts(scored(0.9), fb, "Vendor")
    (d,) = p.on_verdict(Enforcement(), fb, scored(0.9), "Other Vendor")
    assert (d.scope, d.action) == ("global", "block")
    (d,) = p.on_verdict(Enforcement(), feedback(sha(7), "malicious", "analyst"), scored(0.9),
                        "Vendor")
    assert (d.scope, d.action) == ("global", "block")


def run(events: list[Report | Feedback], d: Decider | None = None) -> list[Decision]:
    c, d = Correlator.from_config(CFG), d or Decider.from_config(CFG)
    out: list[Decision] = []
    for i, ev in enumerate(events):
        items, _ = c.process([(i, ev)], 0.0)
        out += d.process([x for _, x in items], 0.0)
    return out


def vendor_file(n: int, ts: float, signer: str = "Vendor GmbH") -> Report:
    return report(sha(0x500 + n), org=f"org-{n}", ts=ts, behaviors=BEACON, verdict=0.6,
                  signed=True, signer=signer)


def test_a_wrong_sandbox_verdict_on_a_cleared_publisher_is_not_enforced_everywhere() -> None:
    events: list[Report | Feedback] = []
    for n in range(3):   # three of the vendor's builds cleared by the sandbox
        events += [vendor_file(n, T0 + 10 * n), feedback(sha(0x500 + n), "benign",
                                                         ts=T0 + 10 * n + 5)]
    events += [vendor_file(3, T0 + 100), feedback(sha(0x503), "malicious", ts=T0 + 105)]
    dec = Decider.from_config(CFG)
    assert not [d for d in run(events, dec) if d.scope == "global" and d.action == "block"]
    # the same verdict about a publisher the sandbox has not cleared is enforced
    other = Decider.from_config(CFG)
    out = run([*events[:-2], vendor_file(3, T0 + 100, "Other Vendor"), events[-1]], other)
    assert [d.sha256 for d in out if d.scope == "global"] == [sha(0x503)]
    # the refused verdict still counts against the vendor: the next one is weighed as usual
    assert dec.signers is not None and dec.signers.record("Vendor GmbH") == (3, 1)
    assert not dec.signers.vouches("Vendor GmbH")


def test_no_tenant_can_buy_a_signer_its_reputation() -> None:
    events: list[Report | Feedback] = []
    for n in range(5):   # the tenant's own "benign" reports about the signer's files
        events += [vendor_file(n, T0 + 10 * n, signer="Stolen Cert Ltd"),
                   feedback(sha(0x500 + n), "benign", "org_report", org=f"org-{n}",
                            ts=T0 + 10 * n + 5)]
    events += [vendor_file(9, T0 + 100, signer="Stolen Cert Ltd"),
               feedback(sha(0x509), "malicious", ts=T0 + 105)]
    blocked = [d.sha256 for d in run(events) if d.scope == "global" and d.action == "block"]
    assert blocked == [sha(0x509)]


def test_a_condemned_signer_is_blocked_everywhere_on_sight() -> None:
    record = SignerRecord(vouch_clean=3, max_files=100)
    record.learn("Nordic Digital ApS", sha(1), malicious=True)
    p = Policy.from_config(CFG, signers=record)
    r = report(sha(9), org="org-1", signed=True, signer="Nordic Digital ApS")
    seen = Sighting(r, {}, [1, 1, 1], 1, 0.0, [], True, "Nordic Digital ApS")
    assert p.on_sighting(Enforcement(), seen, scored(0.7)) == []   # one condemned: not yet
    record.learn("Nordic Digital ApS", sha(2), malicious=True)
    (d,) = p.on_sighting(Enforcement(), seen, scored(0.7))
    assert (d.scope, d.action) == ("global", "block")
    assert d.reasons[0] == ("its signer's files were condemned by 2 trusted verdicts"
                            " and cleared by 0")
    assert d.reasons[1].startswith("expected cost: log-odds +2.5")   # +0.8 score, +1.6 signer
    assert all("Nordic" not in reason for reason in d.reasons)   # a signer may name a tenant
    # weighed, not on sight: the signer alone does not outweigh what the models say of a
    # file they score 0.05 (two wrong labels on an org's in-house tools would otherwise
    # block every other tool of its internal CA for everyone)
    assert p.on_sighting(Enforcement(), seen, scored(0.05)) == []
    record.learn("Nordic Digital ApS", sha(3), malicious=False)   # 2 condemned, 1 cleared
    assert p.on_sighting(Enforcement(), seen, scored(0.7)) == []
    assert not SignerRecord(3, 100).condemns("Nordic Digital ApS", 2)
    assert not record.condemns("Nordic Digital ApS", 0)           # off


def test_a_block_of_a_condemned_signer_is_not_released_because_the_score_fell() -> None:
    """A whitewasher's fabricated clean sightings pull a campaign file's score down as it
    spreads; a block that rests on its kin's trusted verdicts stays (held-out seed
    893973), where a file with no such kin is released as before."""
    record = SignerRecord(vouch_clean=3, max_files=100)
    for i in (1, 2, 3):
        record.learn("TOV Softline Plus", sha(i), malicious=True)
    p, e = Policy.from_config(CFG, signers=record), Enforcement()
    r = report(sha(9), org="org-1", signed=True, signer="TOV Softline Plus")
    (d,) = p.on_sighting(e, Sighting(r, {}, [1, 1, 1], 1, 0.0, ["org-1"], True,
                                      "TOV Softline Plus"), scored(0.7))
    assert (d.scope, d.action) == ("global", "block")
    widespread = int(CFG.policy.release_min_orgs)
    later = report(sha(9), org="org-2", ts=T0 + 60, signed=True, signer="TOV Softline Plus")
    spread = Sighting(later, {}, [1, 1, 1], widespread, 0.0, [], True, "TOV Softline Plus")
    assert p.on_sighting(e, spread, scored(0.05)) == []   # kin condemned: the block stays
    unsigned = Policy.from_config(CFG)
    (b,) = unsigned.on_sighting(e2 := Enforcement(), Sighting(
        report(sha(8), org="org-1"), {}, [1, 1, 1], 1, 0.0, ["org-1"], False, None),
        scored(0.97))
    (u,) = unsigned.on_sighting(e2, Sighting(
        report(sha(8), org="org-2", ts=T0 + 60), {}, [1, 1, 1], widespread, 0.0, [], False,
        None), scored(0.05))
    assert (b.action, u.action, u.scope) == ("block", "unblock", b.scope)
