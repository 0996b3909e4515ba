"""`rapidloop run`: the streaming job against a Kafka cluster.

Checks the cluster and topics first (an unreachable broker is one clear line
within ``kafka.connect_timeout_s``, never a hang), then runs the dataflow with
Kafka sources and sinks, printing a progress line to stderr.

With recovery on (the default: ``[recovery] dir``), the job snapshots its
state and input offsets at every epoch close into the recovery directory and
a restart resumes from the last snapshot; see ``rapidloop.flows.recovery``.

Scaling out. Bytewax worker threads (``--workers``) share one GIL and barely
scale; processes do. Three ways to run the same flow:

* one process (the default);
* ``--processes N``: a local cluster. This process becomes a supervisor: it
  checks the cluster and topics, prepares and locks the recovery directory
  (one directory holding every recovery partition, shared by the children,
  so a later run with another process count resumes the same state), then
  starts N children, ``rapidloop run -i k -a ... -a ...``, on loopback ports.
  Their output comes back prefixed with ``[pK]``; Ctrl-C or SIGTERM is
  forwarded to all of them (a Bytewax cluster stops only when *every*
  process is interrupted); if one fails the others are stopped; at the end
  it prints one combined summary and how work spread over the processes;
* ``-i INDEX -a HOST:PORT -a ...``: one process of a multi-machine cluster
  (a StatefulSet pod, say). Each process keeps its own recovery directory
  holding its share of the recovery partitions (partition j with process
  j mod N): Bytewax needs the cluster as a whole, not every process, to
  reach every partition, so local disks (ReadWriteOnce volumes) suffice.

This module reads the options and prints; the job is assembled and run by
``rapidloop.flows.job`` (connectors, flow) and ``rapidloop.flows.process`` (one
process), its recovery state by ``rapidloop.flows.recovery_plan`` and a local
cluster by ``rapidloop.base.supervisor``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rapidloop.base.config import Config, load_config
from rapidloop.base.kafka import BrokerUnavailable, client_config
from rapidloop.base.supervisor import STATS_PREFIX, spread_line, stats_dict
from rapidloop.cli import CliError
from rapidloop.cli.common import one_line

if TYPE_CHECKING:
    from rapidloop.flows.recovery_plan import RunRecovery


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


def _check_kafka(cfg: Config, args: argparse.Namespace) -> str:
    """The bootstrap servers, once the cluster and the job's topics answered (one clear
    line within ``kafka.connect_timeout_s`` otherwise, never a hang)."""
    from rapidloop.flows.process import check_cluster

    brokers: str = args.brokers or cfg.kafka.brokers
    with one_line(BrokerUnavailable):
        check_cluster(cfg, brokers)
    return brokers


def _recovery_dir(args: argparse.Namespace, cfg: Config) -> str | None:
    return None if args.no_recovery else (args.recovery_dir or cfg.recovery.dir or None)


def _warn_uneven(cfg: Config, conf: dict[str, Any], workers: int) -> None:
    """Say so when an input topic's partitions cannot spread evenly over the workers."""
    from rapidloop.flows.process import uneven_spread

    for note in uneven_spread(cfg, conf, workers):
        _say(f"note: {note}")


def _say(line: str) -> None:
    """One line of this command on stderr, at once (children's lines are relayed as they
    come, so each is flushed)."""
    print(f"rapidloop run: {line}", file=sys.stderr, flush=True)


def _run_process(args: argparse.Namespace, cfg: Config) -> int:
    from rapidloop.base.progress import summary_line
    from rapidloop.flows import job, process, recovery_plan
    from rapidloop.flows.recovery import RecoveryError

    addresses = _addresses(args)
    index = args.process_id
    clustered = index is not None and len(addresses) > 1
    brokers = _check_kafka(cfg, args)
    k = cfg.kafka
    conf = client_config(cfg, brokers)
    workers = args.workers * (len(addresses) if clustered else 1)
    first = not args.cluster_child and (not clustered or index == 0)
    if first:
        _warn_uneven(cfg, conf, workers)
    directory = _recovery_dir(args, cfg)
    replicas = recovery_plan.replicas(cfg, directory, workers)
    with one_line(RecoveryError):
        recovery: RunRecovery | None = recovery_plan.plan(
            cfg, conf, directory, replicas, cluster_child=args.cluster_child,
            process_id=args.process_id, addresses=addresses)
    parts: list[str] = []
    feed = recovery_plan.feeds_active(cfg, conf)
    if not feed and first:
        print(f"rapidloop run: note: no topic {k.active_topic}: the feed of decisions in "
              "force is not kept (`rapidloop topics create` makes it)", file=sys.stderr)
    alone = not clustered and not args.cluster_child
    stop = threading.Event() if alone else None
    io = job.kafka_connectors(cfg, conf, tail=not args.exit_at_end,
                              start="end" if args.from_end else "beginning", stop=stop,
                              feed_active=feed, parts=parts)
    with one_line(job.JobError):
        flow = job.build(cfg, io, recovery=recovery, replicas=replicas)
    if clustered:
        process.label_metrics(index)
    state = "no recovery state" if recovery is None else recovery.description
    where = (f"process {index} of {len(addresses)} ({addresses[index]}), "
             if clustered else "")
    tenants = len(cfg.tenants.orgs)
    own = f" and the own topics of {tenants} tenant(s)" if tenants else ""
    what = (f"consuming {k.reports_topic}, {k.feedback_topic}{own} from {brokers} "
            f"({'until drained' if args.exit_at_end else 'Ctrl-C to stop'}; {state})")
    out = process.run_process(cfg, flow, conf, stats=io.stats, workers=args.workers,
                              recovery=recovery,
                              process_id=index if clustered else None,
                              addresses=addresses if clustered else None,
                              interruptible=args.cluster_child or alone, stop=stop,
                              progress=args.progress,
                              announce=lambda: _say(f"{where}{what}"), say=_say)
    stats, elapsed, interrupted = out.stats, out.elapsed, out.interrupted
    if out.failure is not None:
        if not args.cluster_child:
            print(f"rapidloop run: {summary_line(stats, elapsed)}", file=sys.stderr)
        raise CliError(str(out.failure))
    lost, lines = process.undelivered(cfg, stats)
    for line in lines:
        print(f"rapidloop run: {line}", file=sys.stderr)
    if args.cluster_child:
        print(STATS_PREFIX + json.dumps(stats_dict(stats, elapsed, lost, interrupted, parts)),
              file=sys.stderr, flush=True)
        return 130 if interrupted else (1 if lost else 0)
    print(f"rapidloop run: {summary_line(stats, elapsed)}"
          f"{' (stopped by a signal)' if interrupted else ''}", file=sys.stderr)
    if clustered:
        d = stats_dict(stats, elapsed, lost, False, parts)
        print(f"rapidloop run: {spread_line(index, len(addresses), d)}", file=sys.stderr)
    return 1 if lost else 0


def _run_local_cluster(args: argparse.Namespace, cfg: Config) -> int:
    """Supervise ``args.processes`` children forming one Bytewax cluster on loopback."""
    from rapidloop.base.supervisor import ports, supervise
    from rapidloop.flows import recovery_plan
    from rapidloop.flows.recovery import RecoveryError

    n = int(args.processes)
    brokers = _check_kafka(cfg, args)
    _warn_uneven(cfg, client_config(cfg, brokers), n * args.workers)
    directory = _recovery_dir(args, cfg)
    replicas = recovery_plan.replicas(cfg, directory, n * args.workers)
    with one_line(RecoveryError):
        rec = (recovery_plan.prepare_whole(cfg, directory, client_config(cfg, brokers),
                                           replicas) if directory else None)
    grace = float(cfg.cluster.stop_grace_s)
    addresses = [f"127.0.0.1:{p}" for p in ports(n, int(cfg.cluster.base_port))]
    common = [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", brokers,
              "--workers", str(args.workers), "--progress", str(args.progress),
              "--cluster-child"]
    if args.config:
        common += ["--config", args.config]
    if args.exit_at_end:
        common.append("--exit-at-end")
    if args.from_end:
        common.append("--from-end")
    if rec is not None:
        common += ["--recovery-dir", str(Path(rec.directory).resolve())]
    else:
        common.append("--no-recovery")
    for a in addresses:
        common += ["-a", a]
    if rec is None:
        state = "no recovery state"
    else:
        state = (f"recovery state {'created in' if rec.created else 'resumed from'} "
                 f"{rec.directory}, shared by the processes")
    print(f"rapidloop run: a cluster of {n} processes x {args.workers} worker(s) on "
          f"{', '.join(addresses)} ({state}); Ctrl-C stops them all", file=sys.stderr,
          flush=True)
    try:
        done = supervise([[*common, "-i", str(i)] for i in range(n)], grace)
    finally:
        if rec is not None:
            rec.close()
    lines, code = done.report()
    for line in lines:
        print(f"rapidloop run: {line}", file=sys.stderr)
    return code
