"""`rapidloop simulate`: a seeded fleet writing reports and verdicts to files or Kafka.

Files (``--out DIR``) replay byte for byte; Kafka (``--kafka``) plays event
time faster than the wall clock for live demos. The world and its traffic
are ``rapidloop.tools.simulate``; this module reads the options and prints.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rapidloop.base.config import Config, load_config
from rapidloop.cli import CliError
from rapidloop.tools.simulate import DEFAULT_RATE, parse_duration, setting, world_params
from rapidloop.tools.simulator import (
    FEEDBACK,
    SimParams,
    SimulationError,
    Simulator,
    parse_ts,
    write_files,
)
from rapidloop.tools.worldparams import summary

PROGRESS_S = 10.0           # seconds between progress lines in --kafka mode (0: none)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="seeded fleet simulator: reports and verdicts to files or Kafka",
        description="A seeded fleet simulator: reports and verdicts to files (--out) or to "
                    "Kafka (--kafka). Same seed and settings, same files.")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="DIR",
                     help="write reports.jsonl.gz, feedback.jsonl.gz, truth.jsonl, world.json")
    out.add_argument("--kafka", action="store_true",
                     help="produce to the reports and feedback topics")
    p.add_argument("--config", metavar="FILE", help="TOML settings ([simulate], [kafka])")
    p.add_argument("--seed", type=int, default=1, help="world and traffic seed (default 1)")
    world = p.add_mutually_exclusive_group()
    world.add_argument("--vary", dest="vary", action="store_true", default=None,
                       help="draw this seed's own world from the vary_* ranges "
                            "(default: simulate.vary, on)")
    world.add_argument("--fixed", dest="vary", action="store_false",
                       help="the one world of the fixed [simulate] settings")
    p.add_argument("--reports", type=int, help="report lines per simulated duration")
    p.add_argument("--orgs", type=int, help="number of organizations")
    p.add_argument("--campaigns", type=int, help="malware campaigns per simulated duration")
    p.add_argument("--duration", help="simulated event time, e.g. 24h, 90m, 3600s")
    p.add_argument("--start", metavar="RFC3339",
                   help="first event time (files: 2026-11-28T00:00:00Z; Kafka: now)")
    p.add_argument("--no-gzip", action="store_true", help="--out: plain .jsonl files")
    p.add_argument("--brokers", help="--kafka: bootstrap servers (default kafka.brokers)")
    p.add_argument("--rate", type=float,
                   help=f"--kafka: reports per wall-clock second, 0 = unpaced "
                        f"(default {DEFAULT_RATE:g})")
    p.add_argument("--speedup", type=float,
                   help="--kafka: event time per wall-clock time (overrides --rate)")
    p.add_argument("--forever", action="store_true",
                   help="--kafka: keep simulating new days with new campaigns until Ctrl-C")
    p.add_argument("--truth", metavar="FILE", help="--kafka: write ground truth JSONL at exit")
    p.add_argument("--progress", type=float, default=PROGRESS_S, metavar="S",
                   help=f"--kafka: seconds between progress lines on stderr, 0 = none "
                        f"(default {PROGRESS_S:g})")
    p.set_defaults(func=run)


def _params(args: argparse.Namespace, cfg: Config, default_start: float | str | None
            ) -> SimParams:
    text = args.start if args.start is not None else default_start
    try:
        start = text if text is None or isinstance(text, float) else parse_ts(text)
    except SimulationError as exc:
        where = "--start" if args.start is not None else "simulate.start"
        raise CliError(f"{where}: {exc}") from None
    if args.reports is not None and args.reports < 1:
        raise CliError(f"--reports must be at least 1 (got {args.reports})")
    if args.orgs is not None and args.orgs < 1:
        raise CliError(f"--orgs must be at least 1 (got {args.orgs})")
    if args.campaigns is not None and args.campaigns < 0:
        raise CliError(f"--campaigns must be >= 0 (got {args.campaigns})")
    try:
        duration = parse_duration(args.duration) if args.duration is not None else None
    except ValueError as exc:
        raise CliError(f"--duration: {exc}") from None
    if duration is not None and duration <= 0:
        raise CliError(f"--duration must be positive (got {args.duration!r})")
    given = {"reports": args.reports, "orgs": args.orgs, "campaigns": args.campaigns,
             "duration_s": duration}
    try:
        return world_params(cfg, seed=args.seed, start=start, forever=args.forever,
                            given=given, vary=args.vary)
    except SimulationError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.kafka:
        return _run_kafka(args, cfg)
    for flag, value in (("--forever", args.forever), ("--rate", args.rate is not None),
                        ("--speedup", args.speedup is not None), ("--brokers", args.brokers),
                        ("--truth", args.truth)):
        if value:
            raise CliError(f"{flag} only applies with --kafka (--out writes truth.jsonl)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out}: exists and is not a directory")
    params = _params(args, cfg, setting(cfg, "start", None))
    sim = Simulator(params)
    try:
        res = write_files(sim, out, compress=not args.no_gzip)
    except OSError as exc:
        raise CliError(f"cannot write to {out}: {exc.strerror or exc}") from None
    st = res.stats
    hashes = sum(1 for _ in sim.truth())
    malicious = sum(1 for f in sim.files() if f.first_seen is not None and f.label == "malicious")
    rate = st.reports / res.seconds if res.seconds > 0 else float("inf")
    rogues = sim.world()["rogues"]
    print(f"simulate: {st.reports} reports ({st.report_malformed} malformed, "
          f"{st.report_duplicates} duplicates, {st.campaign_reports} from "
          f"{len(sim.campaigns)} campaigns, {st.rogue_reports} from "
          f"{len(rogues['orgs'])} rogue orgs), {st.feedback} feedback "
          f"({st.feedback_malformed} malformed, {st.feedback_duplicates} duplicates, "
          f"{st.rogue_feedback} rogue), "
          f"{hashes} hashes ({malicious} malicious), {res.seconds:.2f}s, "
          f"{rate:,.0f} reports/s -> {out}"
          f"{f'; varied world: {summary(params)}' if params.varied else ''}")
    return 0


def _say(line: str) -> None:
    print(f"simulate: {line}", file=sys.stderr, flush=True)


def _run_kafka(args: argparse.Namespace, cfg: Config) -> int:
    from rapidloop.base.kafka import BrokerUnavailable
    from rapidloop.cli.common import one_line
    from rapidloop.tools.simulate import ProduceError, produce, speedup_for

    if args.no_gzip:
        raise CliError("--no-gzip only applies with --out")
    rate = float(setting(cfg, "rate", DEFAULT_RATE) if args.rate is None else args.rate)
    if rate < 0:
        raise CliError(f"--rate must be >= 0 (got {rate:g})")
    if args.speedup is not None and args.speedup <= 0:
        raise CliError(f"--speedup must be positive (got {args.speedup:g})")
    if args.progress < 0:
        raise CliError(f"--progress must be >= 0 (got {args.progress:g})")
    params = _params(args, cfg, round(time.time(), 3))
    brokers = args.brokers or cfg.kafka.brokers
    with one_line(BrokerUnavailable, ProduceError):
        done = produce(cfg, params, brokers, speedup=speedup_for(params, rate, args.speedup),
                       progress=args.progress, truth=args.truth, say=_say)
    truth_note = (f", truth for {done.truth} hashes -> {args.truth}" if done.truth is not None
                  else f", truth NOT written ({done.truth_error})" if done.truth_error else "")
    st, n, topics = done.sim.stats, done.counts, done.topics
    print(f"simulate: {'interrupted; ' if done.interrupted else ''}produced {n['report']} "
          f"reports ({st.report_malformed} malformed, {st.report_duplicates} duplicates) to "
          f"{topics['report']} and {n[FEEDBACK]} feedback to {topics[FEEDBACK]} in "
          f"{done.seconds:.1f}s, {len(done.sim.campaigns)} campaigns, {done.errors} delivery "
          f"errors{f' (first: {done.first_error})' if done.first_error else ''}"
          f"{f', {done.undelivered} undelivered' if done.undelivered else ''}{truth_note}"
          f"{f'; varied world: {summary(params)}' if params.varied else ''}")
    if done.errors:
        return 1
    return 130 if done.interrupted and not args.forever else 0
