"""Telemetry: instruments, attributes and exporters, read back through an in-memory reader."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import rapidloop.base.telemetry as telemetry_mod
from rapidloop.base.config import ConfigError, load_config
from rapidloop.base.telemetry import Telemetry


def cfg(**telemetry: str) -> Any:
    return load_config(env={f"RAPIDLOOP_TELEMETRY__{k.upper()}": v for k, v in telemetry.items()})


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Metric name -> data points of one collection."""
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def by_attrs(pts: list[Any]) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(p.attributes.items())): p for p in pts}


def test_counters_take_batch_counts_with_attributes() -> None:
    reader = InMemoryMetricReader()
    t = Telemetry(cfg(), reader=reader)
    assert t.enabled
    t.events_in("rapidloop.reports", 1000)
    t.events_in("rapidloop.reports", 500)
    t.events_in("rapidloop.feedback", 3)
    t.dead_letters("bad_sha256", 2)
    t.dead_letters("invalid_json", 1)
    t.duplicates("all", 4)
    t.decisions("block", "global", 2)
    t.decisions("allow", "org", 1)
    t.events_in("rapidloop.reports", 0)        # nothing to add: no-op
    got = points(reader)
    events = by_attrs(got["rapidloop.events_in"])
    assert events[(("topic", "rapidloop.reports"),)].value == 1500
    assert events[(("topic", "rapidloop.feedback"),)].value == 3
    dead = by_attrs(got["rapidloop.dead_letters"])
    assert dead[(("reason", "bad_sha256"),)].value == 2
    assert dead[(("reason", "invalid_json"),)].value == 1
    assert by_attrs(got["rapidloop.duplicates"])[(("topic", "all"),)].value == 4
    dec = by_attrs(got["rapidloop.decisions"])
    assert dec[(("action", "block"), ("scope", "global"))].value == 2
    assert dec[(("action", "allow"), ("scope", "org"))].value == 1
    t.shutdown()


def test_snapshot_time_counts_seconds() -> None:
    reader = InMemoryMetricReader()
    t = Telemetry(cfg(), reader=reader)
    t.snapshot_time(0.25)
    t.snapshot_time(0.5)
    t.snapshot_time(0.0)   # nothing to add
    (p,) = points(reader)["rapidloop.snapshot_time"]
    assert p.value == pytest.approx(0.75)
    t.shutdown()


def test_latency_histogram_in_seconds() -> None:
    reader = InMemoryMetricReader()
    t = Telemetry(cfg(), reader=reader)
    for s in (0.004, 0.02, 0.02, 1.5, -0.001):
        t.latency(s)
    (p,) = points(reader)["rapidloop.decision_latency"]
    assert p.count == 5
    assert p.sum == pytest.approx(1.544)
    assert p.min == 0.0
    assert tuple(p.explicit_bounds) == telemetry_mod.LATENCY_BUCKETS
    t.shutdown()


def test_gauges_report_the_last_value_set() -> None:
    reader = InMemoryMetricReader()
    t = Telemetry(cfg(), reader=reader)
    t.events_in("x", 1)
    assert "rapidloop.tracked_files" not in points(reader)   # nothing known yet
    t.set_tracked_files(120)
    t.set_tracked_files(125)
    t.set_labels_seen(7)
    got = points(reader)
    assert [p.value for p in got["rapidloop.tracked_files"]] == [125]
    assert [p.value for p in got["rapidloop.model_labels"]] == [7]
    t.shutdown()


def test_resource_names_the_service() -> None:
    reader = InMemoryMetricReader()
    t = Telemetry(cfg(), reader=reader)
    t.events_in("x", 1)
    data = reader.get_metrics_data()
    assert data is not None
    assert data.resource_metrics[0].resource.attributes["service.name"] == "rapidloop"
    t.shutdown()


def test_none_builds_no_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: Any, **_k: Any) -> None:
        raise AssertionError("no meter provider for exporter none")
    monkeypatch.setattr(telemetry_mod, "MeterProvider", boom)
    t = Telemetry(cfg(exporter="none"))
    assert not t.enabled
    t.events_in("x", 1)
    t.dead_letters("bad_enum", 1)
    t.duplicates("all", 1)
    t.decisions("block", "device", 1)
    t.latency(0.1)
    t.set_tracked_files(3)
    t.set_labels_seen(3)
    t.shutdown()


def test_console_exports_to_stderr_on_shutdown(capsys: pytest.CaptureFixture[str]) -> None:
    t = Telemetry(cfg(exporter="console", export_interval_s="3600.0"))
    t.events_in("rapidloop.reports", 42)
    t.shutdown()
    t.shutdown()                       # twice is fine
    t.events_in("rapidloop.reports", 1)  # after shutdown: ignored, no SDK warning
    err = capsys.readouterr().err
    assert "rapidloop.events_in" in err
    assert "42" in err


def test_otlp_without_the_optional_package_is_a_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.metric_exporter",
                        None)
    with pytest.raises(ConfigError, match=r"pip install 'rapidloop\[otlp\]'"):
        Telemetry(cfg(exporter="otlp"))


def test_unknown_exporter_and_bad_interval_are_rejected() -> None:
    with pytest.raises(ConfigError, match="must be one of none, console, otlp"):
        Telemetry(cfg(exporter="prometheus"))
    with pytest.raises(ConfigError, match="export_interval_s"):
        Telemetry(cfg(exporter="console", export_interval_s="0.0"))
