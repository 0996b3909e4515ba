"""Units are reassembled in input order whatever order their pieces arrive in."""

import itertools

from rapidloop.operators.sharding import Piece, UnitAssembler, route, split_unit

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
    routed = [kv for _, p in pieces for kv in route(p, 3, [(1, "copy")] if p.items else [])]
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
