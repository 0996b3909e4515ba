"""`rapidloop serve`: the decisions in force over HTTP, for enforcement points without Kafka.

An enforcement point that cannot read Kafka (a proxy, a mail gateway, a script
beside a firewall) polls CrowdSec's decision stream instead, and a person opens
a page. Everything here is plain functions and classes over decisions read
once (``rapidloop.schemas.wire.DecisionRecord``), no socket; :func:`make_server`
is the thin ``http.server`` front end, :func:`serve_until_signalled` runs it
until Ctrl-C or SIGTERM.

Who sees what. Each bearer token (from ``serve.tokens_file``, never from the
main configuration) names one organization, or ``*`` for the operator. A
tenant's token sees exactly what ``rapidloop active --org ORG`` prints (the
rule is :func:`rapidloop.feeds.active.in_force`): global decisions and its own
org's org and device decisions, its own org decision winning over a global
one on the same file, never another tenant's. The operator's sees every
target. Give each enforcement point a token of its own: the stream remembers
what it sent per token.

The stream (CrowdSec's ``GET /v1/decisions/stream``). ``startup=true`` answers
every decision in force as ``new`` and starts that token's memory again;
later calls answer what appeared since the token's previous call as ``new``
and what lapsed or was lifted as ``deleted`` (a renewed block is both: the
old decision deleted, the new one added). Lists are ``[]``, never null.

>>> from rapidloop.schemas.wire import read_decision
>>> ds = [read_decision({"decision_id": "d1", "sha256": "ab" * 32, "action": "block",
...        "scope": "global", "org_id": None, "device_id": None, "reasons": ["sandbox verdict"],
...        "event_ts": "2026-11-28T10:00:00.000Z", "expires_at": "2026-11-28T14:00:00.000Z"})]
>>> memory = StreamMemory()
>>> new, deleted = memory.answer(1, ds, startup=True)
>>> [d.decision_id for d in new], deleted
(['d1'], [])
>>> memory.answer(1, [], startup=False)[1][0].decision_id     # lifted since: deleted
'd1'
>>> from rapidloop.schemas.timefmt import parse_ts
>>> cs = to_crowdsec(ds[0], parse_ts("2026-11-28T10:00:58Z"), no_expiry_s=3600.0)
>>> cs["type"], cs["scope"], cs["duration"], cs["scenario"], cs["rapidloop_scope"]
('block', 'sha256', '3h59m2s', 'sandbox verdict', 'global')

The page (``/``) and the stories (``/explain/SHA256``) take the token from
``Authorization: Bearer``, ``X-Api-Key`` (what CrowdSec bouncers send) or,
because a browser cannot set a header from a link, a ``?token=`` query
parameter. A token in a URL ends up in the browser's history: acceptable on
loopback (the default address) for a person at that machine; beyond it, put a
TLS proxy in front that sets the header. The stream takes headers only.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import json
import os
import signal
import socket
import stat
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple, Protocol
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import orjson

from rapidloop.operators.activefeed import target_key
from rapidloop.schemas.enforcement import in_force, in_view
from rapidloop.schemas.timefmt import format_ts
from rapidloop.schemas.wire import DecisionRecord
from rapidloop.tools.explain import clean, normalise_sha256, select

OPERATOR = "*"                       # a token's org in the tokens file: sees every target
STREAM_PATH = "/v1/decisions/stream"
EXPLAIN_PREFIX = "/explain/"
CROWDSEC_ORIGIN = "rapidloop"
CROWDSEC_SCOPE = "sha256"            # CrowdSec's scope; rapidloop's own goes in rapidloop_scope
_ID_BITS = 53                        # JSON readers (JavaScript) keep integers exact up to 2**53
_MINUTE = 60
_HOUR = 60 * _MINUTE
_PRIVATE = stat.S_IRWXG | stat.S_IRWXO   # a tokens file others can read is worth a note
_SHA_CHARS = 64
_HEX = frozenset("0123456789abcdef")


class TokenError(ValueError):
    """A tokens file that cannot be used (the text never quotes a token)."""


@dataclass(frozen=True)
class Principal:
    """Who a token is: ``org`` None for the operator. ``ref`` (the token's place in the
    file) keys the stream's memory, so the token itself is kept nowhere else."""

    ref: int
    org: str | None


Tokens = list[tuple[bytes, Principal]]


def load_tokens(path: str | os.PathLike[str], min_chars: int) -> Tokens:
    """The tokens of a TOML or JSON mapping ``token -> org id`` (``"*"``: the operator).

    Kept out of the main configuration so secrets live in a file of their own,
    readable by the server's user only. A short, non-ASCII or blank-containing
    token, an empty org or an empty file is an error naming the token's place,
    never its text.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "tokens.json"
    >>> _ = p.write_text('{"k3Xq-for-org-1-abcdef": "org-1", "op-9f2b-operator-xyz": "*"}')
    >>> [(pr.ref, pr.org) for _, pr in load_tokens(p, 16)]
    [(1, 'org-1'), (2, None)]
    """
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise TokenError(f"cannot read the tokens file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TokenError(f"tokens file {p} is not UTF-8 text") from None
    try:
        mapping = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        raise TokenError(f"tokens file {p} is not valid {kind}: {exc}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise TokenError(f"no token in {p}: a mapping of token to org id (or \"*\" for the "
                         "operator) is needed to serve anything")
    out: Tokens = []
    for ref, (token, org) in enumerate(mapping.items(), 1):
        where = f"{p}: token {ref}"
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise TokenError(f"{where} has characters a header cannot carry (ASCII, no blank)")
        if len(token) < min_chars:
            raise TokenError(f"{where} is shorter than serve.min_token_chars = {min_chars}")
        if not isinstance(org, str) or not org.strip():
            raise TokenError(f"{where}: its org must be an org id or \"*\"")
        out.append((token.encode(), Principal(ref, None if org == OPERATOR else org)))
    return out


def tokens_note(path: str | os.PathLike[str]) -> str | None:
    """One line when others than the owner may read the tokens file, else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & _PRIVATE:
        return f"note: {path} is readable by other users; chmod 600 it"
    return None


def authenticate(tokens: Tokens, presented: str | None) -> Principal | None:
    """The principal of ``presented``, compared with every token in constant time."""
    if not presented:
        return None
    given = presented.encode("utf-8", "replace")
    found = None
    for token, principal in tokens:
        if hmac.compare_digest(token, given):   # no early exit: timing says nothing
            found = principal
    return found


# ---------------------------------------------------------------- CrowdSec's shape

def go_duration(seconds: float) -> str:
    """Whole ``seconds`` as Go's ``time.Duration`` text, which CrowdSec bouncers parse.

    >>> go_duration(14342.7), go_duration(3600), go_duration(59), go_duration(0)
    ('3h59m2s', '1h0m0s', '59s', '0s')
    >>> go_duration(-65)
    '-1m5s'
    """
    whole = int(seconds)   # towards zero, as Go prints a duration
    sign = "-" if whole < 0 else ""
    h, rest = divmod(abs(whole), _HOUR)
    m, s = divmod(rest, _MINUTE)
    if h:
        return f"{sign}{h}h{m}m{s}s"
    if m:
        return f"{sign}{m}m{s}s"
    return f"{sign}{s}s"


def crowdsec_id(decision_id: str) -> int:
    """CrowdSec's integer ``id`` for a rapidloop ``decision_id``: stable, JSON-exact.

    CrowdSec's Go client decodes ``id`` as an int64, so the string id travels in
    ``uuid`` (and ``rapidloop_decision_id``) and ``id`` is its hash.
    """
    digest = hashlib.sha256(decision_id.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - _ID_BITS)


def to_crowdsec(d: DecisionRecord, now: float, no_expiry_s: float) -> dict[str, Any]:
    """One contract decision as a CrowdSec decision, rapidloop's own fields kept beside.

    ``duration`` is what is left until ``expires_at`` at ``now`` (negative once
    lapsed, as CrowdSec's); a decision without expiry gets ``no_expiry_s`` and
    ``until`` null. ``scenario`` is the first reason.
    """
    expires = d.expires_at
    decision_id = d.decision_id or ""
    return {"id": crowdsec_id(decision_id), "uuid": decision_id, "origin": CROWDSEC_ORIGIN,
            "type": str(d.action), "scope": CROWDSEC_SCOPE, "value": d.sha256,
            "duration": go_duration(expires - now if expires is not None else no_expiry_s),
            "scenario": d.reasons[0] if d.reasons else CROWDSEC_ORIGIN,
            "until": format_ts(expires) if expires is not None else None,
            "simulated": False,
            "rapidloop_decision_id": decision_id, "rapidloop_scope": d.scope,
            "rapidloop_org_id": d.org_id, "rapidloop_device_id": d.device_id,
            "rapidloop_reasons": list(d.reasons), "rapidloop_score": d.score,
            "rapidloop_event_ts": d.event_ts_text, "rapidloop_expires_at": d.expires_at_text}


class StreamMemory:
    """What the stream last sent each token, so a call answers only the changes since.

    The memory is the server's: after a restart, a call without ``startup``
    gets everything in force as ``new`` (harmless to apply twice), but what
    was lifted while the server was down is not sent as ``deleted``; a bouncer
    should ask ``startup=true`` when it, or the server, starts.
    """

    def __init__(self) -> None:
        self._sent: dict[int, dict[str, DecisionRecord]] = {}
        self._lock = threading.Lock()

    def answer(self, ref: int, current: Iterable[DecisionRecord], startup: bool
               ) -> tuple[list[DecisionRecord], list[DecisionRecord]]:
        """(new, deleted) decisions for token ``ref``, and remember ``current``."""
        now = {target_key(d): d for d in current}
        with self._lock:
            before = {} if startup else self._sent.get(ref, {})
            self._sent[ref] = now
        new = [d for k, d in now.items() if before.get(k) != d]
        deleted = [d for k, d in before.items() if now.get(k) != d]
        return new, deleted


# ---------------------------------------------------------------- where decisions come from

class Source(Protocol):
    """The decisions the server holds: the records to apply the rule to, and the moment."""

    label: str    # for people: where the decisions come from
    clock: str    # ...and what the moment they are in force at is

    def snapshot(self) -> tuple[Sequence[DecisionRecord], float | None]: ...

    def history(self) -> Iterable[DecisionRecord | bytes]: ...


class FileSource:
    """A decisions file at its latest ``event_ts``, as ``rapidloop active --decisions``.

    ``active`` is the operator's view of it at ``at`` (``rapidloop.cli.common.view``);
    each tenant's view is drawn from it per request. The stories read the file
    again (one file's lines, picked cheaply), so the server keeps only what is
    in force.
    """

    def __init__(self, path: str, active: list[DecisionRecord], at: float | None) -> None:
        from rapidloop.tools.capture import iter_values

        self._iter = iter_values
        self.path = path
        self._active = active
        self._at = at
        self.label = f"decisions file {Path(path).name}"
        self.clock = "its latest event"

    def snapshot(self) -> tuple[Sequence[DecisionRecord], float | None]:
        return self._active, self._at

    def history(self) -> Iterable[bytes]:
        return self._iter(self.path)


class ActiveView(Protocol):
    """What :class:`FeedSource` uses of ``rapidloop.client.ActiveView`` (the client sits
    above the feeds, so it is passed in, not imported)."""

    records: dict[str, DecisionRecord]
    clock: float

    def catch_up(self, timeout: float = ...) -> int: ...
    def poll(self, timeout: float = ...) -> list[Any]: ...
    def close(self) -> None: ...


class FeedSource:
    """The compacted feed (``kafka.active_topic``) through the client's ``ActiveView``,
    followed by a background thread; the moment is the wall clock (or the feed's newest
    event time if a sensor clock runs ahead of it), so expired blocks drop out on time.

    A failure of the feed (broker errors, an unreadable record) is logged in one
    line and the feed read again from its beginning after ``retry_s``; meanwhile
    the last state is served.
    """

    def __init__(self, connect: Callable[[], ActiveView], topic: str, catch_up_s: float,
                 poll_s: float, retry_s: float,
                 log: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
                 ) -> None:
        self._connect = connect
        self._catch_up_s, self._poll_s, self._retry_s = catch_up_s, poll_s, retry_s
        self._log = log
        self.label = f"the compacted feed {topic} (the decisions in force only)"
        self.clock = "the wall clock"
        self._state: tuple[tuple[DecisionRecord, ...], float] = ((), float("-inf"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._view: ActiveView | None = self._caught_up()

    def _caught_up(self) -> ActiveView:
        view = self._connect()
        try:
            view.catch_up(self._catch_up_s)
        except BaseException:
            view.close()
            raise
        self._publish(view)
        return view

    def _publish(self, view: ActiveView) -> None:
        self._state = (tuple(view.records.values()), view.clock)   # one reference: atomic

    def start(self) -> None:
        self._thread = threading.Thread(target=self._follow, name="rapidloop-serve-feed",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._view is not None:
            self._view.close()
            self._view = None

    def _follow(self) -> None:
        from confluent_kafka import KafkaException

        from rapidloop.base.kafka import BrokerUnavailable

        while not self._stop.is_set():
            try:
                if self._view is None:
                    self._view = self._caught_up()
                    self._log("rapidloop serve: the feed is read again")
                if self._view.poll(self._poll_s):
                    self._publish(self._view)
            except (BrokerUnavailable, KafkaException, ValueError) as exc:
                self._log(f"rapidloop serve: the feed failed ({exc}); reading it again from "
                          f"its beginning in {self._retry_s:g}s, serving the last state")
                if self._view is not None:
                    self._view.close()
                    self._view = None
                self._stop.wait(self._retry_s)

    def snapshot(self) -> tuple[Sequence[DecisionRecord], float | None]:
        records, clock = self._state
        return records, max(time.time(), clock)

    def history(self) -> Iterable[DecisionRecord]:
        return self._state[0]


# ---------------------------------------------------------------- the application

class Response(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, obj: Any, *headers: tuple[str, str]) -> Response:
    return Response(status, orjson.dumps(obj) + b"\n", "application/json", headers)


def error(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """CrowdSec's error shape, one JSON line."""
    return _json(status, {"message": message}, *headers)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


class App:
    """The routes, over a :class:`Source` and the tokens; no socket (tests call ``handle``).

    ``settings`` is the ``[serve]`` section (``max_target_chars``, ``page_rows``,
    ``no_expiry_duration_s``).
    """

    def __init__(self, source: Source, tokens: Tokens, settings: Any) -> None:
        self.source = source
        self.tokens = tokens
        self.settings = settings
        self.memory = StreamMemory()

    def handle(self, target: str, headers: Mapping[str, str]) -> Response:
        """Answer ``GET target``; ``headers`` with lower-case names."""
        if len(target) > self.settings.max_target_chars:
            return error(HTTPStatus.REQUEST_URI_TOO_LONG,
                         f"request target longer than {self.settings.max_target_chars} "
                         "characters")
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path
        page = path == "/" or path.startswith(EXPLAIN_PREFIX)
        if path != STREAM_PATH and not page:
            return error(HTTPStatus.NOT_FOUND, f"no such resource; try {STREAM_PATH} or /")
        principal = authenticate(self.tokens, self._presented(headers, query if page else {}))
        if principal is None:
            how = "Authorization: Bearer TOKEN or X-Api-Key: TOKEN" + (
                ", or ?token=TOKEN" if page else "")
            return error(HTTPStatus.UNAUTHORIZED, f"a valid token is needed ({how})",
                         ("WWW-Authenticate", 'Bearer realm="rapidloop"'))
        if path == STREAM_PATH:
            return self.stream(principal, query)
        org = query.get("org") or None
        if principal.org is not None and org not in (None, principal.org):
            return error(HTTPStatus.FORBIDDEN, "this token sees its own organization only")
        org = principal.org or org
        if path == "/":
            return self.page(org, query, operator=principal.org is None)
        return self.explain(path[len(EXPLAIN_PREFIX):], org)

    @staticmethod
    def _presented(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return headers.get("x-api-key") or query.get("token") or None

    def in_view(self, org: str | None) -> tuple[list[DecisionRecord], float | None]:
        """The decisions in force in ``org``'s view (None: the operator's), and the moment."""
        records, at = self.source.snapshot()
        return (in_force(records, at, org) if at is not None else []), at

    def stream(self, principal: Principal, query: Mapping[str, str]) -> Response:
        """CrowdSec's ``/v1/decisions/stream``: ``{"new": [...], "deleted": [...]}``."""
        startup = query.get("startup", "false").lower()
        if startup not in ("true", "false"):
            return error(HTTPStatus.BAD_REQUEST, "startup must be true or false")
        active, at = self.in_view(principal.org)
        scopes = {s.strip().lower() for s in query.get("scopes", CROWDSEC_SCOPE).split(",")}
        if CROWDSEC_SCOPE not in scopes:
            active = []   # a bouncer asking for other scopes (ip, range): none of ours
        new, deleted = self.memory.answer(principal.ref, active, startup == "true")
        now = at if at is not None else time.time()
        no_expiry = self.settings.no_expiry_duration_s
        return _json(HTTPStatus.OK, {"new": [to_crowdsec(d, now, no_expiry) for d in new],
                                     "deleted": [to_crowdsec(d, now, no_expiry)
                                                 for d in deleted]})

    def page(self, org: str | None, query: Mapping[str, str], operator: bool) -> Response:
        """The decisions in force as a table, filtered by a sha256 prefix (and, for the
        operator, shown in one organization's view)."""
        prefix = query.get("sha256", "").strip().lower()
        if len(prefix) > _SHA_CHARS or any(c not in _HEX for c in prefix):
            return error(HTTPStatus.BAD_REQUEST, "sha256 must be a prefix of 64 hex digits")
        active, at = self.in_view(org)
        rows = [d for d in active if d.sha256.startswith(prefix)]
        token = query.get("token")
        body = render_page(rows, at, org=org, operator=operator, source=self.source,
                           prefix=prefix, token=token, page_rows=self.settings.page_rows)
        return Response(HTTPStatus.OK, body.encode(), "text/html; charset=utf-8")

    def explain(self, sha: str, org: str | None) -> Response:
        """``rapidloop explain --html`` of one file, from the decisions the server holds, in
        the viewer's view; 404 unless the file has a decision that view shows."""
        from rapidloop.tools.explain_html import render_html

        sha256 = normalise_sha256(sha)
        if sha256 is None:
            return error(HTTPStatus.BAD_REQUEST, "not a sha256 (64 hex digits)")
        try:
            story = select(sha256, (), (), self.source.history())
        except OSError as exc:
            return error(HTTPStatus.SERVICE_UNAVAILABLE,
                         f"cannot read the decisions: {exc.strerror or exc}")
        if not any(in_view(d, org) for d in story.decisions):
            return error(HTTPStatus.NOT_FOUND, "no decision about this file in your view")
        return Response(HTTPStatus.OK, render_html(story, org=org, source=self.source.label)
                        .encode(), "text/html; charset=utf-8")


# ---------------------------------------------------------------- the page

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; }
.meta { color: #555; margin: 0 0 12px; }
form { margin: 0 0 12px; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e5e5e5;
         vertical-align: top; }
th { background: #f6f6f6; }
td.sha { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
td.block { color: #b00020; font-weight: 600; }
td.allow { color: #1f77b4; font-weight: 600; }
"""


def _href(path: str, **params: str | None) -> str:
    kept = {k: v for k, v in params.items() if v}
    return path + (f"?{urlencode(kept)}" if kept else "")


def render_page(rows: list[DecisionRecord], at: float | None, *, org: str | None,
                operator: bool, source: Source, prefix: str, token: str | None,
                page_rows: int) -> str:
    """The decisions in force as one self-contained page: a filter form and a table
    (sha256, action, scope, org, device, reasons, age, expires), every field escaped
    (reasons are free text), each file linked to its story.

    ``token`` (when the viewer gave it in the URL) is carried into the links and the
    form, since a browser has no other way to send it; ``org`` is the view's.
    """
    def row(d: DecisionRecord) -> str:
        sha = clean(d.sha256, _SHA_CHARS)
        t, expires = d.event_ts, d.expires_at
        age = go_duration(at - t) if at is not None and t is not None else "?"
        until = ("never" if expires is None else
                 f"{format_ts(expires)} (in {go_duration(expires - at)})" if at is not None
                 else format_ts(expires))
        action = clean(d.action, 10)
        link = _href(EXPLAIN_PREFIX + quote(sha), token=token, org=org if operator else None)
        cells = [f'<td class="sha"><a href="{_e(link)}">{_e(sha)}</a></td>',
                 f'<td class="{_e(action)}">{_e(action)}</td>',
                 f"<td>{_e(clean(d.scope, 10))}</td>",
                 f"<td>{_e(clean(d.org_id or '—', 60))}</td>",
                 f"<td>{_e(clean(d.device_id or '—', 60))}</td>",
                 f"<td>{_e('; '.join(clean(r, 200) for r in d.reasons) or '—')}</td>",
                 f"<td>{_e(age)}</td>", f"<td>{_e(until)}</td>"]
        return f"<tr>{''.join(cells)}</tr>"

    view = ("everything (operator view)" if org is None and operator
            else f"organization {clean(org, 60)}" + (" (operator, in that view)"
                                                      if operator else ""))
    moment = "no decision yet" if at is None else format_ts(at)
    shown = rows[:page_rows]
    more = (f"<p class=\"meta\">showing the first {len(shown)} of {len(rows)}: narrow with "
            "a sha256 prefix</p>\n" if len(rows) > len(shown) else "")
    blocks = sum(1 for d in rows if d.action == "block")
    hidden = f'<input type="hidden" name="token" value="{_e(token)}">' if token else ""
    org_input = (f'<label>org <input name="org" value="{_e(org or "")}" size="16"></label> '
                 if operator else "")
    head = "".join(f"<th>{h}</th>" for h in ("sha256", "action", "scope", "org", "device",
                                              "reasons", "age", "expires"))
    body = "".join(row(d) for d in shown) or '<tr><td colspan="8">nothing in force</td></tr>'
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>rapidloop: decisions in force</title>"
        f"<style>{CSS}</style></head><body>\n"
        "<h1>rapidloop: decisions in force</h1>\n"
        f'<p class="meta">{_e(source.label)}; in force at {_e(moment)} ({_e(source.clock)})'
        f"<br>view: {_e(view)}<br>"
        f"{len(rows)} decision(s) in force, {blocks} block(s)"
        f"{' matching ' + _e(prefix) + '…' if prefix else ''}</p>\n"
        f'<form method="get" action="/">{hidden}'
        f'<label>sha256 <input name="sha256" value="{_e(prefix)}" size="40"></label> '
        f'{org_input}<button type="submit">filter</button></form>\n'
        f"{more}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
        "</body></html>\n")


# ---------------------------------------------------------------- HTTP

_COMMON = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
           ("Referrer-Policy", "no-referrer"))
# pages: inline CSS and SVG only, no script, no frame, nothing fetched
_PAGE = (("Content-Security-Policy",
          "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
          "form-action 'self'; frame-ancestors 'none'"), ("X-Frame-Options", "DENY"))


class _Handler(BaseHTTPRequestHandler):
    """GET only; every answer, errors included, has a Content-Length and no-store."""

    server: _Server

    def version_string(self) -> str:
        return "rapidloop"   # no Python version for the curious

    def do_GET(self) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            response = self.server.app.handle(self.path, headers)
        except Exception as exc:   # a bug: one line for the client and one in the log
            print(f"rapidloop serve: internal error: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            response = error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        self._send(response)

    def _method_not_allowed(self) -> None:
        self._send(error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET is served",
                         ("Allow", "GET")))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _method_not_allowed

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own errors (bad request line, unknown method) as one JSON line."""
        self.close_connection = True
        self._send(error(code, message or HTTPStatus(code).phrase))

    def _send(self, r: Response) -> None:
        self.send_response(r.status)
        for name, value in (*_COMMON, *(_PAGE if r.content_type.startswith("text/html")
                                        else ()), *r.headers):
            self.send_header(name, value)
        self.send_header("Content-Type", r.content_type)
        self.send_header("Content-Length", str(len(r.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(r.body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """One line per request, the path without its query: a ``?token=`` is never logged."""
        if self.server.access_log:
            path = urlsplit(getattr(self, "path", "") or "").path
            print(f"rapidloop serve: {self.client_address[0]} {self.command} "
                  f"{clean(path, 120)} {code}", file=sys.stderr, flush=True)

    def log_error(self, format: str, *args: Any) -> None:
        """Silent: http.server would quote the raw request line, token included."""

    def log_message(self, format: str, *args: Any) -> None:
        """Silent, as :meth:`log_error`."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: App
    access_log: bool


def make_server(app: App, host: str, port: int, request_timeout_s: float,
                access_log: bool = True) -> ThreadingHTTPServer:
    """A threading HTTP server for ``app`` on ``host:port`` (0: a free port), not started.

    ``request_timeout_s`` bounds how long a connection may sit without sending,
    so idle clients cannot hold threads. OSError (or OverflowError for a port
    out of range) if it cannot listen.
    """
    handler = type("Handler", (_Handler,), {"timeout": request_timeout_s})
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = type("Server", (_Server,), {"address_family": family})((host, port), handler)
    server.app = app
    server.access_log = access_log
    return server


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (beyond it, serve behind TLS:
    tokens travel in headers, and in URLs for the page)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_until_signalled(server: ThreadingHTTPServer,
                          announce: Callable[[str, int], None] = lambda host, port: None
                          ) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (requests in flight finish).

    ``announce(host, port)`` is called once the signals are caught, just before
    the first request is taken. The previous signal handlers are restored.
    """
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, name="rapidloop-serve", daemon=True)
    try:
        host, port = server.server_address[:2]
        announce(str(host), int(port))
        thread.start()
        stop.wait()
    finally:
        if thread.is_alive():
            server.shutdown()   # waits for serve_forever's loop to end
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
