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
The capture itself is ``rapidloop.tools.capture``; the options it shares with
``rapidloop replay --from-kafka`` are read in ``rapidloop.cli.common``.
"""

from __future__ import annotations

import argparse
import signal
import sys

from rapidloop.base.signals import Interrupted
from rapidloop.cli.common import capture_to

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


def run(args: argparse.Namespace) -> int:
    from rapidloop.tools.capture import summary

    try:
        manifest = capture_to(args, args.out, args.decisions)
    except Interrupted as exc:
        print(f"rapidloop capture: interrupted ({signal.Signals(exc.signum).name}); no capture "
              f"written to {args.out}", file=sys.stderr)
        return 128 + exc.signum
    print(f"captured {summary(manifest)} to {args.out}", file=sys.stderr)
    return 0
