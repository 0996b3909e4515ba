"""Every Kafka client rapidloop creates gets the ``[kafka.client]`` security settings.

Runs each command that talks to Kafka (topics, simulate --kafka, run, tail,
capture, replay --from-kafka) in this process against the test broker, with
the client constructors wrapped to record their configuration. The broker
speaks PLAINTEXT, so ``security.protocol`` stays unset here (librdkafka then
ignores the sasl.* settings); its pass-through is checked in
``tests/unit/test_security.py``. No output line or log record may contain
the password.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import confluent_kafka
import confluent_kafka.admin
import pytest

from rapidloop.cli import main

from ..conftest import TopicMaker

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-Pa55word-do-not-log"
SASL = {"sasl.mechanism": "PLAIN", "sasl.username": "rapidloop-test", "sasl.password": SECRET,
        "client.id": "rapidloop-security-test"}


def _recording(real: type, kind: str, seen: list[tuple[str, dict[str, Any]]]) -> type:
    class Recording(real):  # type: ignore[misc, valid-type]
        def __init__(self, conf: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            seen.append((kind, dict(conf)))
            super().__init__(conf, *args, **kwargs)

    Recording.__name__ = real.__name__
    return Recording


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Wrap Consumer, Producer and AdminClient wherever rapidloop can reach them."""
    for modname in ("rapidloop.tools.capture", "rapidloop.flows.kafka_io", "rapidloop.base.kafka"):
        importlib.import_module(modname)   # loaded first, so their globals are patched below

    seen: list[tuple[str, dict[str, Any]]] = []
    real = {"Consumer": confluent_kafka.Consumer, "Producer": confluent_kafka.Producer,
            "AdminClient": confluent_kafka.admin.AdminClient}
    wrapped = {name: _recording(cls, name, seen) for name, cls in real.items()}
    for name in ("Consumer", "Producer"):
        monkeypatch.setattr(confluent_kafka, name, wrapped[name])
    # confluent_kafka.admin itself is left alone: AdminClient.__init__ looks its own name up
    # there (super(AdminClient, self)); rapidloop imports it into rapidloop.base.kafka only.
    for modname, module in list(sys.modules.items()):
        if modname.startswith("rapidloop"):
            for name, cls in real.items():
                if getattr(module, name, None) is cls:
                    monkeypatch.setattr(module, name, wrapped[name])
    return seen


def test_every_client_of_every_command_gets_the_security_settings(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path, clients: list,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    rep, fb, dec, dlq = kafka_topics("reports", "feedback", "decisions", "deadletter")
    cfg = tmp_path / "rapidloop.toml"
    cfg.write_text(
        f'[kafka]\nbrokers = "{broker}"\nreports_topic = "{rep}"\nfeedback_topic = "{fb}"\n'
        f'decisions_topic = "{dec}"\ndeadletter_topic = "{dlq}"\n'
        "[kafka.client]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in SASL.items()))
    monkeypatch.setenv("RAPIDLOOP_RECOVERY__DIR", "")
    caplog.set_level(logging.DEBUG)
    c = str(cfg)
    commands = {
        "topics": ["topics", "list", "--config", c],
        "simulate": ["simulate", "--kafka", "--config", c, "--rate", "0", "--reports", "300",
                     "--seed", "3", "--progress", "0"],
        "run": ["run", "--config", c, "--exit-at-end", "--no-recovery", "--progress", "0"],
        "tail": ["tail", "--config", c, "--from-beginning", "--json", "--max", "1",
                 "--timeout", "10"],
        "capture": ["capture", "--config", c, "--since", "1h", "--out",
                    str(tmp_path / "cap"), "--decisions"],
        "replay": ["replay", "--config", c, "--from-kafka", "--since", "1h", "--output",
                   str(tmp_path / "replayed.jsonl")],
    }
    kinds: dict[str, set[str]] = {}
    for name, argv in commands.items():
        before = len(clients)
        assert main(argv) == 0, (name, capfd.readouterr().err[-2000:])
        kinds[name] = {kind for kind, _ in clients[before:]}
    assert kinds["simulate"] >= {"Producer"}
    assert kinds["run"] >= {"Consumer", "Producer", "AdminClient"}
    for name in ("tail", "capture", "replay"):
        assert "Consumer" in kinds[name], (name, kinds[name])
    assert clients
    for kind, conf in clients:
        for key, value in SASL.items():
            assert conf.get(key) == value, (kind, key, sorted(conf))
    out = capfd.readouterr()
    assert SECRET not in out.out and SECRET not in out.err
    assert SECRET not in caplog.text
