"""`rapidloop replay`: the same dataflow over files, a capture, or Kafka by time, offline.

Reports and feedback are merged in event-time order and decisions written as
JSONL in emission order. Same input and config, same output but for
``decided_at``: this is how an incident is re-run and a policy change tried.

Three sources, one code path:

* ``--reports F [--feedback F]``: JSONL files (``.gz`` too);
* ``--capture DIR``: a directory written by ``rapidloop capture``;
* ``--from-kafka --since T [--until T]``: the input topics read by time. This
  *is* a capture (to a temporary directory, or ``--save-capture DIR``)
  followed by a replay of it, so a replay from Kafka and a replay of a
  capture of the same range are identical by construction. It joins no
  consumer group and commits nothing: the live job is not disturbed.

Decisions go to ``--output`` (JSONL), never to a Kafka topic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rapidloop import jobstats
from rapidloop.cli import CliError
from rapidloop.config import Config, load_config
from rapidloop.operators.allowlist import AllowListError
from rapidloop.progress import Reporter, summary_line
from rapidloop.schemas.intake import FEEDBACK, REPORT

TIME_HELP = "RFC 3339 or a time ago (90s, 30m, 2h, 1d)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the dataflow over files, a capture or Kafka by time",
                       description=__doc__.splitlines()[0])
    src = p.add_argument_group("input (one of --reports, --capture, --from-kafka)")
    src.add_argument("--reports", metavar="FILE", help="Report JSONL (.gz ok)")
    src.add_argument("--feedback", metavar="FILE", help="Feedback JSONL (.gz ok), with --reports")
    src.add_argument("--capture", metavar="DIR", help="a capture directory (rapidloop capture)")
    src.add_argument("--from-kafka", action="store_true",
                     help="read the input topics by time (--since, --until, --brokers)")
    src.add_argument("--since", help=f"with --from-kafka: start of the range, {TIME_HELP}")
    src.add_argument("--until", help=f"with --from-kafka: end of the range (default now), "
                                     f"{TIME_HELP}")
    src.add_argument("--brokers", help="with --from-kafka: bootstrap servers "
                                       "(default: kafka.brokers from config)")
    src.add_argument("--save-capture", metavar="DIR",
                     help="with --from-kafka: keep the capture read from Kafka in DIR")
    p.add_argument("--output", required=True, metavar="FILE", help="Decisions JSONL to write")
    p.add_argument("--dead-letters", metavar="FILE", help="DeadLetter JSONL to write")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--workers", type=int, default=1, help="worker threads (default 1)")
    p.add_argument("--progress", type=float, default=0.0, metavar="SECONDS",
                   help="print a progress line (events/s) every SECONDS; default none")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=run)


def replay_files(cfg: Config, files: list[tuple[str, str]], kinds: dict[str, str],
                 output: str, dead_letters: str | None = None, workers: int = 1,
                 progress: float = 0.0) -> tuple[jobstats.JobStats, float]:
    """Run the dataflow over ``files`` ((path, topic name) pairs) to JSONL; (stats, seconds).

    ``kinds`` maps each topic name to REPORT or FEEDBACK. Raises CliError.
    """
    from bytewax.testing import cluster_main, run_main

    from rapidloop.flows.dataflow import Connectors, build_flow
    from rapidloop.flows.file_io import JsonlSink, MergedFileSource

    for path, _ in files:
        if not Path(path).is_file():
            raise CliError(f"input file not found: {path}")
    if workers < 1:
        raise CliError("--workers must be at least 1")
    try:
        io = Connectors(
            sources=[("input", MergedFileSource(files, cfg.kafka.consume_batch))],
            kinds=kinds,
            decisions=JsonlSink(output),
            dead_letters=JsonlSink(dead_letters) if dead_letters else None,
        )
    except OSError as exc:
        raise CliError(f"cannot write {exc.filename}: {exc.strerror}") from None
    try:
        flow = build_flow(cfg, io)
    except AllowListError as exc:
        raise CliError(str(exc)) from None
    stats = jobstats.reset()
    reporter = Reporter(stats, progress, sys.stderr) if progress > 0 else None
    if reporter is not None:
        reporter.start()
    t0 = time.perf_counter()
    try:
        if workers == 1:
            run_main(flow, epoch_interval=None)
        else:
            cluster_main(flow, [], 0, worker_count_per_proc=workers)
    finally:
        if reporter is not None:
            reporter.stop()
    return stats, time.perf_counter() - t0


def capture_inputs(directory: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The replay inputs of a capture: (path, topic) pairs and topic → kind (no decisions)."""
    from rapidloop.capture import CaptureError, capture_files

    try:
        found = capture_files(directory)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    kind_of = {"reports": REPORT, "feedback": FEEDBACK}
    files = [(path, topic) for kind, path, topic in found if kind in kind_of]
    return files, {topic: kind_of[kind] for kind, _, topic in found if kind in kind_of}


def _check_sources(args: argparse.Namespace) -> None:
    given = [name for name, on in (("--reports", args.reports), ("--capture", args.capture),
                                   ("--from-kafka", args.from_kafka)) if on]
    if not given:
        raise CliError("give the input: --reports FILE, --capture DIR or --from-kafka --since T")
    if len(given) > 1:
        raise CliError(f"{' and '.join(given)} are alternatives: give one")
    if args.feedback and not args.reports:
        raise CliError("--feedback goes with --reports (a capture holds its own feedback)")
    if not args.from_kafka:
        extra = [n for n, v in (("--since", args.since), ("--until", args.until),
                                ("--brokers", args.brokers), ("--save-capture", args.save_capture))
                 if v]
        if extra:
            raise CliError(f"{', '.join(extra)} only go with --from-kafka")
    elif not args.since:
        raise CliError("--from-kafka needs --since (RFC 3339 or a time ago like 2h)")


def run(args: argparse.Namespace) -> int:
    _check_sources(args)
    cfg = load_config(args.config)
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        if args.reports:
            files = [(args.reports, args.reports)]
            kinds = {args.reports: REPORT}
            if args.feedback:
                if args.feedback == args.reports:
                    raise CliError("--reports and --feedback must be different files")
                files.append((args.feedback, args.feedback))
                kinds[args.feedback] = FEEDBACK
        else:
            directory = args.capture
            if args.from_kafka:
                from rapidloop.capture import summary
                from rapidloop.cli.capture import capture_to

                if args.until is None:
                    args.until = "now"
                if args.save_capture:
                    directory = args.save_capture
                else:
                    tmp = tempfile.TemporaryDirectory(prefix="rapidloop-replay-")
                    directory = str(Path(tmp.name) / "capture")
                manifest = capture_to(args, directory, with_decisions=False)
                if not args.quiet:
                    print(f"read {summary(manifest)} from Kafka", file=sys.stderr)
            files, kinds = capture_inputs(directory)
        stats, elapsed = replay_files(cfg, files, kinds, args.output, args.dead_letters,
                                      args.workers, args.progress)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if not args.quiet:
        print(f"replayed {summary_line(stats, elapsed)}", file=sys.stderr)
    return 0
