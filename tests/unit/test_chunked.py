"""The correlate step's snapshots in chunks: restored at any epoch, they carry on exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from rapidloop.base.config import load_config
from rapidloop.base.jobstats import JobStats
from rapidloop.flows import steps
from rapidloop.flows.chunked import ChunkedSnapshots
from rapidloop.flows.placement import replica_layout
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.settings import Settings
from rapidloop.operators.snapshot import SnapshotError

from .helpers import T0, feedback, report, sha

# a ring of 6,000 ids a shard: sealed chunks of 4,096 are made, named and dropped
CFG = load_config(env={"RAPIDLOOP_DEDUP__IDS_PER_SHARD": "6000"})
SETTINGS = Settings.from_config(CFG)
TTL = CFG.state.idle_ttl_s + CFG.state.sweep_interval_s + 1


def _epoch(e: int) -> list[tuple[int, object]]:
    """An epoch's events: new and old files, verdicts, a duplicate, and from epoch 10 on a
    jump in time past the idle TTL (the sweep forgets the files not seen since)."""
    events: list[object] = []
    jump = TTL if e >= 10 else 0.0
    for i in range(700):
        n = e * 700 + i
        events.append(report(sha(n % 97 + 200 * (e >= 10)), org=f"org-{n % 7}",
                             device=f"d{n % 13}", ts=T0 + 60 * n + jump, report_id=f"r{n}",
                             behaviors=("persistence",) if n % 3 else (),
                             verdict=(n % 10) / 10))
        if n % 41 == 0:
            events.append(feedback(sha(n % 97), "malicious" if n % 2 else "benign",
                                   "sandbox" if n % 4 else "org_report", org="org-1",
                                   ts=T0 + 60 * n + jump))
    events.append(report(sha(1), report_id=f"r{e * 700}", ts=T0 + 60 * e * 700 + jump))
    return list(enumerate(events))


def _state(c: Correlator) -> tuple[object, ...]:
    return ({s: st.row() for s, st in c.files.items()}, list(c.ids._order), c.now,
            c.next_sweep, c.duplicates, c.evicted)


def test_restored_from_any_epoch_it_carries_on_exactly(tmp_path: Path) -> None:
    live, kept = Correlator(SETTINGS), ChunkedSnapshots(tmp_path, grace=2, roll_after=3)
    blobs = []
    for e in range(16):
        live.process(_epoch(e), 0.0)
        blobs.append(kept.snapshot(live, shard=5))
        again = ChunkedSnapshots(tmp_path, grace=2, roll_after=3)
        back = steps.restore_correlate(SETTINGS, blobs[-1], again)
        assert _state(back) == _state(live)
    assert live.evicted > 0 and live.duplicates > 0 and len(live.ids) == 6000
    # resumed from the last snapshot, it goes on writing chunks of its own
    resumed_store = ChunkedSnapshots(tmp_path, grace=2, roll_after=3)
    resumed = steps.restore_correlate(SETTINGS, blobs[-1], resumed_store)
    for e in range(16, 22):
        events = _epoch(e)
        out_live, _ = live.process(events, 0.0)
        out_back, _ = resumed.process(events, 0.0)
        assert [(i, o.features) for i, o in out_live] == [(i, o.features) for i, o in out_back]
        kept.snapshot(live, shard=5)
        blob = resumed_store.snapshot(resumed, shard=5)
        assert _state(steps.restore_correlate(
            SETTINGS, blob, ChunkedSnapshots(tmp_path, grace=2, roll_after=3))) == _state(live)


def test_chunks_no_longer_named_go_after_the_grace(tmp_path: Path) -> None:
    c, kept = Correlator(SETTINGS), ChunkedSnapshots(tmp_path, grace=2, roll_after=3)
    counts = []
    for e in range(20):
        c.process(_epoch(e), 0.0)
        blob = kept.snapshot(c, shard=0)
        named = steps.correlate_chunk_names(blob)
        on_disk = {p.name for p in tmp_path.iterdir()}
        assert named <= on_disk   # every chunk a snapshot names exists when it is handed on
        counts.append(len(on_disk - named))
    assert max(counts) <= 3 * 2 + 2   # what the last two snapshots dropped, no more


def test_a_snapshot_whose_chunk_is_gone_is_refused_naming_it(tmp_path: Path) -> None:
    c, kept = Correlator(SETTINGS), ChunkedSnapshots(tmp_path, grace=2, roll_after=3)
    for e in range(8):
        c.process(_epoch(e), 0.0)
    blob = kept.snapshot(c, shard=0)
    gone = sorted(steps.correlate_chunk_names(blob))[0]
    (tmp_path / gone).unlink()
    with pytest.raises(SnapshotError, match=gone):
        steps.restore_correlate(SETTINGS, blob, ChunkedSnapshots(tmp_path, 2, 3))
    with pytest.raises(SnapshotError, match="in chunks"):
        steps.restore_correlate(SETTINGS, blob)


def test_an_epoch_writes_what_changed_not_the_state(tmp_path: Path) -> None:
    """10,000 files held; an epoch touching 50 of them writes a few hundred rows."""
    c, kept = Correlator(SETTINGS), ChunkedSnapshots(tmp_path, grace=2, roll_after=64)
    c.process([(i, report(sha(10_000 + i), ts=T0 + i, report_id=f"s{i}"))
               for i in range(10_000)], 0.0)
    first = kept.snapshot(c, shard=0)
    c.process([(i, report(sha(10_000 + i), ts=T0 + 20_000 + i, report_id=f"t{i}"))
               for i in range(50)], 0.0)
    before = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    second = kept.snapshot(c, shard=0)
    new = {p.name: p.stat().st_size for p in tmp_path.iterdir() if p.name not in before}
    assert len(second) < 64 << 10   # what Bytewax stores: the ring's open chunk and names
    assert len(first) < 64 << 10
    assert sum(new.values()) < sum(before.values()) / 20   # 50 changed + 1/64 rolled



def test_a_shard_that_cannot_be_restored_inside_the_flow_stops_with_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> None:
    """A multi-machine process reads its shards' chunks only inside the flow, where an
    exception would become a Bytewax panic: the builder says why in one line and exits 2."""
    chunks_dir = tmp_path / "rapidloop-chunks"
    c, kept = Correlator(SETTINGS), ChunkedSnapshots(chunks_dir, grace=2, roll_after=3)
    c.process(_epoch(0), 0.0)
    blob = kept.snapshot(c, shard=3)
    gone = sorted(steps.correlate_chunk_names(blob))[0]
    (chunks_dir / gone).unlink()

    def exit_(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(steps.os, "_exit", exit_)
    build = steps.correlate_builder(SETTINGS, replica_layout(8, 1), True, JobStats(),
                                    chunks=steps.ChunkSettings(chunks_dir, 2, 3))
    with pytest.raises(SystemExit) as stopped:
        build(blob)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rapidloop run: recovery dir {tmp_path}: ")
    assert f"chunk {gone} is missing" in err[0] and "aside" in err[0]
