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
