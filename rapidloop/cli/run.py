"""`rapidloop run`: the streaming job against a Kafka cluster.

Checks the cluster and topics first (an unreachable broker is one clear line
within ``kafka.connect_timeout_s``, never a hang), then runs the dataflow with
Kafka sources and sinks, printing a progress line to stderr: in one process,
as a local cluster of ``--processes N`` (this process supervises them), or as
one process (``-i INDEX -a HOST:PORT ...``) of a multi-machine cluster.

This module reads the options and prints; the job and its recovery state are
assembled and run by ``rapidloop.flows.live`` (which says how each way of
scaling out works), a local cluster supervised by ``rapidloop.base.supervisor``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rapidloop.base.config import Config, load_config
from rapidloop.base.kafka import BrokerUnavailable
from rapidloop.base.supervisor import STATS_PREFIX, spread_line, stats_dict
from rapidloop.cli import CliError
from rapidloop.cli.common import one_line


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the streaming job against Kafka",
                       description=__doc__.splitlines()[0])
    p.add_argument("--brokers", help="bootstrap servers (default: kafka.brokers from config)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration")
    p.add_argument("--workers", type=int, default=1,
                   help="Bytewax worker threads per process (default 1)")
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
    cl = p.add_argument_group("cluster of processes")
    cl.add_argument("--processes", type=int, metavar="N",
                    help="run a local cluster of N processes (each with --workers threads) on "
                         "loopback ports; one combined summary")
    cl.add_argument("-i", "--process-id", type=int, metavar="INDEX",
                    help="this process's index in a multi-machine cluster (with -a)")
    cl.add_argument("-a", "--addresses", action="append", metavar="HOST:PORT",
                    help="every process's address, in index order: repeat -a, or separate "
                         "with ';' or ','")
    # Internal: set by the --processes supervisor on its children.
    cl.add_argument("--cluster-child", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _addresses(args: argparse.Namespace) -> list[str]:
    """Every -a, split: Bytewax's own CLI takes one ';'-separated list, so accept that too."""
    out: list[str] = []
    for item in args.addresses or []:
        out.extend(a.strip() for a in item.replace(",", ";").split(";") if a.strip())
    return out


def _check_args(args: argparse.Namespace) -> None:
    """Reject contradictory cluster options in one line, before touching Kafka."""
    if args.workers < 1:
        raise CliError("--workers must be at least 1")
    addresses = _addresses(args)
    if args.processes is not None:
        if args.processes < 1:
            raise CliError("--processes must be at least 1")
        if args.process_id is not None or addresses:
            raise CliError("--processes starts a local cluster by itself: do not combine it "
                           "with -i/--process-id or -a/--addresses")
    if (args.process_id is None) != (not addresses):
        raise CliError("-i/--process-id and -a/--addresses go together: -i INDEX and one "
                       "-a HOST:PORT per process of the cluster")
    if args.process_id is not None:
        if not 0 <= args.process_id < len(addresses):
            raise CliError(f"-i {args.process_id} is not an index of the {len(addresses)} "
                           f"address(es) given with -a (0 to {len(addresses) - 1})")
        for a in addresses:
            host, sep, port = a.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise CliError(f"address {a!r} is not HOST:PORT")
        if len(set(addresses)) != len(addresses):
            raise CliError("the same address appears twice in -a")


def run(args: argparse.Namespace) -> int:
    """One process (maybe one of a cluster), or the supervisor of a local cluster."""
    cfg = load_config(args.config)
    _check_args(args)
    if args.processes is not None and args.processes > 1:
        return _run_local_cluster(args, cfg)
    return _run_process(args, cfg)


def _recovery_dir(args: argparse.Namespace, cfg: Config) -> str | None:
    return None if args.no_recovery else (args.recovery_dir or cfg.recovery.dir or None)


def _say(line: str) -> None:
    """One line of this command on stderr, at once (children's lines are relayed as they
    come, so each is flushed)."""
    print(f"rapidloop run: {line}", file=sys.stderr, flush=True)


def _run_process(args: argparse.Namespace, cfg: Config) -> int:
    from rapidloop.base.progress import summary_line
    from rapidloop.flows import live
    from rapidloop.flows.job import JobError
    from rapidloop.flows.recovery import RecoveryError

    addresses = _addresses(args)
    brokers: str = args.brokers or cfg.kafka.brokers
    with one_line(BrokerUnavailable, RecoveryError, JobError):
        p = live.assemble(cfg, brokers, workers=args.workers, tail=not args.exit_at_end,
                          start="end" if args.from_end else "beginning",
                          recovery_dir=_recovery_dir(args, cfg),
                          cluster_child=args.cluster_child, process_id=args.process_id,
                          addresses=addresses, say=_say)
    k, index = cfg.kafka, p.index
    state = "no recovery state" if p.recovery is None else p.recovery.description
    where = (f"process {index} of {len(addresses)} ({addresses[index]}), "
             if index is not None else "")
    tenants = len(cfg.tenants.orgs)
    own = f" and the own topics of {tenants} tenant(s)" if tenants else ""
    what = (f"consuming {k.reports_topic}, {k.feedback_topic}{own} from {brokers} "
            f"({'until drained' if args.exit_at_end else 'Ctrl-C to stop'}; {state})")
    end = live.run(cfg, p, progress=args.progress, announce=lambda: _say(f"{where}{what}"),
                   say=_say)
    if end.failure is not None:
        if not args.cluster_child:
            _say(summary_line(end.stats, end.elapsed))
        raise CliError(str(end.failure))
    for line in end.lines:
        _say(line)
    if args.cluster_child:
        print(STATS_PREFIX + json.dumps(stats_dict(end.stats, end.elapsed, end.lost,
                                                   end.interrupted, p.parts)),
              file=sys.stderr, flush=True)
        return 130 if end.interrupted else (1 if end.lost else 0)
    _say(f"{summary_line(end.stats, end.elapsed)}"
         f"{' (stopped by a signal)' if end.interrupted else ''}")
    if index is not None:
        d = stats_dict(end.stats, end.elapsed, end.lost, False, p.parts)
        _say(spread_line(index, len(addresses), d))
    return 1 if end.lost else 0


def _run_local_cluster(args: argparse.Namespace, cfg: Config) -> int:
    """Supervise ``args.processes`` children forming one Bytewax cluster on loopback."""
    from rapidloop.base.supervisor import ports, supervise
    from rapidloop.flows.live import prepare_cluster
    from rapidloop.flows.recovery import RecoveryError

    n = int(args.processes)
    brokers: str = args.brokers or cfg.kafka.brokers
    with one_line(BrokerUnavailable, RecoveryError):
        rec = prepare_cluster(cfg, brokers, processes=n, workers=args.workers,
                              recovery_dir=_recovery_dir(args, cfg), say=_say)
    addresses = [f"127.0.0.1:{p}" for p in ports(n, int(cfg.cluster.base_port))]
    common = [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", brokers,
              "--workers", str(args.workers), "--progress", str(args.progress),
              "--cluster-child", *(["--config", args.config] if args.config else []),
              *(["--exit-at-end"] if args.exit_at_end else []),
              *(["--from-end"] if args.from_end else []),
              *(["--recovery-dir", str(Path(rec.directory).resolve())] if rec is not None
                else ["--no-recovery"]),
              *(x for a in addresses for x in ("-a", a))]
    if rec is None:
        state = "no recovery state"
    else:
        state = (f"recovery state {'created in' if rec.created else 'resumed from'} "
                 f"{rec.directory}, shared by the processes")
    _say(f"a cluster of {n} processes x {args.workers} worker(s) on {', '.join(addresses)} "
         f"({state}); Ctrl-C stops them all")
    try:
        done = supervise([[*common, "-i", str(i)] for i in range(n)],
                         float(cfg.cluster.stop_grace_s))
    finally:
        if rec is not None:
            rec.close()
    lines, code = done.report()
    for line in lines:
        _say(line)
    return code
