"""`make eval`: simulate a world per seed, evaluate each, and print mean and spread.

One seed can flatter a policy; several seeds show whether a figure holds.
Worlds and charts go to ``out/eval/seed-N/``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

KEYS = [
    ("protection_rate", "protection rate", 1.0),
    ("median_time_to_global_s", "median time to global block (min)", 1 / 60),
    ("campaigns_stopped_before_third_org", "campaigns blocked before a 3rd org", 1.0),
    ("collateral_rate", "collateral (% benign sightings)", 100.0),
    ("benign_hashes_blocked_global", "benign hashes blocked globally", 1.0),
    ("benign_hashes_blocked_org", "benign hashes blocked at org scope", 1.0),
    ("poisoned_global_blocks", "poisoned global blocks", 1.0),
    ("poisoned_local_blocks", "poisoned org/device blocks (others)", 1.0),
    ("malware_unblocked_for_others", "whitewashed malware unblocked (others)", 1.0),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rapidloop.evalsuite")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--out", default="out/eval")
    ap.add_argument("--config")
    ap.add_argument("--reports", type=int, help="reports per world (default: simulator's)")
    args = ap.parse_args(argv)
    rows: list[dict] = []
    for seed in args.seeds:
        world = Path(args.out) / f"seed-{seed}"
        sim = [sys.executable, "-m", "rapidloop.cli", "simulate", "--out", str(world),
               "--seed", str(seed)]
        if args.reports:
            sim += ["--reports", str(args.reports)]
        subprocess.run(sim, check=True)
        ev = [sys.executable, "-m", "rapidloop.cli", "evaluate", "--world", str(world),
              "--json", str(world / "evaluation.json")]
        if args.config:
            ev += ["--config", args.config]
        subprocess.run(ev, check=True)
        rows.append(json.loads((world / "evaluation.json").read_text()))
        print()
    print(f"mean and spread over seeds {args.seeds}")
    for key, label, scale in KEYS:
        if all(r.get(key) is None for r in rows):
            continue   # e.g. poisoning figures of worlds without rogue tenants
        vals = [math.inf if r.get(key) is None else float(r[key]) * scale for r in rows]
        finite = [v for v in vals if math.isfinite(v)]
        mean = statistics.fmean(finite) if finite else math.inf
        spread = (max(finite) - min(finite)) if finite else 0.0
        never = len(vals) - len(finite)
        extra = f" ({never} seed(s): never)" if never else ""
        print(f"  {label:<40} {mean:10.3f}  ± {spread / 2:.3f}{extra}")
    names = sorted({n for r in rows for n in r["classifiers"]})
    for n in names:
        aucs = [r["classifiers"][n]["roc_auc"] for r in rows if n in r["classifiers"]]
        aucs = [a for a in aucs if a is not None and math.isfinite(a)]
        if aucs:
            print(f"  {'ROC AUC vs truth ' + n:<40} {statistics.fmean(aucs):10.3f}  "
                  f"± {(max(aucs) - min(aucs)) / 2:.3f}")
    print()
    print(targets_table(args.seeds, rows))
    return 0


def targets_table(seeds: list[int], rows: list[dict]) -> str:
    """Each target, held or missed on each seed (from each world's evaluation.json)."""
    names = [c["name"] for c in rows[0].get("targets", [])] if rows else []
    if not names:
        return "targets: none recorded"
    width = max(len(n) for n in names)
    head = " ".join(f"{'seed ' + str(s):>8}" for s in seeds)
    lines = ["targets per seed ([evaluate] in the configuration)",
             f"  {'target':<{width}}  {head}   held on"]
    for name in names:
        held = [next(c["held"] for c in r["targets"] if c["name"] == name) for r in rows]
        marks = " ".join(f"{'held' if h else 'MISSED':>8}" for h in held)
        lines.append(f"  {name:<{width}}  {marks}   {sum(held)} of {len(held)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
