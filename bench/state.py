"""The running job's epoch-close pause at a given state size, end to end.

``bench.memory`` times one shard's snapshot in-process; this measures what a
deployment feels. The job runs as ``rapidloop run`` does by default (recovery
on, 2 s epochs) over a topic pre-loaded with N reports of N distinct files
(``bench.memory.reports``: one organization and one device each, the fleet's
long tail and the cheapest file to snapshot). Once it has read them it holds
about N files, and a trickle of new reports keeps it busy while
``bench.jobwrap`` notes every time its source was not asked for input for
over 25 ms: each such pause is an epoch close, every shard's snapshot built,
handed to Bytewax and written before the input goes on. Reported: the pauses'
median and longest, and the job's own account of the same thing (the share
of the time the epoch closes held its input, from its first snapshot to its
source's next poll, from its progress line; see ``rapidloop.base.snapshotwatch``).

Event times continue from the pre-load, so no file is idle long enough to be
forgotten (``state.idle_ttl_s``) while it is measured.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from rapidloop.base.kafka import quiet
from rapidloop.schemas.wire import encode_report

from .common import (
    PYTHON,
    ROOT,
    Topics,
    create_topics,
    log,
    percentile,
    rapidloop_env,
    stop_process,
)
from .memory import reports

SHARE = re.compile(r"\| snapshots (\d+)% of the time")
EVENTS = re.compile(r"^events ([\d,]+) ")
WINDOW_S = 10.0   # the job's share over the last 10 s (5 epochs of 2 s): a short phase shows it


def produce(brokers: str, topic: str, n: int, start: int = 0,
            rate: float | None = None) -> None:
    """``n`` distinct-file reports from index ``start``; at ``rate`` a second if given."""
    producer = Producer(quiet({"bootstrap.servers": brokers, "linger.ms": 20,
                               "queue.buffering.max.messages": 1_000_000}))
    t0 = time.monotonic()
    sent = 0
    for batch in reports(n, start):
        for _, r in batch:
            producer.produce(topic, encode_report(r), key=r.sha256.encode())
            sent += 1
            if rate and sent % max(1, int(rate / 20)) == 0:
                producer.poll(0)
                time.sleep(max(0.0, t0 + sent / rate - time.monotonic()))
        producer.poll(0)
    producer.flush(30)


def _read(stderr: Path) -> tuple[int, int | None]:
    """Events read so far and the last snapshot share, from the job's progress lines."""
    events, share = 0, None
    for line in stderr.read_text().splitlines():
        m = EVENTS.match(line)
        if m:
            events = int(m.group(1).replace(",", ""))
            s = SHARE.search(line)
            share = int(s.group(1)) if s else share
    return events, share


def measure(brokers: str, work: Path, files: int, rate: float, seconds: float,
            env: dict[str, str] | None = None) -> dict[str, Any]:
    topics = Topics.named("state")
    create_topics(brokers, topics, ROOT)
    log(f"state: pre-loading {files:,} reports of distinct files")
    produce(brokers, topics.reports, files)
    marks = work / "job-state.json"
    err_path = work / "job-state.stderr"
    job_env = rapidloop_env({**topics.env(),
                             "RAPIDLOOP_RECOVERY__DIR": json.dumps(str(work / "recovery-state")),
                             "RAPIDLOOP_STREAM__SNAPSHOT_WARN_WINDOW_S": str(WINDOW_S),
                             **(env or {})})
    with err_path.open("w") as err:
        proc = subprocess.Popen([PYTHON, "-m", "bench.jobwrap", str(marks), "run", "--brokers",
                                 brokers, "--progress", "1"], env=job_env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 600
            while _read(err_path)[0] < files:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"state job did not read its input, see {err_path}")
                time.sleep(0.5)
            log(f"state: the job holds {files:,} files; {rate:,.0f} new reports/s for "
                f"{seconds:.0f} s")
            t0 = time.time()
            produce(brokers, topics.reports, int(rate * seconds), start=files, rate=rate)
            t1 = time.time()
            time.sleep(2.0)
        finally:
            stop_process(proc)
    noted = json.loads(marks.read_text()) if marks.exists() else {}
    pauses = sorted(g * 1e3 for t, g in noted.get("pauses", []) if t0 + 3.0 <= t <= t1)
    _, share = _read(err_path)
    res = {"files": files, "files_at_end": files + int(rate * seconds), "rate": rate,
           "seconds": seconds, "pauses": len(pauses),
           "pause_median_ms": percentile(pauses, 50) if pauses else 0.0,
           "pause_max_ms": pauses[-1] if pauses else 0.0,
           "job_snapshot_share": None if share is None else share / 100.0}
    log(f"state: input held {len(pauses)} times over {seconds:.0f} s at {files:,}–"
        f"{res['files_at_end']:,} files: median {res['pause_median_ms']:,.0f} ms, longest "
        f"{res['pause_max_ms']:,.0f} ms; the job's own snapshot share "
        f"{'n/a' if share is None else f'{share}%'}")
    return res
