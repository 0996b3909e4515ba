"""`rapidloop explain SHA256 --from CAPTURE_OR_REPLAY`: the story of one file, as text.

``--from`` is a capture directory, a directory of input files (``rapidloop
simulate --out``) or a replay's decisions JSONL; where the reports, feedback,
decisions and scores then come from is ``rapidloop.tools.explain_source``.
``--org ORG`` gives that tenant's view. ``--html FILE`` also writes the story
as one self-contained page (inline CSS and SVG, no network): each
classifier's score over event time with the decisions marked, and the text
story, for attaching to a ticket.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rapidloop.cli import CliError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="the story of one file from a capture or a replay",
                       description=__doc__.splitlines()[0])
    p.add_argument("sha256", help="the file's SHA-256 (64 hex digits)")
    p.add_argument("--from", dest="source", required=True, metavar="CAPTURE_OR_REPLAY",
                   help="a capture directory, or a replay's decisions JSONL (.gz ok)")
    p.add_argument("--decisions", metavar="FILE",
                   help="with a capture: take the decisions from this replay output")
    p.add_argument("--replay", action="store_true",
                   help="with a capture: re-run the replay now (with --config) for the decisions")
    p.add_argument("--config", metavar="FILE", help="TOML configuration for --replay")
    p.add_argument("--org", metavar="ORG",
                   help="that organization's own view: other tenants appear only as counts")
    p.add_argument("--no-timeline", action="store_true", help="summary and scores only")
    p.add_argument("--no-report-scores", action="store_true",
                   help="skip replaying the models for the score at each report")
    p.add_argument("--html", metavar="FILE",
                   help="also write the story as a self-contained HTML page with a chart")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rapidloop.base.config import load_config
    from rapidloop.cli.common import one_line
    from rapidloop.flows.job import JobError
    from rapidloop.tools.explain import normalise_sha256, render
    from rapidloop.tools.explain_source import SourceError, gather

    sha = normalise_sha256(args.sha256)
    if sha is None:
        raise CliError(f"not a sha256 (64 hex digits): {args.sha256[:80]!r}")
    if args.org is not None and not args.org.strip():
        raise CliError("--org must not be empty")
    cfg = load_config(args.config)
    with one_line(SourceError, JobError):
        story, source = gather(cfg, sha, args.source, decisions=args.decisions,
                               replay=args.replay, config=args.config,
                               report_scores=not args.no_report_scores)
    text = render(story, org=args.org, source=source, timeline=not args.no_timeline)
    if args.html:
        from rapidloop.tools.explain_html import render_html

        try:
            Path(args.html).write_text(render_html(story, org=args.org, source=source),
                                       encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot write {args.html}: {exc.strerror}") from None
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if args.html:
        print(f"wrote {args.html}", file=sys.stderr)
    return 0
