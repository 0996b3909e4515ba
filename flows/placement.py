"""Which worker runs a key, and the decide stage's keys chosen with it.

Bytewax 0.21 runs a stateful key on worker ``hash(key) % workers``, where
``hash`` is Rust's default hasher (SipHash-1-3, zero keys) over the key's
bytes and a 0xFF terminator. Knowing it lets the flow give each model
replica a key that lands on its own worker, and hand each shard to the
replica on the shard's worker, so a report never crosses to another worker
between correlation and decision. ``tests/integration/test_placement.py``
checks this against a real Bytewax run: if a Bytewax release hashes
otherwise, results stay the same (placement only moves work), the test says
so, and this module is the one place to change.

>>> worker_of("000", 2), worker_of("003", 2)
(0, 1)
>>> layout = replica_layout(8, 2)
>>> layout.keys, [layout.owner[s] for s in range(8)]
(['r006', 'r000'], ['r006', 'r006', 'r006', 'r000', 'r000', 'r006', 'r000', 'r000'])
>>> replica_layout(8, 8).keys == [f"{s:03d}" for s in range(8)]
True
"""

from __future__ import annotations

from dataclasses import dataclass

from rapidloop.operators.sharding import shard_key

_M = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with zero keys: Rust's ``DefaultHasher::new()``."""
    v0, v1, v2, v3 = 0x736F6D6570736575, 0x646F72616E646F6D, 0x6C7967656E657261, 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _M
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _M
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _M
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _M
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    n = len(data)
    whole = n - n % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        sip_round()
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return v0 ^ v1 ^ v2 ^ v3


def worker_of(key: str, workers: int) -> int:
    """The worker (0-based, across all processes) Bytewax runs ``key`` on."""
    return siphash13(key.encode() + b"\xff") % workers


@dataclass(frozen=True)
class ReplicaLayout:
    """The decide stage's keys (one per model replica) and the replica owning each shard."""

    keys: list[str]
    owner: list[str]   # shard -> key of the replica that scores its reports


def replica_layout(shards: int, replicas: int) -> ReplicaLayout:
    """Keys for ``replicas`` model replicas, placed one per worker of a ``replicas``-worker cluster.

    ``replicas == shards`` is the original layout (a replica per shard, under
    the shard's own key), so recovery states written by it resume unchanged.
    """
    replicas = max(1, min(replicas, shards))
    if replicas == shards:
        keys = [shard_key(s) for s in range(shards)]
        return ReplicaLayout(keys, list(keys))
    keys = []
    for r in range(replicas):
        i = 0
        while worker_of(f"r{i:03d}", replicas) != r or f"r{i:03d}" in keys:
            i += 1
        keys.append(f"r{i:03d}")
    owner = [keys[worker_of(shard_key(s), replicas)] for s in range(shards)]
    return ReplicaLayout(keys, owner)


def resolve_replicas(configured: int, workers: int, stored: int | None = None) -> int:
    """How many replicas to run: the configured count, else the recovery state's, else one
    per worker."""
    if configured > 0:
        return configured
    if stored is not None:
        return stored
    return max(1, workers)
