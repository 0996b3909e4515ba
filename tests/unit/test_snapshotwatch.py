"""The share of time in epoch-close snapshots: measured by the steps, watched, said once."""

from __future__ import annotations

import io

from rapidloop.base.config import load_config
from rapidloop.base.jobstats import JobStats
from rapidloop.base.progress import Reporter
from rapidloop.base.snapshotwatch import WINDOW_EPOCHS, SnapshotWatch, window_for
from rapidloop.flows import steps
from rapidloop.flows.placement import replica_layout
from rapidloop.operators.settings import Settings


def test_share_is_over_a_full_trailing_window() -> None:
    w = SnapshotWatch(warn_share=0.5, window_s=10.0)
    assert w.observe(0.0, 0.0) is None and w.share is None
    assert w.observe(5.0, 1.0) is None and w.share is None    # half a window: no figure yet
    assert w.observe(10.0, 2.0) is None and w.share == 0.2
    assert w.observe(15.0, 2.0) is None and w.share == 0.1    # the last 10 s only
    assert w.observe(25.0, 2.0) is None and w.share == 0.0


def test_warns_once_per_crossing_and_rearms_below_half() -> None:
    w = SnapshotWatch(warn_share=0.3, window_s=10.0)
    said = []
    total = 0.0
    for t, spent in [(0, 0), (10, 4), (20, 4), (30, 2), (40, 1), (50, 0.5), (60, 4)]:
        total += spent
        got = w.observe(float(t), total)
        if got is not None:
            said.append((t, round(got, 2)))
    # 40 % at t=10, still over at 20, 20 % at 30 (not below 15 %), 10 % at 40 re-arms,
    # 5 % at 50, 40 % again at 60
    assert said == [(10, 0.4), (60, 0.4)]


def test_zero_share_never_warns_but_still_measures() -> None:
    w = SnapshotWatch(warn_share=0.0, window_s=1.0)
    w.observe(0.0, 0.0)
    assert w.observe(1.0, 1.0) is None and w.share == 1.0


def test_window_is_some_epochs_or_the_setting_if_longer() -> None:
    assert window_for(2.0, 30.0) == 30.0
    assert window_for(60.0, 30.0) == 60.0 * WINDOW_EPOCHS


def test_steps_add_their_snapshot_time_only_with_recovery() -> None:
    cfg = load_config(env={})
    settings = Settings.from_config(cfg)
    for recovery in (False, True):
        stats = JobStats()
        logic = steps.correlate_builder(settings, replica_layout(8, 1), recovery, stats)(None)
        blob = logic.snapshot()
        assert (blob is not None) is recovery
        assert (stats.snapshot_s > 0) is recovery
        feed = steps.active_feed_builder(recovery, live=False, stats=stats)(None)
        before = stats.snapshot_s
        assert (feed.snapshot() is not None) is recovery
        assert (stats.snapshot_s > before) is recovery


def test_reporter_shows_the_share_and_warns_through_its_own_channel() -> None:
    stats = JobStats()
    stats.tracked_files["000"] = 123_456
    out, warned = io.StringIO(), []
    watch = SnapshotWatch(warn_share=0.25, window_s=0.0)   # a zero window: every tick counts
    rep = Reporter(stats, period=1.0, out=out, watch=watch, warn=warned.append, epoch_s=2.0)
    rep.tick()
    stats.snapshot_s += 10.0   # far more than the (tiny) time between two ticks
    rep.tick()
    assert "snapshots" in out.getvalue().splitlines()[-1]
    assert len(warned) == 1
    assert "123,456 tracked files" in warned[0] and "2s epochs" in warned[0]
    assert "stream.epoch_interval_s" in warned[0]
    rep.tick()   # still over: not said again
    assert len(warned) == 1


def test_without_a_watch_the_line_is_as_before() -> None:
    stats = JobStats()
    out = io.StringIO()
    Reporter(stats, period=1.0, out=out).tick()
    assert "snapshots" not in out.getvalue()


def test_an_epoch_close_holds_the_input_from_its_first_snapshot_to_the_next_poll() -> None:
    """What the input feels: the snapshots and Bytewax's write of them, up to the source's
    next poll; the snapshots' own time alone where no source polls in the process."""
    stats = JobStats()
    stats.input_polled(1.0)                   # no close under way: nothing
    assert stats.held_s() == 0.0
    stats.add_snapshot(0.25, began=10.0)      # a close: two steps' snapshots...
    stats.add_snapshot(0.25, began=10.25)
    assert stats.held_s() == 0.5              # (not polled yet: their own time)
    stats.input_polled(11.5)                  # ...written, then the input goes on
    assert stats.epoch_close_s == 1.5 and stats.held_s() == 1.5
    stats.input_polled(12.0)                  # later polls add nothing
    assert stats.held_s() == 1.5

