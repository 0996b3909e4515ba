"""`rapidloop simulate`: a seeded fleet writing reports and verdicts to files or Kafka.

Files (``--out DIR``) are for offline replay and tests: the same seed and
settings always give the same bytes. Kafka (``--kafka``) is for live demos:
event time starts *now* and runs ``--speedup`` times faster than the wall
clock, so a simulated day of campaigns plays out in minutes while the
engine's event-time windows (10 min, 1 h, 24 h) keep their meaning.

By default (``simulate.vary``) each seed draws its own world first
(:mod:`rapidloop.tools.worldparams`): orgs, campaigns, hard negatives, sandbox
coverage and noise, rogues, silent sensors, a glitch. ``--fixed`` gives the one
world of the fixed ``[simulate]`` settings, byte-identical to before.
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rapidloop.base.config import load_config
from rapidloop.cli import CliError
from rapidloop.tools.simulator import (
    FEEDBACK,
    SimParams,
    SimulationError,
    Simulator,
    format_ts,
    parse_ts,
    write_files,
    write_truth,
)
from rapidloop.tools.worldparams import VaryRanges, draw_world, summary

DEFAULT_RATE = 1000.0       # reports per wall-clock second in --kafka mode
PROGRESS_S = 10.0           # seconds between progress lines in --kafka mode (0: none)
LINGER_MS = 20              # producer batching: throughput over a few ms of latency

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|d|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``24h``, ``90m``, ``3600s``, ``1h30m``, ``2d`` or bare seconds, as seconds."""
    s = text.strip().lower()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise CliError(f"--duration: {text!r} is not a finite number of seconds")
        return value
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise CliError(f"--duration: cannot read {text!r} (use e.g. 24h, 90m, 3600s)")
    return total


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


def _params(args: argparse.Namespace, cfg: Any, start: float | None) -> SimParams:
    if args.reports is not None and args.reports < 1:
        raise CliError(f"--reports must be at least 1 (got {args.reports})")
    if args.orgs is not None and args.orgs < 1:
        raise CliError(f"--orgs must be at least 1 (got {args.orgs})")
    if args.campaigns is not None and args.campaigns < 0:
        raise CliError(f"--campaigns must be >= 0 (got {args.campaigns})")
    duration = parse_duration(args.duration) if args.duration is not None else None
    if duration is not None and duration <= 0:
        raise CliError(f"--duration must be positive (got {args.duration!r})")
    given = {"reports": args.reports, "orgs": args.orgs, "campaigns": args.campaigns,
             "duration_s": duration}
    vary = _setting(cfg, "vary", False) if args.vary is None else args.vary
    try:
        params = SimParams.from_config(
            cfg.simulate, seed=args.seed, start=start, epochs=None if args.forever else 1,
            **given)
        if vary:   # command-line flags win over the drawn values
            params = draw_world(params, VaryRanges.from_config(cfg.simulate),
                                keep={k for k, v in given.items() if v is not None})
        return params
    except SimulationError as exc:
        raise CliError(str(exc)) from None
    except TypeError as exc:  # a [simulate] value of a type the simulator cannot use
        raise CliError(f"bad [simulate] setting: {exc}") from None


def _setting(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.simulate.<key>`` if that setting exists (it may not be in defaults.toml yet)."""
    return getattr(cfg.simulate, key, default)


def _start(args: argparse.Namespace, default: float | str | None) -> float | None:
    text = args.start if args.start is not None else default
    if text is None or isinstance(text, float):
        return text
    try:
        return parse_ts(text)
    except SimulationError as exc:
        where = "--start" if args.start is not None else "simulate.start"
        raise CliError(f"{where}: {exc}") from None


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
    params = _params(args, cfg, _start(args, _setting(cfg, "start", None)))
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


class _Delivery:
    """Counts what the broker acknowledged, and remembers the first failure's reason."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.first_error: str | None = None

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
            return
        self.errors += 1
        if self.first_error is None:
            self.first_error = err.str() if hasattr(err, "str") else str(err)


def _run_kafka(args: argparse.Namespace, cfg: Any) -> int:
    from confluent_kafka import KafkaException, Producer

    from rapidloop.base.kafka import BrokerUnavailable, client_config, require_topics

    if args.no_gzip:
        raise CliError("--no-gzip only applies with --out")
    rate = float(_setting(cfg, "rate", DEFAULT_RATE) if args.rate is None else args.rate)
    if rate < 0:
        raise CliError(f"--rate must be >= 0 (got {rate:g})")
    if args.speedup is not None and args.speedup <= 0:
        raise CliError(f"--speedup must be positive (got {args.speedup:g})")
    if args.progress < 0:
        raise CliError(f"--progress must be >= 0 (got {args.progress:g})")
    now = round(time.time(), 3)
    params = _params(args, cfg, _start(args, now))
    # Pacing: event time advances `speedup` times faster than the wall clock. By default
    # one simulated duration (``reports`` reports) takes reports / rate seconds.
    speedup = args.speedup or (params.duration_s * rate / params.reports if rate > 0 else None)
    brokers = args.brokers or cfg.kafka.brokers
    topics = {"report": cfg.kafka.reports_topic, FEEDBACK: cfg.kafka.feedback_topic}
    try:
        require_topics(cfg, list(topics.values()), brokers)
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None
    producer = Producer(client_config(cfg, brokers, **{"linger.ms": LINGER_MS}))
    delivery = _Delivery()
    sim = Simulator(params)
    counts = {"report": 0, FEEDBACK: 0}
    wall0 = time.monotonic()
    last_progress = wall0
    interrupted = False
    previous = _on_sigterm()
    try:
        produce = producer.produce
        poll = producer.poll
        for i, ev in enumerate(sim.events()):
            if speedup is not None:
                ahead = wall0 + (ev.t - params.start) / speedup - time.monotonic()
                if ahead > 0.002:
                    poll(ahead)  # serve delivery reports while we wait
            while True:
                try:
                    produce(topics[ev.kind], ev.value, ev.key, on_delivery=delivery)
                    break
                except BufferError:  # local queue full: let librdkafka drain it
                    poll(0.1)
            counts[ev.kind] += 1
            if i % 1000 == 0:
                poll(0)
                if args.progress and time.monotonic() - last_progress >= args.progress:
                    last_progress = time.monotonic()
                    print(f"simulate: {counts['report']} reports, {counts[FEEDBACK]} feedback, "
                          f"event time {format_ts(ev.t)}, {delivery.errors} delivery errors",
                          file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
    except KafkaException as exc:  # e.g. a message the broker will never take
        failure = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise CliError(f"producing to {brokers} failed: {failure}") from None
    finally:
        _restore_sigterm(previous)
        undelivered = producer.flush(cfg.kafka.connect_timeout_s)
    truth_note = ""
    if args.truth:
        try:
            n = write_truth(sim, args.truth)
            truth_note = f", truth for {n} hashes -> {args.truth}"
        except OSError as exc:
            truth_note = f", truth NOT written ({exc.strerror or exc})"
    seconds = time.monotonic() - wall0
    st = sim.stats
    errors = delivery.errors + undelivered
    print(f"simulate: {'interrupted; ' if interrupted else ''}produced {counts['report']} "
          f"reports ({st.report_malformed} malformed, {st.report_duplicates} duplicates) to "
          f"{topics['report']} and {counts[FEEDBACK]} feedback to {topics[FEEDBACK]} in "
          f"{seconds:.1f}s, {len(sim.campaigns)} campaigns, {errors} delivery errors"
          f"{f' (first: {delivery.first_error})' if delivery.first_error else ''}"
          f"{f', {undelivered} undelivered' if undelivered else ''}{truth_note}"
          f"{f'; varied world: {summary(params)}' if params.varied else ''}")
    if errors:
        return 1
    return 130 if interrupted and not args.forever else 0


def _on_sigterm() -> dict[int, Any]:
    """Treat SIGTERM (and SIGINT, even if a launching shell ignored it) like Ctrl-C, so a
    supervisor's stop still flushes the producer and prints the summary."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    previous: dict[int, Any] = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests): leave signals alone
        pass
    return previous


def _restore_sigterm(previous: dict[int, Any]) -> None:
    for signum, old in previous.items():
        signal.signal(signum, old)
