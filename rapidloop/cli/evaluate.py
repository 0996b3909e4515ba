"""`rapidloop evaluate`: replay a simulated world and score the decisions against its truth."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from rapidloop.base.config import load_config

if TYPE_CHECKING:   # the scoring modules load the models: only `evaluate` itself needs them
    from rapidloop.tools.evaluate import Result


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="replay a simulated world and score it against truth",
                       description=__doc__.splitlines()[0])
    p.add_argument("--world", required=True, metavar="DIR", help="from `rapidloop simulate --out`")
    p.add_argument("--config", metavar="FILE", help="TOML configuration to evaluate")
    p.add_argument("--png", metavar="FILE", help="chart (default: WORLD/evaluation.png)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a target of [evaluate] is missed (a CI gate)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.set_defaults(func=run)


def _fmt_s(s: float) -> str:
    return "never" if math.isinf(s) else f"{s / 60:.1f} min"


def _n(value: int | None) -> str:
    return "n/a (no rogue tenant in this world)" if value is None else str(value)


def _share(value: float | None, of: int, what: str) -> str:
    return f"n/a (no {what})" if value is None else f"{value:.2f} (of {of} hashes)"


def table(res: Result, name: str, params: str | None = None) -> str:
    """The figures as aligned text rows: what a person reads and what the README quotes."""
    r = res
    rows = [("world parameters", params)] if params else []
    rows += [
        ("protection rate (malicious sightings already blocked)", f"{r.protection_rate:.3f}"),
        ("  malicious sightings after each hash's first", f"{r.malicious_events:,}"),
        ("time to global block: median", _fmt_s(r.median_time_to_global_s)),
        ("time to global block: p90", _fmt_s(r.p90_time_to_global_s)),
        ("malicious hashes (sighted)", f"{r.malicious_hashes}"),
        ("malicious hashes blocked globally",
         f"{r.globally_blocked_malicious}/{r.malicious_hashes}"),
        ("malicious hashes blocked at any scope",
         f"{r.malicious_hashes_blocked_any}/{r.malicious_hashes}"),
        ("campaigns blocked globally before a 3rd org",
         f"{r.campaigns_stopped_before_third_org:.2f}"),
        ("malicious hashes in 3+ orgs blocked globally before the 3rd",
         _share(r.multi_org_blocked_before_third_org, r.multi_org_malicious_hashes,
                "malicious hash reached 3 honest orgs")),
        ("collateral: benign sightings covered by a block",
         f"{r.collateral_rate * 100:.3f}% of {r.benign_events:,}"),
        ("benign hashes ever blocked globally", f"{r.benign_hashes_blocked_global}"),
        ("benign hashes ever blocked at org scope", f"{r.benign_hashes_blocked_org}"),
        ("benign hashes ever blocked at device scope", f"{r.benign_hashes_blocked_device}"),
    ]
    if r.poisoned_global_blocks is not None:
        rows.append(("rogue tenants (orgs)", ", ".join(r.rogue_orgs) or "none"))
        rows.append(("  rogue reports / rogue feedback", f"{r.rogue_reports:,} / "
                                                         f"{r.rogue_feedback:,}"))
        rows.append(("  benign hashes flooded / malware hashes whitewashed",
                     f"{r.rogue_targets} / {r.rogue_whitewashed}"))
    rows += [
        ("poisoned global blocks (rogue-targeted benign)", _n(r.poisoned_global_blocks)),
        ("poisoned org/device blocks in non-rogue orgs", _n(r.poisoned_local_blocks)),
        ("whitewashed malware unblocked/allowed beyond rogues",
         _n(r.malware_unblocked_for_others)),
        ("  any malware unblocked/allowed beyond rogues", _n(r.malicious_unblocked_beyond_rogues)),
    ]
    if r.labels:
        rows.append(("trusted labels (true class): malicious / benign / noisy",
                     f"{r.labels.get('malicious', 0)} / {r.labels.get('benign', 0)} / "
                     f"{r.labels.get('noisy', 0)}"))
    for cname, m in sorted(r.classifiers.items()):
        rows.append((f"{cname}: prequential ROC AUC / log loss vs truth ({m['labels']} labels)",
                     f"{m['roc_auc']:.3f} / {m['log_loss']:.3f}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"evaluation of {name}", "-" * (width + 24)]
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from rapidloop.cli.common import one_line
    from rapidloop.tools.evalplot import write_png
    from rapidloop.tools.evaluate import WorldError, evaluate_world, params_line
    from rapidloop.tools.targets import check, verdict_lines

    cfg = load_config(args.config)
    world = Path(args.world)
    with one_line(WorldError):
        ev = evaluate_world(cfg, world)
    res, meta = ev.result, ev.meta
    png = Path(args.png) if args.png else world / "evaluation.png"
    write_png(res, png, f"{world.name} ({ev.reports:,} reports, {ev.decisions} decisions)")
    print(table(res, f"{world} ({ev.reports:,} reports, {ev.decisions:,} decisions, "
                     f"replayed in {ev.replay_s:.1f}s)", params_line(meta)))
    print(f"chart: {png}")
    checks = check(vars(res), cfg)
    bars = [c for c in checks if c.bar]
    print(f"targets ([evaluate], every world): {sum(c.held for c in bars)} of {len(bars)} held")
    print("\n".join(verdict_lines(checks)))
    if args.json:
        # Every figure (the chart's series too), the world's parameters and the checks:
        # `make eval` and later comparisons read this file, not the printed table.
        fig = dict(vars(res))
        fig["params"] = meta.get("params")
        fig["targets"] = [vars(c) for c in checks]
        Path(args.json).write_bytes(orjson.dumps(fig, option=orjson.OPT_SERIALIZE_NUMPY
                                                 | orjson.OPT_INDENT_2, default=str))
    sys.stdout.flush()
    missed = [c for c in bars if not c.held]
    if args.strict and missed:
        print(f"rapidloop evaluate: {len(missed)} of {len(bars)} target(s) missed "
              f"(--strict)", file=sys.stderr)
        return 1
    return 0
