"""The evaluation's bookkeeping: enforcement over event time, protection and collateral."""

from rapidloop.enforcement import Timeline
from rapidloop.evaluate import _Prequential, score_decisions
from rapidloop.schemas.timefmt import format_ts

from .helpers import T0, report, sha

MAL, BEN = sha(1), sha(2)


def decision(sha256, action, scope, ts, org=None, device=None, expires=None):
    return {"sha256": sha256, "action": action, "scope": scope, "org_id": org,
            "device_id": device, "event_ts": format_ts(ts),
            "expires_at": format_ts(expires) if expires else None}


def test_most_specific_active_decision_wins():
    t = Timeline([decision(MAL, "block", "global", T0),
                  decision(MAL, "allow", "org", T0 + 1, org="org-1")])
    assert t.action_at(MAL, "org-1", "org-1/d", T0 + 2) == "allow"
    assert t.action_at(MAL, "org-2", "org-2/d", T0 + 2) == "block"
    assert t.action_at(MAL, "org-2", "org-2/d", T0) is None   # not before it was decided


def test_expired_blocks_lapse_and_unblock_ends():
    t = Timeline([decision(MAL, "block", "org", T0, org="o", expires=T0 + 10),
                  decision(BEN, "block", "global", T0),
                  decision(BEN, "unblock", "global", T0 + 5)])
    assert t.action_at(MAL, "o", "o/d", T0 + 5) == "block"
    assert t.action_at(MAL, "o", "o/d", T0 + 20) is None
    assert t.action_at(BEN, "o", "o/d", T0 + 20) is None


def test_protection_counts_sightings_after_the_first_and_collateral_counts_benign():
    truth = {MAL: {"label": "malicious", "campaign": "c"}, BEN: {"label": "benign"}}
    reports = [report(MAL, org="a", ts=T0), report(MAL, org="b", ts=T0 + 60),
               report(MAL, org="c", ts=T0 + 120), report(BEN, ts=T0 + 130),
               report(BEN, ts=T0 + 200)]
    decisions = [decision(MAL, "block", "global", T0 + 90), decision(BEN, "block", "global",
                                                                     T0 + 150)]
    res = score_decisions(reports, truth, decisions, {})
    assert res.malicious_events == 2 and res.protection_rate == 0.5
    assert res.benign_events == 2 and res.collateral_rate == 0.5
    assert res.median_time_to_global_s == 90
    assert res.campaigns_stopped_before_third_org == 1.0
    assert res.benign_hashes_blocked_global == 1


def test_prequential_auc():
    m = _Prequential()
    for p, y in [(0.1, False), (0.4, False), (0.35, True), (0.8, True)]:
        m.add(p, y)
    assert m.auc() == 0.75


# --- poisoning --------------------------------------------------------------------------

ROGUE_F, ROGUE_W = "org-7", "org-8"       # a flooder and a whitewasher
TARGET, TARGET2, OTHER_BEN = sha(10), sha(11), sha(12)
WASHED, WASHED2, UNWASHED = sha(20), sha(21), sha(22)
POISON_TRUTH = {s: {"label": "benign"} for s in (TARGET, TARGET2, OTHER_BEN)} | {
    s: {"label": "malicious", "campaign": "c"} for s in (WASHED, WASHED2, UNWASHED)}
ROGUES = {"rogues": {"orgs": [ROGUE_F, ROGUE_W], "targets": [TARGET, TARGET2],
                     "whitewashed": [WASHED, WASHED2], "reports": 40, "feedback": 3}}


def _poison(decisions, rogues_speak_at=T0):
    """Honest sightings of every file, and each rogue's first report of its files."""
    reports = [report(s, ts=T0) for s in POISON_TRUTH]
    reports += [report(s, org=ROGUE_F, ts=rogues_speak_at) for s in (TARGET, TARGET2)]
    reports += [report(s, org=ROGUE_W, ts=rogues_speak_at) for s in (WASHED, WASHED2)]
    return score_decisions(sorted(reports, key=lambda r: r.ts), POISON_TRUTH, decisions, ROGUES)


def test_a_rogue_may_poison_only_itself():
    res = _poison([
        decision(TARGET, "block", "org", T0 + 1, org=ROGUE_F),             # its own business
        decision(TARGET, "block", "device", T0 + 1, org=ROGUE_F, device="d"),
        decision(WASHED, "allow", "org", T0 + 1, org=ROGUE_W),             # its own override
        decision(WASHED, "unblock", "device", T0 + 1, org=ROGUE_W, device="d"),
        decision(OTHER_BEN, "block", "global", T0 + 1),                    # not a rogue target
        decision(UNWASHED, "unblock", "global", T0 + 1),                   # not whitewashed
    ])
    assert res.poisoned_global_blocks == 0 and res.poisoned_local_blocks == 0
    assert res.malware_unblocked_for_others == 0
    assert res.malicious_unblocked_beyond_rogues == 1       # UNWASHED, e.g. a noisy verdict
    assert res.rogue_orgs == [ROGUE_F, ROGUE_W] and res.rogue_targets == 2
    assert res.rogue_whitewashed == 2 and res.rogue_reports == 40


def test_poisoning_that_reaches_other_tenants_counts_once_per_hash():
    res = _poison([
        decision(TARGET, "block", "global", T0 + 1),
        decision(TARGET, "unblock", "global", T0 + 2),
        decision(TARGET, "block", "global", T0 + 3),                       # same hash again
        decision(TARGET2, "block", "org", T0 + 1, org="org-1"),            # an honest org
        decision(TARGET2, "block", "device", T0 + 1, org="org-2", device="d"),
        decision(WASHED, "unblock", "global", T0 + 1),
        decision(WASHED2, "allow", "org", T0 + 1, org="org-1"),
        decision(WASHED2, "allow", "device", T0 + 1, org="org-3", device="d"),
    ])
    assert res.poisoned_global_blocks == 1
    assert res.poisoned_local_blocks == 1
    assert res.malware_unblocked_for_others == 2
    assert res.malicious_unblocked_beyond_rogues == 2


def test_what_happened_before_a_rogue_spoke_is_not_its_doing():
    early = [decision(WASHED, "unblock", "global", T0 + 1),    # a noisy sandbox "benign"
             decision(TARGET, "block", "global", T0 + 1)]      # a plain false positive
    res = _poison(early, rogues_speak_at=T0 + 5)
    assert res.malware_unblocked_for_others == 0 and res.poisoned_global_blocks == 0
    assert res.malicious_unblocked_beyond_rogues == 1           # still counted as a mistake
    res = _poison(early, rogues_speak_at=T0 + 1)                 # the same moment: it counts
    assert res.malware_unblocked_for_others == 1 and res.poisoned_global_blocks == 1


def test_no_rogue_section_means_not_applicable():
    res = score_decisions([report(MAL, ts=T0)], {MAL: {"label": "malicious"}}, [], {})
    assert res.poisoned_global_blocks is None and res.malware_unblocked_for_others is None
    empty = score_decisions([report(MAL, ts=T0)], {MAL: {"label": "malicious"}}, [],
                            {"rogues": {"orgs": [], "targets": [], "whitewashed": []}})
    assert empty.poisoned_global_blocks == 0 and empty.malware_unblocked_for_others == 0


def test_counts_of_malicious_hashes_blocked():
    truth = {MAL: {"label": "malicious", "campaign": "c"}, sha(3): {"label": "malicious"},
             BEN: {"label": "benign"}}
    reports = [report(s, ts=T0) for s in truth]
    res = score_decisions(reports, truth, [decision(MAL, "block", "global", T0 + 1),
                                           decision(sha(3), "block", "org", T0 + 1, org="o")],
                          {})
    assert res.malicious_hashes == 2 and res.globally_blocked_malicious == 1
    assert res.malicious_hashes_blocked_any == 2


def test_prequential_measures_against_truth_not_noisy_labels():
    """A label flipped by sandbox noise is scored against the file's true class."""
    from rapidloop.config import load_config
    from rapidloop.evaluate import prequential

    from .helpers import feedback

    cfg = load_config(None)
    shas = [sha(100 + i) for i in range(12)]
    truth = {s: {"label": "malicious" if i % 2 else "benign"} for i, s in enumerate(shas)}
    reports, fbs = [], []
    for i, s in enumerate(shas):
        bad = i % 2 == 1
        reports.append(report(s, ts=T0 + 10 * i, behaviors=("ransomware_encryption",)
                              if bad else (), verdict=0.95 if bad else 0.05))
        said = truth[s]["label"]
        if i == 3:   # the sandbox got this malicious file wrong
            said = "benign"
        fbs.append(feedback(s, said, ts=T0 + 10 * i + 5))
    labels: dict[str, int] = {}
    vs_truth, _ = prequential(cfg, reports, fbs, truth, labels)
    vs_feedback, _ = prequential(cfg, reports, fbs)
    assert labels == {"malicious": 6, "benign": 6, "noisy": 1}
    assert vs_truth["ensemble"]["labels"] == 12
    # the flipped label is a malicious-looking file: against the noisy label the ranking
    # looks worse than it is
    assert vs_truth["ensemble"]["roc_auc"] > vs_feedback["ensemble"]["roc_auc"]
