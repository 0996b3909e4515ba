"""Secure by configuration: Kafka security settings reach clients, secrets reach no output.

The end-to-end half (every command's real clients, against the broker) is in
``tests/integration/test_security.py``.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rapidloop.base.config import load_config
from rapidloop.base.kafka import BrokerUnavailable, client_config, cluster_metadata, redact
from rapidloop.schemas.model import RawMessage
from rapidloop.schemas.wire import dead_letter, encode_dead_letter

from ..conftest import ROOT, free_port

SECRET = "s3cr3t-Pa55word-do-not-log"
SECURE = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "rapidloop-job",
    "sasl.password": SECRET,
    "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
    "ssl.endpoint.identification.algorithm": "https",
}


def secure_config_file(tmp_path: Path, **settings: str) -> Path:
    path = tmp_path / "secure.toml"
    path.write_text("[kafka.client]\n" + "".join(
        f'"{k}" = "{v}"\n' for k, v in {**SECURE, **settings}.items()))
    return path


def test_client_settings_from_file_and_environment_reach_client_config(tmp_path: Path) -> None:
    cfg = load_config(secure_config_file(tmp_path), env={
        "RAPIDLOOP_KAFKA__CLIENT__SASL.USERNAME": "from-env",
        "RAPIDLOOP_KAFKA__CLIENT__SSL.KEY.PASSWORD": "key-secret"})
    conf = client_config(cfg, "kafka:9093", **{"linger.ms": 5})
    assert conf["bootstrap.servers"] == "kafka:9093"
    for key, value in SECURE.items():
        if key != "sasl.username":
            assert conf[key] == value, key
    assert conf["sasl.username"] == "from-env"
    assert conf["ssl.key.password"] == "key-secret"
    assert conf["linger.ms"] == 5


def test_redact_hides_every_secret() -> None:
    conf = {**SECURE, "ssl.key.password": "k", "ssl.keystore.password": "ks",
            "sasl.oauthbearer.client.secret": "oc", "bootstrap.servers": "b:1"}
    text = repr(redact(conf))
    for secret in (SECRET, "'k'", "'ks'", "'oc'"):
        assert secret not in text
    assert redact(conf)["sasl.username"] == "rapidloop-job"


def test_unreachable_broker_error_never_shows_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    conf = {**SECURE, "security.protocol": "SASL_PLAINTEXT",
            "bootstrap.servers": f"127.0.0.1:{free_port()}"}
    del conf["ssl.ca.location"], conf["ssl.endpoint.identification.algorithm"]
    caplog.set_level(logging.DEBUG)
    t0 = time.monotonic()
    with pytest.raises(BrokerUnavailable) as exc:
        cluster_metadata(conf, 5.0)
    assert time.monotonic() - t0 < 6
    assert "127.0.0.1" in str(exc.value)
    assert SECRET not in str(exc.value) and SECRET not in caplog.text


def test_run_against_unreachable_broker_with_password_is_one_clean_line(tmp_path: Path) -> None:
    cfg = secure_config_file(tmp_path, **{"security.protocol": "SASL_PLAINTEXT",
                                          "ssl.ca.location": "", "debug": "security,broker"})
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rapidloop.cli", "run", "--brokers", f"127.0.0.1:{free_port()}",
         "--config", str(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapidloop run: "), lines
    assert SECRET not in done.stderr and SECRET not in done.stdout
    assert elapsed < load_config(env={}).kafka.connect_timeout_s + 10


def test_dead_letters_carry_no_configuration() -> None:
    dl = dead_letter(RawMessage("t", b'{"sasl.password": "x"}', None, 0, 1), "bad", 0.0)
    assert set(orjson_keys(encode_dead_letter(dl))) == {
        "error", "topic", "partition", "offset", "key", "raw", "ts"}


def orjson_keys(data: bytes) -> list[str]:
    import orjson
    return list(orjson.loads(data))


def test_nothing_listens_by_default() -> None:
    """Metrics are pushed (OTLP to loopback by default), never served on a port."""
    cfg = load_config(env={})
    assert cfg.telemetry.exporter == "none"
    assert cfg.telemetry.otlp_endpoint.startswith(("http://127.0.0.1", "http://localhost"))
    from rapidloop.base import telemetry
    src = Path(telemetry.__file__).read_text()
    assert "bind(" not in src and "start_http_server" not in src
    # The Bytewax dataflow API (0.0.0.0:3030) stays off unless the operator enables it.
    run_src = (ROOT / "rapidloop" / "cli" / "run.py").read_text()
    assert "BYTEWAX_DATAFLOW_API_ENABLED" not in run_src
    with socket.socket() as s:   # the port is free: nothing of ours took it at import
        try:
            s.bind(("127.0.0.1", 3030))
        except OSError:
            pytest.skip("port 3030 is taken by something else on this machine")
