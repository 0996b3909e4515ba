"""The file log: the live segments, read in order, always give back the files."""

from __future__ import annotations

import random

import pytest

from rapidloop.operators.filelog import FileLog, Record


def _replay(segments: dict[int, list[Record]], live: list[int]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for seq in live:
        for sha, blob in segments[seq]:
            if blob is None:
                files.pop(sha, None)
            else:
                files[sha] = blob
    return files


@pytest.mark.parametrize("roll_after", [1, 2, 3, 8])
def test_live_segments_give_back_the_files_through_changes_and_forgetting(roll_after: int
                                                                          ) -> None:
    rng = random.Random(roll_after)
    log = FileLog(roll_after)
    rows: dict[str, bytes] = {}
    written: dict[int, list[Record]] = {}
    dead_ever: set[int] = set()
    version = 0
    for _ in range(300):
        changed: set[str] = set()
        for _ in range(rng.randint(0, 6)):
            sha = f"f{rng.randint(0, 40)}"
            changed.add(sha)
            if rng.random() < 0.2:
                rows.pop(sha, None)           # forgotten (the sweep)
            else:
                version += 1
                rows[sha] = f"{sha}:{version}".encode()
        seq, records, dead = log.append(rows, changed)
        if records:
            assert seq not in written
            written[seq] = records
        assert not set(dead) & set(log.live())
        dead_ever.update(dead)
        assert not dead_ever & set(log.live())   # a dead segment never comes back
        assert len(log.live()) <= roll_after + 1
        assert _replay(written, log.live()) == rows
        restored, files = FileLog.restored(roll_after, [(s, written[s]) for s in log.live()])
        assert files == rows and restored.live() == log.live()


def test_each_snapshot_writes_the_changes_and_a_share_of_the_files() -> None:
    log = FileLog(roll_after=4)
    rows = {f"f{i:03d}": b"x" for i in range(400)}
    sizes = []
    for i in range(20):
        changed = set(rows) if i == 0 else {f"f{i:03d}"}
        rows[f"f{i:03d}"] = f"v{i}".encode()
        _, records, _ = log.append(rows, changed)
        sizes.append(len(records))
    assert sizes[0] == 400                  # the first: everything
    # then the change and a quarter of the files, give or take the change among them
    assert all(100 <= n <= 101 for n in sizes[1:]), sizes
    assert len(log.live()) <= 5


def test_roll_after_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FileLog(0)
