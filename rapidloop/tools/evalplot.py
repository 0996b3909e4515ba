"""The evaluation's picture: protection and collateral over event time, and learning curves."""

from __future__ import annotations

import math
from pathlib import Path

from rapidloop.tools.evaluate import Result


def write_png(res: Result, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    hours = [h for h, _, _ in res.timeline]
    ax1.plot(hours, [p for _, p, _ in res.timeline], marker="o", color="tab:green",
             label="protection (malicious sightings already blocked)")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_xlabel("event time (hours since start)")
    ax1.set_ylabel("protection rate")
    ax1b = ax1.twinx()
    ax1b.plot(hours, [c * 100 for _, _, c in res.timeline], color="tab:red",
              label="collateral (% benign sightings blocked)")
    ax1b.set_ylabel("collateral, % of benign sightings")
    lines = ax1.get_lines() + ax1b.get_lines()
    ax1.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
    ax1.set_title("protection and collateral over event time")
    for name, curve in sorted(res.learning.items()):
        pts = [(n, a) for n, a in curve if not math.isnan(a)]
        if pts:
            ax2.plot([n for n, _ in pts], [a for _, a in pts], label=name,
                     linewidth=2.5 if name == "ensemble" else 1.2)
    ax2.set_xlabel("trusted labels seen")
    ax2.set_ylabel("prequential ROC AUC vs true labels (labels so far)")
    ax2.set_ylim(0.4, 1.01)
    ax2.legend(fontsize=8)
    ax2.set_title("learning curves")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
