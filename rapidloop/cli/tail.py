"""`rapidloop tail`: decisions as they are made, one readable line each (or raw JSON).

Reads every partition of the decisions topic without a consumer group, from
its end unless asked for the beginning; the reading and the line are
``rapidloop.tools.tail``. This module reads the options and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import closing

from rapidloop.base.config import load_config
from rapidloop.base.kafka import BrokerUnavailable, client_config, topic_partitions
from rapidloop.cli import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tail", help="show decisions as they are made",
                       description=__doc__.splitlines()[0])
    p.add_argument("--brokers", help="bootstrap servers (default: kafka.brokers from config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--topic", help="topic to read (default: kafka.decisions_topic from config)")
    p.add_argument("--json", action="store_true", help="print each decision as a raw JSON line")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the beginning of the topic instead of its end")
    p.add_argument("--max", type=int, metavar="N", help="exit after N decisions")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="exit after SECONDS without a new decision")
    p.set_defaults(func=run)


def _say(line: str) -> None:
    """A line that is not a decision (stdout carries decisions only, one per line)."""
    print(f"rapidloop tail: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from rapidloop.tools.tail import follow, format_decision, json_line

    if args.max is not None and args.max < 1:
        raise CliError(f"--max must be at least 1 (got {args.max})")
    if args.timeout is not None and args.timeout <= 0:
        raise CliError(f"--timeout must be positive (got {args.timeout:g})")
    cfg = load_config(args.config)
    brokers = args.brokers or cfg.kafka.brokers
    topic = args.topic or cfg.kafka.decisions_topic
    conf = client_config(cfg, brokers)
    try:
        parts = topic_partitions(conf, [topic], cfg.kafka.connect_timeout_s)
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None

    out = sys.stdout
    color = out.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
    shown = 0
    last_seen = time.monotonic()
    try:
        with closing(follow(conf, parts, from_beginning=args.from_beginning, say=_say)) as got:
            for item in got:
                if item is None:   # the end of one poll
                    out.flush()
                    if args.timeout is not None and time.monotonic() - last_seen >= args.timeout:
                        return 0
                    continue
                value, decision = item
                out.write((json_line(value) if args.json else format_decision(decision, color))
                          + "\n")
                shown += 1
                last_seen = time.monotonic()
                if args.max is not None and shown >= args.max:
                    out.flush()
                    return 0
    except BrokenPipeError:   # e.g. piped into `head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0
    return 0   # never reached: the topic is followed until a limit or a signal
