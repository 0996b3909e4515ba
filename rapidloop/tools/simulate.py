"""What ``rapidloop simulate`` does with the simulator: a world's parameters, its traffic on Kafka.

Files (``--out DIR``) are for offline replay and tests: the same seed and
settings always give the same bytes (:func:`rapidloop.tools.simulator.write_files`).
Kafka (:func:`produce`) is for live demos: event time starts *now* and runs
``speedup`` times faster than the wall clock, so a simulated day of
campaigns plays out in minutes while the engine's event-time windows (10
min, 1 h, 24 h) keep their meaning.

By default (``simulate.vary``) each seed draws its own world first
(:mod:`rapidloop.tools.worldparams`): orgs, campaigns, hard negatives,
sandbox coverage and noise, rogues, silent sensors, a glitch. Without it
(``--fixed``) the world is the one of the fixed ``[simulate]`` settings,
byte-identical to before (:func:`world_params`).

Lines for the user (progress) go to a ``say`` callback: printing stays in
the CLI.
"""

from __future__ import annotations

import math
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rapidloop.base.config import Config
from rapidloop.base.kafka import client_config, require_topics
from rapidloop.tools.simulator import (
    FEEDBACK,
    SimParams,
    SimulationError,
    Simulator,
    format_ts,
    write_truth,
)
from rapidloop.tools.worldparams import VaryRanges, draw_world

DEFAULT_RATE = 1000.0       # reports per wall-clock second on Kafka
LINGER_MS = 20              # producer batching: throughput over a few ms of latency
_POLL_EVERY = 1000          # events produced between serving delivery reports (and progress)
_MIN_WAIT_S = 0.002         # pacing: shorter waits are not worth a poll
_QUEUE_FULL_WAIT_S = 0.1    # how long to let librdkafka drain a full local queue
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|d|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ProduceError(RuntimeError):
    """Producing to Kafka failed for good (one line: where, and the broker's reason)."""


def parse_duration(text: str) -> float:
    """``24h``, ``90m``, ``3600s``, ``1h30m``, ``2d`` or bare seconds, as seconds (ValueError
    saying what is wrong with ``text`` otherwise)."""
    s = text.strip().lower()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"{text!r} is not a finite number of seconds")
        return value
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or not s:
        raise ValueError(f"cannot read {text!r} (use e.g. 24h, 90m, 3600s)")
    return total


def setting(cfg: Config, key: str, default: Any) -> Any:
    """``cfg.simulate.<key>`` if that setting exists (it may not be in defaults.toml yet)."""
    return getattr(cfg.simulate, key, default)


def world_params(cfg: Config, *, seed: int, start: float | None, forever: bool,
                 given: dict[str, Any], vary: bool | None) -> SimParams:
    """The world to simulate: ``[simulate]`` with the ``given`` overrides (None: not given).

    ``vary`` (None: ``simulate.vary``) draws this seed's own world; what was
    given wins over the drawn values. ``forever``: epoch after epoch, not one.
    SimulationError for anything the simulator cannot work with, a setting of
    the wrong type included.
    """
    vary = setting(cfg, "vary", False) if vary is None else vary
    try:
        params = SimParams.from_config(
            cfg.simulate, seed=seed, start=start, epochs=None if forever else 1, **given)
        if vary:   # command-line flags win over the drawn values
            params = draw_world(params, VaryRanges.from_config(cfg.simulate),
                                keep={k for k, v in given.items() if v is not None})
        return params
    except TypeError as exc:  # a [simulate] value of a type the simulator cannot use
        raise SimulationError(f"bad [simulate] setting: {exc}") from None


class _Delivery:
    """Counts what the broker acknowledged, and remembers the first failure's reason."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.first_error: str | None = None

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
            return
        self.errors += 1
        if self.first_error is None:
            self.first_error = err.str() if hasattr(err, "str") else str(err)


@dataclass
class Produced:
    """What one run on Kafka did: counts by kind, where, and what went wrong."""

    sim: Simulator
    topics: dict[str, str]                 # event kind -> topic
    counts: dict[str, int] = field(default_factory=dict)
    delivery_errors: int = 0
    first_error: str | None = None
    undelivered: int = 0                   # still queued when the flush gave up
    interrupted: bool = False
    truth: int | None = None               # hashes whose truth was written, if asked
    truth_error: str | None = None         # why it could not be
    seconds: float = 0.0

    @property
    def errors(self) -> int:
        return self.delivery_errors + self.undelivered


def speedup_for(params: SimParams, rate: float, speedup: float | None) -> float | None:
    """Event time per wall-clock time: ``speedup`` if given, else what makes one simulated
    duration (``reports`` reports) take reports / rate seconds; None (unpaced) at rate 0."""
    return speedup or (params.duration_s * rate / params.reports if rate > 0 else None)


def produce(cfg: Config, params: SimParams, brokers: str, *, speedup: float | None,
            progress: float, truth: str | None, say: Callable[[str], None]) -> Produced:
    """The simulation's events to the reports and feedback topics, paced to event time.

    The topics must exist (BrokerUnavailable otherwise, within
    ``kafka.connect_timeout_s``). ``progress``: a line to ``say`` every that
    many seconds (0: none). Ctrl-C and SIGTERM end it as an interruption
    (reported in the result, the producer still flushed); a message the broker
    will never take is a ProduceError. ``truth``: at the end, write the ground
    truth of what was simulated to that file (JSONL).
    """
    from confluent_kafka import KafkaException, Producer

    topics = {"report": cfg.kafka.reports_topic, FEEDBACK: cfg.kafka.feedback_topic}
    require_topics(cfg, list(topics.values()), brokers)
    producer = Producer(client_config(cfg, brokers, **{"linger.ms": LINGER_MS}))
    delivery = _Delivery()
    done = Produced(Simulator(params), topics, {"report": 0, FEEDBACK: 0})
    counts = done.counts
    wall0 = time.monotonic()
    last_progress = wall0
    previous = _on_sigterm()
    try:
        produce_one = producer.produce
        poll = producer.poll
        for i, ev in enumerate(done.sim.events()):
            if speedup is not None:
                ahead = wall0 + (ev.t - params.start) / speedup - time.monotonic()
                if ahead > _MIN_WAIT_S:
                    poll(ahead)  # serve delivery reports while we wait
            while True:
                try:
                    produce_one(topics[ev.kind], ev.value, ev.key, on_delivery=delivery)
                    break
                except BufferError:  # local queue full: let librdkafka drain it
                    poll(_QUEUE_FULL_WAIT_S)
            counts[ev.kind] += 1
            if i % _POLL_EVERY == 0:
                poll(0)
                if progress and time.monotonic() - last_progress >= progress:
                    last_progress = time.monotonic()
                    say(f"{counts['report']} reports, {counts[FEEDBACK]} feedback, "
                        f"event time {format_ts(ev.t)}, {delivery.errors} delivery errors")
    except KeyboardInterrupt:
        done.interrupted = True
    except KafkaException as exc:  # e.g. a message the broker will never take
        failure = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        raise ProduceError(f"producing to {brokers} failed: {failure}") from None
    finally:
        _restore_sigterm(previous)
        done.undelivered = producer.flush(cfg.kafka.connect_timeout_s)
    done.delivery_errors, done.first_error = delivery.errors, delivery.first_error
    if truth:
        try:
            done.truth = write_truth(done.sim, truth)
        except OSError as exc:
            done.truth_error = str(exc.strerror or exc)
    done.seconds = time.monotonic() - wall0
    return done


def _on_sigterm() -> dict[int, Any]:
    """Treat SIGTERM (and SIGINT, even if a launching shell ignored it) like Ctrl-C, so a
    supervisor's stop still flushes the producer and prints the summary."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt
    previous: dict[int, Any] = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, handler)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (tests): leave signals alone
        pass
    return previous


def _restore_sigterm(previous: dict[int, Any]) -> None:
    for signum, old in previous.items():
        signal.signal(signum, old)
