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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rapidloop import jobstats
from rapidloop.cli import CliError
from rapidloop.config import Config, load_config
from rapidloop.kafka import BrokerUnavailable, BrokerWatch, client_config
from rapidloop.operators.allowlist import AllowListError
from rapidloop.schemas.intake import FEEDBACK, REPORT, input_kinds

STATS_PREFIX = "rapidloop-cluster-stats "
"""A child of ``--processes`` ends with this line on stderr (JSON): the supervisor adds
up the children's counters for the combined summary instead of echoing it."""

SHARE = "rapidloop-cluster.json"
"""In a multi-machine process's recovery dir: which partitions of how many it holds."""

BUILT_PARTS: list[str] = []
"""Kafka partitions (``topic#n``) this process's workers read: the spread of the input."""


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
    """The bootstrap servers, once the cluster and the four topics (and each tenant's two
    input topics) answered (one clear line within ``kafka.connect_timeout_s`` otherwise,
    never a hang)."""
    from rapidloop.flows.kafka_io import preflight

    brokers: str = args.brokers or cfg.kafka.brokers
    k = cfg.kafka
    try:
        preflight(cfg, brokers, [*input_kinds(cfg), k.decisions_topic, k.deadletter_topic])
    except BrokerUnavailable as exc:
        raise CliError(str(exc)) from None
    return brokers


# ------------------------------------------------------------------ recovery

@dataclass
class _Recovery:
    """The recovery state one process runs with, however it was prepared."""

    config: Any                      # bytewax RecoveryConfig
    description: str                 # for the start line
    close: Any = field(default=lambda: None)


def _topic_ids(cfg: Config, conf: dict[str, Any]) -> dict[str, str | None]:
    """The input topics' ids (tenants' included), which the recovery manifest records to
    catch a recreated topic."""
    from rapidloop.flows.recovery import topic_ids

    k = cfg.kafka
    ids = topic_ids(conf, list(input_kinds(cfg)), k.connect_timeout_s)
    if _feeds_active(cfg, conf):
        ids[k.active_topic] = None   # fed: the recovery state must always have been
    return ids


def _feeds_active(cfg: Config, conf: dict[str, Any]) -> bool:
    """Whether this job keeps the compacted feed of decisions in force: it does when the
    topic exists (``rapidloop topics create`` makes it), from a recovery state's start."""
    from rapidloop.kafka import cluster_metadata

    k = cfg.kafka
    try:
        return k.active_topic in cluster_metadata(conf, k.connect_timeout_s).topics
    except BrokerUnavailable:
        return False


def _prepare_whole(cfg: Config, directory: str, conf: dict[str, Any], replicas: int) -> Any:
    """Create or check and lock a directory holding every partition (one machine)."""
    from rapidloop.flows.recovery import RecoveryError, prepare

    if (Path(directory) / SHARE).is_file():
        raise CliError(f"recovery dir {directory} holds one process's share of a multi-machine "
                       f"cluster's state: run it with that cluster's -i/-a, or pass another "
                       f"--recovery-dir")
    try:
        return prepare(cfg, directory, _topic_ids(cfg, conf), replicas=replicas)
    except RecoveryError as exc:
        raise CliError(str(exc)) from None


def _create_share(cfg: Config, directory: Path, ids: dict[str, str | None], index: int,
                  count: int, replicas: int) -> None:
    """First start of process ``index`` of ``count``: a dir with its share of the partitions.

    Bytewax needs the cluster as a whole to hold every recovery partition
    exactly once (two processes each holding a fresh copy of one partition
    would each write half of its snapshots), so process k keeps partitions
    j with j mod count == k. Built in a temporary sibling and renamed into
    place, like a whole directory, so a crash here leaves nothing half-made.
    """
    from bytewax.recovery import init_db_dir

    from rapidloop.flows.recovery import MANIFEST, identity

    partitions = int(cfg.recovery.partitions)
    if partitions < 1:
        raise CliError("recovery.partitions must be at least 1")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".new",
                                dir=directory.parent))
    try:
        init_db_dir(tmp, partitions)
        mine = [j for j in range(partitions) if j % count == index]
        for j in range(partitions):
            if j not in mine:
                (tmp / f"part-{j}.sqlite3").unlink()
        manifest = {**identity(cfg, ids, replicas=replicas), "partitions": partitions,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        share = {"process_id": index, "processes": count, "partitions": partitions,
                 "holds": mine}
        (tmp / SHARE).write_text(json.dumps(share, indent=2) + "\n", encoding="utf-8")
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()   # an empty directory (a fresh volume's mount point is not)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not directory.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _prepare_share(cfg: Config, directory: str, conf: dict[str, Any], index: int,
                   count: int, replicas: int) -> Any:
    """Create or check and lock this process's share of a multi-machine cluster's state."""
    from rapidloop.flows.recovery import RecoveryError, prepare

    d = Path(directory)
    ids = _topic_ids(cfg, conf)
    if d.exists() and not d.is_dir():
        raise CliError(f"recovery dir {d} exists and is not a directory")
    fresh = not d.exists() or not any(d.iterdir())
    if fresh:
        try:
            _create_share(cfg, d, ids, index, count, replicas)
        except OSError as exc:
            raise CliError(f"cannot create recovery dir {d}: {exc.strerror or exc}") from None
    try:
        rec = prepare(cfg, d, ids, replicas=replicas)
    except RecoveryError as exc:
        raise CliError(str(exc)) from None
    rec.created = fresh
    try:
        share = json.loads((d / SHARE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        rec.close()
        raise CliError(f"recovery dir {d} holds a single process's state, not a share of a "
                       f"cluster's: resume it without -i/-a (or with --processes), or pass "
                       f"another --recovery-dir") from None
    if share.get("processes") != count or share.get("process_id") != index:
        rec.close()
        raise CliError(f"recovery dir {d} holds the share of process {share.get('process_id')} "
                       f"of a {share.get('processes')}-process cluster, not of process "
                       f"{index} of {count}: give each process its own directory, and keep "
                       f"the process count (or delete every process's directory to start over)")
    return rec


def _recovery_dir(args: argparse.Namespace, cfg: Config) -> str | None:
    return None if args.no_recovery else (args.recovery_dir or cfg.recovery.dir or None)


def _replicas(args: argparse.Namespace, cfg: Config, workers: int) -> int:
    """Model replicas: as configured, else as the recovery state was made, else one per worker."""
    from rapidloop.flows.placement import resolve_replicas
    from rapidloop.flows.recovery import stored_replicas

    directory = _recovery_dir(args, cfg)
    stored = stored_replicas(directory, int(cfg.stream.shards)) if directory else None
    return resolve_replicas(int(cfg.stream.replicas), workers, stored)


def _recovery(args: argparse.Namespace, cfg: Config, conf: dict[str, Any], replicas: int
              ) -> _Recovery | None:
    from bytewax.recovery import RecoveryConfig

    directory = _recovery_dir(args, cfg)
    if not directory:
        return None
    if args.cluster_child:
        # The --processes supervisor created, checked and locked it; every child shares it.
        d = Path(directory)
        return _Recovery(
            RecoveryConfig(d, timedelta(seconds=float(cfg.recovery.backup_interval_s))),
            f"recovery state in {d} (shared by the cluster)")
    addresses = _addresses(args)
    if args.process_id is not None and len(addresses) > 1:
        rec = _prepare_share(cfg, directory, conf, args.process_id, len(addresses), replicas)
        share = json.loads((rec.directory / SHARE).read_text(encoding="utf-8"))
        held = ", ".join(f"part-{j}" for j in share["holds"]) or "no partition"
        verb = "created in" if rec.created else "resumed from"
        return _Recovery(rec.config, f"recovery state {verb} {rec.directory}: {held} of "
                                     f"{share['partitions']}", rec.close)
    rec = _prepare_whole(cfg, directory, conf, replicas)
    verb = "created in" if rec.created else "resumed from"
    return _Recovery(rec.config, f"recovery state {verb} {rec.directory}", rec.close)


# ------------------------------------------------------------- one process

def _tracking_source(base: type) -> type:
    """``base`` (KafkaBatchSource) noting which partitions this process builds.

    Only bookkeeping for the summary: which worker reads which Kafka
    partition is Bytewax's choice, and the figure worth watching in a
    cluster (a process that got no partition only routes and decides).
    """

    class TrackingSource(base):  # type: ignore[misc, valid-type]
        def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
            BUILT_PARTS.append(for_part)
            return super().build_part(step_id, for_part, resume_state)

    return TrackingSource


def _stats_dict(stats: jobstats.JobStats, elapsed: float, lost: int,
                interrupted: bool) -> dict[str, Any]:
    """This process's counters as JSON, for the supervisor to add up (STATS is per process)."""
    return {"events_in": dict(stats.events_in), "dead_letters": dict(stats.dead_letters),
            "duplicates": stats.duplicates,
            "decisions": [[a, s, n] for (a, s), n in stats.decisions.items()],
            "tracked_files": dict(stats.tracked_files), "labels_seen": stats.labels_seen,
            "elapsed": elapsed, "lost": lost, "interrupted": interrupted,
            "parts": sorted(BUILT_PARTS), "cpu_s": _cpu_s()}


def _cpu_s() -> float:
    """CPU seconds this process used so far: the work it got, whatever it was."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return float(r.ru_utime + r.ru_stime)


def _spread_line(index: int, count: int, d: dict[str, Any]) -> str:
    """How much of the work one process got: its partitions, messages, shards, decisions."""
    n = sum(d["events_in"].values())
    shards = sorted(d["tracked_files"])
    files = sum(d["tracked_files"].values())
    decisions = sum(x[2] for x in d["decisions"])
    parts = ["every input partition (event-time merge)" if p == "merged" else p
             for p in d["parts"]]
    return (f"process {index} of {count}: read {', '.join(parts) or 'no partition'} "
            f"({n:,} messages); shards {', '.join(shards) or 'none'} ({files:,} files); "
            f"decisions {decisions:,}; cpu {d.get('cpu_s', 0.0):.1f}s")


def _warn_uneven(cfg: Config, conf: dict[str, Any], workers: int) -> None:
    """Say so when an input topic's partitions cannot spread evenly over the workers.

    Bytewax gives each input step's partitions out one by one to the worker
    with the fewest so far, ties to the lowest index, and each step starts
    afresh: 3 partitions on 2 workers are 2 + 1 for *every* topic, so worker 0
    parses two thirds of the input whatever the partitions are named. Only a
    partition count that is a multiple of the worker count is even.
    """
    from rapidloop.kafka import topic_partitions

    if workers < 2 or cfg.stream.input_order == "event_time":
        return    # one merged source reads all input: nothing to spread
    k = cfg.kafka
    kinds = input_kinds(cfg)
    try:
        parts = topic_partitions(conf, list(kinds), k.connect_timeout_s)
    except BrokerUnavailable:
        return   # preflight has just passed; the job itself will say what is wrong
    for kind in (REPORT, FEEDBACK):   # one input step each, tenants' topics included
        step = [t for t, kd in kinds.items() if kd == kind]
        n = sum(1 for t, _ in parts if t in step)
        if n % workers:
            split = " + ".join(str(n // workers + (w < n % workers)) for w in range(workers))
            what = step[0] + (f" and {len(step) - 1} tenant topic(s)" if len(step) > 1 else "")
            print(f"rapidloop run: note: the {n} partition(s) of {what} go {split} to "
                  f"the {workers} workers (lowest index first): a multiple of {workers} "
                  f"partitions would spread the input evenly", file=sys.stderr, flush=True)


def _broker_dead(why: str) -> None:
    """The cluster is gone: one line and exit 2, now.

    Bytewax offers no way to stop a flow from outside, and the flow may be
    blocked in a sink waiting for acknowledgements that cannot come; the
    recovery state is whole at every epoch close (SQLite transactions), so
    leaving at once loses only the epoch in flight, which a restart emits
    again.
    """
    sys.stderr.write(f"rapidloop run: {why} (exit 2; with recovery on, run again once it "
                     "is back and the job goes on from its last snapshot)\n")
    sys.stderr.flush()
    os._exit(2)


def _run_process(args: argparse.Namespace, cfg: Config) -> int:
    from bytewax.run import cli_main

    from rapidloop.flows.dataflow import Connectors, build_flow
    from rapidloop.flows.kafka_io import (
        KafkaBatchSink,
        KafkaBatchSource,
        KafkaMergedSource,
        delivery_failure,
        delivery_stats,
        find_cause,
        reset_delivery_stats,
    )
    from rapidloop.progress import Reporter, summary_line
    from rapidloop.telemetry import Telemetry

    addresses = _addresses(args)
    index = args.process_id
    clustered = index is not None and len(addresses) > 1
    brokers = _check_kafka(cfg, args)
    k = cfg.kafka
    conf = client_config(cfg, brokers)
    workers = args.workers * (len(addresses) if clustered else 1)
    if not args.cluster_child and (not clustered or index == 0):
        _warn_uneven(cfg, conf, workers)
    replicas = _replicas(args, cfg, workers)
    recovery = _recovery(args, cfg, conf, replicas)
    start = "end" if args.from_end else "beginning"
    tail = not args.exit_at_end
    BUILT_PARTS.clear()
    feed = _feeds_active(cfg, conf)
    if not feed and not args.cluster_child and (not clustered or index == 0):
        print(f"rapidloop run: note: no topic {k.active_topic}: the feed of decisions in "
              "force is not kept (`rapidloop topics create` makes it)", file=sys.stderr)
    alone = not clustered and not args.cluster_child
    # A single process stops on SIGTERM / SIGINT as at the end of input: its sources end, the
    # last epoch closes (snapshot included), sinks flush, and the summary follows.
    stop = threading.Event() if alone else None
    # The shared topics and each tenant's own, each bound to the org it speaks for; listed
    # in the merge's tie order, which a capture's replay shares (schemas.intake.bind_topics).
    kinds = input_kinds(cfg)
    if cfg.stream.input_order == "event_time":
        merged = _tracking_source(KafkaMergedSource)(
            conf, list(kinds), k.consume_batch, tail, start,
            idle_partition_s=float(cfg.stream.idle_partition_s),
            buffer_cap=int(cfg.stream.merge_buffer), stop=stop)
        sources: list[tuple[str, Any]] = [("input", merged)]
    else:
        source = _tracking_source(KafkaBatchSource)
        sources = [("reports", source(conf, [t for t, kd in kinds.items() if kd == REPORT],
                                      k.consume_batch, tail, start, stop=stop)),
                   ("feedback", source(conf, [t for t, kd in kinds.items() if kd == FEEDBACK],
                                       k.consume_batch, tail, start, stop=stop))]
    io = Connectors(
        sources=sources,
        kinds=kinds,
        decisions=KafkaBatchSink(conf, k.decisions_topic, retries=k.delivery_retries,
                                 undeliverable_topic=k.deadletter_topic),
        dead_letters=KafkaBatchSink(conf, k.deadletter_topic, retries=k.delivery_retries),
        active=(KafkaBatchSink(conf, k.active_topic, retries=k.delivery_retries,
                               undeliverable_topic=k.deadletter_topic) if feed else None),
    )
    try:
        flow = build_flow(cfg, io, recovery=recovery is not None, replicas=replicas)
    except AllowListError as exc:
        if recovery is not None:
            recovery.close()
        raise CliError(str(exc)) from None
    if clustered:
        # Metrics of N processes must not merge into one series (OTEL resource attribute).
        attrs = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        if "rapidloop.process" not in attrs:
            os.environ["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(
                a for a in (attrs, f"rapidloop.process={index}") if a)
    stats = jobstats.reset()
    reset_delivery_stats()
    telemetry = Telemetry(cfg)
    reporter = Reporter(stats, args.progress or 1.0,
                        sys.stderr if args.progress > 0 else None, telemetry)
    state = "no recovery state" if recovery is None else recovery.description
    where = (f"process {index} of {len(addresses)} ({addresses[index]}), "
             if clustered else "")
    tenants = len(cfg.tenants.orgs)
    own = f" and the own topics of {tenants} tenant(s)" if tenants else ""
    print(f"rapidloop run: {where}consuming {k.reports_topic}, {k.feedback_topic}{own} from "
          f"{brokers} ({'until drained' if args.exit_at_end else 'Ctrl-C to stop'}; {state})",
          file=sys.stderr, flush=True)
    reporter.start()
    watch = BrokerWatch(conf, float(k.broker_timeout_s), _broker_dead)
    watch.start()
    t0 = time.perf_counter()
    interrupted = False
    failure: Exception | None = None
    previous: dict[int, Any] = {}
    if stop is not None:
        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():
                # A second signal: stop at once, as a crash would (the last epoch is read
                # again at the next start). Not by raising inside the engine: Bytewax turns
                # that into a Rust panic and a page of backtrace.
                print(f"rapidloop run: {signal.Signals(signum).name} again: stopped at once; "
                      "the epoch in flight is read again at the next start",
                      file=sys.stderr, flush=True)
                os._exit(128 + signum)
            stop.set()
            print(f"rapidloop run: {signal.Signals(signum).name}: closing the epoch and "
                  "stopping (again to stop at once)", file=sys.stderr, flush=True)
        previous = {sig: signal.signal(sig, on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        cli_main(flow, workers_per_process=args.workers,
                 process_id=index if clustered else None,
                 addresses=addresses if clustered else None,
                 epoch_interval=timedelta(seconds=cfg.stream.epoch_interval_s),
                 recovery_config=recovery.config if recovery is not None else None)
    except KeyboardInterrupt:
        if not (args.cluster_child or alone):
            raise
        interrupted = True   # asked to stop: still report what was done
    except Exception as exc:
        if find_cause(exc, KeyboardInterrupt) and (args.cluster_child or alone):
            interrupted = True   # Bytewax wraps the interrupt: "signal received"
        else:
            # A sink that could not deliver stopped the flow before its epoch was committed:
            # say so in one line (a restart emits that epoch again), not with a traceback.
            failure = delivery_failure(exc)
            if failure is None:
                raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stop is not None and stop.is_set():
            interrupted = True
        watch.stop()
        if recovery is not None:
            recovery.close()
        reporter.stop()
        telemetry.shutdown()
    elapsed = time.perf_counter() - t0
    if failure is not None:
        if not args.cluster_child:
            print(f"rapidloop run: {summary_line(stats, elapsed)}", file=sys.stderr)
        raise CliError(str(failure))
    lost = 0
    for topic in (k.decisions_topic, k.deadletter_topic):
        d = delivery_stats(topic)
        lost += d.lost + d.dead_lettered
        if d.lost:
            print(f"rapidloop run: {d.lost} message(s) to {topic} were not delivered: "
                  f"{d.errors}", file=sys.stderr)
        if d.dead_lettered:
            print(f"rapidloop run: {d.dead_lettered} message(s) refused by {topic} were "
                  f"written to {k.deadletter_topic} instead: {d.errors}", file=sys.stderr)
    if args.cluster_child:
        print(STATS_PREFIX + json.dumps(_stats_dict(stats, elapsed, lost, interrupted)),
              file=sys.stderr, flush=True)
        return 130 if interrupted else (1 if lost else 0)
    print(f"rapidloop run: {summary_line(stats, elapsed)}"
          f"{' (stopped by a signal)' if interrupted else ''}", file=sys.stderr)
    if clustered:
        print(f"rapidloop run: "
              f"{_spread_line(index, len(addresses), _stats_dict(stats, elapsed, lost, False))}",
              file=sys.stderr)
    return 1 if lost else 0


# ------------------------------------------------------------- local cluster

_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In a child, before exec: SIGKILL when the supervisor dies, however it dies (Linux).

    Otherwise a ``kill -9`` of the supervisor would leave N processes running
    a cluster nobody watches, still holding the input.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _ports(count: int, base: int) -> list[int]:
    """``count`` loopback ports: base, base+1, ... or, with base 0, free ones."""
    if base:
        return [base + i for i in range(count)]
    socks = []
    try:
        for _ in range(count):   # held together so the kernel cannot hand out one twice
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class _Child:
    """One child process and the threads relaying its output with a ``[pK]`` prefix."""

    def __init__(self, index: int, argv: list[str], env: dict[str, str],
                 out_lock: threading.Lock) -> None:
        self.index = index
        self.stats: dict[str, Any] | None = None
        self.lock = out_lock
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.threads = [
            threading.Thread(target=self._relay, args=(self.proc.stdout, sys.stdout),
                             daemon=True),
            threading.Thread(target=self._relay, args=(self.proc.stderr, sys.stderr),
                             daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _relay(self, pipe: IO[bytes], out: IO[str]) -> None:
        prefix = f"[p{self.index}] "
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(STATS_PREFIX):
                with contextlib.suppress(ValueError):
                    self.stats = json.loads(line[len(STATS_PREFIX):])
                continue
            with self.lock:
                print(prefix + line, file=out, flush=True)
        pipe.close()

    def signal(self, sig: int) -> None:
        """Signal the child if it still runs (it may have exited since the last poll)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def join(self) -> None:
        """Wait for the child and for its last lines (the stats line comes last)."""
        self.proc.wait()
        for t in self.threads:
            t.join(5)


def _combined(children: list[_Child]) -> tuple[jobstats.JobStats, float]:
    """The children's counters added up; the cluster ran as long as its slowest process."""
    total = jobstats.JobStats()
    elapsed = 0.0
    for c in children:
        d = c.stats
        if d is None:
            continue
        total.events_in.update(d["events_in"])
        total.dead_letters.update(d["dead_letters"])
        total.duplicates += d["duplicates"]
        total.decisions.update(Counter({(a, s): n for a, s, n in d["decisions"]}))
        total.tracked_files.update(d["tracked_files"])
        total.labels_seen = max(total.labels_seen, d["labels_seen"])
        elapsed = max(elapsed, d["elapsed"])
    return total, elapsed


def _run_local_cluster(args: argparse.Namespace, cfg: Config) -> int:
    """Supervise ``args.processes`` children forming one Bytewax cluster on loopback."""
    from rapidloop.progress import summary_line

    n = int(args.processes)
    brokers = _check_kafka(cfg, args)
    _warn_uneven(cfg, client_config(cfg, brokers), n * args.workers)
    directory = _recovery_dir(args, cfg)
    replicas = _replicas(args, cfg, n * args.workers)
    rec = (_prepare_whole(cfg, directory, client_config(cfg, brokers), replicas)
           if directory else None)
    grace = float(cfg.cluster.stop_grace_s)
    addresses = [f"127.0.0.1:{p}" for p in _ports(n, int(cfg.cluster.base_port))]
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

    interrupted: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    out_lock = threading.Lock()
    children: list[_Child] = []
    failed_first: int | None = None
    try:
        for i in range(n):
            children.append(_Child(i, [*common, "-i", str(i)], dict(os.environ), out_lock))
        kill_at: float | None = None
        while any(c.proc.poll() is None for c in children):
            now = time.monotonic()
            if failed_first is None:
                failed_first = next((c.index for c in children
                                     if c.proc.poll() not in (None, 0)), None)
                if failed_first is not None and not interrupted:
                    failed = children[failed_first]
                    failed.join()
                    if failed.stats is None:
                        # It died: the cluster cannot go on without it (and a process still
                        # connecting to it would wait for ever), so stop the others now. (A
                        # child that ran its flow to the end but lost deliveries has stats:
                        # the others are finishing too.)
                        for c in children:
                            c.signal(signal.SIGTERM)
                        kill_at = now + grace
            if interrupted and kill_at is None:
                # Every process must be interrupted for a Bytewax cluster to stop.
                for c in children:
                    c.signal(signal.SIGINT)
                kill_at = now + grace
            if kill_at is not None and now > kill_at:
                for c in children:
                    c.signal(signal.SIGKILL)
                kill_at = float("inf")
            time.sleep(0.05)
    finally:
        for c in children:
            if c.proc.poll() is None:   # an unexpected error here: leave no orphan
                c.signal(signal.SIGKILL)
            c.join()
        for s, h in previous.items():
            signal.signal(s, h)
        if rec is not None:
            rec.close()
    total, elapsed = _combined(children)
    for c in children:
        if c.stats is not None:
            print(f"rapidloop run: {_spread_line(c.index, n, c.stats)}", file=sys.stderr)
    codes = [c.proc.returncode for c in children]
    if all(c.stats is not None for c in children):
        tail = " (interrupted)" if interrupted else ""
        print(f"rapidloop run: {summary_line(total, elapsed)}; {n} processes{tail}",
              file=sys.stderr)
    if interrupted:
        return 130
    if failed_first is None:
        failed_first = next((i for i, rc in enumerate(codes) if rc != 0), None)
    if failed_first is not None:
        rc = codes[failed_first]
        print(f"rapidloop run: process {failed_first} failed (exit {rc}); "
              f"exit codes {codes}", file=sys.stderr)
        return rc if rc > 0 else 1
    return 0
