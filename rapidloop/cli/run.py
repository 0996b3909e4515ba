"""`rapidloop run`: the streaming job against a Kafka cluster.

Checks the cluster and topics first (an unreachable broker is one clear line
within ``kafka.connect_timeout_s``, never a hang), then runs the dataflow with
Kafka sources and sinks, printing a progress line to stderr.

With recovery on (the default: ``[recovery] dir``), the job snapshots its
state and input offsets at every epoch close into the recovery directory and
a restart resumes from the last snapshot; see ``rapidloop.flows.recovery``.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta

from rapidloop import jobstats
from rapidloop.cli import CliError
from rapidloop.config import load_config
from rapidloop.kafka import BrokerUnavailable, client_config
from rapidloop.operators.allowlist import AllowListError
from rapidloop.schemas.intake import FEEDBACK, REPORT


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the streaming job against Kafka",
                       description=__doc__.splitlines()[0])
    p.add_argument("--brokers", help="bootstrap servers (default: kafka.brokers from config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--workers", type=int, default=1, help="Bytewax worker threads (default 1)")
    p.add_argument("--exit-at-end", action="store_true",
                   help="stop once the input topics are drained")
    p.add_argument("--from-end", action="store_true",
                   help="start from the end of the input topics instead of the beginning")
    rec = p.add_mutually_exclusive_group()
    rec.add_argument("--recovery-dir", metavar="DIR",
                     help="keep crash-recovery state in DIR, created on first start "
                          "(default: recovery.dir from config, .run/recovery)")
    rec.add_argument("--no-recovery", action="store_true",
                     help="no recovery state: every start re-reads the topics")
    p.add_argument("--progress", type=float, default=2.0, metavar="SECONDS",
                   help="progress line interval; 0 for none (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bytewax.run import cli_main

    from rapidloop.flows.dataflow import Connectors, build_flow
    from rapidloop.flows.kafka_io import (
        KafkaBatchSink,
        KafkaBatchSource,
        delivery_stats,
        preflight,
        reset_delivery_stats,
    )
    from rapidloop.flows.recovery import RecoveryError, prepare, topic_ids
    from rapidloop.progress import Reporter, summary_line
    from rapidloop.telemetry import Telemetry

    cfg = load_config(args.config)
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    brokers = args.brokers or cfg.kafka.brokers
    k = cfg.kafka
    try:
        preflight(cfg, brokers, [k.reports_topic, k.feedback_topic, k.decisions_topic,
                                 k.deadletter_topic])
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None
    conf = client_config(cfg, brokers)
    recovery_dir = None if args.no_recovery else (args.recovery_dir or cfg.recovery.dir or None)
    recovery = None
    if recovery_dir:
        ids = topic_ids(conf, [k.reports_topic, k.feedback_topic], k.connect_timeout_s)
        try:
            recovery = prepare(cfg, recovery_dir, ids)
        except RecoveryError as exc:
            raise CliError(str(exc)) from None
    start = "end" if args.from_end else "beginning"
    tail = not args.exit_at_end
    io = Connectors(
        sources=[
            ("reports", KafkaBatchSource(conf, [k.reports_topic], k.consume_batch, tail, start)),
            ("feedback", KafkaBatchSource(conf, [k.feedback_topic], k.consume_batch, tail, start)),
        ],
        kinds={k.reports_topic: REPORT, k.feedback_topic: FEEDBACK},
        decisions=KafkaBatchSink(conf, k.decisions_topic),
        dead_letters=KafkaBatchSink(conf, k.deadletter_topic),
    )
    try:
        flow = build_flow(cfg, io, recovery=recovery is not None)
    except AllowListError as exc:
        if recovery is not None:
            recovery.close()
        raise CliError(str(exc)) from None
    stats = jobstats.reset()
    reset_delivery_stats()
    telemetry = Telemetry(cfg)
    reporter = Reporter(stats, args.progress or 1.0,
                        sys.stderr if args.progress > 0 else None, telemetry)
    if recovery is None:
        state = "no recovery state"
    else:
        state = (f"recovery state {'created in' if recovery.created else 'resumed from'} "
                 f"{recovery.directory}")
    print(f"rapidloop run: consuming {k.reports_topic}, {k.feedback_topic} from {brokers} "
          f"({'until drained' if args.exit_at_end else 'Ctrl-C to stop'}; {state})",
          file=sys.stderr, flush=True)
    reporter.start()
    t0 = time.perf_counter()
    try:
        cli_main(flow, workers_per_process=args.workers,
                 epoch_interval=timedelta(seconds=cfg.stream.epoch_interval_s),
                 recovery_config=recovery.config if recovery is not None else None)
    finally:
        if recovery is not None:
            recovery.close()
        reporter.stop()
        telemetry.shutdown()
    print(f"rapidloop run: {summary_line(stats, time.perf_counter() - t0)}", file=sys.stderr)
    lost = 0
    for topic in (k.decisions_topic, k.deadletter_topic):
        d = delivery_stats(topic)
        lost += d.lost
        if d.lost:
            print(f"rapidloop run: {d.lost} message(s) to {topic} were not delivered: "
                  f"{d.errors}", file=sys.stderr)
    return 1 if lost else 0
