"""bench.memory's and bench.state's figures: what an epoch close costs at a given state."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.memory import measure_snapshot
from bench.state import _read


def test_snapshot_figure_counts_every_file_and_scales_to_an_epoch() -> None:
    res = measure_snapshot(3000)
    assert res["files"] == 3000
    assert res["snapshot_bytes"] > 3000 * 50   # every file is in it
    assert res["per_file_us"] > 0
    filled_s = res["files_filling_epoch"] * res["per_file_us"] / 1e6
    assert filled_s == pytest.approx(res["epoch_interval_s"])
    # in chunks: 1 % changed and 1/64 rolled are written, and Bytewax gets the names
    assert res["chunked_changed_files"] == 30
    assert 0 < res["chunked_written_bytes_median"] < res["snapshot_bytes"] / 4
    assert res["chunked_blob_bytes"] < 64 << 10   # the names, and the ring's open chunk


def test_state_phase_reads_the_jobs_progress_lines(tmp_path: Path) -> None:
    err = tmp_path / "job.stderr"
    err.write_text("rapidloop run: consuming ...\n"
                   "events 1,200 (600/s) | decisions 0 | files 1,200 | labels 0\n"
                   "events 50,000 (9,000/s) | decisions 3 | files 50,000 | labels 0 | "
                   "snapshots 16% of the time\n"
                   "rapidloop run: epoch-close snapshots took 25% of the last 10s ...\n")
    assert _read(err) == (50_000, 16)
