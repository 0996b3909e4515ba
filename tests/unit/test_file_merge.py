"""The replay merge: event-time order across files, and bad lines keep their place."""

from pathlib import Path

import orjson

from rapidloop.base.config import load_config
from rapidloop.flows.file_io import merged_lines


def test_a_far_future_line_does_not_hold_back_its_file(tmp_path: Path) -> None:
    def line(ts: str, rid: str) -> bytes:
        return orjson.dumps({"report_id": rid, "ts": ts})

    a = tmp_path / "a.jsonl"
    a.write_bytes(b"\n".join([line("2026-11-28T00:00:00Z", "a1"),
                              line("2090-01-01T00:00:00Z", "bad"),
                              line("2026-11-28T00:02:00Z", "a2")]) + b"\n")
    b = tmp_path / "b.jsonl"
    b.write_bytes(line("2026-11-28T00:01:00Z", "b1") + b"\n")
    order = [orjson.loads(m.value)["report_id"]
             for m in merged_lines([(str(a), "a"), (str(b), "b")])]
    assert order == ["a1", "bad", "b1", "a2"]


def test_client_secrets_from_the_environment_stay_strings() -> None:
    cfg = load_config(env={"RAPIDLOOP_KAFKA__CLIENT__SASL.PASSWORD": "12_34",
                           "RAPIDLOOP_POLICY__GLOBAL_MIN_ORGS": "4"})
    assert cfg.kafka.client.as_dict()["sasl.password"] == "12_34"
    assert cfg.policy.global_min_orgs == 4
