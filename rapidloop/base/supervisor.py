"""A local cluster's supervisor: N child processes started, relayed, stopped together.

``rapidloop run --processes N`` runs one Bytewax cluster as N processes on
loopback; this module is the part that is about processes, not about the
flow: start the children (each dies with the supervisor), relay their
output with a ``[pK]`` prefix, forward Ctrl-C and SIGTERM to every one (a
Bytewax cluster stops only when *every* process is interrupted), stop the
others when one dies, and add up the counters each child reports in its last
line (:data:`STATS_PREFIX`, written by the child with :func:`stats_dict`).

Why here and not in ``flows/``: nothing in it wires Bytewax. The children
build and run the flow themselves (``rapidloop.flows.job``); the supervisor
only needs their command lines, which the CLI writes since they are its own
options, and the stats protocol, both ends of which are in this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from types import FrameType
from typing import IO, Any

from rapidloop.base import jobstats

STATS_PREFIX = "rapidloop-cluster-stats "
"""A child of ``--processes`` ends with this line on stderr (JSON): the supervisor adds
up the children's counters for the combined summary instead of echoing it."""

_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------ stats protocol

def stats_dict(stats: jobstats.JobStats, elapsed: float, lost: int, interrupted: bool,
               parts: list[str]) -> dict[str, Any]:
    """One process's counters as JSON, for the supervisor to add up (each has its own).

    ``parts``: the Kafka partitions (``topic#n``) its workers read.
    """
    return {"events_in": dict(stats.events_in), "dead_letters": dict(stats.dead_letters),
            "duplicates": stats.duplicates,
            "decisions": [[a, s, n] for (a, s), n in stats.decisions.items()],
            "tracked_files": dict(stats.tracked_files), "labels_seen": stats.labels_seen,
            "shard_events": dict(stats.shard_events),
            "elapsed": elapsed, "lost": lost, "interrupted": interrupted,
            "parts": sorted(parts), "cpu_s": _cpu_s()}


def _cpu_s() -> float:
    """CPU seconds this process used so far: the work it got, whatever it was."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return float(r.ru_utime + r.ru_stime)


def spread_line(index: int, count: int, d: dict[str, Any]) -> str:
    """How much of the work one process got: its partitions, messages, shards (with their
    files and the events they correlated), decisions."""
    n = sum(d["events_in"].values())
    shards = sorted(d["tracked_files"])
    files = sum(d["tracked_files"].values())
    events = sum(d.get("shard_events", {}).values())
    decisions = sum(x[2] for x in d["decisions"])
    parts = ["every input partition (event-time merge)" if p == "merged" else p
             for p in d["parts"]]
    return (f"process {index} of {count}: read {', '.join(parts) or 'no partition'} "
            f"({n:,} messages); shards {', '.join(shards) or 'none'} ({files:,} files, "
            f"{events:,} events); "
            f"decisions {decisions:,}; cpu {d.get('cpu_s', 0.0):.1f}s")


# ------------------------------------------------------------------ children

def _die_with_parent() -> None:
    """In a child, before exec: SIGKILL when the supervisor dies, however it dies (Linux).

    Otherwise a ``kill -9`` of the supervisor would leave N processes running
    a cluster nobody watches, still holding the input.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def ports(count: int, base: int) -> list[int]:
    """``count`` loopback ports: base, base+1, ... or, with base 0, free ones."""
    if base:
        return [base + i for i in range(count)]
    socks = []
    try:
        for _ in range(count):   # held together so the kernel cannot hand out one twice
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


class Child:
    """One child process and the threads relaying its output with a ``[pK]`` prefix."""

    def __init__(self, index: int, argv: list[str], env: dict[str, str],
                 out_lock: threading.Lock) -> None:
        self.index = index
        self.stats: dict[str, Any] | None = None
        self.lock = out_lock
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.threads = [
            threading.Thread(target=self._relay, args=(self.proc.stdout, sys.stdout),
                             daemon=True),
            threading.Thread(target=self._relay, args=(self.proc.stderr, sys.stderr),
                             daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _relay(self, pipe: IO[bytes], out: IO[str]) -> None:
        prefix = f"[p{self.index}] "
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(STATS_PREFIX):
                with contextlib.suppress(ValueError):
                    self.stats = json.loads(line[len(STATS_PREFIX):])
                continue
            with self.lock:
                print(prefix + line, file=out, flush=True)
        pipe.close()

    def signal(self, sig: int) -> None:
        """Signal the child if it still runs (it may have exited since the last poll)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def join(self) -> None:
        """Wait for the child and for its last lines (the stats line comes last)."""
        self.proc.wait()
        for t in self.threads:
            t.join(5)


def combined(children: list[Child]) -> tuple[jobstats.JobStats, float]:
    """The children's counters added up; the cluster ran as long as its slowest process."""
    total = jobstats.JobStats()
    elapsed = 0.0
    for c in children:
        d = c.stats
        if d is None:
            continue
        total.events_in.update(d["events_in"])
        total.dead_letters.update(d["dead_letters"])
        total.duplicates += d["duplicates"]
        total.decisions.update(Counter({(a, s): n for a, s, n in d["decisions"]}))
        total.tracked_files.update(d["tracked_files"])
        total.labels_seen = max(total.labels_seen, d["labels_seen"])
        elapsed = max(elapsed, d["elapsed"])
    return total, elapsed


@dataclass
class Supervised:
    """How a supervised cluster ended."""

    children: list[Child]
    interrupted: bool          # Ctrl-C or SIGTERM reached the supervisor
    failed_first: int | None   # the first child seen failing, if one did

    def report(self) -> tuple[list[str], int]:
        """The closing lines (how work spread, the combined summary, which process failed)
        and the exit code: 130 if interrupted, else the first failed child's (or 1)."""
        from rapidloop.base.progress import summary_line

        n = len(self.children)
        lines = [spread_line(c.index, n, c.stats) for c in self.children
                 if c.stats is not None]
        codes = [c.proc.returncode for c in self.children]
        if all(c.stats is not None for c in self.children):
            total, elapsed = combined(self.children)
            tail = " (interrupted)" if self.interrupted else ""
            lines.append(f"{summary_line(total, elapsed)}; {n} processes{tail}")
        if self.interrupted:
            return lines, 130
        failed = self.failed_first
        if failed is None:
            failed = next((i for i, rc in enumerate(codes) if rc != 0), None)
        if failed is None:
            return lines, 0
        rc = codes[failed]
        lines.append(f"process {failed} failed (exit {rc}); exit codes {codes}")
        return lines, rc if rc > 0 else 1


def supervise(argvs: list[list[str]], grace: float) -> Supervised:
    """Run one child per command line until every one has ended.

    Ctrl-C / SIGTERM go to every child (SIGINT); a child that dies without
    its stats line stops the others (SIGTERM). Either way, children still
    running ``grace`` seconds later are killed. No child outlives this call.
    """
    interrupted: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        interrupted.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    out_lock = threading.Lock()
    children: list[Child] = []
    failed_first: int | None = None
    try:
        for i, argv in enumerate(argvs):
            children.append(Child(i, argv, dict(os.environ), out_lock))
        kill_at: float | None = None
        while any(c.proc.poll() is None for c in children):
            now = time.monotonic()
            if failed_first is None:
                failed_first = next((c.index for c in children
                                     if c.proc.poll() not in (None, 0)), None)
                if failed_first is not None and not interrupted:
                    failed = children[failed_first]
                    failed.join()
                    if failed.stats is None:
                        # It died: the cluster cannot go on without it (and a process still
                        # connecting to it would wait for ever), so stop the others now. (A
                        # child that ran its flow to the end but lost deliveries has stats:
                        # the others are finishing too.)
                        for c in children:
                            c.signal(signal.SIGTERM)
                        kill_at = now + grace
            if interrupted and kill_at is None:
                # Every process must be interrupted for a Bytewax cluster to stop.
                for c in children:
                    c.signal(signal.SIGINT)
                kill_at = now + grace
            if kill_at is not None and now > kill_at:
                for c in children:
                    c.signal(signal.SIGKILL)
                kill_at = float("inf")
            time.sleep(0.05)
    finally:
        for c in children:
            if c.proc.poll() is None:   # an unexpected error here: leave no orphan
                c.signal(signal.SIGKILL)
            c.join()
        for s, h in previous.items():
            signal.signal(s, h)
    return Supervised(children, bool(interrupted), failed_first)
