"""One process of the live job (``rapidloop run``): checked, run, and how it ended.

The flow and its Kafka connectors come from ``rapidloop.flows.job``; this
module runs them in this process, alone or as one process of a Bytewax
cluster, with what a long-running process needs around the engine: counters,
metrics, a progress line, a watch on the brokers, a gentle stop on SIGINT or
SIGTERM, and the failures sorted out (a lost delivery is one line, not a
traceback). Lines are handed to a ``say`` callback: printing stays in the CLI.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from rapidloop.base.config import Config
from rapidloop.base.jobstats import JobStats
from rapidloop.base.kafka import BrokerUnavailable
from rapidloop.schemas.intake import FEEDBACK, REPORT, input_kinds

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow

    from .recovery_plan import RunRecovery


def check_cluster(cfg: Config, brokers: str) -> None:
    """The cluster and the job's topics (each tenant's two input topics too) answer, or
    BrokerUnavailable within ``kafka.connect_timeout_s`` (never a hang)."""
    from .kafka_io import preflight

    k = cfg.kafka
    preflight(cfg, brokers, [*input_kinds(cfg), k.decisions_topic, k.deadletter_topic])


def uneven_spread(cfg: Config, conf: dict[str, Any], workers: int) -> list[str]:
    """Notes on input topics whose partitions cannot spread evenly over the workers.

    Bytewax gives each input step's partitions out one by one to the worker
    with the fewest so far, ties to the lowest index, and each step starts
    afresh: 3 partitions on 2 workers are 2 + 1 for *every* topic, so worker 0
    parses two thirds of the input whatever the partitions are named. Only a
    partition count that is a multiple of the worker count is even.
    """
    from rapidloop.base.kafka import topic_partitions

    if workers < 2 or cfg.stream.input_order == "event_time":
        return []   # one merged source reads all input: nothing to spread
    kinds = input_kinds(cfg)
    try:
        parts = topic_partitions(conf, list(kinds), cfg.kafka.connect_timeout_s)
    except BrokerUnavailable:
        return []   # preflight has just passed; the job itself will say what is wrong
    notes = []
    for kind in (REPORT, FEEDBACK):   # one input step each, tenants' topics included
        step = [t for t, kd in kinds.items() if kd == kind]
        n = sum(1 for t, _ in parts if t in step)
        if n % workers:
            split = " + ".join(str(n // workers + (w < n % workers)) for w in range(workers))
            what = step[0] + (f" and {len(step) - 1} tenant topic(s)" if len(step) > 1 else "")
            notes.append(f"the {n} partition(s) of {what} go {split} to the {workers} "
                         f"workers (lowest index first): a multiple of {workers} partitions "
                         f"would spread the input evenly")
    return notes


def label_metrics(index: int) -> None:
    """Metrics of N processes must not merge into one series (OTEL resource attribute)."""
    attrs = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if "rapidloop.process" not in attrs:
        os.environ["OTEL_RESOURCE_ATTRIBUTES"] = ",".join(
            a for a in (attrs, f"rapidloop.process={index}") if a)


@dataclass
class Outcome:
    """How one process's run ended: interrupted, failed to deliver, or neither."""

    stats: JobStats                    # this process's counters
    elapsed: float
    interrupted: bool = False
    failure: Exception | None = None   # a sink that could not deliver (one line)


def run_process(cfg: Config, flow: Dataflow, conf: dict[str, Any], *, stats: JobStats,
                workers: int, recovery: RunRecovery | None, process_id: int | None = None,
                addresses: list[str] | None = None, interruptible: bool = True,
                stop: threading.Event | None = None, progress: float = 0.0,
                announce: Callable[[], None] = lambda: None,
                say: Callable[[str], None] = lambda line: None) -> Outcome:
    """Run ``flow`` in this process (one of a cluster with ``process_id``/``addresses``).

    ``stats``: the run's counters, which ``flow`` was built to count into
    (``Connectors.stats``). Around the engine: metrics, a progress line every
    ``progress`` seconds (0: none), a watch that ends the process once the
    cluster stops answering (:func:`_exit_when_broker_gone`), and with ``stop``
    (the sources' stop flag) SIGINT/SIGTERM ending the run as at the end of
    input (:func:`stop_gently`). ``say`` prints one line of the command;
    ``announce`` is called once all is set, just before the input is read.
    The recovery state is released at the end, however it ends.

    ``interruptible``: Ctrl-C ends the run as an interruption (reported, not
    raised); a process of a multi-machine cluster lets it through instead. A
    sink that could not deliver stopped the flow before its epoch was
    committed: that is the Outcome's ``failure`` (a restart emits the epoch
    again), not a traceback. Anything else is raised.
    """
    from bytewax.run import cli_main

    from rapidloop.base.kafka import BrokerWatch
    from rapidloop.base.progress import Reporter
    from rapidloop.base.snapshotwatch import SnapshotWatch, window_for
    from rapidloop.base.telemetry import Telemetry

    from .kafka_io import delivery_failure, find_cause

    telemetry = Telemetry(cfg)
    epoch_s = float(cfg.stream.epoch_interval_s)
    snapshots = (SnapshotWatch(float(cfg.stream.snapshot_warn_share),
                               window_for(epoch_s, float(cfg.stream.snapshot_warn_window_s)))
                 if recovery is not None else None)   # without recovery the steps save nothing
    reporter = Reporter(stats, progress or 1.0, sys.stderr if progress > 0 else None,
                        telemetry, watch=snapshots, warn=say, epoch_s=epoch_s)
    announce()
    reporter.start()
    watch = BrokerWatch(conf, float(cfg.kafka.broker_timeout_s),
                        lambda why: _exit_when_broker_gone(why, say))
    watch.start()
    t0 = time.perf_counter()
    outcome = Outcome(stats, 0.0)
    previous = stop_gently(stop, say) if stop is not None else {}
    try:
        cli_main(flow, workers_per_process=workers, process_id=process_id,
                 addresses=addresses,
                 epoch_interval=timedelta(seconds=cfg.stream.epoch_interval_s),
                 recovery_config=recovery.config if recovery is not None else None)
    except KeyboardInterrupt:
        if not interruptible:
            raise
        outcome.interrupted = True   # asked to stop: still report what was done
    except Exception as exc:
        if find_cause(exc, KeyboardInterrupt) and interruptible:
            outcome.interrupted = True   # Bytewax wraps the interrupt: "signal received"
        else:
            outcome.failure = delivery_failure(exc)
            if outcome.failure is None:
                raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stop is not None and stop.is_set():
            outcome.interrupted = True
        watch.stop()
        if recovery is not None:
            recovery.close()
        reporter.stop()
        telemetry.shutdown()
    outcome.elapsed = time.perf_counter() - t0
    return outcome


def _exit_when_broker_gone(why: str, say: Callable[[str], None]) -> None:
    """The cluster is gone: one line and exit 2, now.

    Bytewax offers no way to stop a flow from outside, and the flow may be
    blocked in a sink waiting for acknowledgements that cannot come; the
    recovery state is whole at every epoch close (SQLite transactions), so
    leaving at once loses only the epoch in flight, which a restart emits
    again.
    """
    say(f"{why} (exit 2; with recovery on, run again once it is back and the job goes on "
        "from its last snapshot)")
    os._exit(2)


def stop_gently(stop: threading.Event, say: Callable[[str], None]) -> dict[int, Any]:
    """SIGTERM / SIGINT stop a single process as at the end of input; the previous handlers.

    Its sources end, the last epoch closes (snapshot included), sinks flush,
    and the summary follows. A second signal stops at once, as a crash would
    (the last epoch is read again at the next start). Not by raising inside
    the engine: Bytewax turns that into a Rust panic and a page of backtrace.
    """
    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            say(f"{name} again: stopped at once; the epoch in flight is read again at the "
                "next start")
            os._exit(128 + signum)
        stop.set()
        say(f"{name}: closing the epoch and stopping (again to stop at once)")

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def undelivered(cfg: Config, stats: JobStats) -> tuple[int, list[str]]:
    """What the decisions and dead-letter sinks could not deliver: (messages, one line per
    loss) for the process's summary, from the run's counters ``stats``."""
    k = cfg.kafka
    lost, lines = 0, []
    for topic in (k.decisions_topic, k.deadletter_topic):
        d = stats.delivery(topic)
        lost += d.lost + d.dead_lettered
        if d.lost:
            lines.append(f"{d.lost} message(s) to {topic} were not delivered: {d.errors}")
        if d.dead_lettered:
            lines.append(f"{d.dead_lettered} message(s) refused by {topic} were written to "
                         f"{k.deadletter_topic} instead: {d.errors}")
    return lost, lines

