"""The evaluation's bookkeeping: enforcement over event time, protection and collateral,
the bar (every world and the median over seeds) and the suite's reports."""

import json
import math

import pytest

from rapidloop.schemas.enforcement import Timeline
from rapidloop.schemas.timefmt import format_ts
from rapidloop.schemas.wire import InvalidMessage, read_decision
from rapidloop.tools.evaluate import _Prequential, score_decisions

from .helpers import T0, report, sha

MAL, BEN = sha(1), sha(2)


def decision(sha256, action, scope, ts, org=None, device=None, expires=None):
    return {"sha256": sha256, "action": action, "scope": scope, "org_id": org,
            "device_id": device, "event_ts": format_ts(ts),
            "expires_at": format_ts(expires) if expires else None}


def timeline(*decisions):
    return Timeline(read_decision(d) for d in decisions)


def test_most_specific_active_decision_wins():
    t = timeline(decision(MAL, "block", "global", T0),
                 decision(MAL, "allow", "org", T0 + 1, org="org-1"))
    assert t.action_at(MAL, "org-1", "org-1/d", T0 + 2, inclusive=False) == "allow"
    assert t.action_at(MAL, "org-2", "org-2/d", T0 + 2, inclusive=False) == "block"
    # a sighting at the block's own moment is not covered by it
    assert t.action_at(MAL, "org-2", "org-2/d", T0, inclusive=False) is None


def test_expired_blocks_lapse_and_unblock_ends():
    t = timeline(decision(MAL, "block", "org", T0, org="o", expires=T0 + 10),
                 decision(BEN, "block", "global", T0),
                 decision(BEN, "unblock", "global", T0 + 5))
    assert t.action_at(MAL, "o", "o/d", T0 + 5, inclusive=False) == "block"
    assert t.action_at(MAL, "o", "o/d", T0 + 20, inclusive=False) is None
    assert t.action_at(BEN, "o", "o/d", T0 + 20, inclusive=False) is None


def test_a_sighting_at_the_block_is_not_protected_by_it():
    """Protection counts the decisions strictly before each sighting."""
    truth = {MAL: {"label": "malicious", "campaign": "c"}}
    reports = [report(MAL, org="a", ts=T0), report(MAL, org="b", ts=T0 + 60),
               report(MAL, org="c", ts=T0 + 61)]
    res = score_decisions(reports, truth, [decision(MAL, "block", "global", T0 + 60)], {})
    assert res.malicious_events == 2 and res.protection_rate == 0.5


def test_a_decision_that_cannot_be_placed_is_an_error_that_names_the_field():
    truth = {MAL: {"label": "malicious"}}
    for broken, field in (({"action": None}, "action"), ({"event_ts": "soon"}, "event_ts")):
        d = {**decision(MAL, "block", "global", T0), **broken}
        with pytest.raises(InvalidMessage, match=field):
            score_decisions([report(MAL, ts=T0)], truth, [d], {})


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
    from rapidloop.base.config import load_config
    from rapidloop.tools.evaluate import prequential

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


# --- malicious hashes blocked globally before their third org -----------------------------

SPREAD, CAUGHT, LATE, LOCAL = sha(30), sha(31), sha(32), sha(33)


def _spread(decisions, world=None):
    """SPREAD/CAUGHT/LATE each reach 3 honest orgs at T0+20 (LOCAL stays in two); org-9
    is a rogue whose own sightings never count as an org."""
    truth = {s: {"label": "malicious", "campaign": "c"} for s in (SPREAD, CAUGHT, LATE, LOCAL)}
    reports = []
    for s in (SPREAD, CAUGHT, LATE):
        reports += [report(s, org="org-9", ts=T0 - 5),      # the rogue's, before anyone's
                    report(s, org="a", ts=T0), report(s, org="a", ts=T0 + 5),
                    report(s, org="b", ts=T0 + 10), report(s, org="c", ts=T0 + 20),
                    report(s, org="d", ts=T0 + 30)]
    reports += [report(LOCAL, org="a", ts=T0), report(LOCAL, org="b", ts=T0 + 10)]
    meta = world if world is not None else {"rogues": {"orgs": ["org-9"], "targets": [],
                                                       "whitewashed": []}}
    return score_decisions(sorted(reports, key=lambda r: r.ts), truth, decisions, meta)


def test_multi_org_hashes_blocked_strictly_before_the_third_org():
    res = _spread([decision(CAUGHT, "block", "global", T0 + 19),
                   decision(LATE, "block", "global", T0 + 20),       # the same moment: too late
                   decision(SPREAD, "block", "org", T0 + 1, org="c"),  # not a global block
                   decision(LOCAL, "block", "global", T0 + 100)])
    assert res.multi_org_malicious_hashes == 3                         # LOCAL never reached 3
    assert res.multi_org_blocked_before_third_org == 1 / 3


def test_a_rogue_does_not_count_as_an_org():
    # With the rogue counted, each hash would reach its 3rd org at T0+10 and a block at T0+15
    # would be late; the rogue's own reports are left out, as for protection.
    blocks = [decision(s, "block", "global", T0 + 15) for s in (SPREAD, CAUGHT, LATE)]
    assert _spread(blocks).multi_org_blocked_before_third_org == 1.0
    assert _spread(blocks, world={}).multi_org_blocked_before_third_org == 0.0


def test_no_hash_in_three_orgs_is_not_applicable_not_perfect():
    res = score_decisions([report(MAL, org="a", ts=T0)], {MAL: {"label": "malicious"}}, [], {})
    assert res.multi_org_malicious_hashes == 0
    assert res.multi_org_blocked_before_third_org is None


def test_benign_hashes_blocked_on_devices_of_honest_orgs():
    truth = {BEN: {"label": "benign"}, sha(3): {"label": "benign"}}
    res = score_decisions([report(BEN, ts=T0), report(sha(3), ts=T0)], truth, [
        decision(BEN, "block", "device", T0 + 1, org="org-1", device="d"),
        decision(BEN, "block", "device", T0 + 2, org="org-2", device="d"),
        decision(sha(3), "block", "device", T0 + 1, org="org-9", device="d")],
        {"rogues": {"orgs": ["org-9"], "targets": [], "whitewashed": []}})
    assert res.benign_hashes_blocked_device == 1 and res.benign_hashes_blocked_org == 0


# --- the bar: every world (worst seed) and the median over seeds ---------------------------

def _fig(**kw):
    base = {"protection_rate": 0.96, "benign_hashes_blocked_global": 0,
            "collateral_rate": 0.0005, "multi_org_blocked_before_third_org": 0.8,
            "median_time_to_global_s": 200.0, "poisoned_global_blocks": 0,
            "malware_unblocked_for_others": 0,
            "classifiers": {"ensemble": {"roc_auc": 0.99}, "nb": {"roc_auc": 0.98}}}
    return base | kw


def _held(checks):
    return {c.name: c.held for c in checks}


def test_the_issue_bars_per_world():
    from rapidloop.base.config import load_config
    from rapidloop.tools.targets import check

    cfg = load_config(env={})
    assert all(c.held for c in check(_fig(), cfg))
    edge = _fig(protection_rate=0.93, benign_hashes_blocked_global=2, collateral_rate=0.003,
                multi_org_blocked_before_third_org=0.7)
    assert all(c.held for c in check(edge, cfg))        # every bar is inclusive
    bad = _held(check(_fig(protection_rate=0.929, benign_hashes_blocked_global=3,
                           collateral_rate=0.0031, multi_org_blocked_before_third_org=0.69,
                           poisoned_global_blocks=1), cfg))
    assert not any(v for k, v in bad.items() if k != "ensemble AUC")
    # the time to global block is a median-over-seeds bar only; the AUC is information
    names = [(c.name, c.bar) for c in check(_fig(median_time_to_global_s=None), cfg)]
    assert ("time to global", True) not in names and names[-1] == ("ensemble AUC", False)
    assert _held(check(_fig(multi_org_blocked_before_third_org=None), cfg))["before 3rd org"]


def test_worst_seed_and_median_over_seeds():
    from rapidloop.base.config import load_config
    from rapidloop.tools.targets import aggregate, check_median, check_worst

    cfg = load_config(env={})
    # one bad world in three: it fails the every-world bar, the median stays good
    figs = [_fig(), _fig(protection_rate=0.90, benign_hashes_blocked_global=3,
                         median_time_to_global_s=None), _fig(protection_rate=0.97)]
    agg = aggregate(figs)
    assert agg["worst"]["protection"] == 0.90 and agg["median"]["protection"] == 0.96
    assert agg["worst"]["time to global"] == math.inf     # a world where it never came
    assert agg["median"]["time to global"] == 200.0
    assert agg["worst"]["benign global"] == 3 and agg["median"]["benign global"] == 0
    worst, median = _held(check_worst(figs, cfg)), _held(check_median(figs, cfg))
    assert not worst["protection"] and not worst["benign global"] and worst["collateral"]
    assert all(median.values())
    assert set(median) == {"protection", "benign global", "collateral", "time to global"}
    # every world scraping by: each holds the floor, the median misses the higher bar
    scraping = [_fig(protection_rate=0.94, benign_hashes_blocked_global=1,
                     collateral_rate=0.002, median_time_to_global_s=400.0)] * 3
    assert all(_held(check_worst(scraping, cfg)).values())
    assert not any(_held(check_median(scraping, cfg)).values())


def test_figures_that_do_not_apply_are_left_out_of_the_aggregate():
    from rapidloop.tools.targets import aggregate

    figs = [_fig(poisoned_global_blocks=None, malware_unblocked_for_others=None,
                 multi_org_blocked_before_third_org=None),
            _fig(poisoned_global_blocks=1, multi_org_blocked_before_third_org=0.5)]
    agg = aggregate(figs)
    assert agg["worst"]["poisoning"] == 1 and agg["worst"]["before 3rd org"] == 0.5
    assert aggregate([figs[0]])["median"]["poisoning"] is None


def test_held_out_seeds_are_fresh_and_away_from_tuning():
    from rapidloop.tools.evalsuite import HELD_OUT_RANGE, draw_held_out

    a, b = draw_held_out(10, avoid=[1, 2, 3]), draw_held_out(10)
    assert len(set(a)) == 10 and all(HELD_OUT_RANGE[0] <= s <= HELD_OUT_RANGE[1] for s in a)
    assert a != b                     # the OS RNG: two runs do not draw the same seeds


def test_suite_tables_and_exit_status(tmp_path, monkeypatch, capsys):
    from rapidloop.tools import evalsuite

    figs = {1: _fig(), 2: _fig(protection_rate=0.90)}

    def fake_run(seed, out, reports, config):
        w = evalsuite.World(seed, out / f"seed-{seed}")
        if seed == 3:
            w.error = "simulate exited 1"
        else:
            w.fig, w.meta = figs[seed], {"params": {"orgs": 120 * seed, "campaigns": 40}}
        return w

    monkeypatch.setattr(evalsuite, "run_world", fake_run)
    assert evalsuite.main(["--seeds", "1", "2", "--out", str(tmp_path)]) == 0
    assert evalsuite.main(["--seeds", "1", "2", "--out", str(tmp_path), "--strict"]) == 1
    assert evalsuite.main(["--tuning", "1", "2", "--out", str(tmp_path), "--strict"]) == 0
    text = capsys.readouterr().out
    assert "orgs 240, campaigns 40" in text and "MISSED 0.900 (>= 0.930)" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    tuning = summary["sets"]["tuning"]
    assert tuning["worst"]["protection"] == 0.90 and not tuning["held"]["worst"]
    assert tuning["worlds"]["2"]["params"]["orgs"] == 240
    assert summary["machine"]["cores"] >= 1 and "commit" in summary
    assert evalsuite.main(["--seeds", "1", "3", "--out", str(tmp_path)]) == 1  # a failed world
