"""A simulated world to files: reports, feedback, ground truth and the world description.

Same parameters, same bytes: gzip headers carry no time or name.
"""

from __future__ import annotations

import gzip
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .events import REPORT, SimStats

if TYPE_CHECKING:
    from rapidloop.tools.simulator import Simulator


@dataclass(slots=True)
class WriteResult:
    """Where the files went and how long generation took."""

    paths: dict[str, Path]
    seconds: float
    stats: SimStats


class _Sink:
    """One output file, gzip-compressed or not; compressed output is reproducible."""

    def __init__(self, path: Path, compress: bool) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        # mtime=0 and no file name in the header: same input, same bytes.
        self._gz = (gzip.GzipFile(filename="", mode="wb", fileobj=self._raw,
                                  compresslevel=3, mtime=0) if compress else None)
        self.write = (self._gz or self._raw).write

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        self._raw.close()


def write_files(sim: Simulator, out_dir: str | os.PathLike[str],
                compress: bool = True) -> WriteResult:
    """Write reports, feedback, ground truth and the world description under ``out_dir``.

    Lines are buffered and written in chunks: per-line writes would cost more
    than generating the line.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ".jsonl.gz" if compress else ".jsonl"
    paths = {"reports": out / f"reports{ext}", "feedback": out / f"feedback{ext}",
             "truth": out / "truth.jsonl", "world": out / "world.json"}
    started = time.perf_counter()
    rep_f = _Sink(paths["reports"], compress)
    fb_f = _Sink(paths["feedback"], compress)
    try:
        rep_buf: list[bytes] = []
        fb_buf: list[bytes] = []
        for ev in sim.events():
            if ev.kind is REPORT:
                rep_buf.append(ev.value)
                if len(rep_buf) >= 8192:
                    rep_buf.append(b"")
                    rep_f.write(b"\n".join(rep_buf))
                    rep_buf.clear()
            else:
                fb_buf.append(ev.value)
                if len(fb_buf) >= 1024:
                    fb_buf.append(b"")
                    fb_f.write(b"\n".join(fb_buf))
                    fb_buf.clear()
        for f, buf in ((rep_f, rep_buf), (fb_f, fb_buf)):
            if buf:
                buf.append(b"")
                f.write(b"\n".join(buf))
    finally:
        rep_f.close()
        fb_f.close()
    seconds = time.perf_counter() - started
    write_truth(sim, paths["truth"])
    paths["world"].write_bytes(orjson.dumps(sim.world(), option=orjson.OPT_INDENT_2) + b"\n")
    return WriteResult(paths, seconds, sim.stats)


def write_truth(sim: Simulator, path: str | os.PathLike[str]) -> int:
    """Ground truth as JSONL, one hash per line; returns the number of hashes."""
    n = 0
    with open(path, "wb") as fh:
        for rec in sim.truth():
            fh.write(orjson.dumps(rec) + b"\n")
            n += 1
    return n

