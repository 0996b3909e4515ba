"""Memory per tracked file, measured in-process on the real operators.

The job's state grows with the number of distinct files it tracks, so the
figure that matters is bytes per file at scale, not the process's RSS at
start-up. This builds the real ``Correlator`` (one shard) with the default
configuration and feeds it N synthetic reports of N distinct hashes (the
worst case for state per sighting: every report creates a file), then:

* ``tracemalloc`` (exact Python allocations): the shard's state per file,
  with the fixed-capacity dedup ring (``dedup.ids_per_shard`` remembered ids,
  a per-shard constant, not per file) measured and reported separately;
* RSS delta (what the OS sees, allocator overhead and fragmentation included)
  in a separate process, since tracemalloc's own bookkeeping inflates RSS;
* the ``Decider``'s enforcement state per file that has a decision (most
  files never get one, so it is reported per blocked file);
* what one shard's epoch-close snapshot costs at that state (``snapshot``):
  with recovery on, Bytewax calls the correlate step's snapshot for every
  shard touched in an epoch. The first pickles every tracked file; later
  ones pickle only the files an event touched since and copy the bytes kept
  for the rest (``Correlator.snapshot``), so both are timed: the first (the
  cost of a file that changed) and the next ones with no file changed (the
  floor a state of that size sets). Bytewax's write of the bytes to SQLite
  comes on top and is not timed here.

``python -m bench.memory --method tracemalloc|rss|decider --files N`` prints
one JSON line; the harness runs each method in a fresh process.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rapidloop.base.config import load_config
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.decide import Decider
from rapidloop.operators.dedup import RecentIds
from rapidloop.schemas.model import FileInfo, Report

T0 = 1_795_000_000.0
BATCH = 2000


def rss_bytes() -> int:
    """Current resident set size, from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def reports(n: int, start: int = 0, malicious: bool = False) -> Iterator[list[tuple[int, Report]]]:
    """Batches of distinct-hash reports, like the job's units.

    Event time advances 10 ms a report so nothing is evicted as idle
    (state.idle_ttl_s is days) and each file holds one org and one device, as
    most files in a real fleet do.
    """
    behaviors = ("ransomware_encryption", "process_injection") if malicious else ()
    verdicts = {"static_ml": 0.99} if malicious else {}
    batch: list[tuple[int, Report]] = []
    for i in range(start, start + n):
        org = f"org-{i % 500}"
        r = Report(f"r{i}", T0 + i * 0.01, org, f"{org}/dev-{i % 100_000}", f"{i:064x}", "edr",
                   FileInfo("setup.exe", 1000 + i % 5000, "pe", False, None, "downloads"),
                   behaviors, dict(verdicts), None)
        batch.append((len(batch), r))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def measure_tracemalloc(n: int) -> dict[str, float]:
    cfg = load_config(env={})
    gc.collect()
    tracemalloc.start()
    c = Correlator.from_config(cfg)
    base = tracemalloc.get_traced_memory()[0]
    t = time.perf_counter()
    for batch in reports(n):
        c.process(batch, 0.0)
    elapsed = time.perf_counter() - t
    gc.collect()
    total = tracemalloc.get_traced_memory()[0] - base
    ring = len(c.ids)
    c.ids = RecentIds(c.ids.capacity)
    gc.collect()
    files_only = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"files": len(c.files), "state_bytes": total, "files_bytes": files_only,
            "per_file_bytes": files_only / max(len(c.files), 1),
            "dedup_ring_ids": ring, "dedup_ring_bytes": total - files_only,
            "feed_s": elapsed}


def measure_rss(n: int) -> dict[str, float]:
    cfg = load_config(env={})
    gc.collect()
    c = Correlator.from_config(cfg)
    before = rss_bytes()
    for batch in reports(n):
        c.process(batch, 0.0)
    gc.collect()
    after = rss_bytes()
    return {"files": len(c.files), "rss_delta_bytes": after - before,
            "per_file_bytes_incl_dedup": (after - before) / max(len(c.files), 1),
            "rss_after_bytes": after}


def measure_decider(n: int) -> dict[str, float]:
    cfg = load_config(env={})
    c = Correlator.from_config(cfg)
    d = Decider.from_config(cfg)
    # Correlate first (not traced), so only the decider's own growth is measured.
    units = [[s for _, s in c.process(batch, 0.0)[0]] for batch in reports(n, malicious=True)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    decisions = 0
    t = time.perf_counter()
    for unit in units:
        decisions += len(d.process(unit, 0.0))  # decisions go out; not state
    elapsed = time.perf_counter() - t
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    files = len(d.states)
    return {"files_with_state": files, "decisions": decisions, "state_bytes": grown,
            "per_file_bytes": grown / max(files, 1), "feed_s": elapsed}


def measure_snapshot(n: int) -> dict[str, float]:
    from rapidloop.flows.steps import snapshot_correlate

    cfg = load_config(env={})
    c = Correlator.from_config(cfg)
    for batch in reports(n):
        c.process(batch, 0.0)
    gc.collect()
    gc.freeze()   # as the job does (flows.dataflow): the state is not walked by each collection
    t = time.perf_counter()
    snapshot_correlate(c)   # the first: every file pickled
    first = time.perf_counter() - t
    times, size = [], 0
    for _ in range(3):      # then nothing changed: the bytes kept are copied
        t = time.perf_counter()
        size = len(snapshot_correlate(c))
        times.append(time.perf_counter() - t)
    seconds = sorted(times)[1]
    files = max(len(c.files), 1)
    per_file = seconds / files
    interval = float(cfg.stream.epoch_interval_s)
    return {"files": len(c.files), "snapshot_s_median": seconds, "snapshot_bytes": size,
            "per_file_us": per_file * 1e6, "first_snapshot_s": first,
            "first_per_file_us": first / files * 1e6, "epoch_interval_s": interval,
            "files_filling_epoch": interval / per_file if per_file else float("inf"),
            **_measure_chunked(cfg, n)}


def _measure_chunked(cfg: Any, n: int) -> dict[str, float]:
    """The same state snapshotted as the job does with ``recovery.chunks`` (``flows.chunked``):
    the first (every file written), then three epochs in which 1 % of the files changed:
    the time, the bytes written as chunks and the bytes handed to Bytewax. On a correlator
    of its own, fed the same reports: ``c``'s rows are already saved."""
    import tempfile

    from rapidloop.flows.chunked import ChunkedSnapshots

    c = Correlator.from_config(cfg)
    for batch in reports(n):
        c.process(batch, 0.0)
    touched = max(1, n // 100)
    with tempfile.TemporaryDirectory(prefix="rapidloop-chunks-") as tmp:
        d = Path(tmp)
        kept = ChunkedSnapshots(d, int(cfg.recovery.chunk_grace_snapshots),
                                int(cfg.recovery.file_log_segments))
        t = time.perf_counter()
        kept.snapshot(c, 0)
        first = time.perf_counter() - t
        times, written, blob = [], [], 0
        for k in range(3):
            for batch in reports(touched, start=k * touched):   # the same files, new ids
                c.process([(i, dataclasses.replace(r, report_id=f"again{k}-{r.report_id}"))
                           for i, r in batch], 0.0)
            before = {p.name for p in d.iterdir()}
            t = time.perf_counter()
            blob = len(kept.snapshot(c, 0))
            times.append(time.perf_counter() - t)
            written.append(sum(p.stat().st_size for p in d.iterdir() if p.name not in before))
    return {"chunked_first_s": first, "chunked_changed_files": touched,
            "chunked_s_median": sorted(times)[1], "chunked_written_bytes_median":
            sorted(written)[1], "chunked_blob_bytes": blob}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=["tracemalloc", "rss", "decider", "snapshot"], required=True)
    p.add_argument("--files", type=int, default=1_000_000)
    args = p.parse_args(argv)
    fn = {"tracemalloc": measure_tracemalloc, "rss": measure_rss,
          "decider": measure_decider, "snapshot": measure_snapshot}[args.method]
    print(json.dumps(fn(args.files)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
