"""The decide stage's keys land where ``flows.placement`` says, on a real Bytewax cluster.

If a Bytewax release routes keys otherwise, results do not change (every
replica learns the same labels in the same order), but reports would cross
workers between correlation and decision and replicas could share a worker:
this test is the alarm, ``flows/placement.py`` the one place to fix.
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main

from rapidloop.flows.placement import replica_layout, worker_of
from rapidloop.operators.sharding import shard_key


class _WhereSink(DynamicSink[tuple[str, Any]]):
    def __init__(self, seen: dict[str, int]) -> None:
        self.seen = seen

    def build(self, step_id: str, worker_index: int, worker_count: int
              ) -> StatelessSinkPartition[tuple[str, Any]]:
        seen = self.seen

        class Part(StatelessSinkPartition[tuple[str, Any]]):
            def write_batch(self, items: list[tuple[str, Any]]) -> None:
                for key, _ in items:
                    seen[key] = worker_index

        return Part()


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_keys_run_on_the_predicted_worker(workers: int) -> None:
    layout = replica_layout(8, workers)
    keys = sorted({*layout.keys, *(shard_key(s) for s in range(16))})
    seen: dict[str, int] = {}
    flow = Dataflow("placement")
    items = op.input("in", flow, TestingSource([(k, 1) for k in keys]))
    op.output("out", op.stateful_map("where", items, lambda s, v: (s, v)), _WhereSink(seen))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert seen == {k: worker_of(k, workers) for k in keys}
    # one replica per worker, each shard with the replica on its own worker
    assert sorted(seen[k] for k in layout.keys) == list(range(workers))
    assert all(seen[layout.owner[s]] == seen[shard_key(s)] for s in range(8))
