"""`python -m bench.run`: run every benchmark, print a table, save out/bench/results.json.

Phases (all on a private embedded broker on a free port, data in a temp dir):

1. throughput: topics pre-loaded by ``rapidloop simulate --rate 0``; then,
   alternating so machine noise hits all alike, ``rapidloop run
   --exit-at-end`` (events/s from first consume to the end of the work: the
   last batch through the decide step, or the last decision's Kafka timestamp
   if later), the same job as a 2-process Bytewax cluster (two ``rapidloop
   run -i K -a A -a B`` processes, measured the same way from the earlier
   first consume) and the baseline consumer (bench.baseline) over the same
   topics. Medians of the runs, and the ratio job/baseline per pair.
2. latency: the job tailing fresh topics while ``rapidloop simulate --rate R``
   produces at a fixed fraction of the measured maximum; each decision is
   matched to the report or verdict that triggered it (sha256 and event time)
   and the latency is decision produce time minus input produce time, both
   Kafka message timestamps. Also the times the job's source was held (not
   asked for input for over 25 ms, ``bench.jobwrap``): Bytewax holds the
   input at every epoch close until every snapshot is written, which is what
   sets the tail.
   Then the epoch-close pause at a larger state (bench.state): the job holding
   200k distinct files (50k quick), new reports trickling in.
3. replay: ``rapidloop replay`` over a simulated day of 200k reports with 250
   organizations and ~7k verdicts (``bench/replay_day.toml``), beside the least
   any replay must do with the same files (gunzip, orjson, a per-hash dict).
4. memory: peak RSS of the job runs; bytes per tracked file, and what one
   shard's epoch-close snapshot costs at that many files (bench.memory).
5. stages: where the time goes (bench.stages, in a process of its own): the
   job's steps run in-process, single-threaded, without Bytewax, over a
   simulated file world; each stage's µs per event (read, parse, shard,
   correlate, and inside the decider score, learn, policy and the rest;
   encode; freeing each batch) from timing wrappers patched onto the
   operators' methods, their own calibrated cost subtracted, next to a plain
   pass over the same data with nothing wrapped. Printed as a second table
   after the main one.

``BENCH_QUICK=1`` shrinks every size for a smoke run of a minute or two.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from rapidloop.base.config import load_config
from rapidloop.schemas.timefmt import parse_ts
from rapidloop.tools.evalsuite import commit, machine

from . import state
from .common import (
    PYTHON,
    RAPIDLOOP,
    ROOT,
    Topics,
    broker,
    create_topics,
    free_port,
    fresh_dir,
    log,
    median,
    parse_summary,
    percentile,
    rapidloop_env,
    read_topic,
    run_cli,
    stop_process,
)
from .jobwrap import PAUSE_S
from .stages import stage_table

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SIZES: dict[str, Any] = {
    "throughput_reports": 50_000 if QUICK else 200_000,
    "throughput_runs": 3,   # quick too: one run of the cluster varied from x1.26 to x1.69
    "latency_fraction": 0.5,
    "latency_seconds": 15 if QUICK else 25,
    "latency_runs": 1 if QUICK else 3,
    "latency_warmup_s": 3 if QUICK else 5,
    "replay_reports": 200_000,   # quick too: the day issue 15's replay target names
    "replay_runs": 1 if QUICK else 3,
    "memory_files": 100_000 if QUICK else 1_000_000,
    "decider_files": 5_000 if QUICK else 20_000,
    "state_files": 50_000 if QUICK else 200_000,
    "state_rate": 1000,
    "state_seconds": 20 if QUICK else 30,
    "stages_reports": 20_000 if QUICK else 200_000,
    "stages_runs": 1 if QUICK else 3,
    "seed": 7,
}
TARGETS = {"throughput_ratio": 0.5, "cluster_speedup": 1.6, "latency_p99_ms": 250.0,
           "replay_ratio": 0.25, "bytes_per_file": 1024.0}
CLUSTER_PROCESSES = 2
PARTITIONS = 4   # per input topic: a multiple of CLUSTER_PROCESSES (spread evenly in arrival order)
OUT = ROOT / "out" / "bench" / "results.json"
REPLAY_DAY = Path(__file__).with_name("replay_day.toml")   # the replay phase's world


def job_env(topics: Topics, work: Path, tag: str) -> dict[str, str]:
    """Env for one job run: its topics and a fresh recovery dir (no resume from a past run)."""
    rec = work / f"recovery-{tag}"
    return rapidloop_env({**topics.env(), "RAPIDLOOP_RECOVERY__DIR": json.dumps(str(rec))})


def run_job(brokers: str, topics: Topics, work: Path, tag: str,
            settings: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``rapidloop run --exit-at-end`` over pre-loaded topics; its figures.

    ``settings``: RAPIDLOOP_* overrides for this run only (e.g. the input order).
    """
    marks = work / f"job-{tag}.json"
    proc = run_cli([PYTHON, "-m", "bench.jobwrap", str(marks), "run", "--brokers", brokers,
                    "--exit-at-end", "--progress", "0"],
                   {**job_env(topics, work, tag), **(settings or {})}, ROOT)
    summary = parse_summary(proc.stderr)
    m = json.loads(marks.read_text())
    decisions = read_topic(brokers, topics.decisions)
    last = max((r.ts for r in decisions), default=None)
    res: dict[str, Any] = {"summary": summary, "maxrss_mib": m["maxrss_kib"] / 1024,
                           "cpu_s": m.get("cpu_s"), "busy": m.get("busy"),
                           "decisions_read": len(decisions)}
    if m["first_consume"] is not None and last is not None:
        end = max(last, m.get("last_decide") or last)
        span = end - m["first_consume"]
        res.update(span_s=span, rate=summary["messages"] / span, method="first consume → "
                   "end of work (last batch decided, or last decision if later)")
    else:  # wrapper could not hook the source: the job's own figure, start-up included
        res.update(span_s=summary["elapsed_s"], rate=summary["rate"], method="job summary")
    return res


def run_cluster_job(brokers: str, topics: Topics, work: Path, tag: str,
                    processes: int = CLUSTER_PROCESSES) -> dict[str, Any]:
    """The job as a cluster of ``processes`` processes over pre-loaded topics; its figures.

    Each process is a ``bench.jobwrap`` of ``rapidloop run -i K -a ...`` (what
    ``run --processes N`` starts, minus the supervisor), so the start of
    processing is seen exactly as for one process: the span runs from the
    earliest first consume of any process to the end of the work (the last
    batch decided in any process, or the last decision's timestamp if later).
    Each process keeps its own recovery directory with its share of
    ``processes`` recovery partitions (as in a multi-machine deployment).
    """
    assert PARTITIONS % processes == 0, "input partitions must spread evenly over processes"
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(processes)]
    a_args = [x for a in addresses for x in ("-a", a)]
    env = job_env(topics, work, tag)
    env["RAPIDLOOP_RECOVERY__PARTITIONS"] = str(processes)
    procs, errs, marks = [], [], []
    try:
        for k in range(processes):
            marks.append(work / f"job-{tag}-p{k}.json")
            errs.append((work / f"job-{tag}-p{k}.stderr").open("w+"))
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "bench.jobwrap", str(marks[k]), "run", "--brokers", brokers,
                 "--exit-at-end", "--progress", "0", "-i", str(k), *a_args,
                 "--recovery-dir", str(work / f"recovery-{tag}-p{k}")],
                env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=errs[k]))
        for proc in procs:
            proc.wait(timeout=900)
        texts = []
        for f in errs:
            f.seek(0)
            texts.append(f.read())
    finally:
        for proc in procs:
            stop_process(proc)
        for f in errs:
            f.close()
    for k, proc in enumerate(procs):
        if proc.returncode != 0:
            raise RuntimeError(f"cluster process {k} exited {proc.returncode}: "
                               f"{texts[k].strip()[-2000:]}")
    summaries = [parse_summary(t) for t in texts]
    spread = [parse_spread(t) for t in texts]
    ms = [json.loads(m.read_text()) for m in marks]
    messages = sum(int(s["messages"]) for s in summaries)
    elapsed = max(s["elapsed_s"] for s in summaries)
    decisions = read_topic(brokers, topics.decisions)
    last = max((r.ts for r in decisions), default=None)
    firsts = [m["first_consume"] for m in ms if m["first_consume"] is not None]
    res: dict[str, Any] = {
        "processes": processes, "messages": messages, "summary_rate": messages / elapsed,
        "maxrss_mib": [m["maxrss_kib"] / 1024 for m in ms],
        "cpu_s": [m.get("cpu_s") for m in ms], "busy": [m.get("busy") for m in ms],
        "decisions_read": len(decisions),
        "per_process": spread}
    if firsts and last is not None:
        end = max([last, *(m["last_decide"] for m in ms if m.get("last_decide"))])
        span = end - min(firsts)
        res.update(span_s=span, rate=messages / span,
                   method="earliest first consume → end of work (last batch decided in "
                          "any process, or last decision if later)")
    else:
        res.update(span_s=elapsed, rate=messages / elapsed, method="processes' summaries")
    return res


def parse_spread(stderr: str) -> dict[str, Any]:
    """A cluster process's own account: partitions read, messages, shards (files, events
    correlated), decisions, CPU."""
    m = re.search(r"process (\d+) of \d+: read (.*) \(([\d,]+) messages\); shards (.*) "
                  r"\(([\d,]+) files, ([\d,]+) events\); decisions ([\d,]+); cpu ([\d.]+)s",
                  stderr)
    if not m:
        return {}
    return {"process": int(m.group(1)), "partitions": m.group(2).split(", "),
            "messages": int(m.group(3).replace(",", "")), "shards": m.group(4).split(", "),
            "files": int(m.group(5).replace(",", "")),
            "events": int(m.group(6).replace(",", "")),
            "decisions": int(m.group(7).replace(",", "")), "cpu_s": float(m.group(8))}


def run_baseline(brokers: str, topics: Topics) -> dict[str, Any]:
    proc = run_cli([PYTHON, "-m", "bench.baseline", "--brokers", brokers, "--topics",
                    f"{topics.reports},{topics.feedback}"], rapidloop_env(), ROOT, timeout=600)
    return dict(json.loads(proc.stdout))


def simulate_kafka(brokers: str, topics: Topics, reports: int, rate: float) -> str:
    proc = run_cli([RAPIDLOOP, "simulate", "--kafka", "--brokers", brokers, "--rate", str(rate),
                    "--reports", str(reports), "--seed", str(SIZES["seed"]), "--progress", "0",
                    "--fixed"],   # one world across commits: figures stay comparable
                   rapidloop_env(topics.env()), ROOT, timeout=1800)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[-1] if lines else "simulate: done"


def phase_throughput(brokers: str, work: Path) -> dict[str, Any]:
    topics = Topics.named("tput")
    create_topics(brokers, topics, ROOT, PARTITIONS)
    log(f"throughput: pre-loading {SIZES['throughput_reports']:,} reports")
    log(simulate_kafka(brokers, topics, SIZES["throughput_reports"], 0))
    jobs, clusters, bases, ratios, arrivals = [], [], [], [], []
    for i in range(SIZES["throughput_runs"]):
        out = topics.with_outputs(f"tput{i}")
        create_topics(brokers, out, ROOT)
        job = run_job(brokers, out, work, f"tput{i}")
        out_a = topics.with_outputs(f"tput{i}a")
        create_topics(brokers, out_a, ROOT)
        arrival = run_job(brokers, out_a, work, f"tput{i}a",
                          {"RAPIDLOOP_STREAM__INPUT_ORDER": "arrival"})
        arrivals.append(arrival)
        out2 = topics.with_outputs(f"tput{i}c2")
        create_topics(brokers, out2, ROOT)
        cluster = run_cluster_job(brokers, out2, work, f"tput{i}c2")
        base = run_baseline(brokers, topics)
        jobs.append(job)
        clusters.append(cluster)
        bases.append(base)
        ratios.append(job["rate"] / base["rate"])
        log(f"throughput run {i + 1}: job {job['rate']:,.0f}/s ({job['method']}; own summary "
            f"{job['summary']['rate']:,.0f}/s), 2-process cluster {cluster['rate']:,.0f}/s "
            f"(messages read per process {[p.get('messages') for p in cluster['per_process']]}, "
            f"events correlated {[p.get('events') for p in cluster['per_process']]}, "
            f"cpu {[p.get('cpu_s') for p in cluster['per_process']]} s), baseline "
            f"{base['rate']:,.0f}/s, ratio {ratios[-1]:.2f}, peak RSS {job['maxrss_mib']:.0f} MiB; "
            f"in arrival order {arrival['rate']:,.0f}/s")
    cluster_rate = median([c["rate"] for c in clusters])
    why = [scaling(j, c) for j, c in zip(jobs, clusters, strict=True)]
    if all(why):
        log("2-process cluster, why not x2 (medians): the workers were busy "
            + " / ".join(f"{median([w['busy_share'][k] for w in why]):.0%}"
                         for k in range(CLUSTER_PROCESSES))
            + " of the time they had work, and did "
            + f"x{median([w['work_cpu_vs_one_process'] for w in why]):.2f} the CPU of "
            + "one process's worker (every replica learns every label; pieces cross)")
    return {
        "messages": jobs[0]["summary"]["messages"],
        "job_rate_median": median([j["rate"] for j in jobs]),
        "job_summary_rate_median": median([j["summary"]["rate"] for j in jobs]),
        "baseline_rate_median": median([b["rate"] for b in bases]),
        "ratio_median": median(ratios),
        "arrival_order_rate_median": median([a["rate"] for a in arrivals]),
        "event_time_vs_arrival_median": median([j["rate"] / a["rate"]
                                                for j, a in zip(jobs, arrivals, strict=True)]),
        "job_peak_rss_mib_median": median([j["maxrss_mib"] for j in jobs]),
        "runs": [{"job": j, "cluster": c, "baseline": b}
                 for j, c, b in zip(jobs, clusters, bases, strict=True)],
        "two_process_cluster": {
            "rate_median": cluster_rate,
            "summary_rate_median": median([c["summary_rate"] for c in clusters]),
            "speedup_median": median([c["rate"] / j["rate"]
                                      for c, j in zip(clusters, jobs, strict=True)]),
            "messages_share_p0_median": median([
                c["per_process"][0].get("messages", 0) / max(c["messages"], 1)
                for c in clusters]),
            "events_share_per_process_median": [median([_events_share(c, k) for c in clusters])
                                                for k in range(CLUSTER_PROCESSES)],
            "cpu_s_per_process_median": [median([c["per_process"][k].get("cpu_s", 0.0)
                                                 for c in clusters]) for k in range(2)],
            "per_process_last_run": clusters[-1]["per_process"],
            "busy_share_median": ([median([w["busy_share"][k] for w in why])
                                   for k in range(CLUSTER_PROCESSES)] if all(why) else None),
            "work_cpu_vs_one_process_median": (
                median([w["work_cpu_vs_one_process"] for w in why]) if all(why) else None),
        },
    }


def _events_share(cluster: dict[str, Any], k: int) -> float:
    """Process k's share of the events the cluster correlated: its shards' load."""
    events = [p.get("events", 0) for p in cluster["per_process"]]
    return events[k] / max(sum(events), 1)


def scaling(job: dict[str, Any], cluster: dict[str, Any]) -> dict[str, Any] | None:
    """Why a cluster run is not ``processes`` times one process: how busy each worker was
    while it had work (its thread's CPU over the wall clock from its first decided
    batch to its last), and the CPU all the workers used against the one process's.
    Speed-up ≈ processes × mean busy share ÷ work CPU ratio. None if not recorded."""
    one, many = job.get("busy"), cluster.get("busy") or []
    if not one or not many or not all(many):
        return None
    return {"busy_share": [b["cpu_s"] / b["wall_s"] if b["wall_s"] > 0 else 0.0 for b in many],
            "work_cpu_vs_one_process": sum(b["cpu_s"] for b in many) / one["cpu_s"]}


def _index_inputs(records: list[Any], into: dict[tuple[str, float], float]) -> None:
    """Fill ``into``: (sha256, event time) → earliest produce time of such an input.

    Decisions carry the triggering input's sha256 and event time, not its id,
    so that pair is the join key (duplicates share it; the first produce wins).
    """
    for r in records:
        try:
            v = orjson.loads(r.value)
            key = (str(v["sha256"]).lower(), round(parse_ts(v["ts"]), 3))
        except Exception:  # malformed on purpose (simulated noise): never decided on
            continue
        if key not in into or r.ts < into[key]:
            into[key] = r.ts


def phase_latency(brokers: str, work: Path, max_rate: float) -> dict[str, Any]:
    """Several paced runs on fresh topics; medians of their p50/p99/max."""
    rate = max(100, int(max_rate * SIZES["latency_fraction"]))
    runs = [latency_once(brokers, work, rate, i) for i in range(SIZES["latency_runs"])]
    return {"target_rate": rate, "fraction_of_max": SIZES["latency_fraction"],
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
            "max_ms": median([r["max_ms"] for r in runs]),
            "input_pause_max_ms": median([r["input_pause_max_ms"] for r in runs]),
            "input_pause_median_ms": median([r["input_pause_median_ms"] for r in runs]),
            "runs": runs}


def latency_once(brokers: str, work: Path, rate: int, i: int) -> dict[str, Any]:
    """One paced run: the job tails fresh topics while the simulator produces at ``rate``."""
    n = int(rate * SIZES["latency_seconds"])
    topics = Topics.named(f"lat{i}")
    create_topics(brokers, topics, ROOT)
    marks = work / f"job-lat{i}.json"
    ready = marks.with_suffix(".ready")
    err = (work / f"job-lat{i}.stderr").open("w")
    proc = subprocess.Popen([PYTHON, "-m", "bench.jobwrap", str(marks), "run", "--brokers",
                             brokers, "--progress", "0"], env=job_env(topics, work, f"lat{i}"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"latency job did not start (rc {proc.poll()}), see {err.name}")
            time.sleep(0.2)
        time.sleep(1.0)
        log(f"latency run {i + 1}: producing {n:,} reports at {rate:,}/s "
            f"({SIZES['latency_fraction']:.0%} of the measured maximum) to the running job")
        t_start = time.time()
        log(simulate_kafka(brokers, topics, n, rate))
        t_end = time.time()
        time.sleep(8.0)  # let the job drain and its sinks flush (a few epochs)
    finally:
        stop_process(proc)
        err.close()
    inputs: dict[tuple[str, float], float] = {}
    reports = read_topic(brokers, topics.reports)
    _index_inputs(reports, inputs)
    _index_inputs(read_topic(brokers, topics.feedback), inputs)
    decisions = read_topic(brokers, topics.decisions)
    lat: list[float] = []
    unmatched = 0
    cutoff = t_start + SIZES["latency_warmup_s"]
    for d in decisions:
        v = orjson.loads(d.value)
        produced = inputs.get((v["sha256"], round(parse_ts(v["event_ts"]), 3)))
        if produced is None:
            unmatched += 1
        elif produced >= cutoff:
            lat.append((d.ts - produced) * 1e3)
    lat.sort()
    span = (max(r.ts for r in reports) - min(r.ts for r in reports)) if reports else 0.0
    # Where the tail comes from: times the job's source was not asked for input for a
    # while (bench.jobwrap): at every epoch close Bytewax holds the input until every
    # snapshot is written, and what arrives meanwhile waits.
    noted = json.loads(marks.read_text()) if marks.exists() else {}
    pauses = sorted(g * 1e3 for t, g in noted.get("pauses", []) if cutoff <= t <= t_end)
    res = {"target_rate": rate, "achieved_produce_rate": len(reports) / max(span, 1e-9),
           "reports": len(reports), "decisions": len(decisions), "measured": len(lat),
           "unmatched": unmatched, "warmup_s": SIZES["latency_warmup_s"],
           "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
           "max_ms": lat[-1] if lat else float("nan"),
           "input_pauses": len(pauses),
           "input_pause_median_ms": percentile(pauses, 50) if pauses else 0.0,
           "input_pause_max_ms": pauses[-1] if pauses else 0.0}
    log(f"latency run {i + 1}: p50 {res['p50_ms']:,.0f} ms, p99 {res['p99_ms']:,.0f} ms, "
        f"max {res['max_ms']:,.0f} ms over {len(lat):,} decisions; input held "
        f"{len(pauses)} times over {PAUSE_S * 1e3:.0f} ms (median "
        f"{res['input_pause_median_ms']:,.0f} ms, longest {res['input_pause_max_ms']:,.0f} ms)")
    return res


def phase_replay(work: Path) -> dict[str, Any]:
    n = SIZES["replay_reports"]
    world = work / "world"
    log(f"replay: simulating a day of {n:,} reports to files ({REPLAY_DAY.name})")
    sim = run_cli([RAPIDLOOP, "simulate", "--out", str(world), "--reports", str(n), "--seed",
                   str(SIZES["seed"]), "--config", str(REPLAY_DAY)], rapidloop_env(), ROOT,
                  timeout=1800)
    params = json.loads((world / "world.json").read_text())["params"]
    with gzip.open(world / "feedback.jsonl.gz", "rb") as f:
        verdicts = sum(1 for _ in f)
    log(f"replay world: {params['orgs']} organizations, {verdicts:,} verdicts, "
        f"{params['hard_negative_reports']:.0%} of reports about hard negatives "
        f"({(sim.stdout + sim.stderr).strip().splitlines()[-1][:120]}...)")
    runs = []
    for i in range(SIZES["replay_runs"]):
        marks = work / f"replay-{i}.json"
        proc = run_cli([PYTHON, "-m", "bench.jobwrap", str(marks), "replay", "--reports",
                        str(world / "reports.jsonl.gz"), "--feedback",
                        str(world / "feedback.jsonl.gz"), "--output",
                        str(work / f"replay-{i}.decisions.jsonl")], rapidloop_env(), ROOT,
                       timeout=1800)
        s = parse_summary(proc.stderr)
        s["maxrss_mib"] = json.loads(marks.read_text())["maxrss_kib"] / 1024
        runs.append(s)
        log(f"replay run {i + 1}: {s['messages']:,} messages in {s['elapsed_s']:.1f}s "
            f"({s['rate']:,.0f}/s), peak RSS {s['maxrss_mib']:.0f} MiB")
    plain = [plain_file_loop([world / "reports.jsonl.gz", world / "feedback.jsonl.gz"])
             for _ in range(SIZES["replay_runs"])]
    ratio = median([r["rate"] for r in runs]) / median([p["rate"] for p in plain])
    log(f"replay baseline (gunzip + orjson + per-hash dict, same files): "
        f"{median([p['rate'] for p in plain]):,.0f}/s; replay / baseline {ratio:.2f}")
    return {"reports": n, "messages": runs[0]["messages"],
            "world": {"config": REPLAY_DAY.name, "seed": SIZES["seed"], "orgs": params["orgs"],
                      "verdicts": verdicts,
                      "hard_negative_reports": params["hard_negative_reports"]},
            "plain_loop_rate_median": median([p["rate"] for p in plain]),
            "ratio_to_plain_loop": ratio,
            "rate_median": median([r["rate"] for r in runs]),
            "peak_rss_mib_median": median([r["maxrss_mib"] for r in runs]), "runs": runs}


def plain_file_loop(paths: list[Path]) -> dict[str, Any]:
    """The least any replay must do with these files: gunzip, parse, update a per-hash dict."""
    t0 = time.perf_counter()
    seen: dict[str, int] = {}
    n = 0
    for path in paths:
        with gzip.open(path, "rb") as f:
            for line in f:
                n += 1
                try:
                    sha = orjson.loads(line).get("sha256")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if isinstance(sha, str):
                    seen[sha] = seen.get(sha, 0) + 1
    span = time.perf_counter() - t0
    return {"messages": n, "seconds": span, "rate": n / span}


def calibration_s() -> float:
    """Median time of a fixed pure-Python loop: how fast one core of this machine is today."""
    def once() -> float:
        t0 = time.perf_counter()
        acc = 0
        for i in range(2_000_000):
            acc += i * i % 7
        return time.perf_counter() - t0
    return median([once() for _ in range(5)])


def _memory(method: str, files: int) -> dict[str, Any]:
    proc = run_cli([PYTHON, "-m", "bench.memory", "--method", method, "--files", str(files)],
                   rapidloop_env(), ROOT, timeout=1200)
    return dict(json.loads(proc.stdout))


def phase_memory() -> dict[str, Any]:
    n = SIZES["memory_files"]
    log(f"memory: correlator state for {n:,} distinct hashes (RSS, then tracemalloc)")
    rss = _memory("rss", n)
    tm = _memory("tracemalloc", n)
    dec = _memory("decider", SIZES["decider_files"])
    snap = _memory("snapshot", n)
    res = {"files": n, "rss": rss, "tracemalloc": tm, "decider": dec, "snapshot": snap}
    log(f"memory: {res}")
    return res


def phase_stages() -> dict[str, Any]:
    """µs per event of each stage of the job, in-process (bench.stages, its own process:
    the timing wrappers it patches in never touch the harness)."""
    n, runs = SIZES["stages_reports"], SIZES["stages_runs"]
    log(f"stages: µs per event of each step, in-process over {n:,} simulated reports, "
        f"{runs} run(s)")
    proc = run_cli([PYTHON, "-m", "bench.stages", "--reports", str(n), "--runs", str(runs),
                    "--seed", str(SIZES["seed"])], rapidloop_env(), ROOT, timeout=3600)
    res = dict(json.loads(proc.stdout))
    log(f"stages: total {res['total_us_per_event']:.1f} µs per event, in-process without "
        f"wrappers {res['plain_us_per_event']:.1f} ({res['plain_events_per_s']:,.0f}/s)")
    return res


def _fmt(x: float, unit: str = "") -> str:
    return f"{x:,.0f}{unit}" if x == x else "n/a"  # x != x: NaN


def table(r: dict[str, Any]) -> str:
    """The results as a Markdown table, ready for the README."""
    t, lat, rep, mem = r["throughput"], r["latency"], r["replay"], r["memory"]
    snap, st = mem["snapshot"], r["stages"]
    c2 = t["two_process_cluster"]
    per_file = mem["tracemalloc"]["per_file_bytes"]
    # The ring holds min(files, capacity) ids here; scale to its capacity.
    ring_cap = int(r.get("dedup_capacity", 250_000))
    tm = mem["tracemalloc"]
    ring_per_id = tm["dedup_ring_bytes"] / max(tm["dedup_ring_ids"], 1)
    rows = [
        ("full job, 1 process (events/s, first consume → end of work)",
         _fmt(t["job_rate_median"]), ""),
        ("same, input read in arrival order (`stream.input_order`)",
         _fmt(t["arrival_order_rate_median"]),
         f"event-time merge × {t['event_time_vs_arrival_median']:.2f} of it"),
        ("full job, 1 process, own summary incl. start-up (events/s)",
         _fmt(t["job_summary_rate_median"]), ""),
        ("full job, 2-process cluster (events/s, same method)",
         _fmt(c2["rate_median"]), f"× {c2['speedup_median']:.2f} of 1 process; "
         f"≥ × {TARGETS['cluster_speedup']:.1f}: "
         f"{'met' if c2['speedup_median'] >= TARGETS['cluster_speedup'] else 'NOT met'}"),
        ("full job, 2-process cluster, own summaries incl. start-up (events/s)",
         _fmt(c2["summary_rate_median"]), ""),
        ("2-process cluster: share of messages read by process 0",
         f"{c2['messages_share_p0_median']:.0%}",
         "cpu s " + " / ".join(f"{x:.1f}" for x in c2["cpu_s_per_process_median"])),
        ("2-process cluster: share of events each process's shards correlated",
         " / ".join(f"{x:.0%}" for x in c2["events_share_per_process_median"]),
         "a file's reports all go to its shard"),
        ("2-process cluster: each worker busy while it had work",
         " / ".join(f"{x:.0%}" for x in c2["busy_share_median"] or []) or "n/a",
         (f"the workers' CPU × {c2['work_cpu_vs_one_process_median']:.2f} of one process's"
          if c2["work_cpu_vs_one_process_median"] else "")),
        ("baseline: consume + orjson + dict update (events/s)",
         _fmt(t["baseline_rate_median"]), ""),
        ("ratio job / baseline", f"{t['ratio_median']:.2f}",
         f"≥ {TARGETS['throughput_ratio']:.2f}: "
         f"{'met' if t['ratio_median'] >= TARGETS['throughput_ratio'] else 'NOT met'}"),
        (f"decision latency p50 at {lat['target_rate']:,}/s (ms)", _fmt(lat["p50_ms"]), ""),
        (f"decision latency p99 at {lat['target_rate']:,}/s (ms)", _fmt(lat["p99_ms"]),
         f"≤ {TARGETS['latency_p99_ms']:.0f} ms: "
         f"{'met' if lat['p99_ms'] <= TARGETS['latency_p99_ms'] else 'NOT met'}"),
        (f"decision latency max at {lat['target_rate']:,}/s (ms)", _fmt(lat["max_ms"]), ""),
        ("input held at epoch closes, longest / median pause (ms)",
         f"{_fmt(lat.get('input_pause_max_ms', float('nan')))} / "
         f"{_fmt(lat.get('input_pause_median_ms', float('nan')))}",
         "snapshots of every shard written (`stream.epoch_interval_s`)"),
        (f"input held over {PAUSE_S * 1e3:.0f} ms at {r['state']['files']:,} tracked files, "
         "median / longest (ms)",
         (f"{_fmt(r['state']['pause_median_ms'])} / {_fmt(r['state']['pause_max_ms'])}"
          if r["state"]["pauses"] else "never"),
         f"{r['state']['pauses']} time(s) in {r['state']['seconds']:.0f} s; "
         + ("the job's own share n/a" if r["state"]["job_snapshot_share"] is None
            else f"the job's own account: {r['state']['job_snapshot_share']:.0%} of the time")),
        (f"replay, a day of {rep['reports']:,} reports, {rep['world']['orgs']} orgs, "
         f"{rep['world']['verdicts']:,} verdicts (events/s)", _fmt(rep["rate_median"]),
         f"× {rep['ratio_to_plain_loop']:.2f} of gunzip + orjson + dict over the same files "
         f"({_fmt(rep['plain_loop_rate_median'])}/s); ≥ {TARGETS['replay_ratio']:.2f}: "
         f"{'met' if rep['ratio_to_plain_loop'] >= TARGETS['replay_ratio'] else 'NOT met'}"),
        ("peak RSS, full job (MiB)", _fmt(t["job_peak_rss_mib_median"]), ""),
        (f"peak RSS, replay of {rep['reports']:,} reports (MiB)",
         _fmt(rep["peak_rss_mib_median"]), ""),
        (f"correlator state per file at {mem['files']:,} files (bytes, tracemalloc)",
         _fmt(per_file),
         f"≤ {TARGETS['bytes_per_file']:.0f}: "
         f"{'met' if per_file <= TARGETS['bytes_per_file'] else 'NOT met'}"),
        ("same, RSS delta incl. dedup ring and allocator (bytes)",
         _fmt(mem["rss"]["per_file_bytes_incl_dedup"]), ""),
        (f"dedup ring, fixed per shard at {ring_cap:,} ids (MiB)",
         f"{ring_per_id * ring_cap / 2**20:,.1f}", f"{ring_per_id:,.0f} bytes per id"),
        ("decider enforcement state per blocked file (bytes)",
         _fmt(mem["decider"]["per_file_bytes"]), ""),
        (f"epoch-close snapshot of the stages world's {st['state_files']:,} files, "
         "all shards (ms)", f"{st['snapshot_ms_median']:,.1f}",
         f"{st['snapshot_us_per_file']:.1f} µs a file"),
        (f"one shard's epoch-close snapshot at {snap['files']:,} one-org files, whole, none "
         "changed (ms)", _fmt(snap["snapshot_s_median"] * 1e3),
         f"{snap['per_file_us']:.2f} µs a file; {snap['first_per_file_us']:.1f} µs a file "
         f"changed ({snap['first_snapshot_s'] * 1e3:,.0f} ms for the first, all new)"),
        (f"same in chunks (`recovery.chunks`), {snap['chunked_changed_files']:,} files "
         "changed (ms)", f"{snap['chunked_s_median'] * 1e3:,.1f}",
         f"{snap['chunked_written_bytes_median'] / 2**20:,.1f} MiB written, "
         f"{snap['chunked_blob_bytes'] / 2**10:,.0f} KiB to Bytewax (whole: "
         f"{snap['snapshot_bytes'] / 2**20:,.0f} MiB)"),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    lines = [f"| {'measure':<{w0}} | {'median':>{w1}} | target |",
             f"| {'-' * w0} | {'-' * w1}:| --- |"]
    lines += [f"| {a:<{w0}} | {b:>{w1}} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main() -> int:
    t0 = time.time()
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "quick": QUICK, "sizes": SIZES, "targets": TARGETS,
                               "cpus": os.cpu_count(), "python": sys.version.split()[0],
                               "machine": {**machine(), "calibration_s": calibration_s()},
                               **commit(),
                               "dedup_capacity": load_config().dedup.ids_per_shard}
    with tempfile.TemporaryDirectory(prefix="rapidloop-bench-") as tmp:
        work = fresh_dir(Path(tmp) / "work")
        with broker() as brokers:
            results["throughput"] = phase_throughput(brokers, work)
            results["latency"] = phase_latency(brokers, work,
                                               results["throughput"]["job_rate_median"])
            results["state"] = state.measure(brokers, work, SIZES["state_files"],
                                             SIZES["state_rate"], SIZES["state_seconds"])
        results["replay"] = phase_replay(work)
    results["memory"] = phase_memory()
    results["stages"] = phase_stages()
    results["wall_s"] = time.time() - t0
    results["table"] = table(results)
    results["stage_table"] = stage_table(results["stages"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2, default=str) + "\n")
    m = results["machine"]
    print(f"{m['cores']} cores, {m['cpu']}; calibration loop {m['calibration_s']:.3f}s; "
          f"commit {results.get('commit', '?')}{' (modified)' if results.get('dirty') else ''}")
    print(results["table"])
    st = results["stages"]
    print(f"\nWhere the time goes: µs per input event of each stage, in-process without "
          f"Bytewax, {st['world']['messages']:,} events ({st['world']['reports']:,} "
          f"reports), median of {st['runs']} run(s):\n")
    print(results["stage_table"])
    print(f"\n(total {results['wall_s']:.0f}s; saved to {OUT.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
