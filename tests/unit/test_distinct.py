from rapidloop.operators.dedup import RecentIds
from rapidloop.operators.distinct import SlidingDistinct
from rapidloop.operators.snapshot import loads_plain


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


class _Reference:
    """The straightforward form (a dict of last-seen times and their sorted list,
    whatever the number of keys) that the compact one must match exactly."""

    def __init__(self, windows, cap):
        self.windows, self.cap, self.ever = tuple(windows), cap, 0
        self.last, self.times, self.no_prune_before = {}, [], float("-inf")

    def touch(self, key, ts):
        from bisect import bisect_left, insort
        old = self.last.get(key)
        if old is None:
            if len(self.last) >= self.cap:
                if ts >= self.no_prune_before:
                    horizon = ts - max(self.windows)
                    for k in [k for k, t in self.last.items() if t < horizon]:
                        del self.last[k]
                    del self.times[:bisect_left(self.times, horizon)]
                    if len(self.last) >= self.cap:
                        self.no_prune_before = self.times[0] + max(self.windows)
                if len(self.last) >= self.cap:
                    return
            self.ever += 1
        elif ts <= old:
            return
        else:
            del self.times[bisect_left(self.times, old)]
        self.last[key] = ts
        insort(self.times, ts)

    def counts(self, now):
        from bisect import bisect_left
        return [len(self.times) - bisect_left(self.times, now - w) for w in self.windows]


def test_compact_forms_match_the_reference_exactly():
    import pickle
    import random
    rnd = random.Random(11)
    windows = (60.0, 600.0)
    for trial in range(300):
        cap = rnd.choice((1, 2, 3, 50))
        d, ref = SlidingDistinct(windows, cap), _Reference(windows, cap)
        t = 0.0
        for _ in range(rnd.randrange(1, 40)):
            t += rnd.expovariate(1 / 120)
            ts = t - rnd.choice((0.0, 0.0, 30.0, 700.0))      # some out of order
            k = f"k{rnd.randrange(1 + trial % 6)}"
            d.touch(k, ts)
            ref.touch(k, ts)
            if rnd.random() < 0.2:
                d = SlidingDistinct.from_parts(windows, cap, loads_plain(pickle.dumps(d.parts())))
            now = t + rnd.choice((0.0, 45.0, 500.0))
            assert d.counts(now) == ref.counts(now)
            assert [d.count(now, i) for i in range(len(windows))] == ref.counts(now)
            assert (d.ever, len(d), sorted(d.keys())) == (ref.ever, len(ref.last),
                                                          sorted(ref.last))


def test_a_zero_cap_counts_nothing():
    d = SlidingDistinct((60.0,), cap=0)
    d.touch("a", 1.0)
    assert d.counts(1.0) == [0] and d.ever == 0 and len(d) == 0


def test_a_ring_snapshot_restores_order_and_membership():
    import pickle
    ids = RecentIds(capacity=5)
    for i in range(8):
        ids.seen(str(i))
    back = RecentIds.from_snapshot(5, loads_plain(pickle.dumps(ids.snapshot())))
    assert len(back) == 5 and back.seen("7") and not back.seen("2")
    assert not back.seen("x") and not back.seen("3")   # "3" was evicted by "x": FIFO kept
    smaller = RecentIds.from_snapshot(2, ids.snapshot())   # a smaller ring since: the newest
    assert list(smaller._order) == ["6", "7"] and smaller.seen("7") and not smaller.seen("5")


def test_the_chunked_ring_matches_a_plain_fifo_across_snapshots():
    import pickle
    import random
    from collections import deque

    from rapidloop.operators import dedup
    rnd = random.Random(5)
    for capacity in (1, 3, 10, 25):
        ring, order = RecentIds(capacity), deque()
        old_chunk, dedup.CHUNK = dedup.CHUNK, 4   # small chunks: every path is exercised
        try:
            for _ in range(400):
                msg = rnd.choice(("\ud800", "é", "")) + str(rnd.randrange(40))
                expect = msg in order
                if not expect:
                    order.append(msg)
                    if len(order) > capacity:
                        order.popleft()
                assert ring.seen(msg) is expect
                if rnd.random() < 0.1:
                    saved = loads_plain(pickle.dumps(ring.snapshot()))
                    ring = RecentIds.from_snapshot(capacity, saved)
                assert list(ring._order) == list(order) and len(ring) == len(order)
        finally:
            dedup.CHUNK = old_chunk


def test_counts_any_number_of_windows_equal_brute_force():
    """Three windows are counted by unrolled code, any other number by the general loop."""
    import random
    rnd = random.Random(11)
    for windows in ((600.0,), (600.0, 3600.0), (600.0, 3600.0, 86400.0),
                    (60.0, 600.0, 3600.0, 86400.0)):
        d = SlidingDistinct(windows, cap=10_000)
        events = []
        t = 0.0
        assert d.counts(t) == [0] * len(windows)
        for _ in range(400):
            t += rnd.expovariate(1 / 300)
            k = f"k{rnd.randrange(5)}" if events else "k0"
            d.touch(k, t)
            events.append((k, t))
            for now in (t, t + 700.0, t + 4000.0):
                assert d.counts(now) == [brute(events, now, w) for w in windows]


def test_first_key_is_the_first_of_keys():
    d = SlidingDistinct((600.0,), cap=10)
    assert d.first_key() is None and d.keys() == []
    d.touch("a", 1.0)
    assert d.first_key() == "a" == d.keys()[0]
    d.touch("b", 2.0)
    assert d.first_key() == "a" == d.keys()[0]
