"""`rapidloop tail`'s one-line rendering of a decision, without Kafka."""

import re

from rapidloop.schemas.wire import read_decision
from rapidloop.tools.tail import format_decision as format_record
from rapidloop.tools.tail import json_line as _json_line

SHA = "3f2a" + "0" * 56 + "9c1d"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def format_decision(d, color):
    """The line of a decision given as its contract object (read as tail reads it)."""
    return format_record(read_decision(d), color)


def decision(**over):
    d = {
        "decision_id": "d-1", "sha256": SHA, "action": "block", "scope": "global",
        "org_id": None, "device_id": None, "score": 0.9712, "classifiers": {"prior": 0.9},
        "reasons": ["seen in 4 orgs within 1h", "sandbox verdict malicious"],
        "model_version": "ens-3", "event_ts": "2026-11-29T01:02:03.456Z",
        "decided_at": "2026-11-29T01:02:04.000Z", "expires_at": None,
    }
    d.update(over)
    return d


def test_global_block_reads_what_where_why():
    line = format_decision(decision(), color=False)
    assert line.startswith("01:02:03Z BLOCK   global ")
    assert "3f2a…9c1d  score 0.97  seen in 4 orgs within 1h; sandbox verdict malicious" in line
    assert "\x1b" not in line and "\n" not in line


def test_device_and_org_scopes_name_the_target():
    dev = format_decision(decision(scope="device", org_id="org-7", device_id="dev-42"), False)
    assert " device org-7/dev-42 " in dev
    org = format_decision(decision(action="allow", scope="org", org_id="org-7"), False)
    assert " ALLOW " in org and " org org-7 " in org


def test_columns_line_up_across_actions_and_scopes():
    a = format_decision(decision(), False)
    b = format_decision(decision(action="unblock", scope="org", org_id="o1"), False)
    assert a.index("3f2a") == b.index("3f2a")


def test_expiry_shown_when_set():
    line = format_decision(decision(expires_at="2026-12-06T01:02:03Z"), False)
    assert line.endswith("(until 2026-12-06 01:02Z)")


def test_non_utc_time_is_shown_in_utc():
    line = format_decision(decision(event_ts="2026-11-29T03:02:03+02:00"), False)
    assert line.startswith("01:02:03Z")


def test_colour_only_when_asked_and_text_unchanged():
    plain = format_decision(decision(), False)
    coloured = format_decision(decision(), True)
    assert "\x1b[1;31m" in coloured          # block in red
    assert ANSI.sub("", coloured) == plain


def test_control_characters_never_reach_the_terminal():
    evil = "ok\x1b]0;pwned\x07\nnext\x9b"
    line = format_decision(decision(scope="device", org_id=evil, device_id="d",
                                    reasons=[evil]), True)
    assert "\x07" not in line and "\n" not in line and "\x9b" not in line
    assert "\x1b]" not in line
    assert all(m.startswith("\x1b[") for m in re.findall(r"\x1b.", line))


def test_malformed_decisions_do_not_raise():
    for d in ({}, {"action": 3, "score": "high", "reasons": "because", "sha256": None},
              {"scope": "galaxy", "score": True, "event_ts": "yesterday", "expires_at": 5},
              {"reasons": [1, None, {"x": 1}], "sha256": "ab"},
              {"event_ts": "0000-01-01T00:00:00Z", "expires_at": "9999-12-31T23:59:59Z"}):
        line = format_decision(d, False)
        assert isinstance(line, str) and "\n" not in line
    assert "score ?" in format_decision({"score": "high"}, False)
    assert "(no reason given)" in format_decision({"reasons": []}, False)
    assert format_decision({"event_ts": "yesterday"}, False).startswith("yesterday ")
    # no readable event time: when it was emitted
    assert format_decision({"event_ts": None, "decided_at": "2026-11-29T01:02:04Z"},
                           False).startswith("01:02:04Z ")


def test_long_ids_are_bounded():
    line = format_decision(decision(scope="org", org_id="o" * 500), False)
    assert len(line) < 400


def test_json_mode_keeps_one_line_per_decision():
    assert _json_line(b'{"a": 1}') == '{"a": 1}'
    assert _json_line(b'{\n  "a": 1\n}') == '{"a":1}'
    assert "\n" not in _json_line(b"not json\nat all")
    assert _json_line(b"\xff{}") == "\ufffd{}"
