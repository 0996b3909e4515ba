"""File connectors for ``rapidloop replay``: JSONL (or .jsonl.gz) in, JSONL out.

The replay source merges the report and feedback files into one stream in
event-time order, exactly as the contract promises, and numbers its batches
so the dataflow can process them in the same order however work is spread.
A line whose time cannot be read keeps its place after the previous line of
its file; it will be dead-lettered by the parser like any other bad input.
"""

from __future__ import annotations

import gzip
import heapq
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from rapidloop.schemas.model import RawMessage
from rapidloop.schemas.timefmt import parse_ts


def open_lines(path: str) -> IO[bytes]:
    """Open a JSONL file for reading bytes, transparently gunzipping ``.gz``."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _timed_lines(path: str, name: str, order: int) -> Iterator[tuple[float, int, int, RawMessage]]:
    last = float("-inf")
    with open_lines(path) as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                obj: Any = orjson.loads(line)
                ts = last = parse_ts(obj["ts"])
            except Exception:   # unreadable: keep its place; the parser will say why
                ts = last
            yield (ts, order, n, RawMessage(name, line, None, None, n))


def merged_lines(files: list[tuple[str, str]]) -> Iterator[RawMessage]:
    """Lines of several files, merged by event time (ties: file order, then line order)."""
    streams = [_timed_lines(path, name, i) for i, (path, name) in enumerate(files)]
    for _, _, _, msg in heapq.merge(*streams, key=lambda t: (t[0], t[1], t[2])):
        yield msg


class _MergedPartition(StatefulSourcePartition[tuple[int, list[RawMessage]], int]):
    def __init__(self, files: list[tuple[str, str]], batch_size: int, resume: int | None):
        self._it = merged_lines(files)
        self._size = batch_size
        self._seq = 0
        for _ in range(resume or 0):   # skip batches already processed
            self._next()

    def _next(self) -> list[RawMessage]:
        batch: list[RawMessage] = []
        for msg in self._it:
            batch.append(msg)
            if len(batch) >= self._size:
                break
        return batch

    def next_batch(self) -> list[tuple[int, list[RawMessage]]]:
        batch = self._next()
        if not batch:
            raise StopIteration
        seq = self._seq
        self._seq += 1
        return [(seq, batch)]

    def snapshot(self) -> int:
        return self._seq


class MergedFileSource(FixedPartitionedSource[tuple[int, list[RawMessage]], int]):
    """Report and feedback JSONL files as one event-time-ordered, numbered batch stream."""

    def __init__(self, files: list[tuple[str, str]], batch_size: int) -> None:
        for path, _ in files:
            if not Path(path).is_file():
                raise FileNotFoundError(path)
        self.files = files
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return ["replay"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _MergedPartition:
        return _MergedPartition(self.files, self.batch_size, resume_state)


class _JsonlPartition(StatelessSinkPartition[list[tuple[bytes | None, bytes]]]):
    def __init__(self, path: str) -> None:
        # Held open for the life of the partition; Bytewax calls close().
        self._f = gzip.open(path, "ab") if path.endswith(".gz") else open(path, "ab")  # noqa: SIM115

    def write_batch(self, items: list[list[tuple[bytes | None, bytes]]]) -> None:
        self._f.write(b"".join(v + b"\n" for batch in items for _, v in batch))

    def close(self) -> None:
        self._f.close()


class JsonlSink(DynamicSink[list[tuple[bytes | None, bytes]]]):
    """Appends message values as JSONL lines (the file is truncated when the sink is made)."""

    def __init__(self, path: str) -> None:
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb"):
            pass

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        return _JsonlPartition(self.path)
