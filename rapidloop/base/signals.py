"""Ctrl-C and SIGTERM for commands that write files: stop cleanly, leave nothing half-made.

A capture and a replay both write output that must be whole or absent, so
both turn SIGINT and SIGTERM into :class:`Interrupted` (or, around a Bytewax
flow, which cannot take an exception at any point, into a stop flag first).
It lives here, not in one subcommand, because the capture, the replay runner
(``rapidloop.flows.job``) and the CLI all use it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a capture or a replay; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Signals:
    """What :func:`stop_on_signals` caught: the first signal's number (None: none yet)."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event | None = None) -> Iterator[Signals]:
    """SIGTERM (a supervisor's stop, ``timeout``) and SIGINT raise :class:`Interrupted`,
    so a capture or replay removes what it wrote instead of dying with it half-written.

    With ``stop`` (code that cannot take an exception at any point, such as a
    Bytewax flow), the first signal only sets it, for the code to stop on, and
    a second one raises.
    """
    caught = Signals()

    def handler(signum: int, frame: Any) -> None:
        first = caught.signum is None
        caught.signum = caught.signum or signum
        if stop is None or not first:
            raise Interrupted(caught.signum)
        stop.set()

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:   # not the main thread (tests): leave signals alone
        pass
    try:
        yield caught
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
