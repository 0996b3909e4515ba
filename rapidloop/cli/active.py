"""`rapidloop active`: the decisions in force at one moment, one JSON line each.

The operator's view by default; ``--org`` gives one tenant's (global decisions
and its own, nothing of any other tenant). ``--at`` defaults to the latest
``event_ts`` in the file, or to now with ``--from-kafka`` (which reads the
decisions topic from its beginning to its end, assigned, nothing committed).
The rule is ``rapidloop.feeds.active`` (``rapidloop.schemas.enforcement``: decisions
made at ``--at`` included, a decision expiring at ``--at`` lapsed). Lines are the decisions as read.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from rapidloop.cli.common import add_view_args, view


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("active", help="the decisions in force at one moment",
                       description=__doc__.splitlines()[0])
    add_view_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    active, _ = view(args)
    out = sys.stdout.buffer
    for d in active:
        out.write(orjson.dumps(d.raw) + b"\n")   # the contract decision as it was read
    out.flush()
    return 0
