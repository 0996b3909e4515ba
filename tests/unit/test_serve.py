"""`rapidloop serve` without sockets: CrowdSec's shape, the stream's deltas per token, and
what each token may see (a tenant never another tenant's decisions), through ``App.handle``.

``DECISIONS`` and ``TOKENS`` are also the integration test's world
(tests/integration/test_serve.py): global, org-A, org-B and device decisions, some lapsed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from rapidloop.base.config import load_config
from rapidloop.cli import main
from rapidloop.feeds.serve import (
    App,
    FeedSource,
    StreamMemory,
    TokenError,
    authenticate,
    crowdsec_id,
    go_duration,
    load_tokens,
    to_crowdsec,
)
from rapidloop.schemas.timefmt import parse_ts
from rapidloop.schemas.wire import DecisionRecord, read_decision

from .test_active import DAY, DAY_EXPECTED, dec

A, B, OP = ("tenant-a-token-0123456789", "tenant-b-token-0123456789",
            "operator-token-0123456789")
TOKENS = {A: "org-a", B: "org-b", OP: "*"}
LAST = "2026-11-28T10:00:00.000Z"   # the file's latest event_ts: its moment


def h(n: int) -> str:
    return str(n) * 64


DECISIONS = [
    dec(h(1), "global", "block", "2026-11-28T09:00:00.000Z"),
    dec(h(2), "org", "block", "2026-11-28T09:10:00.000Z", org="org-a",
        expires="2026-11-28T12:00:00.000Z"),
    dec(h(3), "org", "block", "2026-11-28T09:20:00.000Z", org="org-b"),
    dec(h(4), "device", "block", "2026-11-28T09:30:00.000Z", org="org-b", device="org-b/dev-1"),
    dec(h(5), "device", "block", "2026-11-28T09:40:00.000Z", org="org-a", device="org-a/dev-7"),
    # lapsed before the moment: in nobody's view
    dec(h(6), "org", "block", "2026-11-28T08:00:00.000Z", org="org-a",
        expires="2026-11-28T09:00:00.000Z"),
    dec(h(7), "org", "block", "2026-11-28T08:00:00.000Z", org="org-b",
        expires="2026-11-28T09:50:00.000Z"),
    # a global block that org-a's own allow supersedes for org-a (not for org-b)
    dec(h(8), "global", "block", "2026-11-28T09:00:00.000Z"),
    dec(h(8), "org", "allow", "2026-11-28T09:45:00.000Z", org="org-a"),
    dec(h(9), "global", "block", LAST, expires="2026-11-28T11:00:00.000Z"),
]
DECISIONS[1]["reasons"] = ["<script>alert('x')</script> & friends"]   # free text
WANT = {  # (sha digit, scope) in each token's stream
    A: {("1", "global"), ("2", "org"), ("5", "device"), ("8", "org"), ("9", "global")},
    B: {("1", "global"), ("3", "org"), ("4", "device"), ("8", "global"), ("9", "global")},
    OP: {("1", "global"), ("2", "org"), ("3", "org"), ("4", "device"), ("5", "device"),
         ("8", "global"), ("8", "org"), ("9", "global")},
}


def write_world(tmp_path: Path) -> tuple[Path, Path]:
    """The decisions file and a TOML tokens file."""
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in DECISIONS))
    tokens = tmp_path / "tokens.toml"
    tokens.write_text("".join(f'"{t}" = "{o}"\n' for t, o in TOKENS.items()))
    tokens.chmod(0o600)
    return decisions, tokens


def seen(stream: dict[str, Any], key: str = "new") -> set[tuple[str, str]]:
    return {(d["value"][0], d["rapidloop_scope"]) for d in stream[key]}


class Static:
    """A source whose records (contract dicts) a test changes between calls."""

    label, clock = "test decisions", "a fixed moment"

    def __init__(self, records: list[dict[str, Any]], at: str = LAST) -> None:
        self.records, self.at = records, parse_ts(at)

    def snapshot(self) -> tuple[list[DecisionRecord], float]:
        return self.history(), self.at

    def history(self) -> list[DecisionRecord]:
        return [read_decision(d) for d in self.records]


@pytest.fixture
def app(tmp_path: Path) -> App:
    _, tokens = write_world(tmp_path)
    return App(Static(list(DECISIONS)), load_tokens(tokens, 16), load_config(env={}).serve)


def get(app: App, target: str, token: str | None = None, how: str = "bearer"
        ) -> tuple[int, Any]:
    headers = {}
    if token is not None:
        headers = ({"authorization": f"Bearer {token}"} if how == "bearer"
                   else {"x-api-key": token})
    r = app.handle(target, headers)
    body = json.loads(r.body) if r.content_type == "application/json" else r.body.decode()
    return int(r.status), body


# ---------------------------------------------------------------- the shape

def test_go_durations_parse_as_go_writes_them() -> None:
    assert [go_duration(s) for s in (0, 0.9, 59, 60, 3600, 14342.7, 86400 * 3 + 5, -65)] == [
        "0s", "0s", "59s", "1m0s", "1h0m0s", "3h59m2s", "72h0m5s", "-1m5s"]


def test_a_decision_in_crowdsecs_shape() -> None:
    now = parse_ts(LAST)
    cs = to_crowdsec(read_decision(DECISIONS[1]), now, no_expiry_s=3600.0)
    assert {k: cs[k] for k in ("origin", "type", "scope", "value", "duration", "until",
                               "rapidloop_scope", "rapidloop_org_id")} == {
        "origin": "rapidloop", "type": "block", "scope": "sha256", "value": h(2),
        "duration": "2h0m0s", "until": "2026-11-28T12:00:00.000Z", "rapidloop_scope": "org",
        "rapidloop_org_id": "org-a"}
    assert cs["scenario"] == DECISIONS[1]["reasons"][0]
    assert cs["uuid"] == cs["rapidloop_decision_id"] == DECISIONS[1]["decision_id"]
    # CrowdSec's Go client reads id as an int64: an integer, stable, exact in JSON
    assert isinstance(cs["id"], int) and 0 <= cs["id"] < 2**53
    assert cs["id"] == crowdsec_id(DECISIONS[1]["decision_id"]) != crowdsec_id("other")
    assert cs["rapidloop_event_ts"] == DECISIONS[1]["event_ts"]   # as written
    forever = to_crowdsec(read_decision(DECISIONS[0]), now, no_expiry_s=7200.0)
    assert forever["duration"] == "2h0m0s" and forever["until"] is None
    lapsed = to_crowdsec(read_decision(DECISIONS[5]), now, no_expiry_s=1.0)
    assert lapsed["duration"] == "-1h0m0s"


# ---------------------------------------------------------------- the stream's memory

def test_startup_sends_everything_then_only_the_changes_per_token() -> None:
    b_dict = dec(h(2), "org", "block", LAST, org="o1")
    a, b, renewed, c = (read_decision(d) for d in (
        dec(h(1), "global", "block", LAST), b_dict,
        {**b_dict, "decision_id": "renewed", "expires_at": "2026-11-29T10:00:00.000Z"},
        dec(h(3), "org", "allow", LAST, org="o1")))
    memory = StreamMemory()
    ids = lambda ds: sorted(d.decision_id for d in ds)   # noqa: E731
    new, deleted = memory.answer(1, [a, b], startup=True)
    assert ids(new) == ids([a, b]) and deleted == []
    assert memory.answer(1, [a, b], startup=False) == ([], [])        # nothing changed
    new, deleted = memory.answer(1, [a, renewed, c], startup=False)   # renewed, one more
    assert ids(new) == ids([renewed, c]) and ids(deleted) == ids([b])
    new, deleted = memory.answer(1, [c], startup=False)               # lifted or lapsed
    assert new == [] and ids(deleted) == ids([a, renewed])
    # each token has its own memory; a token never seen gets everything; startup resets
    assert ids(memory.answer(2, [c], startup=False)[0]) == ids([c])
    new, deleted = memory.answer(1, [a, c], startup=True)
    assert ids(new) == ids([a, c]) and deleted == []


def test_deltas_through_the_app_as_the_decisions_change(app: App) -> None:
    source = app.source
    assert isinstance(source, Static)
    status, first = get(app, "/v1/decisions/stream?startup=true", A)
    assert status == 200 and seen(first) == WANT[A] and first["deleted"] == []
    assert get(app, "/v1/decisions/stream", A)[1] == {"new": [], "deleted": []}
    # org-a's device block lifted (unblock), a new org-b block, a new global block
    source.records = [*DECISIONS,
                      dec(h(5), "device", "unblock", LAST, org="org-a", device="org-a/dev-7"),
                      dec(h(3), "org", "block", LAST, org="org-b"),
                      dec(h(10)[:64], "global", "block", LAST)]
    _, delta = get(app, "/v1/decisions/stream?startup=false", A)
    assert seen(delta) == {("1", "global")} and seen(delta, "deleted") == {("5", "device")}
    _, delta_b = get(app, "/v1/decisions/stream", B)   # B's first call: everything it sees
    assert ("3", "org") in seen(delta_b) and not any(
        d["rapidloop_org_id"] == "org-a" for d in delta_b["new"])
    # time passes: org-a's block on h(2) lapses at 12:00
    source.at = parse_ts("2026-11-28T12:00:00Z")
    _, delta = get(app, "/v1/decisions/stream", A)
    assert seen(delta, "deleted") == {("2", "org"), ("9", "global")} and delta["new"] == []


# ---------------------------------------------------------------- who sees what

@pytest.mark.parametrize("token", [A, B, OP])
def test_each_token_sees_its_view_and_never_another_tenants(app: App, token: str) -> None:
    status, stream = get(app, "/v1/decisions/stream?startup=true", token)
    assert status == 200 and seen(stream) == WANT[token]
    orgs = {d["rapidloop_org_id"] for d in stream["new"]}
    assert orgs <= {None, TOKENS[token]} or TOKENS[token] == "*"
    # CrowdSec bouncers send X-Api-Key: same view
    assert seen(get(app, "/v1/decisions/stream?startup=true", token, how="x-api-key")[1]) \
        == WANT[token]


def test_bad_or_missing_tokens_get_401_in_one_json_line(app: App) -> None:
    for token in (None, "", "wrong-token-0123456789", A + "x", A[:-1]):
        status, body = get(app, "/v1/decisions/stream?startup=true", token)
        assert status == 401 and "token" in body["message"]
    r = app.handle("/v1/decisions/stream", {})
    assert ("WWW-Authenticate", 'Bearer realm="rapidloop"') in r.headers
    assert r.body.count(b"\n") == 1 and r.body.endswith(b"\n")
    # the stream takes headers only; the page takes ?token= too
    assert get(app, f"/v1/decisions/stream?token={A}")[0] == 401
    assert get(app, f"/?token={A}")[0] == 200


def test_requests_out_of_bounds(app: App) -> None:
    assert get(app, "/v1/decisions/stream?startup=maybe", A)[0] == 400
    assert get(app, "/v1/decisions/stream?startup=true&scopes=ip,range", A)[1] == {
        "new": [], "deleted": []}
    assert seen(get(app, "/v1/decisions/stream?startup=true&scopes=Ip,SHA256", A)[1]) \
        == WANT[A]
    long = "/?sha256=" + "a" * load_config(env={}).serve.max_target_chars
    assert get(app, long, A)[0] == 414
    assert get(app, "/etc/passwd", A)[0] == 404
    assert get(app, "/../../etc/passwd", A)[0] == 404
    assert get(app, "/?sha256=xyz", A)[0] == 400
    assert get(app, "/explain/not-a-hash", A)[0] == 400


def test_the_page_shows_the_view_escaped_and_filtered(app: App) -> None:
    status, page = get(app, f"/?token={A}")
    assert status == 200
    assert "org-b" not in page and h(3) not in page and h(4) not in page
    for n in (1, 2, 5, 8, 9):
        assert f'<a href="/explain/{h(n)}?token={A}">' in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "organization org-a" in page and "2026-11-28T12:00:00.000Z (in 2h0m0s)" in page
    rows = lambda p: re.findall(r'<td class="sha"><a href="[^"]+">(\w+)</a>', p)   # noqa: E731
    assert rows(get(app, f"/?token={A}&sha256=22")[1]) == [h(2)]
    assert rows(get(app, f"/?token={A}&sha256=")[1]) == [h(n) for n in (1, 2, 5, 8, 9)]
    # a tenant cannot ask for another's view; the operator can, and sees all without one
    assert get(app, f"/?token={A}&org=org-b")[0] == 403
    assert rows(get(app, f"/?token={A}&org=org-a")[1]) == [h(n) for n in (1, 2, 5, 8, 9)]
    assert rows(get(app, f"/?token={OP}&org=org-b")[1]) == [h(n) for n in (1, 3, 4, 8, 9)]
    assert len(rows(get(app, f"/?token={OP}")[1])) == len(WANT[OP])


def test_the_page_keeps_to_page_rows(tmp_path: Path) -> None:
    _, tokens = write_world(tmp_path)
    settings = load_config(env={"RAPIDLOOP_SERVE__PAGE_ROWS": "2"}).serve
    app = App(Static(list(DECISIONS)), load_tokens(tokens, 16), settings)
    page = get(app, f"/?token={OP}")[1]
    assert page.count('<td class="sha">') == 2 and "showing the first 2 of 8" in page


def test_the_story_page_is_the_viewers_view(app: App) -> None:
    status, page = get(app, f"/explain/{h(8)}?token={A}")
    assert status == 200 and "rapidloop explain" in page and "organization org-a" in page
    assert "allow org org-a" in page
    # a file with nothing in org-a's view: not found, not even its existence
    status, body = get(app, f"/explain/{h(3)}?token={A}")
    assert status == 404 and h(3) not in json.dumps(body)
    assert get(app, f"/explain/{h(3)}?token={OP}")[0] == 200
    assert get(app, f"/explain/{h(3)}?token={B}")[0] == 200


# ---------------------------------------------------------------- tokens

def test_tokens_from_toml_or_json_and_errors_that_never_quote_one(tmp_path: Path) -> None:
    _, toml_file = write_world(tmp_path)
    tokens = load_tokens(toml_file, 16)
    assert [(p.ref, p.org) for _, p in tokens] == [(1, "org-a"), (2, "org-b"), (3, None)]
    assert authenticate(tokens, A).org == "org-a" and authenticate(tokens, OP).org is None
    assert authenticate(tokens, "nope") is None and authenticate(tokens, None) is None
    json_file = tmp_path / "tokens.json"
    json_file.write_text(json.dumps(TOKENS))
    assert [p.org for _, p in load_tokens(json_file, 16)] == ["org-a", "org-b", None]
    short = "short-secret"
    for text, says in ((f'{{"{short}": "org-a"}}', "token 1 is shorter than"),
                       ("{}", "no token in"),
                       (f'{{"{A}": "org-a", "{short} x": "org-b"}}', "token 2 has characters"),
                       (f'{{"{A}": ""}}', "token 1: its org"),
                       ("not json", "is not valid JSON")):
        json_file.write_text(text)
        with pytest.raises(TokenError, match=says) as exc:
            load_tokens(json_file, 16)
        assert short not in str(exc.value) and A not in str(exc.value)


def test_serve_refuses_to_start_without_a_token(tmp_path: Path, capsys) -> None:
    decisions, _ = write_world(tmp_path)
    assert main(["serve", "--decisions", str(decisions)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no tokens" in err
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert main(["serve", "--decisions", str(decisions), "--tokens", str(empty)]) == 2
    assert "no token in" in capsys.readouterr().err


# ---------------------------------------------------------------- the followed feed

class FakeView:
    """What FeedSource uses of ActiveView: records, clock, catch_up, poll, close."""

    def __init__(self, records: dict[str, DecisionRecord], fail: bool = False) -> None:
        self.records, self.clock, self.fail, self.closed = records, float("-inf"), fail, False
        self.changes: list[tuple[str, DecisionRecord | None]] = []

    def catch_up(self, timeout: float) -> int:
        return len(self.records)

    def poll(self, timeout: float) -> list[tuple[str, Any]]:
        if self.fail:
            raise ValueError("an unreadable record")
        out, self.changes = self.changes, []
        for key, d in out:
            if d is None:
                self.records.pop(key, None)
            else:
                self.records[key] = d
        return out

    def close(self) -> None:
        self.closed = True


def test_the_feed_source_follows_changes_at_the_wall_clock() -> None:
    import time

    now = time.time()

    def at(offset: float) -> str:
        from rapidloop.schemas.timefmt import format_ts

        return format_ts(now + offset)

    keep = read_decision(dec(h(1), "global", "block", at(-60)))
    lapsed = read_decision(dec(h(2), "global", "block", at(-60), expires=at(-1)))
    views = [FakeView({"k1": keep, "k2": lapsed}, fail=True), FakeView({"k1": keep})]
    logged: list[str] = []
    source = FeedSource(lambda: views.pop(0), "feed", 1.0, 0.01, 0.01, logged.append)
    records, moment = source.snapshot()
    assert len(records) == 2 and moment >= now           # the wall clock
    from rapidloop.schemas.enforcement import in_force
    assert [d.sha256 for d in in_force(records, moment)] == [h(1)]   # the lapsed drops out
    source.start()
    try:
        deadline = time.monotonic() + 5
        while not logged or len(source.snapshot()[0]) != 1:
            assert time.monotonic() < deadline, logged
            time.sleep(0.01)
        assert "reading it again from its beginning" in logged[0]   # the failed view: resync
    finally:
        source.stop()
    assert views == []


@pytest.mark.parametrize("want", DAY_EXPECTED["serve_streams"],
                         ids=[w["org"] for w in DAY_EXPECTED["serve_streams"]])
def test_the_stream_of_a_replayed_day_is_byte_identical_to_before(tmp_path: Path,
                                                                  want: dict) -> None:
    """CrowdSec's shape of the contract's decisions (``rapidloop serve --decisions``), as
    the release before answered it for the same day (see ``test_active``)."""
    import argparse
    import hashlib

    from rapidloop.cli.common import view
    from rapidloop.feeds.serve import FileSource

    path = str(DAY / "decisions.jsonl.gz")
    active, at = view(argparse.Namespace(from_kafka=False, decisions=path, org=None, at=None))
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({OP: want["org"]}))
    app = App(FileSource(path, active, at), load_tokens(tokens, 16), load_config(env={}).serve)
    body = app.handle("/v1/decisions/stream?startup=true", {"authorization": f"Bearer {OP}"}).body
    assert len(body) == want["bytes"] and hashlib.sha256(body).hexdigest() == want["sha256"]
