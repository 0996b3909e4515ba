"""The front door: a replay over a file that cannot be read to its end stops in one line,
before deciding anything, leaving no output; a good replay leaves no partial file;
`--version`; `evaluate --strict` as a CI gate."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT
from .helpers import sha

LINE = (b'{"report_id":"r-%d","ts":"2026-11-28T00:00:%02d.000Z","org_id":"org-1",'
        b'"device_id":"org-1/d","sha256":"%s","source":"edr","file":{"name":"a.exe",'
        b'"size":1,"type":"pe","signed":false,"signer":null,"path_category":"downloads"},'
        b'"behaviors":[],"sensor_verdicts":{}}')


def _good(path: Path, n: int = 3000) -> None:
    with gzip.open(path, "wb") as f:
        for i in range(n):
            f.write(LINE % (i, i % 60, sha(i).encode()) + b"\n")


def _replay(tmp: Path, reports: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rapidloop.cli", "replay", "--reports",
                           str(reports), "--output", str(tmp / "out.jsonl")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kind", ["truncated", "not gzip", "random bytes", "a directory"])
def test_an_unreadable_input_file_stops_the_replay_in_one_line(tmp_path: Path,
                                                               kind: str) -> None:
    bad = tmp_path / "reports.jsonl.gz"
    if kind == "truncated":
        _good(tmp_path / "whole.gz")
        data = (tmp_path / "whole.gz").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "not gzip":
        bad.write_bytes(b"".join(LINE % (i, i, sha(i).encode()) + b"\n" for i in range(10)))
    elif kind == "random bytes":
        bad.write_bytes(os.urandom(5000))
    else:
        bad = tmp_path / "dir.jsonl"
        bad.mkdir()
    p = _replay(tmp_path, bad)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rapidloop replay: "), p.stderr
    assert str(bad) in lines[0] and "Traceback" not in p.stderr and "panicked" not in p.stderr
    assert not list(tmp_path.glob("out.jsonl*")), "partial output left behind"


def test_a_good_replay_leaves_its_output_and_no_partial_file(tmp_path: Path) -> None:
    good = tmp_path / "reports.jsonl.gz"
    _good(good, 200)
    p = _replay(tmp_path, good)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "out.jsonl").is_file()
    assert not (tmp_path / "out.jsonl.partial").exists()


def test_version() -> None:
    p = subprocess.run([sys.executable, "-m", "rapidloop.cli", "--version"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("rapidloop "), p.stderr


def test_evaluate_strict_exits_1_when_a_target_is_missed(tmp_path: Path) -> None:
    world = tmp_path / "world"
    sim = subprocess.run([sys.executable, "-m", "rapidloop.cli", "simulate", "--out", str(world),
                          "--reports", "3000", "--seed", "3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert sim.returncode == 0, sim.stderr
    impossible = tmp_path / "bar.toml"
    impossible.write_text("[evaluate]\nmin_protection = 1.0\n")   # 0.900 on this small world
    args = [sys.executable, "-m", "rapidloop.cli", "evaluate", "--world", str(world),
            "--png", str(tmp_path / "e.png"), "--config", str(impossible)]
    lenient = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert lenient.returncode == 0, lenient.stderr
    strict = subprocess.run([*args, "--strict"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert strict.returncode == 1
    assert strict.stderr.strip().splitlines()[-1].startswith("rapidloop evaluate: ")
