"""Run a rapidloop command and record what only the job's own process can see.

``python -m bench.jobwrap OUT.json run --brokers ...`` behaves exactly like
``rapidloop run ...`` but also writes OUT.json with:

* ``first_consume``: wall clock (epoch seconds) when the Kafka source first
  handed a non-empty batch to the dataflow. Throughput is measured from there
  to the end of the work (below), so interpreter start-up, imports and
  Bytewax start-up are not charged to the job;
* ``last_decide``: when the decide step last finished a batch of input: the
  input is processed once it has gone through there. The end of the work is
  the later of this and the last decision's Kafka timestamp (the last
  decision alone can come long before the end of the input);
* ``first_poll``: when the source polled at all (the job is ready for input;
  the latency phase waits for this before starting its paced producer);
* ``maxrss_kib``: peak resident set size of the job process;
* ``cpu_s``: CPU seconds (user + system) the job process used, start-up
  included: what a cluster's processes add up to against one process;
* ``busy``: ``{"wall_s", "cpu_s"}`` from the start of the first batch the decide
  step got to the end of the last, wall clock and the CPU time of the thread
  that ran them (the Bytewax worker: every step of this process runs on it).
  ``cpu_s / wall_s`` is how busy the worker was while the job had work; below
  100 % it waited: for the broker, or in a cluster for the other process (a
  unit is decided once every shard's share of it has arrived);
* ``pauses``: ``[wall clock, seconds]`` of each time the source was not asked
  for input for more than ``PAUSE_S`` after it last answered (the worker busy
  elsewhere, or Bytewax holding the input at an epoch close until every
  snapshot is written): what sets the latency tail (bench.run's latency phase).

It only wraps the source's ``next_batch`` to note the time: nothing in the
dataflow changes. If the source class is ever renamed the wrapper degrades to
``first_consume = null`` and the harness falls back to the job's own summary.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

_marks: dict[str, float | None] = {"first_poll": None, "first_consume": None,
                                   "last_decide": None}
PAUSE_S = 0.025
_pauses: list[tuple[float, float]] = []
_last_return: list[float] = []
_busy: list[float] = []   # wall, thread CPU at the first decided batch's start; at the last's end


def _patch_one(part: Any, ready_file: Path | None) -> None:
    original = part.next_batch

    def next_batch(self: Any) -> Any:
        now = time.time()
        if _marks["first_poll"] is None:
            _marks["first_poll"] = now
            if ready_file is not None:
                ready_file.write_text(str(_marks["first_poll"]))
        elif _last_return and now - _last_return[0] > PAUSE_S and len(_pauses) < 100_000:
            _pauses.append((_last_return[0], now - _last_return[0]))
        batch = original(self)
        if batch and _marks["first_consume"] is None:
            _marks["first_consume"] = time.time()
        _last_return[:] = [time.time()]
        return batch

    part.next_batch = next_batch


def _patch_sources(ready_file: Path | None) -> bool:
    try:
        from rapidloop.flows import kafka_io
        parts = [kafka_io._KafkaPartition, kafka_io._MergedKafkaPartition]
    except (ImportError, AttributeError):
        return False
    for part in parts:
        _patch_one(part, ready_file)
    try:
        from rapidloop.flows import steps
        decide = steps.DecideLogic.on_batch
    except (ImportError, AttributeError):
        return True

    def on_batch(self: Any, pieces: Any) -> Any:
        if pieces and not _busy:
            _busy.extend((time.time(), time.thread_time()))
        result = decide(self, pieces)
        if pieces:
            _marks["last_decide"] = time.time()
            _busy[2:] = [_marks["last_decide"], time.thread_time()]
        return result

    steps.DecideLogic.on_batch = on_batch  # type: ignore[method-assign]
    return True


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    ready = out.with_suffix(".ready")
    patched = _patch_sources(ready)
    from rapidloop.cli import main as cli_main

    rc = 130
    try:
        rc = cli_main(argv[1:])
    except KeyboardInterrupt:
        rc = 130
    finally:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out.write_text(json.dumps({
            **_marks,
            "patched": patched,
            "maxrss_kib": usage.ru_maxrss,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "busy": ({"wall_s": _busy[2] - _busy[0], "cpu_s": _busy[3] - _busy[1]}
                     if len(_busy) == 4 else None),
            "pauses": _pauses,
            "rc": rc,
        }))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
