"""`rapidloop capture`: the input topics (and decisions) between two times, for an incident.

Reads reports and feedback, each tenant's own input topics included
(``[tenants] orgs``), and, with ``--decisions``, the decisions topic, by
Kafka timestamp from ``--since`` to ``--until`` without joining a consumer
group or committing anything, and writes a capture directory: compressed
JSONL per topic and a ``manifest.json`` (topics, the org each tenant topic
speaks for, partitions, offset ranges, time range, counts).
``rapidloop replay --capture DIR`` re-runs it and ``rapidloop explain SHA256
--from DIR`` tells one file's story from it.

A capture that fails (broker unreachable, directory not writable) says so in
one line and exits 2; one interrupted (Ctrl-C, SIGTERM) says so and exits
128 + the signal. Either way it leaves nothing that looks like a capture.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from rapidloop.cli import CliError
from rapidloop.config import load_config

TIME_HELP = "RFC 3339 (2026-11-29T01:00:00Z) or a time ago (90s, 30m, 2h, 1d)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("capture", help="capture the topics between two times for an incident",
                       description=__doc__.splitlines()[0])
    p.add_argument("--since", required=True, help=f"start of the time range: {TIME_HELP}")
    p.add_argument("--until", default="now", help=f"end of the time range (default now): "
                                                  f"{TIME_HELP}")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="capture directory to create (must not exist or be empty)")
    p.add_argument("--decisions", action="store_true",
                   help="also capture the decisions topic (what the live job decided)")
    p.add_argument("--brokers", help="bootstrap servers (default: kafka.brokers from config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration (topic names, client)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up after this long without news from the broker "
                        "(default: kafka.connect_timeout_s)")
    p.set_defaults(func=run)


def time_range(since: str, until: str) -> tuple[float, float]:
    """Both time arguments as epoch seconds, or CliError naming the bad one."""
    import time

    from rapidloop.capture import parse_time_arg

    now = time.time()
    out = []
    for name, text in (("--since", since), ("--until", until)):
        try:
            out.append(parse_time_arg(text, now))
        except ValueError as exc:
            raise CliError(f"{name}: {exc}") from None
    if out[0] > out[1]:
        raise CliError(f"--since ({since}) is after --until ({until})")
    return out[0], out[1]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a capture; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Signals:
    """What :func:`stop_on_signals` caught: the first signal's number (None: none yet)."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[Signals]:
    """SIGTERM (a supervisor's stop, ``timeout``) and SIGINT raise :class:`Interrupted`,
    so a capture or replay removes what it wrote instead of dying with it half-written.

    With ``stop`` (code that cannot take an exception at any point, such as a
    Bytewax flow), the first signal only sets it, for the code to stop on, and
    a second one raises.
    """
    caught = Signals()

    def handler(signum: int, frame: Any) -> None:
        first = caught.signum is None
        caught.signum = caught.signum or signum
        if stop is None or not first:
            raise Interrupted(caught.signum)
        stop.set()

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:   # not the main thread (tests): leave signals alone
        pass
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def capture_to(args: argparse.Namespace, out_dir: str, with_decisions: bool) -> dict:
    """Run a capture from parsed ``--since/--until/--brokers/--config`` arguments.

    CliError on failure; :class:`Interrupted` on Ctrl-C or SIGTERM (nothing left
    behind either way).
    """
    from rapidloop.capture import CaptureError, capture
    from rapidloop.config import tenant_topics
    from rapidloop.kafka import client_config

    since, until = time_range(args.since, args.until)
    cfg = load_config(args.config)
    k = cfg.kafka
    topics = {"reports": k.reports_topic, "feedback": k.feedback_topic}
    if with_decisions:
        topics["decisions"] = k.decisions_topic
    timeout = getattr(args, "timeout", None)
    if timeout is not None and timeout <= 0:
        raise CliError(f"--timeout must be positive (got {timeout:g})")
    try:
        with stop_on_signals():
            return capture(client_config(cfg, args.brokers), topics, since, until, out_dir,
                           tenants=tenant_topics(cfg),
                           shared_reports=cfg.tenants.shared_reports,
                           shared_feedback=cfg.tenants.shared_feedback,
                           timeout_s=timeout or k.connect_timeout_s,
                           metadata_timeout_s=k.connect_timeout_s)
    except CaptureError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from rapidloop.capture import summary

    try:
        manifest = capture_to(args, args.out, args.decisions)
    except Interrupted as exc:
        print(f"rapidloop capture: interrupted ({signal.Signals(exc.signum).name}); no capture "
              f"written to {args.out}", file=sys.stderr)
        return 128 + exc.signum
    print(f"captured {summary(manifest)} to {args.out}", file=sys.stderr)
    return 0
