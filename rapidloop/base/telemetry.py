"""Operational metrics through the OpenTelemetry SDK, kept off the hot path.

The dataflow only counts into plain counters (``rapidloop.base.jobstats``); a
reporter thread hands this class the deltas every few seconds, so the cost of
OpenTelemetry never lands on a per-event code path. Each method takes a
count, and callers add once per batch.

``telemetry.exporter`` picks where metrics go: ``none`` builds no SDK at all
(every method returns at once), ``console`` prints periodic JSON snapshots to
stderr, ``otlp`` pushes over OTLP/HTTP to ``telemetry.otlp_endpoint`` (the
optional ``opentelemetry-exporter-otlp-proto-http`` package, extra ``otlp``).
The meter provider is private to this object, never installed as the global
one, and nothing listens on a port: metrics are pushed, never scraped.

Instruments: counters ``rapidloop.events_in`` {topic}, ``rapidloop.dead_letters``
{reason}, ``rapidloop.duplicates`` {topic}, ``rapidloop.decisions`` {action,
scope}, ``rapidloop.snapshot_time`` (seconds the epoch closes held the input,
snapshots built and written, recovery on); histogram
``rapidloop.decision_latency`` (seconds from an event's arrival to the decision
it triggered); observable gauges ``rapidloop.tracked_files`` and
``rapidloop.model_labels``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from .config import ConfigError

EXPORTERS = ("none", "console", "otlp")
LATENCY = "rapidloop.decision_latency"
# Seconds: a healthy job decides within milliseconds to a few epochs (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)
OTLP_HINT = ("telemetry.exporter = 'otlp' needs the optional package "
             "opentelemetry-exporter-otlp-proto-http: pip install 'rapidloop[otlp]'")


def _otlp_exporter(endpoint: str) -> MetricExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    except ImportError as exc:
        raise ConfigError(f"{OTLP_HINT} ({exc})") from None
    exporter: MetricExporter = OTLPMetricExporter(endpoint=endpoint)
    return exporter


def _reader(cfg: Any) -> MetricReader | None:
    """The periodic reader ``cfg.telemetry`` asks for, or None for ``none``."""
    tel = cfg.telemetry
    kind = tel.exporter
    if kind not in EXPORTERS:
        raise ConfigError(f"telemetry.exporter must be one of {', '.join(EXPORTERS)}, "
                          f"got {kind!r}")
    if kind == "none":
        return None
    interval_s = float(tel.export_interval_s)
    if interval_s <= 0:
        raise ConfigError(f"telemetry.export_interval_s must be > 0, got {interval_s}")
    exporter = (ConsoleMetricExporter(out=sys.stderr) if kind == "console"
                else _otlp_exporter(tel.otlp_endpoint))
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval_s * 1000.0)


class Telemetry:
    """The job's metrics. ``reader`` overrides the configured exporter (tests pass an
    ``InMemoryMetricReader``)."""

    def __init__(self, cfg: Any, reader: MetricReader | None = None) -> None:
        reader = reader if reader is not None else _reader(cfg)
        self._tracked_files: int | None = None
        self._labels_seen: int | None = None
        self._lock = threading.Lock()
        self._provider: MeterProvider | None = None
        if reader is None:
            return
        self._provider = MeterProvider(
            metric_readers=[reader],
            resource=Resource.create({"service.name": "rapidloop"}),
            views=[View(instrument_name=LATENCY,
                        aggregation=ExplicitBucketHistogramAggregation(LATENCY_BUCKETS))],
        )
        meter = self._provider.get_meter("rapidloop")
        self._events_in = meter.create_counter(
            "rapidloop.events_in", unit="{message}",
            description="Messages read from the input topics, by topic.")
        self._dead_letters = meter.create_counter(
            "rapidloop.dead_letters", unit="{message}",
            description="Messages that could not be used, by reason code.")
        self._duplicates = meter.create_counter(
            "rapidloop.duplicates", unit="{message}",
            description="Redelivered reports and feedback recognised and skipped, by topic.")
        self._decisions = meter.create_counter(
            "rapidloop.decisions", unit="{decision}",
            description="Decisions emitted, by action and scope.")
        self._snapshot_time = meter.create_counter(
            "rapidloop.snapshot_time", unit="s",
            description="Time the epoch closes held the input: snapshots built and "
                        "written (recovery on; JobStats.held_s).")
        self._latency = meter.create_histogram(
            LATENCY, unit="s",
            description="Processing latency from an event's arrival to the decision it caused.")
        meter.create_observable_gauge(
            "rapidloop.tracked_files", callbacks=[self._observe_tracked], unit="{file}",
            description="Files whose state the job currently holds.")
        meter.create_observable_gauge(
            "rapidloop.model_labels", callbacks=[self._observe_labels], unit="{label}",
            description="Labelled examples (verdicts) the model has learned from.")

    @property
    def enabled(self) -> bool:
        """False for exporter ``none``: every method is then a no-op."""
        return self._provider is not None

    def events_in(self, topic: str, n: int = 1) -> None:
        if self._provider is not None and n:
            self._events_in.add(n, {"topic": topic})

    def dead_letters(self, reason: str, n: int = 1) -> None:
        if self._provider is not None and n:
            self._dead_letters.add(n, {"reason": reason})

    def duplicates(self, topic: str, n: int = 1) -> None:
        if self._provider is not None and n:
            self._duplicates.add(n, {"topic": topic})

    def decisions(self, action: str, scope: str, n: int = 1) -> None:
        if self._provider is not None and n:
            self._decisions.add(n, {"action": action, "scope": scope})

    def snapshot_time(self, seconds: float) -> None:
        if self._provider is not None and seconds > 0:
            self._snapshot_time.add(seconds)

    def latency(self, seconds: float) -> None:
        if self._provider is not None:
            self._latency.record(max(0.0, seconds))

    def set_tracked_files(self, n: int) -> None:
        self._tracked_files = n

    def set_labels_seen(self, n: int) -> None:
        self._labels_seen = n

    def _observe_tracked(self, _options: CallbackOptions) -> Iterable[Observation]:
        n = self._tracked_files
        return [] if n is None else [Observation(n)]

    def _observe_labels(self, _options: CallbackOptions) -> Iterable[Observation]:
        n = self._labels_seen
        return [] if n is None else [Observation(n)]

    def shutdown(self) -> None:
        """Export what is pending and stop the exporter thread; safe to call twice."""
        with self._lock:
            provider, self._provider = self._provider, None
        if provider is not None:
            provider.shutdown()
