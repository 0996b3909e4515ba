"""The event-time merge of live input partitions (no Kafka: plain calls)."""

from __future__ import annotations

import random

from rapidloop.operators.eventtime import EventTimeMerge, merge_time


def _merge(idle_s: float = 5.0) -> EventTimeMerge[str]:
    return EventTimeMerge({"r#0": 0, "r#1": 1, "f#0": 2}, {"r#0": 0, "r#1": 0, "f#0": 0},
                          idle_s)


def test_order_does_not_depend_on_fetch_timing() -> None:
    parts = {"r#0": [1.0, 4.0, 6.0, 9.0], "r#1": [2.0, 4.0, 8.0], "f#0": [3.0, 4.0, 7.0]}
    outs = []
    for seed in range(20):
        rng = random.Random(seed)
        m = _merge()
        cursor = {p: 0 for p in parts}
        out: list[str] = []
        now = 0.0
        while len(out) < 10:
            p = rng.choice(list(parts))            # fetches come in any order, any size
            for _ in range(rng.randint(0, 2)):
                i = cursor[p]
                if i < len(parts[p]):
                    m.add(p, i, parts[p][i], f"{p}@{parts[p][i]}")
                    cursor[p] += 1
                if cursor[p] == len(parts[p]):
                    m.caught_up(p)
            out += m.release(rng.randint(1, 3), now)
            now += 0.01
        outs.append(out)
    assert all(o == outs[0] for o in outs)
    assert [float(x.split("@")[1]) for x in outs[0]] == sorted([1, 2, 3, 4, 4, 4, 6, 7, 8, 9])
    assert outs[0][3:6] == ["r#0@4.0", "r#1@4.0", "f#0@4.0"]   # ties: input, partition


def test_adding_a_poll_partition_by_partition_releases_the_same_as_one_by_one() -> None:
    """``add_many`` (what the live source does with a poll) is ``add`` for each in turn."""
    rng = random.Random(7)
    names = ["r#0", "r#1", "f#0"]
    for _ in range(30):
        polls = [[(rng.choice(names), float(rng.randint(0, 20))) for _ in range(rng.randint(0, 9))]
                 for _ in range(6)]
        one, many = _merge(0.0), _merge(0.0)
        got_one: list[str] = []
        got_many: list[str] = []
        offsets = dict.fromkeys(names, 0)
        for poll in polls:
            grouped: dict[str, list[tuple[int, float, str]]] = {}
            for part, ts in poll:
                off = offsets[part]
                offsets[part] += 1
                one.add(part, off, ts, f"{part}@{off}")
                grouped.setdefault(part, []).append((off, ts, f"{part}@{off}"))
            for part, entries in grouped.items():
                many.add_many(part, entries)
            if rng.random() < 0.3:
                part = rng.choice(names)
                one.caught_up(part)
                many.caught_up(part)
            limit = rng.randint(1, 8)
            got_one += one.release(limit, 0.0)
            got_many += many.release(limit, 0.0)
        assert got_many == got_one
        assert many.resume_offsets() == one.resume_offsets()


def test_a_silent_partition_is_passed_over_after_idle_s() -> None:
    m = _merge(idle_s=5.0)
    m.add("r#0", 0, 1.0, "a")
    m.caught_up("r#0")
    m.caught_up("f#0")
    assert m.release(10, now=0.0) == []            # r#1 has said nothing yet
    assert m.waiting_for(now=1.0) == ["r#1"]
    assert m.release(10, now=5.0) == ["a"]         # silent for idle_s: passed over


def test_caught_up_partitions_never_hold_back_and_late_messages_go_as_they_come() -> None:
    m = _merge()
    for p in ("r#0", "r#1", "f#0"):
        m.caught_up(p)
    m.add("r#0", 0, 10.0, "new")
    m.caught_up("r#0")
    assert m.release(10, now=0.0) == ["new"]
    m.add("f#0", 0, 3.0, "late verdict")            # older than what was released: live
    m.caught_up("f#0")
    assert m.release(10, now=0.0) == ["late verdict"]
    assert m.drained()


def test_resume_offsets_are_the_first_messages_not_released() -> None:
    m = _merge()
    for i, ts in enumerate([1.0, 2.0, 3.0]):
        m.add("r#0", 10 + i, ts, f"r{i}")
    m.add("r#1", 5, 2.5, "x")
    m.add("f#0", 7, 1.5, "v")
    assert m.release(3, now=0.0) == ["r0", "v"]    # f#0 may hold more before 2.0
    m.caught_up("f#0")
    assert m.release(1, now=0.0) == ["r1"]
    assert m.resume_offsets() == {"r#0": 12, "r#1": 5, "f#0": 8}


def test_an_unusable_time_keeps_its_place_in_its_partition() -> None:
    assert merge_time(b'{"ts": "1970-01-01T00:00:00Z"}', 100.0) == (100.0, 100.0)
    assert merge_time(b'{"ts": "2100-01-01T00:00:00Z"}', 1.8e9) == (1.8e9, 1.8e9)
    assert merge_time(None, 7.0) == (7.0, 7.0)
