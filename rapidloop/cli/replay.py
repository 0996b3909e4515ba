"""`rapidloop replay`: the same dataflow over files, offline, no broker.

Reports and feedback are merged in event-time order and decisions written as
JSONL in emission order. Same input and config, same output but for
``decided_at``: this is how an incident is re-run and a policy change tried.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rapidloop import jobstats
from rapidloop.cli import CliError
from rapidloop.config import load_config
from rapidloop.operators.allowlist import AllowListError
from rapidloop.progress import summary_line
from rapidloop.schemas.intake import FEEDBACK, REPORT


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the dataflow over JSONL files (no broker)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--reports", required=True, metavar="FILE", help="Report JSONL (.gz ok)")
    p.add_argument("--feedback", metavar="FILE", help="Feedback JSONL (.gz ok)")
    p.add_argument("--output", required=True, metavar="FILE", help="Decisions JSONL to write")
    p.add_argument("--dead-letters", metavar="FILE", help="DeadLetter JSONL to write")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--workers", type=int, default=1, help="worker threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bytewax.testing import cluster_main, run_main

    from rapidloop.flows.dataflow import Connectors, build_flow
    from rapidloop.flows.file_io import JsonlSink, MergedFileSource

    cfg = load_config(args.config)
    files = [(args.reports, args.reports)]
    kinds = {args.reports: REPORT}
    if args.feedback:
        if args.feedback == args.reports:
            raise CliError("--reports and --feedback must be different files")
        files.append((args.feedback, args.feedback))
        kinds[args.feedback] = FEEDBACK
    for path, _ in files:
        if not Path(path).is_file():
            raise CliError(f"input file not found: {path}")
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    try:
        io = Connectors(
            sources=[("input", MergedFileSource(files, cfg.kafka.consume_batch))],
            kinds=kinds,
            decisions=JsonlSink(args.output),
            dead_letters=JsonlSink(args.dead_letters) if args.dead_letters else None,
        )
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename}: {exc.strerror}") from None
    try:
        flow = build_flow(cfg, io)
    except AllowListError as exc:
        raise CliError(str(exc)) from None
    stats = jobstats.reset()
    t0 = time.perf_counter()
    if args.workers == 1:
        run_main(flow, epoch_interval=None)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=args.workers)
    elapsed = time.perf_counter() - t0
    if not args.quiet:
        print(f"replayed {summary_line(stats, elapsed)}", file=sys.stderr)
    return 0
