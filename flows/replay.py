"""The flow over files, offline: the runner of ``rapidloop replay``, ``explain`` and ``evaluate``.

A replay is the live flow with file connectors (``rapidloop.flows.job``):
reports and feedback merged in event-time order, decisions written as JSONL
in emission order. Same input and config, same decisions but for
``decided_at``: this is how an incident is re-run and a policy change tried.
This module checks the input files before anything runs, runs the flow on
one or more worker threads, and writes the output only once the run ended
well. Failures are :class:`~rapidloop.flows.job.JobError` (one line); Ctrl-C
and SIGTERM end it as :class:`rapidloop.base.signals.Interrupted`, no output
written.

``rapidloop replay`` has three sources, one code path: JSONL files
(``--reports F [--feedback F]``, :func:`named_inputs`); a capture directory
(``--capture DIR``, ``rapidloop.tools.capture.replay_inputs``); or the input
topics read by time (``--from-kafka --since T [--until T]``), which *is* a
capture (to a temporary directory, or ``--save-capture DIR``) followed by a
replay of it, so a replay from Kafka and a replay of a capture of the same
range are identical by construction. It joins no consumer group and commits
nothing: the live job is not disturbed. Decisions go to a file and/or a
separate Kafka topic, published in emission order once the replay is done
(:func:`publish_decisions`); the live decisions topic is refused unless
asked for (``--to-live-topic``): enforcement points read it.

Speed: as fast as possible by default; ``pace`` feeds the input at that many
times event time (demos, training). ``progress`` prints events/s, and the
share done and an ETA when the total is known (a capture's manifest) or
estimated (from the files' sizes). Comparing two runs is
``rapidloop.tools.whatif``.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rapidloop.base.config import Config
from rapidloop.base.jobstats import JobStats
from rapidloop.schemas.intake import FEEDBACK, REPORT

from .job import JobError, file_connectors

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow


def check_inputs(cfg: Config, files: list[tuple[str, str]], kinds: dict[str, str],
                 given: dict[str, str] | None = None) -> None:
    """Stop, in one line and before anything runs, on an input file that cannot be used.

    Every file must read to its end (a truncated or corrupt ``.gz`` stops here,
    not halfway through the decisions). Files the user named (``given``: path →
    the option that named it) must also hold what they were given as
    (``check_content``: not binary, UTF-8, lines within the message size limit,
    reports as reports and verdicts as feedback). A capture's files are not
    judged by content: they hold what the topics held, bad messages included,
    and the replay dead-letters those exactly as the live job did. JobError.
    """
    from rapidloop.schemas.wire import Limits

    from .file_io import DECISION, InputFileError, check_content, check_readable

    options = given or {}
    limits = Limits.from_config(cfg)
    for path, topic in files:
        if not Path(path).is_file():
            raise JobError(f"input file not found: {path}")
        try:
            check_readable(path)
            if path in options:
                check_content(path, kinds[topic], limits.max_message_bytes, limits)
        except InputFileError as exc:
            hint = ""
            if exc.found == DECISION:
                hint = " (a replay's output? give its input)"
            elif exc.found is not None:
                hint = f" (given as {options[path]}: --reports and --feedback swapped?)"
            raise JobError(f"{exc}{hint} — stopped before replaying anything") from None


def named_inputs(reports: str, feedback: str | None = None
                 ) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    """The replay inputs of a reports file and maybe a feedback file the user named: (path,
    topic name) pairs, topic name → kind, and path → the option that named it (each file
    is its own topic, named by its path, so the two must differ)."""
    files, kinds, given = [(reports, reports)], {reports: REPORT}, {reports: "--reports"}
    if feedback:
        files.append((feedback, feedback))
        kinds[feedback] = FEEDBACK
        given[feedback] = "--feedback"
    return files, kinds, given


def run_flow(flow: Dataflow, workers: int = 1) -> None:
    """Run ``flow`` to the end of its input in this process, on ``workers`` threads."""
    from bytewax.testing import cluster_main, run_main

    if workers == 1:
        run_main(flow, epoch_interval=None)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)


def replay_files(cfg: Config, files: list[tuple[str, str]], kinds: dict[str, str],
                 output: str, dead_letters: str | None = None, workers: int = 1,
                 progress: float = 0.0, pace: float | None = None,
                 total: int | None = None, given: dict[str, str] | None = None
                 ) -> tuple[JobStats, float]:
    """Run the dataflow over ``files`` ((path, topic name) pairs) to JSONL; (stats, seconds).

    ``kinds`` maps each topic name to REPORT or FEEDBACK. ``progress``: a
    progress line on stderr every that many seconds (0: none). ``pace``:
    release the input at that many times event time. ``total``: the number of
    input messages, if known (else estimated from the files for the progress
    line). ``given``: the files the user named, by path, with the option that
    named them (:func:`check_inputs`). The output appears only once the run
    ended well (written under a ``.partial`` name until then, removed if it
    fails or is interrupted). Raises JobError, or Interrupted.
    """
    check_inputs(cfg, files, kinds, given)   # before importing the engine: a bad file is quick

    from rapidloop.base.progress import EtaReporter, Reporter
    from rapidloop.base.signals import Interrupted, stop_on_signals
    from rapidloop.operators.allowlist import AllowListError

    from .dataflow import build_flow
    from .file_io import InputFileError, JsonlSink, estimate_total
    from .kafka_io import find_cause
    from .placement import resolve_replicas

    if workers < 1:
        raise JobError("--workers must be at least 1")
    max_bytes = int(cfg.limits.max_message_bytes)
    stop = threading.Event()
    sinks: list[JsonlSink] = []   # each removes its partial file if the run does not end well
    try:
        sinks.append(JsonlSink(output))
        if dead_letters:
            sinks.append(JsonlSink(dead_letters))
        io = file_connectors(cfg, files, kinds, sinks[0], sinks[1] if dead_letters else None,
                             pace=pace, stop=stop)
        flow = build_flow(cfg, io, replicas=resolve_replicas(int(cfg.stream.replicas), workers))
    except (OSError, AllowListError) as exc:
        for sink in sinks:
            sink.discard()
        if isinstance(exc, AllowListError):
            raise JobError(str(exc)) from None
        raise JobError(f"cannot write {exc.filename}: {exc.strerror}") from None
    stats = io.stats   # this run's counters, which its steps count into
    reporter: Reporter | None = None
    if progress > 0:
        exact = total is not None
        reporter = EtaReporter(stats, progress, sys.stderr,
                               total if exact else estimate_total(files, max_bytes=max_bytes),
                               exact)
        reporter.start()
    t0 = time.perf_counter()
    # Ctrl-C / SIGTERM end the source (`stop`) rather than raise inside the flow; either way
    # the run is then incomplete and its output is discarded, not committed.
    with stop_on_signals(stop) as signals:
        try:
            run_flow(flow, workers)
            if stop.is_set():
                raise Interrupted(signals.signum or signal.SIGINT)
        except BaseException as exc:
            for sink in sinks:
                sink.discard()
            if find_cause(exc, KeyboardInterrupt):
                raise Interrupted(signals.signum or signal.SIGINT) from None
            bad = find_cause(exc, InputFileError) if isinstance(exc, Exception) else None
            if bad is None:
                raise
            raise JobError(f"{bad} — stopped; no output written") from None
        finally:
            if reporter is not None:
                reporter.stop()
    try:
        for sink in sinks:
            sink.commit()
    except OSError as exc:
        for sink in sinks:
            sink.discard()
        raise JobError(f"cannot write {exc.filename2 or exc.filename}: {exc.strerror}") from None
    return stats, time.perf_counter() - t0


def decide_files(cfg: Config, files: list[tuple[str, str]], kinds: dict[str, str],
                 output: str) -> None:
    """The plain run ``rapidloop evaluate`` makes over a simulated world's files: no checks
    (the simulator wrote them), no signal handling, the merge as it has always run it
    (``file_connectors(limits=False)``), decisions to ``output``."""
    from .dataflow import build_flow
    from .file_io import JsonlSink

    sink = JsonlSink(output)
    io = file_connectors(cfg, files, kinds, sink, limits=False)
    run_flow(build_flow(cfg, io))
    sink.commit()


def report_lines(files: list[tuple[str, str]], kinds: dict[str, str],
                 max_bytes: int | None = None) -> Iterator[bytes]:
    """The report files' lines (what-if weighs decisions by them); one over ``max_bytes``
    is never held whole (and never parses)."""
    from .file_io import open_lines, read_lines

    for path, topic in files:
        if kinds.get(topic) == REPORT:
            with open_lines(path) as f:
                for _, line in read_lines(f, max_bytes):
                    yield line


def publish_decisions(cfg: Config, topic: str, output: str, brokers: str | None = None) -> int:
    """A replay's decisions (the JSONL ``output``) to ``topic``, in emission order; how
    many. Every one confirmed by the broker, or BrokerUnavailable."""
    from rapidloop.base.kafka import publish_values

    from .file_io import open_lines

    with open_lines(output) as f:
        return publish_values(cfg, topic, f.read().splitlines(), brokers=brokers)
