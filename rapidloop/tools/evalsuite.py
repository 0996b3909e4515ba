"""`make eval`: simulate a world per seed, evaluate each, and hold the seeds to the quality bar.

Seeds a developer looks at while changing rules stop measuring anything: the
rules end up fitted to them. So the suite keeps two sets apart, reported
separately:

* **tuning seeds** (``--tuning 1 2 3``): fixed, for the edit-measure loop;
* **held-out seeds** (``--held-out N``): drawn fresh from the OS's random
  source on every run, far from any tuning seed (10,000-999,999), and printed
  so that a surprising one can be re-run with ``--seeds``.

``--seeds`` evaluates explicit seeds as a set of their own (re-running
held-out ones). Each set gets a compact line per world, the worst-seed and
median-over-seeds rows, and the bar of ``rapidloop/tools/targets.py``: every world
must clear the worst-seed bars, the median over seeds the median bars.

Worlds go to ``OUT/seed-N/`` (each with its ``evaluation.json`` and the
console output of both steps in ``suite.log``), two at a time by default
(``--jobs``; simulate and evaluate of a 200k-report world take about a
minute each on one core). ``OUT/summary.json`` records every figure, the
worst and median, which bars held, the commit and the machine.

It is a measurement, not a test: the exit status is 0 unless a world failed
to run; ``--strict`` also fails (1) when a bar of the held-out or explicit
seeds is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidloop.base.config import Config, load_config
from rapidloop.tools.evaluate import params_line
from rapidloop.tools.targets import (
    BARS,
    Bar,
    Check,
    Figures,
    check,
    check_median,
    check_worst,
    figure_of,
    fmt_count,
)

HELD_OUT_RANGE = (10_000, 999_999)   # far from any tuning seed a developer would type

# The per-world row: the figures the bars read, plus two for context (benign hashes blocked
# at org scope, the ensemble's AUC). Each is a Bar so that its worst and median come for free.
def _info(name: str, get: Callable[[Figures], float | None], higher_is_better: bool,
          fmt: Callable[[float], str]) -> Bar:
    return Bar(name, get, higher_is_better, fmt, None, None)


def _ensemble_auc(fig: Figures) -> float | None:
    return figure_of("roc_auc")((fig.get("classifiers") or {}).get("ensemble") or {})


_BAR = {b.name: b for b in BARS}
COLUMNS: tuple[tuple[str, Bar], ...] = (
    ("protection", _BAR["protection"]),
    ("benign glob", _BAR["benign global"]),
    ("benign org", _info("benign org", figure_of("benign_hashes_blocked_org"), False,
                         fmt_count)),
    ("collat %", _info("collateral", figure_of("collateral_rate"), False,
                       lambda v: f"{v * 100:.3f}")),
    ("<3rd org", _BAR["before 3rd org"]),
    ("ttg median", _BAR["time to global"]),
    ("poisoned", _BAR["poisoning"]),
    ("ens AUC", _info("ensemble AUC", _ensemble_auc, True, lambda v: f"{v:.4f}")),
)


@dataclass
class World:
    """One seed's run: its figures (``evaluation.json``) and parameters, or why it failed."""

    seed: int
    path: Path
    fig: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def draw_held_out(n: int, avoid: Sequence[int] = ()) -> list[int]:
    """``n`` fresh seeds from the OS's random source, none of them in ``avoid``.

    Not from ``random``'s seeded generator: a held-out seed that the suite could
    reproduce by itself would be drawn again and again and end up tuned on.
    """
    lo, hi = HELD_OUT_RANGE
    rng = random.SystemRandom()
    seeds: list[int] = []
    while len(seeds) < n:
        s = rng.randint(lo, hi)
        if s not in avoid and s not in seeds:
            seeds.append(s)
    return seeds


def run_world(seed: int, out: Path, reports: int | None, config: str | None) -> World:
    """Simulate and evaluate one seed in subprocesses (their output to ``suite.log``)."""
    w = World(seed, out / f"seed-{seed}")
    sim = [sys.executable, "-m", "rapidloop.cli", "simulate", "--out", str(w.path),
           "--seed", str(seed)]
    if reports:
        sim += ["--reports", str(reports)]
    ev = [sys.executable, "-m", "rapidloop.cli", "evaluate", "--world", str(w.path),
          "--json", str(w.path / "evaluation.json")]
    if config:
        ev += ["--config", config]
    # One core per world: a threaded numeric library in each of two jobs would fight for both.
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           **os.environ}
    log: list[str] = []
    for step, cmd in (("simulate", sim), ("evaluate", ev)):
        if step == "evaluate":   # never read an earlier run's figures as this one's
            (w.path / "evaluation.json").unlink(missing_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        w.seconds[step] = round(time.perf_counter() - t0, 1)
        log += [f"$ {' '.join(cmd)}", proc.stdout, proc.stderr]
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            w.error = f"{step} exited {proc.returncode}: {' '.join(last)[:200]}"
            break
    out.mkdir(parents=True, exist_ok=True)
    logfile = w.path / "suite.log" if w.path.is_dir() else out / f"seed-{seed}.log"
    logfile.write_text("\n".join(log))
    if w.error:
        w.error += f" (log: {logfile})"
    if w.error is None:
        try:
            w.fig = json.loads((w.path / "evaluation.json").read_text())
            meta = w.path / "world.json"
            w.meta = json.loads(meta.read_text()) if meta.is_file() else {}
        except (OSError, ValueError) as exc:
            w.error = f"unreadable results: {exc}"
    return w


def run_worlds(seeds: Sequence[int], out: Path, reports: int | None, config: str | None,
               jobs: int) -> dict[int, World]:
    """Every seed's world, ``jobs`` at a time, with a line as each finishes."""
    done: dict[int, World] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_world, s, out, reports, config) for s in seeds]
        for fut in as_completed(futures):
            w = fut.result()
            done[w.seed] = w
            took = ", ".join(f"{k} {v:.0f}s" for k, v in w.seconds.items())
            state = f"FAILED ({w.error})" if w.error else "done"
            print(f"  seed {w.seed}: {state} [{took}]  {len(done)}/{len(seeds)}", flush=True)
    return done


def _cell(bar: Bar, value: float | None) -> str:
    return "n/a" if value is None else bar.fmt(value)


def figures_table(worlds: Sequence[World]) -> list[str]:
    """One line per world with the key figures, then the worst and the median rows."""
    figs = [w.fig for w in worlds if w.fig is not None]
    widths = [max(len(h), 10) for h, _ in COLUMNS]
    head = "  ".join(f"{h:>{n}}" for (h, _), n in zip(COLUMNS, widths, strict=True))
    lines = [f"    {'seed':<8}  {head}"]

    def row(label: str, cells: list[str]) -> str:
        return f"    {label:<8}  " + "  ".join(
            f"{c:>{n}}" for c, n in zip(cells, widths, strict=True))

    for w in worlds:
        if w.fig is None:
            lines.append(f"    {w.seed:<8}  FAILED (see above)")
        else:
            lines.append(row(str(w.seed), [_cell(b, b.figure(w.fig)) for _, b in COLUMNS]))
    if figs:
        lines.append(row("worst", [_cell(b, b.worst(figs)) for _, b in COLUMNS]))
        lines.append(row("median", [_cell(b, b.median(figs)) for _, b in COLUMNS]))
    return lines


def bar_table(worst: Sequence[Check], median: Sequence[Check]) -> list[str]:
    """Each bar of the issue: held or MISSED on the worst seed and on the median."""
    names = [b.name for b in BARS]
    by_w = {c.name: c for c in worst}
    by_m = {c.name: c for c in median}

    def cell(c: Check | None) -> str:
        if c is None:
            return "-"
        return f"{'held  ' if c.held else 'MISSED'} {c.value} ({c.target})"

    width = max(len(n) for n in names)
    cells = [(n, cell(by_w.get(n)), cell(by_m.get(n))) for n in names]
    cw = max(len("worst seed"), *(len(w) for _, w, _ in cells))
    lines = [f"    {'bar':<{width}}  {'worst seed':<{cw}}  median over seeds"]
    lines += [f"    {n:<{width}}  {w:<{cw}}  {m}" for n, w, m in cells]
    return lines


def targets_table(seeds: list[int], rows: list[dict[str, Any]]) -> str:
    """Each target, held or missed on each seed (rows carry ``"targets"``: ``vars(Check)``);
    a check shown for information is in parentheses."""
    names = [c["name"] for c in rows[0].get("targets", [])] if rows else []
    if not names:
        return "targets: none recorded"
    width = max(len(n) for n in names)
    head = " ".join(f"{'seed ' + str(s):>11}" for s in seeds)
    lines = ["targets per seed ([evaluate] in the configuration)",
             f"  {'target':<{width}}  {head}   held on"]
    for name in names:
        cs = [next(c for c in r["targets"] if c["name"] == name) for r in rows]
        marks = " ".join(f"{_mark(c):>11}" for c in cs)
        lines.append(f"  {name:<{width}}  {marks}   {sum(c['held'] for c in cs)} of {len(cs)}")
    return "\n".join(lines)


def _mark(c: Mapping[str, Any]) -> str:
    if c.get("bar", True):
        return "held" if c["held"] else "MISSED"
    return "(held)" if c["held"] else "(miss)"


def judge_set(name: str, seeds: Sequence[int], worlds: Mapping[int, World],
              cfg: Config) -> dict[str, Any]:
    """Print one set's report and return its part of ``summary.json``."""
    ws = [worlds[s] for s in seeds]
    ok = [w for w in ws if w.fig is not None]
    figs = [w.fig for w in ok if w.fig is not None]
    print()
    print(f"== {name}: seeds {' '.join(map(str, seeds))}")
    print("  worlds")
    for w in ws:
        print(f"    seed {w.seed:<8} {params_line(w.meta) if w.fig is not None else 'FAILED'}")
    print("  figures (honest tenants' sightings)")
    print("\n".join(figures_table(ws)))
    print("    (<3rd org: malicious hashes seen in 3+ orgs, share blocked globally before the 3rd;"
          "\n     ttg median: each world's median time from first report to global block)")
    worst = check_worst(figs, cfg) if figs else []
    median = check_median(figs, cfg) if figs else []
    if figs:
        print(f"  bars ([evaluate]): worst seed {sum(c.held for c in worst)} of {len(worst)} held,"
              f" median {sum(c.held for c in median)} of {len(median)} held"
              + (f" (over {len(figs)} of {len(ws)} worlds)" if len(figs) < len(ws) else ""))
        print("\n".join(bar_table(worst, median)))
        rows = [{"targets": [vars(c) for c in check(f, cfg)]} for f in figs]
        print("  " + targets_table([w.seed for w in ok], rows).replace("\n", "\n  "))
    return {
        "seeds": list(seeds),
        "failed": {str(w.seed): w.error for w in ws if w.fig is None},
        "worlds": {str(w.seed): _world_summary(w, cfg) for w in ok},
        "worst": {b.name: b.worst(figs) for _, b in COLUMNS},
        "median": {b.name: b.median(figs) for _, b in COLUMNS},
        "bars": {"worst": [vars(c) for c in worst], "median": [vars(c) for c in median]},
        "held": {"worst": bool(figs) and all(c.held for c in worst),
                 "median": bool(figs) and all(c.held for c in median)},
    }


def _world_summary(w: World, cfg: Config) -> dict[str, Any]:
    fig = w.fig or {}
    out = {k: v for k, v in fig.items()
           if not isinstance(v, (list, dict)) or k in ("classifiers", "labels")}
    out["params"] = w.meta.get("params")
    out["seconds"] = w.seconds
    out["targets"] = [vars(c) for c in check(fig, cfg)]
    return out


def machine() -> dict[str, Any]:
    """Cores and CPU model: timings and a seed's replay speed mean nothing without them."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": cpu}


def commit() -> dict[str, Any]:
    """The commit measured, and whether the tree differed from it (read-only git calls:
    GIT_OPTIONAL_LOCKS=0 keeps ``git status`` from rewriting the index)."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str | None:
        try:
            p = subprocess.run(["git", *args], capture_output=True, text=True, env=env,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return p.stdout.strip() if p.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "dirty": None if status is None else bool(status)}


def _json_safe(v: Any) -> Any:
    """inf/nan as null (a time that never came, a figure that does not apply): strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rapidloop.tools.evalsuite",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--tuning", type=int, nargs="+", default=[], metavar="SEED",
                    help="tuning seeds: the ones rules are tuned on")
    ap.add_argument("--held-out", type=int, default=0, metavar="N",
                    help=f"N seeds drawn fresh from the OS RNG in {HELD_OUT_RANGE[0]:,}-"
                         f"{HELD_OUT_RANGE[1]:,}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[], metavar="SEED",
                    help="explicit seeds, reported as a set of their own (e.g. re-running "
                         "held-out ones)")
    ap.add_argument("--out", default="out/eval",
                    help="worlds and summary.json (default %(default)s)")
    ap.add_argument("--config", help="TOML configuration to evaluate (and its [evaluate] bar)")
    ap.add_argument("--reports", type=int, help="reports per world (default: simulator's)")
    ap.add_argument("--jobs", type=int, default=2, help="worlds at a time (default %(default)s)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a bar of the held-out or explicit seeds is missed")
    args = ap.parse_args(argv)
    if args.held_out < 0:
        ap.error("--held-out must be >= 0")
    if not (args.tuning or args.held_out or args.seeds):
        args.tuning = [1, 2, 3]
    cfg = load_config(args.config)
    held_out = draw_held_out(args.held_out, [*args.tuning, *args.seeds])
    sets = [(label, seeds) for label, seeds in (
        ("tuning seeds", args.tuning), ("held-out seeds (drawn fresh)", held_out),
        ("explicit seeds", args.seeds)) if seeds]
    if held_out:
        print(f"held-out seeds drawn fresh: {' '.join(map(str, held_out))}\n"
              f"  (re-run them: python -m rapidloop.tools.evalsuite --seeds "
              f"{' '.join(map(str, held_out))})")
    seeds = list(dict.fromkeys(s for _, ss in sets for s in ss))
    out = Path(args.out)
    started = time.time()
    print(f"{len(seeds)} world(s) into {out}/seed-N, {args.jobs} at a time", flush=True)
    worlds = run_worlds(seeds, out, args.reports, args.config, args.jobs)
    summary: dict[str, Any] = {
        **commit(), "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "args": {"reports": args.reports, "config": args.config, "jobs": args.jobs},
        "sets": {}}
    keys = {"tuning seeds": "tuning", "held-out seeds (drawn fresh)": "held_out",
            "explicit seeds": "explicit"}
    for label, ss in sets:
        summary["sets"][keys[label]] = judge_set(label, ss, worlds, cfg)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False) + "\n")
    print(f"\nsummary: {path} (commit {summary['commit']}"
          f"{', uncommitted changes' if summary['dirty'] else ''}; "
          f"{summary['machine']['cores']} cores, {summary['machine']['cpu']})")
    if any(w.error for w in worlds.values()):
        return 1
    judged = [summary["sets"][k] for k in ("held_out", "explicit") if k in summary["sets"]]
    if args.strict and any(not (s["held"]["worst"] and s["held"]["median"]) for s in judged):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
