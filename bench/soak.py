"""`python -m bench.soak [--minutes M] [--rate R]`: is the job's memory flat under steady load?

A leak, or state that outlives its TTL, shows only over time: the job tails
fresh topics on a private embedded broker while ``rapidloop simulate
--kafka --forever --rate R`` feeds it a never-ending world (new benign
files, campaigns, verdicts, every simulated day), and the job's RSS is
sampled every ``--every`` seconds. Printed: the RSS series, and the growth
over the second half of the run (after the working set is reached), which
should be near zero. Recovery is on, as in production.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from .common import PYTHON, ROOT, Topics, broker, create_topics, log, stop_process
from .run import job_env


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=2000.0, help="reports per second")
    ap.add_argument("--every", type=float, default=60.0, help="seconds between RSS samples")
    args = ap.parse_args(argv)
    with broker() as brokers, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        topics = Topics.named("soak")
        create_topics(brokers, topics, ROOT)
        env = job_env(topics, work, "soak")
        job = subprocess.Popen([PYTHON, "-m", "rapidloop.cli", "run", "--brokers", brokers,
                                "--progress", "0"], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sim = subprocess.Popen([PYTHON, "-m", "rapidloop.cli", "simulate", "--kafka",
                                "--brokers", brokers, "--forever", "--rate", str(args.rate)],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        samples: list[tuple[float, int]] = []
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < args.minutes * 60:
                time.sleep(args.every)
                if job.poll() is not None or sim.poll() is not None:
                    raise RuntimeError("job or simulator exited early")
                samples.append((time.monotonic() - t0, rss_bytes(job.pid)))
                log(f"soak: {samples[-1][0] / 60:5.1f} min  RSS {samples[-1][1] / 2**20:,.0f} MiB")
        finally:
            stop_process(sim)
            stop_process(job)
    if len(samples) >= 4:
        half = samples[len(samples) // 2:]
        (ta, ra), (tb, rb) = half[0], half[-1]
        growth = (rb - ra) / 2**20 / max((tb - ta) / 3600, 1e-9)
        print(f"soak: {args.minutes:g} min at {args.rate:g} reports/s: RSS "
              f"{samples[0][1] / 2**20:,.0f} → {samples[-1][1] / 2**20:,.0f} MiB; second half "
              f"{ra / 2**20:,.0f} → {rb / 2**20:,.0f} MiB ({growth:+,.0f} MiB per hour)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
