"""How one process of a cluster says what share of the work it got
(``rapidloop.base.supervisor.spread_line``, from its ``stats_dict``)."""

from rapidloop.base.jobstats import JobStats
from rapidloop.base.supervisor import spread_line, stats_dict


def test_the_line_gives_each_process_its_shards_files_and_events() -> None:
    stats = JobStats()
    stats.events_in.update({"reports": 1200, "feedback": 34})
    stats.tracked_files.update({"000": 10, "005": 7})
    stats.shard_events.update({"000": 900, "005": 300})
    stats.decisions[("block", "org")] = 3
    line = spread_line(0, 2, stats_dict(stats, 1.0, 0, False, ["merged"]))
    assert line.startswith("process 0 of 2: read every input partition (event-time merge) "
                           "(1,234 messages); shards 000, 005 (17 files, 1,200 events); "
                           "decisions 3; cpu ")


def test_a_process_with_no_shard_says_none() -> None:
    line = spread_line(1, 2, stats_dict(JobStats(), 1.0, 0, False, []))
    assert "read no partition (0 messages); shards none (0 files, 0 events)" in line
