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
