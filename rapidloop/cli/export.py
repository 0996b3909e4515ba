"""`rapidloop export`: the decisions in force as STIX 2.1, Defender indicators, MISP or CSV.

The same view as ``rapidloop active`` (the operator's, or one tenant's with
``--org``, at ``--at``), written whole to ``--output`` (a temporary name
renamed at the end: a file that is there is complete). The shapes are
``rapidloop.feeds.exports``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from rapidloop.cli import CliError
from rapidloop.cli.common import add_view_args, view
from rapidloop.feeds.exports import FORMATS, render
from rapidloop.schemas.timefmt import format_ts


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the decisions in force as STIX, Defender, MISP or CSV",
                       description=__doc__.splitlines()[0])
    add_view_args(p)
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, metavar="FILE", help="'-' for standard output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    active, at = view(args)
    stamp = format_ts(at) if at is not None else "1970-01-01T00:00:00.000Z"
    data = render(args.format, active, stamp, tenant=args.org is not None)
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write_whole(Path(args.output), data)
    blocks = sum(1 for d in active if d.action == "block")
    print(f"rapidloop export: {len(active)} decision(s) in force ({blocks} block(s)) at "
          f"{stamp}{f' for {args.org}' if args.org else ''} as {args.format}"
          f"{'' if args.output == '-' else f' to {args.output}'}", file=sys.stderr)
    return 0


def _write_whole(path: Path, data: bytes) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
