"""Argument handling shared by several subcommands (not a subcommand itself).

Subcommand modules do not import each other: what two of them share lives
here when it is about their options (``--since``/``--until`` of ``capture``
and ``replay``; the decision view of ``active``, ``export`` and ``serve``),
and in the library (``rapidloop.*``, ``rapidloop.flows.*``) when it is not.
Library code raises its own one-line errors; :func:`one_line` turns them into
:class:`CliError` where a subcommand calls it.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rapidloop.cli import CliError
from rapidloop.schemas.wire import DecisionRecord


@contextlib.contextmanager
def one_line(*errors: type[Exception]) -> Iterator[None]:
    """Turn the library's one-line ``errors`` into CliError, with the same text: the line
    the user reads is written where the failure is understood, not in the CLI."""
    try:
        yield
    except errors as exc:
        raise CliError(str(exc)) from None


# ------------------------------------------------------- capture and replay

def time_range(since: str, until: str) -> tuple[float, float]:
    """Both time arguments as epoch seconds, or CliError naming the bad one."""
    from rapidloop.tools.capture import parse_time_arg

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


def capture_to(args: argparse.Namespace, out_dir: str, with_decisions: bool) -> dict[str, Any]:
    """Run a capture from parsed ``--since/--until/--brokers/--config`` arguments.

    CliError on failure; :class:`rapidloop.base.signals.Interrupted` on Ctrl-C or
    SIGTERM (nothing left behind either way).
    """
    from rapidloop.base.config import load_config, tenant_topics
    from rapidloop.base.kafka import client_config
    from rapidloop.base.signals import stop_on_signals
    from rapidloop.tools.capture import CaptureError, capture

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


# ------------------------------------------------- active, export and serve

def add_view_args(p: argparse.ArgumentParser) -> None:
    """Where the decisions come from and which view of them (``active`` and ``export``)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--decisions", metavar="FILE",
                     help="decisions JSONL (.gz ok): a replay's output or a capture's")
    src.add_argument("--from-kafka", action="store_true",
                     help="read the decisions topic (kafka.decisions_topic) from its beginning")
    p.add_argument("--brokers", help="with --from-kafka: bootstrap servers (default: config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="with --from-kafka: give up after this long without news")
    p.add_argument("--org", metavar="ORG", help="that tenant's view")
    p.add_argument("--at", metavar="RFC3339",
                   help="the moment (default: the latest event_ts in the file)")


def view(args: argparse.Namespace) -> tuple[list[DecisionRecord], float | None]:
    """(the decisions in force in the asked view, the moment), or ([], None) if none.

    Reads ``--decisions`` or ``--from-kafka`` (``--brokers``, ``--config``,
    ``--timeout``), ``--at`` and ``--org``; the rule is ``rapidloop.feeds.active``.
    """
    from rapidloop.feeds.active import ActiveError, read_file, read_topic
    from rapidloop.schemas.enforcement import in_force, latest_event_ts
    from rapidloop.schemas.timefmt import parse_ts_or_none

    default_at: float | None
    with one_line(ActiveError):
        if args.from_kafka:
            from rapidloop.base.config import load_config

            decisions = read_topic(load_config(args.config), args.brokers, args.timeout)
            default_at = time.time()
        else:
            decisions = read_file(args.decisions)
            default_at = latest_event_ts(decisions)
    if args.at is not None:
        at = parse_ts_or_none(args.at)
        if at is None:
            raise CliError(f"--at {args.at!r} is not an RFC 3339 time")
    elif default_at is None:
        return [], None   # no decision: nothing in force
    else:
        at = default_at
    return in_force(decisions, at, args.org), at
