"""`rapidloop replay`: the same dataflow over files, a capture, or Kafka by time, offline.

Same input and config, same decisions but for ``decided_at``. The run and its
sources are ``rapidloop.flows.replay`` (shared with ``explain`` and
``evaluate``), the capture ``rapidloop.tools.capture``, the comparison of two
runs ``rapidloop.tools.whatif``; this module reads the options and prints.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import tempfile
from pathlib import Path

from rapidloop.base.config import Config, load_config
from rapidloop.base.progress import summary_line
from rapidloop.base.signals import stop_on_signals
from rapidloop.cli import CliError
from rapidloop.cli.common import capture_to, one_line

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
    src.add_argument("--brokers", help="with --from-kafka or --output-topic: bootstrap servers "
                                       "(default: kafka.brokers from config)")
    src.add_argument("--save-capture", metavar="DIR",
                     help="with --from-kafka: keep the capture read from Kafka in DIR")
    p.add_argument("--output", metavar="FILE",
                   help="Decisions JSONL to write (required unless comparing)")
    p.add_argument("--output-topic", metavar="TOPIC",
                   help="also publish the decisions to this Kafka topic (--brokers)")
    p.add_argument("--to-live-topic", action="store_true",
                   help="allow --output-topic to be the live decisions topic")
    p.add_argument("--dead-letters", metavar="FILE", help="DeadLetter JSONL to write")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--workers", type=int, default=1,
                   help="worker threads (default 1; they share one Python GIL, so more "
                        "are slower here, not faster: the same decisions either way)")
    p.add_argument("--progress", type=float, default=0.0, metavar="SECONDS",
                   help="print a progress line (events/s, ETA) every SECONDS; default none")
    p.add_argument("--pace", metavar="Nx",
                   help="feed the input at N times event time (e.g. 10x); default: as fast "
                        "as possible")
    wi = p.add_argument_group("what-if (rapidloop.tools.whatif)")
    wi.add_argument("--compare", metavar="DECISIONS_A",
                    help="compare this run (B) against these decisions (A, JSONL)")
    wi.add_argument("--compare-config", metavar="FILE",
                    help="run the input again with this config (B) and compare it against "
                         "the run with --config (A)")
    wi.add_argument("--json", action="store_true", help="the comparison as JSON")
    wi.add_argument("--top", type=int, default=10,
                    help="how many consequential hashes to list (default 10)")
    p.add_argument("--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=run)


_PACE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*[x×]?\s*", re.IGNORECASE)


def parse_pace(text: str | None) -> float | None:
    """``--pace``: ``10x`` (or ``10``, ``0.5x``) as a factor; None/``max`` for no pacing."""
    if text is None or text.strip().lower() in ("", "max", "0", "0x"):
        return None
    m = _PACE.fullmatch(text)
    if not m or float(m.group(1)) <= 0:
        raise CliError(f"--pace must look like 10x (N times event time), not {text!r}")
    return float(m.group(1))


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
                                ("--save-capture", args.save_capture)) if v]
        if extra:
            raise CliError(f"{', '.join(extra)} only go with --from-kafka")
        if args.brokers and not args.output_topic:
            raise CliError("--brokers goes with --from-kafka or --output-topic")
    elif not args.since:
        raise CliError("--from-kafka needs --since (RFC 3339 or a time ago like 2h)")


def _check_compare(args: argparse.Namespace) -> None:
    if args.compare and args.compare_config:
        raise CliError("--compare and --compare-config are alternatives: give one")
    if args.json and not (args.compare or args.compare_config):
        raise CliError("--json goes with --compare or --compare-config")
    if args.compare and not Path(args.compare).is_file():
        raise CliError(f"decisions to compare not found: {args.compare}")
    if args.compare_config and not Path(args.compare_config).is_file():
        raise CliError(f"config not found: {args.compare_config}")
    if args.top < 1:
        raise CliError("--top must be at least 1")
    if not (args.output or args.output_topic or args.compare or args.compare_config):
        raise CliError("give --output FILE (the decisions JSONL to write) or --output-topic")


def _what_if(args: argparse.Namespace, cfg: Config, files: list[tuple[str, str]],
             kinds: dict[str, str], output: str, tmp: str) -> None:
    from rapidloop.flows.job import JobError
    from rapidloop.flows.replay import replay_files
    from rapidloop.tools import whatif

    if args.compare_config:
        out_b = str(Path(tmp) / "decisions-b.jsonl")
        with one_line(JobError):
            stats, elapsed = replay_files(load_config(args.compare_config), files, kinds, out_b,
                                          None, args.workers, args.progress,
                                          parse_pace(args.pace))
        if not args.quiet:
            print(f"replayed with {args.compare_config} (B) "
                  f"{summary_line(stats, elapsed)}", file=sys.stderr)
        path_a, label_a = output, f"{args.config or 'default configuration'} (--config)"
        path_b, label_b = out_b, f"{args.compare_config} (--compare-config)"
    else:
        path_a, label_a = args.compare, f"{args.compare} (--compare)"
        path_b, label_b = output, f"this run with {args.config or 'default configuration'}"
    try:
        diff = whatif.compare_files(path_a, path_b, files, kinds,
                                    int(cfg.limits.max_message_bytes), label_a, label_b,
                                    top=args.top)
    except (OSError, EOFError) as exc:
        raise CliError(f"cannot read decisions: {exc}") from None
    text = (json.dumps(diff, indent=2) + "\n") if args.json else whatif.render(diff)
    sys.stdout.write(text)
    sys.stdout.flush()


def _check_output_topic(args: argparse.Namespace, cfg: Config) -> None:
    if args.output_topic and args.output_topic == cfg.kafka.decisions_topic \
            and not args.to_live_topic:
        raise CliError(f"--output-topic {args.output_topic} is the live decisions topic "
                       "that enforcement points read; add --to-live-topic if you mean it")


def _publish(args: argparse.Namespace, cfg: Config, output: str) -> None:
    from rapidloop.base.kafka import BrokerUnavailable
    from rapidloop.flows.replay import publish_decisions

    with one_line(BrokerUnavailable):
        n = publish_decisions(cfg, args.output_topic, output, args.brokers)
    if not args.quiet:
        print(f"published {n:,} decision(s) to {args.output_topic}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """The command: one line and a non-zero exit for anything that stops it (CliError),
    and for Ctrl-C or SIGTERM too, which leave no output that looks complete."""
    stage = {"replayed": False}
    try:
        with stop_on_signals():
            _run(args, stage)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        done = ("; no output written" if not stage["replayed"]
                else f" after the replay ({args.output} is complete)" if args.output else "")
        print(f"rapidloop replay: interrupted ({signal.Signals(signum).name}){done}",
              file=sys.stderr)
        return 128 + signum
    return 0


def _run(args: argparse.Namespace, stage: dict[str, bool]) -> None:
    """``run`` without the signal handling; sets ``stage["replayed"]`` once the replay is
    done (its output complete, whatever comes after)."""
    from rapidloop.flows.job import JobError
    from rapidloop.flows.replay import replay_files

    _check_sources(args)
    _check_compare(args)
    pace = parse_pace(args.pace)
    cfg = load_config(args.config)
    _check_output_topic(args, cfg)
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    if args.reports and args.feedback == args.reports:
        raise CliError("--reports and --feedback must be different files")
    with tempfile.TemporaryDirectory(prefix="rapidloop-replay-") as tmp:
        output = args.output or str(Path(tmp) / "decisions.jsonl")
        files, kinds, given, total = _inputs(args, tmp)
        with one_line(JobError):
            stats, elapsed = replay_files(cfg, files, kinds, output, args.dead_letters,
                                          args.workers, args.progress, pace, total, given)
        stage["replayed"] = True
        if not args.quiet:
            name = f" with {args.config} (A)" if args.compare_config and args.config else ""
            print(f"replayed{name} {summary_line(stats, elapsed)}", file=sys.stderr)
        if args.output_topic:
            _publish(args, cfg, output)
        if args.compare or args.compare_config:
            _what_if(args, cfg, files, kinds, output, tmp)


def _inputs(args: argparse.Namespace, tmp: str
            ) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str], int | None]:
    """The replay's input files, their kinds, the ones the user named, and the message
    total if known; from Kafka by way of a capture (to ``tmp`` unless kept)."""
    from rapidloop.flows.replay import named_inputs
    from rapidloop.tools.capture import CaptureError, message_total, replay_inputs, summary

    if args.reports:
        return (*named_inputs(args.reports, args.feedback), None)
    directory = args.capture
    if args.from_kafka:
        if args.until is None:
            args.until = "now"
        directory = args.save_capture or str(Path(tmp) / "capture")
        manifest = capture_to(args, directory, with_decisions=False)
        if not args.quiet:
            print(f"read {summary(manifest)} from Kafka", file=sys.stderr)
    with one_line(CaptureError):
        files, kinds = replay_inputs(directory)
    return files, kinds, {}, message_total(directory)
