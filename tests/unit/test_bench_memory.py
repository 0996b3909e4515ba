"""bench.memory's snapshot figure: the epoch-close snapshot of a correlator at N files."""

from __future__ import annotations

import pytest

from bench.memory import measure_snapshot


def test_snapshot_figure_counts_every_file_and_scales_to_an_epoch() -> None:
    res = measure_snapshot(3000)
    assert res["files"] == 3000
    assert res["snapshot_bytes"] > 3000 * 50   # every file is in it
    assert res["per_file_us"] > 0
    filled_s = res["files_filling_epoch"] * res["per_file_us"] / 1e6
    assert filled_s == pytest.approx(res["epoch_interval_s"])
