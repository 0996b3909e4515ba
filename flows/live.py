"""The live job of ``rapidloop run``, assembled: one process, or a local cluster's share.

The job reads the input topics and writes decisions, dead letters and the
feed of decisions in force to Kafka. With recovery on (the default:
``[recovery] dir``), it snapshots its state and input offsets at every epoch
close into the recovery directory and a restart resumes from the last
snapshot; see ``rapidloop.flows.recovery``.

Scaling out. Bytewax worker threads (``--workers``) share one GIL and barely
scale; processes do. Three ways to run the same flow:

* one process (the default);
* ``--processes N``: a local cluster. The process started becomes a
  supervisor: it checks the cluster and topics, prepares and locks the
  recovery directory (one directory holding every recovery partition, shared
  by the children, so a later run with another process count resumes the
  same state: :func:`prepare_cluster`), then starts N children, ``rapidloop
  run -i k -a ... -a ...``, on loopback ports (``rapidloop.base.supervisor``).
  Their output comes back prefixed with ``[pK]``; Ctrl-C or SIGTERM is
  forwarded to all of them (a Bytewax cluster stops only when *every*
  process is interrupted); if one fails the others are stopped; at the end
  it prints one combined summary and how work spread over the processes;
* ``-i INDEX -a HOST:PORT -a ...``: one process of a multi-machine cluster
  (a StatefulSet pod, say). Each process keeps its own recovery directory
  holding its share of the recovery partitions (partition j with process
  j mod N): Bytewax needs the cluster as a whole, not every process, to
  reach every partition, so local disks (ReadWriteOnce volumes) suffice.

:func:`assemble` puts one process together (its recovery state from
``rapidloop.flows.recovery_plan``, its connectors and flow from
``rapidloop.flows.job``) and :func:`run` runs it (``rapidloop.flows.process``).
Lines for the user go to a ``say`` callback; failures are exceptions whose
text is the one line the CLI prints (RecoveryError, JobError).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rapidloop.base.config import Config
from rapidloop.base.jobstats import JobStats
from rapidloop.base.kafka import client_config

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow

    from .recovery import Recovery
    from .recovery_plan import RunRecovery


def warn_uneven(cfg: Config, conf: dict[str, Any], workers: int,
                say: Callable[[str], None]) -> None:
    """Say so when an input topic's partitions cannot spread evenly over the workers."""
    from .process import uneven_spread

    for note in uneven_spread(cfg, conf, workers):
        say(f"note: {note}")


@dataclass
class Process:
    """One process of the live job, assembled and not started yet."""

    flow: Dataflow
    conf: dict[str, Any]              # the Kafka client configuration
    stats: JobStats                   # the run's counters, which ``flow`` counts into
    recovery: RunRecovery | None
    workers: int                      # worker threads of this process
    index: int | None                 # this process's index in a cluster (None: alone)
    addresses: list[str] | None       # every process's address in a cluster
    stop: threading.Event | None      # the sources' stop flag (a single process)
    interruptible: bool               # Ctrl-C ends the run as an interruption
    parts: list[str] = field(default_factory=list)   # the partitions its workers read


def assemble(cfg: Config, brokers: str, *, workers: int, tail: bool, start: str,
             recovery_dir: str | None, cluster_child: bool = False,
             process_id: int | None = None, addresses: list[str] | None = None,
             say: Callable[[str], None] = lambda line: None) -> Process:
    """One process of the live job on ``brokers``, ready to :func:`run`.

    ``workers``: its worker threads; ``tail``: keep reading at the end of the
    input (else stop once drained); ``start``: "beginning" or "end" of the
    topics without recovery state; ``recovery_dir``: None for no recovery
    state; ``cluster_child``: a child of a ``--processes`` supervisor;
    ``process_id`` and ``addresses``: its place in a multi-machine cluster.
    The first process of a cluster (or the only one) says what is worth a
    note. BrokerUnavailable (the cluster or a topic does not answer, within
    ``kafka.connect_timeout_s``: never a hang), RecoveryError or JobError (the
    recovery state released).
    """
    from . import job, process, recovery_plan

    process.check_cluster(cfg, brokers)
    addresses = addresses or []
    clustered = process_id is not None and len(addresses) > 1
    index = process_id if clustered else None   # alone, -i 0 -a ADDRESS is no cluster
    conf = client_config(cfg, brokers)
    total = workers * (len(addresses) if clustered else 1)
    first = not cluster_child and index in (None, 0)
    if first:
        warn_uneven(cfg, conf, total, say)
    replicas = recovery_plan.replicas(cfg, recovery_dir, total)
    recovery = recovery_plan.plan(cfg, conf, recovery_dir, replicas, cluster_child=cluster_child,
                                  process_id=process_id, addresses=addresses)
    parts: list[str] = []
    feed = recovery_plan.feeds_active(cfg, conf)
    if not feed and first:
        say(f"note: no topic {cfg.kafka.active_topic}: the feed of decisions in force is not "
            "kept (`rapidloop topics create` makes it)")
    alone = index is None and not cluster_child
    stop = threading.Event() if alone else None
    io = job.kafka_connectors(cfg, conf, tail=tail, start=start, stop=stop, feed_active=feed,
                              parts=parts)
    flow = job.build(cfg, io, recovery=recovery, replicas=replicas)
    if index is not None:
        process.label_metrics(index)
    return Process(flow, conf, io.stats, recovery, workers, index,
                   addresses if clustered else None, stop, cluster_child or alone, parts)


@dataclass
class Ended:
    """How one process's run ended, for its summary."""

    stats: JobStats
    elapsed: float
    interrupted: bool
    failure: Exception | None         # a sink that could not deliver (one line)
    lost: int = 0                     # messages not delivered (or dead-lettered instead)
    lines: list[str] = field(default_factory=list)   # one per kind of loss


def run(cfg: Config, p: Process, *, progress: float = 0.0,
        announce: Callable[[], None] = lambda: None,
        say: Callable[[str], None] = lambda line: None) -> Ended:
    """Run the assembled process to its end (``rapidloop.flows.process.run_process``):
    a progress line every ``progress`` seconds (0: none), ``announce`` just before the
    input is read. What the sinks could not deliver is counted unless the run failed."""
    from . import process

    out = process.run_process(cfg, p.flow, p.conf, stats=p.stats, workers=p.workers,
                              recovery=p.recovery, process_id=p.index, addresses=p.addresses,
                              interruptible=p.interruptible, stop=p.stop, progress=progress,
                              announce=announce, say=say)
    ended = Ended(out.stats, out.elapsed, out.interrupted, out.failure)
    if out.failure is None:
        ended.lost, ended.lines = process.undelivered(cfg, out.stats)
    return ended


def prepare_cluster(cfg: Config, brokers: str, *, processes: int, workers: int,
                    recovery_dir: str | None,
                    say: Callable[[str], None] = lambda line: None) -> Recovery | None:
    """The recovery directory of a local cluster of ``processes`` x ``workers``, created or
    checked and locked for its children (None: recovery off); the caller closes it once
    they are done. BrokerUnavailable or RecoveryError."""
    from . import recovery_plan
    from .process import check_cluster

    check_cluster(cfg, brokers)
    warn_uneven(cfg, client_config(cfg, brokers), processes * workers, say)
    replicas = recovery_plan.replicas(cfg, recovery_dir, processes * workers)
    if not recovery_dir:
        return None
    return recovery_plan.prepare_whole(cfg, recovery_dir, client_config(cfg, brokers),
                                       replicas)
