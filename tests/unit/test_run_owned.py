"""What a run owns: its counters, and operators' settings read once and shared.

Two flows in one process (tests run several) must not add to each other's
counters, and the operators of one flow take their settings, and the one
prior, from one ``Settings``; settings never travel in a snapshot.
"""

from __future__ import annotations

import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from rapidloop.base.config import load_config
from rapidloop.flows.dataflow import Connectors, build_flow
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.decide import Decider
from rapidloop.operators.settings import PolicySettings, Settings
from rapidloop.schemas.intake import FEEDBACK, REPORT
from rapidloop.schemas.model import RawMessage
from rapidloop.schemas.timefmt import parse_ts
from rapidloop.schemas.wire import GivenNewestParser, InvalidMessage, WireParser

KINDS = {"reports": REPORT, "feedback": FEEDBACK}
REPORT_JSON = (b'{"report_id":"r%d","ts":"2026-11-28T00:00:0%dZ","org_id":"o","device_id":"d",'
               b'"sha256":"' + b"a" * 64 + b'","sensor":"edr","file":{"name":"x.exe",'
               b'"size":1,"type":"pe","signed":false,"signer":null,"path":"temp"},'
               b'"behaviors":[],"verdicts":{}}')


def _connectors(n: int) -> Connectors:
    msgs = [RawMessage("reports", REPORT_JSON % (i, i), None, 0, i) for i in range(n)]
    return Connectors(sources=[("input", TestingSource([(0, msgs)]))], kinds=KINDS,
                      decisions=TestingSink([]))


def test_two_flows_in_one_process_keep_their_own_counters() -> None:
    cfg = load_config(env={})
    a, b = _connectors(3), _connectors(5)
    flow_a, flow_b = build_flow(cfg, a, flow_id="a"), build_flow(cfg, b, flow_id="b")
    run_main(flow_a)
    run_main(flow_b)
    assert (a.stats.total_in(), b.stats.total_in()) == (3, 5)
    assert a.stats is not b.stats


def test_one_settings_one_prior_for_every_operator_and_none_in_snapshots() -> None:
    settings = Settings.from_config(load_config(env={}))
    c, d = Correlator(settings), Decider(settings)
    assert c.accusation.prior is d.ensemble.prior is settings.prior
    assert c.settings is settings.correlator and d.policy.s is settings.decider.policy
    blob = repr((c.snapshot(), {k: v for k, v in d.snapshot().items() if k != "ensemble"}))
    assert "Settings" not in blob and "Prior" not in blob


def test_policy_settings_keep_the_documented_floor_of_two_orgs() -> None:
    cfg = load_config(env={"RAPIDLOOP_POLICY__GLOBAL_MIN_ORGS": "1"})
    assert PolicySettings.from_config(cfg).global_min_orgs == 2


def test_a_given_clock_is_set_through_the_public_method() -> None:
    ts = parse_ts("2026-11-28T00:00:01Z")
    parser = GivenNewestParser()
    parser.set_newest(ts + 10.0)
    assert parser.report(REPORT_JSON % (1, 1)).ts == ts
    assert parser.newest_ts == ts + 10.0   # learns nothing: the clock stays as given
    parser.set_newest(ts - 2 * 86400.0)    # a day's skew behind it: too far in the future
    with pytest.raises(InvalidMessage, match="after the newest accepted time"):
        parser.report(REPORT_JSON % (1, 1))
    plain = WireParser()
    plain.report(REPORT_JSON % (1, 1))
    assert plain.newest_ts == ts             # the plain parser learns it
