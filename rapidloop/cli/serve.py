"""`rapidloop serve`: the decisions in force over HTTP, CrowdSec's stream and a page.

For enforcement points that do not speak Kafka: ``GET /v1/decisions/stream``
answers ``{"new": [...], "deleted": [...]}`` in CrowdSec's shape for the
token's tenant (global decisions and its own, never another tenant's; the
operator's token sees every target), ``/`` is a page of the decisions in
force and ``/explain/SHA256`` a file's ``explain --html`` story. Tokens come
from ``serve.tokens_file`` (or ``--tokens``); without one it does not start.

``--decisions FILE`` serves that file at its latest ``event_ts``, as
``rapidloop active`` shows it; ``--from-kafka`` follows the compacted feed
(``kafka.active_topic``) and the moment is the wall clock. Loopback by
default; Ctrl-C or SIGTERM stop it. The rules are ``rapidloop.feeds.serve``.

    rapidloop serve --decisions decisions.jsonl --tokens tokens.toml
    curl -H "Authorization: Bearer $TOKEN" \\
         'http://127.0.0.1:8787/v1/decisions/stream?startup=true'
"""

from __future__ import annotations

import argparse
import sys
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING

from rapidloop.cli import CliError
from rapidloop.cli.common import view

if TYPE_CHECKING:
    from rapidloop.base.config import Config
    from rapidloop.feeds.serve import Source


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the decisions in force over HTTP (CrowdSec's stream, "
                       "a page)", description=__doc__.splitlines()[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="\n".join(__doc__.splitlines()[-3:]))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--decisions", metavar="FILE",
                     help="serve this decisions JSONL (.gz ok) at its latest event_ts")
    src.add_argument("--from-kafka", action="store_true",
                     help="follow the compacted feed (kafka.active_topic); now = wall clock")
    p.add_argument("--brokers", help="with --from-kafka: bootstrap servers (default: config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--tokens", metavar="FILE",
                   help="token -> org id mapping, TOML or JSON (default: serve.tokens_file)")
    p.add_argument("--host", help="address to listen on (default: serve.host, loopback)")
    p.add_argument("--port", type=int, help="port (default: serve.port; 0: a free one)")
    p.add_argument("--quiet", action="store_true", help="no line per request")
    # view() (rapidloop.cli.common, as `rapidloop active`) reads these: the operator's view
    # at the file's last event
    p.set_defaults(func=run, org=None, at=None)


def _source(args: argparse.Namespace, cfg: Config) -> Source:
    from rapidloop.feeds.serve import FeedSource, FileSource

    if not args.from_kafka:
        active, at = view(args)
        return FileSource(args.decisions, active, at)
    from rapidloop.base.kafka import BrokerUnavailable
    from rapidloop.client import ActiveView

    def connect() -> ActiveView:
        return ActiveView(args.brokers, cfg=cfg, timeout=cfg.kafka.connect_timeout_s)

    s = cfg.serve
    try:
        source = FeedSource(connect, cfg.kafka.active_topic, s.catch_up_timeout_s, s.poll_s,
                            s.retry_s)
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None
    source.start()
    return source


def run(args: argparse.Namespace) -> int:
    from rapidloop.base.config import load_config
    from rapidloop.feeds.serve import App, TokenError, is_loopback, load_tokens, make_server

    cfg = load_config(args.config)
    s = cfg.serve
    tokens_file = args.tokens or s.tokens_file
    if not tokens_file:
        raise CliError("no tokens: give --tokens FILE or set serve.tokens_file "
                       "(a TOML or JSON mapping of token to org id, \"*\" for the operator)")
    try:
        tokens = load_tokens(tokens_file, s.min_token_chars)
    except TokenError as exc:
        raise CliError(str(exc)) from None
    host = args.host or s.host
    port = s.port if args.port is None else args.port
    source = _source(args, cfg)
    try:
        try:
            server = make_server(App(source, tokens, s), host, port, s.request_timeout_s,
                                 access_log=not args.quiet)
        except (OSError, OverflowError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise CliError(f"cannot listen on {host}:{port}: {why}") from None
        _serve(server, tokens_file, len(tokens), f"{source.label}, in force at {source.clock}",
               is_loopback(host))
    finally:
        stop = getattr(source, "stop", None)
        if stop is not None:
            stop()
    return 0


def _serve(server: ThreadingHTTPServer, tokens_file: str, n_tokens: int, label: str,
           loopback: bool) -> None:
    """Serve until SIGINT or SIGTERM (``rapidloop.feeds.serve``), saying where and how."""
    from rapidloop.feeds.serve import serve_until_signalled, tokens_note

    def announce(host: str, port: int) -> None:
        note = tokens_note(tokens_file)
        if note:
            print(f"rapidloop serve: {note}", file=sys.stderr)
        if not loopback:
            print(f"rapidloop serve: note: {host} is reachable beyond this machine; serve it "
                  "behind TLS (tokens travel in headers, and in URLs for the page)",
                  file=sys.stderr)
        print(f"rapidloop serve: listening on http://{host}:{port} ({n_tokens} token(s); "
              f"{label})", file=sys.stderr, flush=True)

    serve_until_signalled(server, announce)
    print("rapidloop serve: stopped", file=sys.stderr)
