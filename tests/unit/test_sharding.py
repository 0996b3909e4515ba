"""Units are reassembled in input order whatever order their pieces arrive in."""

import itertools

from rapidloop.operators.sharding import Piece, UnitAssembler, route, shard_key, split_unit

from .helpers import feedback, report, sha


def test_split_gives_every_shard_a_piece():
    events = [report(sha(i)) for i in range(10)]
    pieces = split_unit("src", "u0", 0, events, 4, 0.0)
    assert [k for k, _ in pieces] == ["000", "001", "002", "003"]
    assert sum(len(p.items) for _, p in pieces) == 10
    # every unit with events is a barrier: its reports may teach every replica (lessons)
    assert all(p.expect == 4 for _, p in pieces)
    assert all(p.expect == 1 for _, p in split_unit("src", "u1", 1, [], 4, 0.0))


def test_verdicts_are_broadcast_and_units_wait_for_all_pieces():
    events = [report(sha(1)), feedback(sha(2))]
    pieces = split_unit("src", "u0", 0, events, 3, 0.0)
    assert all(p.expect == 3 for _, p in pieces)
    keys = [shard_key(s) for s in range(3)]
    routed = [kv for _, p in pieces
              for kv in route(p, keys[p.shard], keys, [(1, "copy")] if p.items else [])]
    to_zero = [p for k, p in routed if k == "000"]
    assert len(to_zero) == 3
    asm = UnitAssembler()
    assert asm.add(to_zero[0]) == [] and asm.add(to_zero[1]) == []
    (unit,) = asm.add(to_zero[2])
    assert [i for i, _ in unit.items] == sorted(i for i, _ in unit.items)


def test_sequenced_units_are_released_in_order():
    for order in itertools.permutations(range(3)):
        asm = UnitAssembler()
        released = []
        for seq in order:
            released += asm.add(Piece(0, "src", f"u{seq}", seq, 1, [(0, seq)]))
        assert [u.seq for u in released] == [0, 1, 2]
        assert len(asm) == 0


def test_fewer_replicas_than_shards_still_get_one_piece_per_shard():
    # 4 shards on 2 replicas: a replica owns two shards' pieces and gets the others' copies
    events = [report(sha(i)) for i in range(12)] + [feedback(sha(20))]
    pieces = split_unit("src", "u0", 0, events, 4, 0.0)
    owner = ["a", "b", "a", "b"]
    routed = [kv for _, p in pieces for kv in route(p, owner[p.shard], ["a", "b"], [(12, "c")])]
    for key in ("a", "b"):
        mine = [p for k, p in routed if k == key]
        assert sorted(p.shard for p in mine) == [0, 1, 2, 3]
        asm = UnitAssembler()
        units = [u for p in mine for u in asm.add(p)]
        assert len(units) == 1
        owned = [i for i, _ in units[0].items if i != 12]
        assert owned == sorted(i for i, ev in enumerate(events[:12])
                               if owner[int(ev.sha256[:8], 16) % 4] == key)
