"""The composition root: which sources and sinks the flow runs with, and the flow itself.

``flows/dataflow.py`` builds the flow from any :class:`Connectors`; this
module is the one place that chooses them, so adding a source or a sink
means a Bytewax source or sink class (``flows/kafka_io.py``,
``flows/file_io.py``) and a line in a factory here:

* :func:`kafka_connectors`: the live job (``rapidloop run``): the input
  topics (one event-time merge, or one source per kind), the decisions,
  dead-letter and active-feed topics;
* :func:`file_connectors`: JSONL files (``rapidloop replay``, ``evaluate``,
  ``explain``; ``flows/replay.py`` runs them).

and :func:`build`, the flow over them. The runners: one process of the live
job in ``flows/process.py``, a local cluster of such processes under
``rapidloop.base.supervisor``, the flow over files in ``flows/replay.py``; the
recovery state comes from ``flows/recovery_plan.py``. What to print, and the
command line, stay in ``rapidloop.cli``: failures here are exceptions whose
text is the one line the CLI prints.

Heavy modules (the flow, the Kafka connectors, the engine) are imported in
the functions that use them, so that ``rapidloop --help`` stays quick.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rapidloop.base.config import Config
from rapidloop.base.jobstats import JobStats
from rapidloop.schemas.intake import FEEDBACK, REPORT, input_kinds

if TYPE_CHECKING:
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import Sink

    from .dataflow import Connectors
    from .recovery_plan import RunRecovery
    from .steps import ChunkSettings


class JobError(RuntimeError):
    """The job cannot be built or run (one line, says what is wrong)."""


# ---------------------------------------------------------------- connectors

def kafka_connectors(cfg: Config, conf: dict[str, Any], *, tail: bool, start: str,
                     stop: threading.Event | None, feed_active: bool,
                     parts: list[str] | None = None) -> Connectors:
    """The live job's sources and sinks on the cluster ``conf`` speaks to.

    ``tail``: keep reading at the end of the input (else stop once drained);
    ``start``: "beginning" or "end" of the topics without recovery state;
    ``stop``: once set, the sources end as at the end of input; ``feed_active``:
    also write the feed of decisions in force (the topic exists); ``parts``:
    filled with the Kafka partitions this process's workers read. The run's
    counters (``Connectors.stats``) are made here: the sources note the input's
    newest broker time in them, the sinks what they delivered.
    """
    from .dataflow import Connectors
    from .kafka_io import KafkaBatchSink, KafkaBatchSource, KafkaMergedSource

    k = cfg.kafka
    stats = JobStats()
    built = parts if parts is not None else []
    # The shared topics and each tenant's own, each bound to the org it speaks for; listed
    # in the merge's tie order, which a capture's replay shares (schemas.intake.bind_topics).
    kinds = input_kinds(cfg)
    if cfg.stream.input_order == "event_time":
        merged = _tracking_source(KafkaMergedSource, built)(
            conf, list(kinds), k.consume_batch, tail, start,
            idle_partition_s=float(cfg.stream.idle_partition_s),
            buffer_cap=int(cfg.stream.merge_buffer), stop=stop, stats=stats)
        sources: list[tuple[str, Any]] = [("input", merged)]
    else:
        source = _tracking_source(KafkaBatchSource, built)
        sources = [("reports", source(conf, [t for t, kd in kinds.items() if kd == REPORT],
                                      k.consume_batch, tail, start, stop=stop, stats=stats)),
                   ("feedback", source(conf, [t for t, kd in kinds.items() if kd == FEEDBACK],
                                       k.consume_batch, tail, start, stop=stop, stats=stats))]
    return Connectors(
        sources=sources,
        kinds=kinds,
        decisions=KafkaBatchSink(conf, k.decisions_topic, retries=k.delivery_retries,
                                 undeliverable_topic=k.deadletter_topic, stats=stats),
        dead_letters=KafkaBatchSink(conf, k.deadletter_topic, retries=k.delivery_retries,
                                    stats=stats),
        active=(KafkaBatchSink(conf, k.active_topic, retries=k.delivery_retries,
                               undeliverable_topic=k.deadletter_topic, stats=stats)
                if feed_active else None),
        stats=stats,
    )


def _tracking_source(base: type, parts: list[str]) -> type:
    """``base`` (a Kafka source) noting in ``parts`` which partitions this process builds.

    Only bookkeeping for the summary: which worker reads which Kafka
    partition is Bytewax's choice, and the figure worth watching in a
    cluster (a process that got no partition only routes and decides).
    """

    class TrackingSource(base):  # type: ignore[misc, valid-type]
        def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
            parts.append(for_part)
            return super().build_part(step_id, for_part, resume_state)

    return TrackingSource


def file_connectors(cfg: Config, files: list[tuple[str, str]], kinds: dict[str, str],
                    decisions: Sink, dead_letters: Sink | None = None, *,
                    pace: float | None = None, stop: threading.Event | None = None,
                    limits: bool = True) -> Connectors:
    """JSONL ``files`` ((path, topic name) pairs) merged in event-time order, into sinks.

    ``pace``: release the input at that many times event time; ``stop``: once
    set, the source ends as if the files had. ``limits``: the merge takes
    ``limits.max_future_skew_s`` and ``limits.max_message_bytes`` from the
    config, as the live parser does; False keeps the merge ``rapidloop
    evaluate`` has always run (the built-in jump bound, no line cap), so that
    its figures stay comparable with those already published.
    """
    from .dataflow import Connectors
    from .file_io import MergedFileSource

    if limits:
        source = MergedFileSource(files, cfg.kafka.consume_batch, pace,
                                  float(cfg.limits.max_future_skew_s),
                                  int(cfg.limits.max_message_bytes), stop)
    else:
        source = MergedFileSource(files, cfg.kafka.consume_batch, pace, stop=stop)
    return Connectors(sources=[("input", source)], kinds=kinds, decisions=decisions,
                      dead_letters=dead_letters)


def build(cfg: Config, io: Connectors, *, recovery: RunRecovery | None = None,
          replicas: int | None = None) -> Dataflow:
    """The flow over ``io``; JobError (the recovery state released) for an allowlist
    that cannot be used."""
    from rapidloop.operators.allowlist import AllowListError

    from .dataflow import build_flow

    try:
        return build_flow(cfg, io, recovery=recovery is not None, replicas=replicas,
                          chunks=chunk_settings(cfg, recovery.config.db_dir if recovery
                                                else None))
    except AllowListError as exc:
        if recovery is not None:
            recovery.close()
        raise JobError(str(exc)) from None


def chunk_settings(cfg: Config, recovery_dir: str | Path | None) -> ChunkSettings | None:
    """Where the correlate step keeps its snapshots' bulk in ``recovery_dir`` (None:
    recovery off). With ``recovery.chunks`` false it writes whole snapshots, and still
    reads chunks a snapshot names. The grace covers the backup interval's epochs too:
    Bytewax keeps superseded snapshots that long."""
    import math

    from .chunkstore import CHUNKS_DIR
    from .steps import ChunkSettings

    if recovery_dir is None:
        return None
    epoch = max(float(cfg.stream.epoch_interval_s), 1e-3)
    backup = math.ceil(float(cfg.recovery.backup_interval_s) / epoch)
    return ChunkSettings(Path(recovery_dir) / CHUNKS_DIR,
                         int(cfg.recovery.chunk_grace_snapshots) + backup,
                         int(cfg.recovery.file_log_segments), bool(cfg.recovery.chunks))
