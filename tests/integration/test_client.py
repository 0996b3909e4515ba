"""rapidloop.client against the real broker: a gateway that refuses what the job would
refuse, and an enforcement point's view of the compacted feed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from rapidloop.base.config import load_config
from rapidloop.client import ActiveView, Gateway, InvalidMessage

from ..conftest import TopicMaker
from .test_kafka_io import config_file, produce, read_all

pytestmark = pytest.mark.integration

REPORT = {"report_id": "r-1", "ts": "2026-11-28T10:00:00Z", "org_id": "org-1",
          "device_id": "org-1/laptop-7", "sha256": "ab" * 32, "source": "edr",
          "file": {"name": "x.exe", "size": 1, "type": "pe", "signed": False,
                   "signer": None, "path": "downloads"},
          "behaviors": ["process_injection"], "verdicts": {}}


def test_the_gateway_sends_what_the_job_accepts_and_refuses_the_rest(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> None:
    rep, fb = kafka_topics("reports", "feedback")
    cfg = load_config(config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb}))
    gw = Gateway(broker, cfg)
    gw.send_report(REPORT)
    gw.send_feedback({"feedback_id": "f-1", "ts": "2026-11-28T10:05:00Z",
                      "sha256": "ab" * 32, "verdict": "malicious", "source": "sandbox",
                      "org_id": None})
    with pytest.raises(InvalidMessage, match="sha256"):
        gw.send_report({**REPORT, "sha256": "not-a-hash"})
    gw.flush()
    [(_, key, value)] = read_all(broker, rep)
    assert key == b"ab" * 32 and orjson.loads(value)["report_id"] == "r-1"
    assert len(read_all(broker, fb)) == 1


def test_an_enforcement_points_view_of_the_feed(broker: str, kafka_topics: TopicMaker,
                                                tmp_path: Path) -> None:
    (act,) = kafka_topics("active")
    cfg = load_config(config_file(tmp_path, {"active_topic": act}))

    def d(sha: str, scope: str, action: str, org: str | None = None) -> dict:
        return {"decision_id": f"{sha}{scope}{org}", "sha256": sha * 64, "action": action,
                "scope": scope, "org_id": org, "device_id": None, "score": 0.9,
                "classifiers": {}, "reasons": ["r"], "model_version": "m",
                "event_ts": "2026-11-28T10:00:00.000Z", "decided_at": None,
                "expires_at": None}

    def key(x: dict) -> bytes:
        return f"{x['sha256']}|{x['scope']}|{x['org_id'] or ''}|".encode()

    a, b, c = d("a", "global", "block"), d("b", "org", "block", "o2"), d("c", "org", "allow", "o1")
    produce(broker, act, [(key(a), orjson.dumps(a)), (key(b), orjson.dumps(b)),  # type: ignore[list-item]
                          (key(c), orjson.dumps(c)), (key(b), None)])   # b lifted: tombstone
    everyone = ActiveView(broker, cfg=cfg)
    assert everyone.catch_up() == 2
    assert [(x.sha256[0], x.scope) for x in everyone.in_force()] == [("a", "global"),
                                                                   ("c", "org")]
    o2 = ActiveView(broker, org="o2", cfg=cfg)
    o2.catch_up()
    assert [(x.sha256[0], x.org_id) for x in o2.in_force()] == [("a", None)]   # not o1's
    everyone.close()
    o2.close()
