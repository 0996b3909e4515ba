from rapidloop.operators.dedup import RecentIds
from rapidloop.operators.distinct import SlidingDistinct


def brute(events, now, w):
    last = {}
    for k, t in events:
        last[k] = max(last.get(k, t), t)
    return sum(1 for t in last.values() if t >= now - w)


def test_counts_equal_brute_force_at_every_event():
    import random
    rnd = random.Random(7)
    windows = (600.0, 3600.0, 86400.0)
    d = SlidingDistinct(windows, cap=10_000)
    events = []
    t = 0.0
    for _ in range(1500):
        t += rnd.expovariate(1 / 30)
        k = f"k{rnd.randrange(300)}"
        d.touch(k, t)
        events.append((k, t))
        got = d.counts(t)
        assert got == [brute(events, t, w) for w in windows]


def test_out_of_order_touch_does_not_double_count():
    d = SlidingDistinct((600.0,), cap=10)
    d.touch("a", 100.0)
    d.touch("a", 50.0)
    assert d.counts(100.0) == [1]
    assert d.ever == 1


def test_cap_saturates_and_prunes_idle_keys():
    d = SlidingDistinct((60.0,), cap=3)
    for i, k in enumerate("abc"):
        d.touch(k, float(i))
    d.touch("d", 3.0)          # full, nothing idle: saturates
    assert len(d) == 3 and d.ever == 3
    d.touch("e", 1000.0)       # a, b, c are idle beyond the window: pruned
    assert d.keys() == ["e"]
    assert d.counts(1000.0) == [1]


def test_recent_ids_bounded():
    ids = RecentIds(capacity=100)
    for i in range(1000):
        assert not ids.seen(str(i))
    assert len(ids) == 100
    assert ids.seen("999") and not ids.seen("0")
