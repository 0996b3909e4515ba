"""Builders of contract records for unit tests."""

from __future__ import annotations

import itertools

from rapidloop.schemas.model import Feedback, FileInfo, Report

_ids = itertools.count()
T0 = 1_795_000_000.0   # 2026-11-17, any fixed epoch works


def sha(n: int) -> str:
    return f"{n:064x}"


def report(sha256: str, org: str = "org-1", device: str = "dev-1", ts: float = T0,
           behaviors: tuple[str, ...] = (), verdict: float = 0.0, signed: bool = False,
           signer: str | None = None, report_id: str | None = None) -> Report:
    return Report(report_id or f"r{next(_ids)}", ts, org, f"{org}/{device}", sha256, "edr",
                  FileInfo("x.exe", 1000, "pe", signed, signer, "downloads"), behaviors,
                  {"static_ml": verdict} if verdict else {}, None)


def feedback(sha256: str, verdict: str = "malicious", source: str = "sandbox",
             org: str | None = None, ts: float = T0) -> Feedback:
    return Feedback(f"f{next(_ids)}", ts, sha256, verdict, source, org)


# -- drivers: the operators in-process, and the flow under Bytewax's testing harness -----

def feed_world(world: object, correlator: object, decider: object, intake: object,
               batch_size: int = 500) -> list:
    """Every Decision of a simulated world (``reports.jsonl.gz``, ``feedback.jsonl.gz``),
    driving parse → correlate → decide for one shard as ``flows.steps`` does, in batches of
    ``batch_size`` messages (each decider batch a generator, as in the flow)."""
    from pathlib import Path

    from rapidloop.flows.file_io import merged_lines

    path = Path(str(world))
    out: list = []
    batch: list = []

    def flush() -> None:
        unit = intake.parse(batch, 0.0)   # type: ignore[attr-defined]
        items, _ = correlator.process(list(enumerate(unit.events)), 0.0)  # type: ignore[attr-defined]
        out.extend(decider.process((item for _, item in items), 0.0))  # type: ignore[attr-defined]
        batch.clear()

    for msg in merged_lines([(str(path / "reports.jsonl.gz"), "reports"),
                             (str(path / "feedback.jsonl.gz"), "feedback")]):
        batch.append(msg)
        if len(batch) >= batch_size:
            flush()
    flush()
    return out


def run_flow(source: object, kinds: dict[str, str], workers: int, replicas: int
             ) -> tuple[list[tuple], list[dict]]:
    """``flows.dataflow.build_flow`` over one testing source, run by ``run_main`` (1 worker)
    or ``cluster_main``: (decisions without decided_at, as sorted rows; dead letters)."""
    import orjson
    from bytewax.testing import TestingSink, cluster_main, run_main

    from rapidloop.base.config import load_config
    from rapidloop.flows.dataflow import Connectors, build_flow

    decided: list = []
    dead: list = []
    io = Connectors(sources=[("input", source)], kinds=kinds,   # type: ignore[list-item]
                    decisions=TestingSink(decided), dead_letters=TestingSink(dead))
    flow = build_flow(load_config(env={}), io, replicas=replicas)
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    rows = []
    for batch in decided:
        for _, value in batch:
            d = orjson.loads(value)
            d.pop("decided_at")
            rows.append(tuple(sorted((k, repr(v)) for k, v in d.items())))
    return sorted(rows), [orjson.loads(v) for batch in dead for _, v in batch]
