"""`rapidloop capture` against the real broker: its directory is whole or absent.

Each file appears in the capture directory only once it is complete, the manifest (what
makes a directory a capture) last; a capture that fails or is interrupted while writing
leaves nothing behind (a directory that existed, empty, is left empty), and says so in one
line. The no-broker cases (unwritable output, interrupted while waiting for the broker) are
in tests/unit/test_bad_inputs.py.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import rapidloop.tools.capture as capture_mod
from rapidloop.base.signals import Interrupted
from rapidloop.cli import main
from rapidloop.tools.capture import read_manifest

from ..conftest import TopicMaker
from .test_kafka_io import config_file, produce

REPORT = (b'{"report_id":"r-%d","ts":"2026-11-28T00:00:%02dZ","org_id":"org-1",'
          b'"device_id":"org-1/d","sha256":"' + b"a" * 64 + b'"}')


def _topics(broker: str, kafka_topics: TopicMaker, tmp_path: Path) -> str:
    rep, fb = kafka_topics("reports", "feedback")
    produce(broker, rep, [(None, REPORT % (i, i)) for i in range(30)])
    return config_file(tmp_path, {"reports_topic": rep, "feedback_topic": fb})


def _capture(broker: str, cfg: str, out: Path) -> int:
    return main(["capture", "--since", "1h", "--brokers", broker, "--config", cfg,
                 "--out", str(out)])


@pytest.mark.integration
def test_nothing_in_a_capture_directory_looks_complete_before_it_is(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _topics(broker, kafka_topics, tmp_path)
    out = tmp_path / "cap"
    seen: list[list[str]] = []
    merge = capture_mod._merge_to

    def watched(target: Path, parts: list[Path], field_name: str) -> None:
        seen.append(sorted(p.name for p in out.iterdir()))   # what a kill now would leave
        merge(target, parts, field_name)

    monkeypatch.setattr(capture_mod, "_merge_to", watched)
    assert _capture(broker, cfg, out) == 0
    assert seen == [[".partial"], [".partial"]]
    assert sorted(p.name for p in out.iterdir()) == ["feedback.jsonl.gz", "manifest.json",
                                                     "reports.jsonl.gz"]
    assert read_manifest(out)["counts"] == {"reports": 30, "feedback": 0}


@pytest.mark.integration
@pytest.mark.parametrize("failure", ["interrupted", "disk full"])
@pytest.mark.parametrize("existed", [False, True])
def test_a_capture_that_stops_while_writing_leaves_nothing(
        broker: str, kafka_topics: TopicMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], failure: str, existed: bool) -> None:
    cfg = _topics(broker, kafka_topics, tmp_path)
    out = tmp_path / "cap"
    if existed:
        out.mkdir()
    merge = capture_mod._merge_to

    def half_then_stop(target: Path, parts: list[Path], field_name: str) -> None:
        merge(target, parts, field_name)
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])     # a truncated file under way...
        if failure == "interrupted":
            raise Interrupted(2)                       # ...when Ctrl-C comes
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(capture_mod, "_merge_to", half_then_stop)
    capsys.readouterr()
    code = _capture(broker, cfg, out)
    err = capsys.readouterr().err.strip().splitlines()
    if failure == "interrupted":
        assert code == 130
        assert err == [f"rapidloop capture: interrupted (SIGINT); no capture written to {out}"]
    else:
        assert code == 2
        assert err == [f"rapidloop capture: cannot write {out / '.partial' / 'reports.jsonl.gz'}"
                       ": No space left on device"]
    if existed:
        assert list(out.iterdir()) == []
    else:
        assert not out.exists()
