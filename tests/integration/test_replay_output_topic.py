"""`rapidloop replay --output-topic`: decisions to a separate Kafka topic, never the live one."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from rapidloop.cli import main

from ..conftest import TopicMaker
from . import scenario
from .test_kafka_io import read_all
from .test_replay import write

pytestmark = pytest.mark.integration


def test_replay_publishes_to_a_separate_topic(broker: str, kafka_topics: TopicMaker,
                                              tmp_path: Path) -> None:
    (out_topic,) = kafka_topics("replayed")
    reports = write(tmp_path / "r.jsonl", scenario.reports())
    feedback = write(tmp_path / "f.jsonl", scenario.feedback())
    out = tmp_path / "d.jsonl"
    assert main(["replay", "--reports", reports, "--feedback", feedback, "--output", str(out),
                 "--output-topic", out_topic, "--brokers", broker, "--quiet"]) == 0
    on_file = out.read_bytes().splitlines()
    published = read_all(broker, out_topic)
    assert sorted(v for _, _, v in published) == sorted(on_file)
    assert all(k == orjson.loads(v)["sha256"].encode() for _, k, v in published)


def test_live_decisions_topic_needs_explicit_consent(tmp_path: Path, capsys) -> None:
    reports = write(tmp_path / "r.jsonl", scenario.reports())
    code = main(["replay", "--reports", reports, "--output-topic", "rapidloop.decisions"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--to-live-topic" in err[0]
