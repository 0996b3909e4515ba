"""Tenants' own input topics: the org a message speaks for comes from where it came in.

``[tenants] orgs`` gives each listed org a reports and a feedback topic of its
own (``<topic>.tenant.<org>``); ``schemas.intake`` binds each to its org and
dead-letters, with a code and a reason, whatever claims otherwise. These are
the rules one by one, the settings' validation, the recovery manifest's
handling of a changed tenant list and a capture's replay inputs; the live
run against the broker is ``tests/integration/test_tenants_kafka.py``.
"""

from __future__ import annotations

import gzip
import json
import pickle
import re
from pathlib import Path

import orjson
import pytest

from rapidloop.base.config import ConfigError, load_config, tenant_topic, tenant_topics
from rapidloop.schemas.intake import (
    FEEDBACK,
    REPORT,
    Intake,
    TopicKind,
    bind_topics,
    input_kinds,
)
from rapidloop.schemas.model import Feedback, RawMessage, Report
from rapidloop.schemas.wire import Limits, WireParser

REP, FB = "rapidloop.reports", "rapidloop.feedback"
A_REP, A_FB = f"{REP}.tenant.org-a", f"{FB}.tenant.org-a"
B_REP, B_FB = f"{REP}.tenant.org-b", f"{FB}.tenant.org-b"
TENANTS = [("org-a", A_REP, A_FB), ("org-b", B_REP, B_FB)]
SHA = "a" * 64


def report(org: str, n: int = 0) -> bytes:
    return orjson.dumps({"report_id": f"r-{org}-{n}", "ts": "2026-11-28T10:00:00Z",
                         "org_id": org, "device_id": f"{org}-dev-1", "sha256": SHA})


def verdict(source: str, org: str | None, n: int = 0) -> bytes:
    return orjson.dumps({"feedback_id": f"f-{source}-{org}-{n}", "ts": "2026-11-28T10:00:00Z",
                         "sha256": SHA, "verdict": "benign", "source": source, "org_id": org})


def parse(kinds: dict[str, str], *msgs: tuple[str, bytes | None]):
    intake = Intake(WireParser(Limits()), kinds)
    return intake.parse([RawMessage(t, v, None, 0, i) for i, (t, v) in enumerate(msgs)], 0.0)


# ------------------------------------------------------------------ the rules

def test_an_honest_tenant_message_is_exactly_the_shared_topics_one() -> None:
    bound = parse(bind_topics(REP, FB, TENANTS), (A_REP, report("org-a")),
                  (A_FB, verdict("org_report", "org-a")))
    shared = parse({REP: REPORT, FB: FEEDBACK}, (REP, report("org-a")),
                   (FB, verdict("org_report", "org-a")))
    assert not bound.dead and not bound.dead_codes
    assert bound.events == shared.events
    assert [type(e) for e in bound.events] == [Report, Feedback]
    assert bound.counts == {A_REP: 1, A_FB: 1}


@pytest.mark.parametrize(("topic", "value", "code", "error"), [
    (A_REP, report("org-b"), "tenant_mismatch",
     f"tenant_mismatch: org_id 'org-b' on topic {A_REP}, which speaks for org-a"),
    (A_REP, report("org-z"), "tenant_mismatch",
     f"tenant_mismatch: org_id 'org-z' on topic {A_REP}, which speaks for org-a"),
    (A_FB, verdict("org_report", "org-b"), "tenant_mismatch",
     f"tenant_mismatch: org_id 'org-b' on topic {A_FB}, which speaks for org-a"),
    (A_FB, verdict("sandbox", None), "tenant_trusted_verdict",
     f"tenant_trusted_verdict: a sandbox verdict on topic {A_FB}, which speaks for org-a: "
     "a tenant topic cannot carry sandbox or analyst verdicts"),
    (A_FB, verdict("analyst", "org-a"), "tenant_trusted_verdict",
     f"tenant_trusted_verdict: a analyst verdict on topic {A_FB}, which speaks for org-a: "
     "a tenant topic cannot carry sandbox or analyst verdicts"),
    (B_REP, report("org-a"), "tenant_mismatch",
     f"tenant_mismatch: org_id 'org-a' on topic {B_REP}, which speaks for org-b"),
])
def test_a_tenant_topic_refuses_what_it_cannot_speak_for(topic: str, value: bytes, code: str,
                                                          error: str) -> None:
    unit = parse(bind_topics(REP, FB, TENANTS), (topic, value))
    assert unit.events == []
    assert unit.dead_codes == {code: 1}
    [dead] = unit.dead
    assert dead.error == error
    assert (dead.topic, dead.partition, dead.offset) == (topic, 0, 0)
    assert dead.raw == value.decode()


def test_a_message_that_is_bad_anyway_keeps_its_own_code() -> None:
    unit = parse(bind_topics(REP, FB, TENANTS), (A_REP, b"{not json"), (A_REP, None),
                 ("elsewhere", report("org-a")))
    assert unit.dead_codes == {"invalid_json": 1, "empty": 1, "unknown_topic": 1}


def test_the_shared_topics_are_unchanged_by_default() -> None:
    """With tenants and the default rules ("any"), the shared topics take what they took."""
    kinds = bind_topics(REP, FB, TENANTS)
    msgs = [(REP, report("org-a")), (REP, report("org-z")), (FB, verdict("sandbox", None)),
            (FB, verdict("analyst", None)), (FB, verdict("org_report", "org-a")),
            (FB, verdict("org_report", "org-z"))]
    unit = parse(kinds, *msgs)
    assert not unit.dead and unit.events == parse({REP: REPORT, FB: FEEDBACK}, *msgs).events
    # plain: the per-message path is the one without tenants (identity, no check)
    assert TopicKind(REPORT).plain and kinds[REP].plain and kinds[FB].plain


def test_trusted_only_makes_the_shared_feedback_topic_the_operators() -> None:
    kinds = bind_topics(REP, FB, TENANTS, shared_feedback="trusted_only")
    unit = parse(kinds, (FB, verdict("sandbox", None)), (FB, verdict("analyst", None)),
                 (FB, verdict("org_report", "org-z")), (A_FB, verdict("org_report", "org-a")))
    assert [e.source for e in unit.events] == ["sandbox", "analyst", "org_report"]
    assert unit.dead_codes == {"shared_org_report": 1}
    assert unit.dead[0].error == (
        f"shared_org_report: an org_report (org_id 'org-z') on topic {FB}, which carries "
        "sandbox and analyst verdicts only: a tenant sends its verdicts on its own topic")


def test_unbound_only_keeps_a_tenant_off_the_shared_topics() -> None:
    kinds = bind_topics(REP, FB, TENANTS, shared_reports="unbound_only",
                        shared_feedback="unbound_only")
    unit = parse(kinds, (REP, report("org-a")), (REP, report("org-z")),
                 (FB, verdict("org_report", "org-b")), (FB, verdict("org_report", "org-z")),
                 (FB, verdict("sandbox", None)))
    assert [(type(e).__name__, e.org_id) for e in unit.events] == [
        ("Report", "org-z"), ("Feedback", "org-z"), ("Feedback", None)]
    assert unit.dead_codes == {"tenant_shared_topic": 2}
    assert unit.dead[0].error == (
        f"tenant_shared_topic: org_id 'org-a' on the shared topic {REP}: org-a has topics of "
        "its own and speaks on those only")


def test_without_tenants_the_rules_change_nothing() -> None:
    kinds = bind_topics(REP, FB, [], shared_reports="unbound_only",
                        shared_feedback="trusted_only")
    assert kinds == {REP: REPORT, FB: FEEDBACK}
    assert not any(isinstance(k, TopicKind) for k in kinds.values())
    assert input_kinds(load_config(env={})) == {REP: REPORT, FB: FEEDBACK}


def test_topic_kinds_are_kinds_and_survive_pickling() -> None:
    """Every caller that compares kinds keeps working; flows are pickled across workers."""
    kinds = bind_topics(REP, FB, TENANTS, shared_reports="unbound_only",
                        shared_feedback="trusted_only")
    assert kinds[A_REP] == REPORT and kinds[A_FB] == FEEDBACK and hash(kinds[A_REP]) == hash(REPORT)
    again = pickle.loads(pickle.dumps(kinds))
    assert again == kinds
    for topic, kind in kinds.items():
        assert isinstance(again[topic], TopicKind)
        assert (again[topic].org, again[topic].own_topics, again[topic].trusted_only) == \
            (kind.org, kind.own_topics, kind.trusted_only)   # type: ignore[attr-defined]
    # the merge's tie order: reports topics, then feedback topics; shared first
    assert list(kinds) == [REP, A_REP, B_REP, FB, A_FB, B_FB]
    with pytest.raises(ValueError):
        TopicKind("decision")


# ------------------------------------------------------------------ settings

def test_tenant_topics_follow_the_configured_topic_names() -> None:
    cfg = load_config(env={"RAPIDLOOP_TENANTS__ORGS": '["org-a", "Org_B.2"]',
                           "RAPIDLOOP_KAFKA__REPORTS_TOPIC": "x.in",
                           "RAPIDLOOP_TENANTS__SHARED_FEEDBACK": "trusted_only"})
    assert tenant_topics(cfg) == [("org-a", "x.in.tenant.org-a", "rapidloop.feedback.tenant.org-a"),
                                  ("Org_B.2", "x.in.tenant.Org_B.2",
                                   "rapidloop.feedback.tenant.Org_B.2")]
    assert tenant_topic("t", "o") == "t.tenant.o"
    kinds = input_kinds(cfg)
    assert kinds["rapidloop.feedback"].trusted_only   # type: ignore[attr-defined]
    assert kinds["x.in.tenant.org-a"].org == "org-a"   # type: ignore[attr-defined]
    assert load_config(env={}).tenants.orgs == []


@pytest.mark.parametrize(("env", "says"), [
    ({"ORGS": '["org a"]'}, "tenants.orgs: 'org a' cannot be part of a Kafka topic name "
                           "(letters, digits, '.', '_' and '-' only)"),
    ({"ORGS": '["org/3"]'}, "tenants.orgs: 'org/3' cannot be part of a Kafka topic name"),
    ({"ORGS": '[""]'}, "tenants.orgs: '' cannot be part of a Kafka topic name"),
    ({"ORGS": '["orgé"]'}, "tenants.orgs: 'orgé' cannot be part of a Kafka topic name"),
    ({"ORGS": "[3]"}, "tenants.orgs: 3 cannot be part of a Kafka topic name"),
    ({"ORGS": '["org-1", "org-1"]'}, "tenants.orgs: 'org-1' is listed twice"),
    ({"ORGS": '["org.1", "org_1"]'}, "tenants.orgs: 'org_1' and 'org.1' differ only in '.' "
                                    "and '_', which Kafka topic names cannot tell apart"),
    ({"ORGS": f'["{"o" * 240}"]'}, "longer than Kafka's 249 characters"),
    ({"SHARED_FEEDBACK": '"operators"'}, "tenants.shared_feedback must be one of any, "
                                         "unbound_only, trusted_only, not 'operators'"),
    ({"SHARED_REPORTS": '"trusted_only"'}, "tenants.shared_reports must be one of any, "
                                           "unbound_only, not 'trusted_only'"),
    ({"PARTITIONS": "0"}, "tenants.partitions = 0: must be > 0"),
    ({"ORGS": '"org-a"'}, "tenants.orgs: expected list"),
])
def test_bad_tenant_settings_are_one_line(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={f"RAPIDLOOP_TENANTS__{k}": v for k, v in env.items()})
    assert says in str(exc.value) and "\n" not in str(exc.value)


# ------------------------------------------------------------------ recovery manifest

def _prepare(tmp_path: Path, orgs: list[str], ids: dict[str, str | None] | None = None):
    from rapidloop.flows.recovery import prepare

    cfg = load_config(env={"RAPIDLOOP_TENANTS__ORGS": json.dumps(orgs)})
    all_ids = {t: None for t in input_kinds(cfg)} | (ids or {})
    return prepare(cfg, tmp_path / "rec", all_ids, replicas=1)


def test_the_recovery_manifest_records_the_tenant_topics(tmp_path: Path) -> None:
    from rapidloop.flows.recovery import MANIFEST, RecoveryError

    rec = _prepare(tmp_path, ["org-a"], {A_REP: "id-ar"})
    assert rec.created
    assert rec.manifest["tenant_topics"] == {A_REP: "id-ar", A_FB: None}
    rec.close()
    # a tenant added since: accepted, its topics new input, recorded from now on
    rec = _prepare(tmp_path, ["org-a", "org-b"], {A_REP: "id-ar"})
    assert not rec.created
    on_disk = json.loads((tmp_path / "rec" / MANIFEST).read_text())
    assert list(on_disk["tenant_topics"]) == [A_REP, A_FB, B_REP, B_FB]
    # ...and the directory is still locked by this job
    with pytest.raises(RecoveryError, match="in use by another rapidloop run"):
        _prepare(tmp_path, ["org-a", "org-b"])
    rec.close()
    # a tenant removed: refused in one line
    with pytest.raises(RecoveryError) as exc:
        _prepare(tmp_path, ["org-b"])
    msg = str(exc.value)
    assert "\n" not in msg and f"tenant topic(s) {A_REP}, {A_FB} (now not read" in msg
    assert "delete" in msg
    # a tenant topic deleted and recreated: refused, as a shared one is
    recreated = re.escape(f"topic {A_REP} as it was before it was recreated")
    with pytest.raises(RecoveryError, match=recreated):
        _prepare(tmp_path, ["org-a", "org-b"], {A_REP: "id-other"})
    _prepare(tmp_path, ["org-a", "org-b"]).close()   # unchanged: resumes


def test_a_manifest_from_before_tenants_takes_them_as_added(tmp_path: Path) -> None:
    from rapidloop.flows.recovery import MANIFEST

    _prepare(tmp_path, []).close()
    path = tmp_path / "rec" / MANIFEST
    old = json.loads(path.read_text())
    del old["tenant_topics"]
    path.write_text(json.dumps(old))
    _prepare(tmp_path, []).close()
    rec = _prepare(tmp_path, ["org-a"])
    assert list(json.loads(path.read_text())["tenant_topics"]) == [A_REP, A_FB]
    rec.close()


# ------------------------------------------------------------------ captures

def _write(path: Path, lines: list[bytes]) -> None:
    with gzip.open(path, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def _fake_capture(d: Path, rules: dict[str, str] | None = None) -> None:
    """What ``rapidloop capture`` writes for tenants org-a and org-b (no broker needed)."""
    d.mkdir()
    files = {"reports.jsonl.gz": [report("org-z")], "feedback.jsonl.gz": [],
             "reports.tenant.org-a.jsonl.gz": [report("org-a"), report("org-b", 1)],
             "feedback.tenant.org-a.jsonl.gz": [verdict("sandbox", None)],
             "reports.tenant.org-b.jsonl.gz": [], "feedback.tenant.org-b.jsonl.gz": []}
    for name, lines in files.items():
        _write(d / name, lines)

    def entry(topic: str, file: str) -> dict:
        return {"topic": topic, "file": file, "count": len(files[file]), "partitions": []}

    manifest = {
        "format": "rapidloop-capture/2", "since": "x", "until": "y",
        "counts": {"reports": 3, "feedback": 1},
        "topics": {"reports": entry(REP, "reports.jsonl.gz"),
                   "feedback": entry(FB, "feedback.jsonl.gz")},
        "tenants": {**(rules or {"shared_reports": "any", "shared_feedback": "any"}),
                    "topics": [{"org": org, "kind": kind,
                                **entry(f"{REP if kind == 'reports' else FB}.tenant.{org}",
                                        f"{kind}.tenant.{org}.jsonl.gz")}
                               for kind in ("reports", "feedback") for org in ("org-a", "org-b")]},
    }
    (d / "manifest.json").write_text(json.dumps(manifest))


def test_a_captures_replay_binds_each_tenant_file_to_its_org(tmp_path: Path) -> None:
    from rapidloop.tools.capture import CaptureError, read_manifest, replay_inputs, summary

    _fake_capture(tmp_path / "cap", {"shared_reports": "any", "shared_feedback": "trusted_only"})
    files, kinds = replay_inputs(tmp_path / "cap")
    assert [t for _, t in files] == [REP, A_REP, B_REP, FB, A_FB, B_FB]   # the live tie order
    assert kinds[A_REP].org == "org-a" and kinds[B_FB].org == "org-b"   # type: ignore[attr-defined]
    assert kinds[FB].trusted_only and kinds[REP] == REPORT   # type: ignore[attr-defined]
    assert "(3 of the reports and feedback on the own topics of 2 tenant(s))" in \
        summary(read_manifest(tmp_path / "cap"))
    (tmp_path / "cap" / "feedback.tenant.org-b.jsonl.gz").unlink()
    with pytest.raises(CaptureError, match=re.escape("is missing feedback.tenant.org-b.jsonl.gz")):
        read_manifest(tmp_path / "cap")


def test_replaying_a_capture_dead_letters_what_the_live_job_did(tmp_path: Path) -> None:
    from rapidloop.cli import main

    _fake_capture(tmp_path / "cap")
    out, dead = tmp_path / "d.jsonl", tmp_path / "dead.jsonl"
    assert main(["replay", "--capture", str(tmp_path / "cap"), "--output", str(out),
                 "--dead-letters", str(dead), "--quiet"]) == 0
    errors = sorted(orjson.loads(x)["error"].split(":")[0] for x in dead.read_bytes().splitlines())
    assert errors == ["tenant_mismatch", "tenant_trusted_verdict"]
