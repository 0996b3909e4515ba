"""`rapidloop active`: the decisions in force at one moment, one JSON line each.

The operator's view by default; ``--org`` gives one tenant's (global decisions
and its own, nothing of any other tenant). ``--at`` defaults to the latest
``event_ts`` in the file. The rule is ``rapidloop.active``.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from rapidloop.active import in_force, latest_event_ts
from rapidloop.cli import CliError
from rapidloop.schemas.timefmt import parse_ts_or_none


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("active", help="the decisions in force at one moment",
                       description=__doc__.splitlines()[0])
    p.add_argument("--decisions", required=True, metavar="FILE",
                   help="decisions JSONL (.gz ok): a replay's output or a capture's")
    p.add_argument("--org", metavar="ORG", help="that tenant's view")
    p.add_argument("--at", metavar="RFC3339",
                   help="the moment (default: the latest event_ts in the file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rapidloop.capture import iter_values

    decisions = []
    try:
        for n, line in enumerate(iter_values(args.decisions), 1):
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise CliError(f"{args.decisions} line {n}: not JSON") from None
            if not isinstance(d, dict):
                raise CliError(f"{args.decisions} line {n}: not a decision object")
            decisions.append(d)
    except OSError as exc:
        raise CliError(f"cannot read {args.decisions}: {exc.strerror or exc}") from None
    if args.at is not None:
        at = parse_ts_or_none(args.at)
        if at is None:
            raise CliError(f"--at {args.at!r} is not an RFC 3339 time")
    else:
        at = latest_event_ts(decisions)
        if at is None:
            return 0   # no decision: nothing in force
    out = sys.stdout.buffer
    for d in in_force(decisions, at, args.org):
        out.write(orjson.dumps(d) + b"\n")
    out.flush()
    return 0
