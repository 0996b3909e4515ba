"""The replay's JSONL output (``flows.file_io.JsonlSink``): complete or absent, gzipped
when named ``.gz``, and whole lines whatever the number of workers writing."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path

import pytest

from rapidloop.cli import main
from rapidloop.flows.file_io import JsonlSink, open_lines


def _lines(path: Path) -> list[bytes]:
    with open_lines(str(path)) as f:
        return f.read().splitlines()


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz"])
def test_workers_write_whole_lines_into_one_file(tmp_path: Path, name: str) -> None:
    sink = JsonlSink(str(tmp_path / name))
    parts = [sink.build("out", w, 4) for w in range(4)]
    lines = {w: [b'{"w": %d, "b": %d, "i": %d}' % (w, b, i) for b in range(200) for i in range(20)]
             for w in range(4)}

    def write(w: int) -> None:
        for b in range(200):
            parts[w].write_batch([[(None, x) for x in lines[w][b * 20:(b + 1) * 20]]])

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not (tmp_path / name).exists()            # partial until the run ends well
    sink.commit()
    got = _lines(tmp_path / name)
    assert sorted(got) == sorted(x for w in range(4) for x in lines[w])
    for w in range(4):   # each worker's lines whole and in the order it wrote them
        assert [x for x in got if x.startswith(b'{"w": %d,' % w)] == lines[w]
    if name.endswith(".gz"):
        with gzip.open(tmp_path / name) as f:    # one gzip stream any gzip reader takes
            assert f.read().count(b"\n") == 4 * 200 * 20


def test_a_discarded_run_leaves_nothing(tmp_path: Path) -> None:
    sink = JsonlSink(str(tmp_path / "out.jsonl.gz"))
    sink.build("out", 0, 1).write_batch([[(None, b"{}")]])
    sink.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_gz_replay_output_is_gzip_and_reads_back(tmp_path: Path) -> None:
    """``--output x.jsonl.gz`` with two workers: a real gzip file, which ``--compare``
    reads (it used to hold plain lines under the .gz name, which nothing could read)."""
    world = tmp_path / "world"
    assert main(["simulate", "--out", str(world), "--seed", "5", "--reports", "3000",
                 "--orgs", "12"]) == 0
    inputs = ["--reports", str(world / "reports.jsonl.gz"),
              "--feedback", str(world / "feedback.jsonl.gz"), "--quiet"]
    gz, plain = tmp_path / "two.jsonl.gz", tmp_path / "one.jsonl"
    assert main(["replay", *inputs, "--output", str(gz), "--workers", "2"]) == 0
    assert main(["replay", *inputs, "--output", str(plain)]) == 0
    with gzip.open(gz) as f:
        two = f.read().splitlines()
    assert two and len(two) == len(_lines(plain))
    assert main(["replay", *inputs, "--output", str(tmp_path / "again.jsonl"),
                 "--compare", str(gz)]) == 0
