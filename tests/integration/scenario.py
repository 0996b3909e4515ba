"""A small, hand-written fleet story whose decisions are known in advance.

* ``CAMPAIGN``: ransomware spreading from org-1 to org-2, -3, -4 over half an
  hour: device and org blocks first, then a global block once 3 orgs saw it;
  later org-5 reports it benign (``org_report``): an allow for org-5 only.
* ``TOOL``: an admin tool that looks bad in org-1 and gets blocked there, then
  an analyst says it is benign: unblock.
* ``SANDBOXED``: never reported, a sandbox says malicious: global block at once.
* malformed messages of several kinds, and a redelivered duplicate.
* an hour of history before the story (``WARM``): a dozen files of each
  class with sandbox verdicts, so the models are past their cold start (until
  they have been checked against verdicts, correlation blocks orgs, not
  everyone).
"""

from __future__ import annotations

import orjson

CAMPAIGN = "a" * 63 + "1"
TOOL = "b" * 63 + "2"
SANDBOXED = "c" * 63 + "3"
BASE = "2026-11-28T10:{:02d}:{:02d}.000Z"
WARM_BASE = "2026-11-28T09:{:02d}:{:02d}.000Z"
WARM = 12   # files of each class in the history: more than models.min_class_labels


def ts(minute: int, second: int = 0) -> str:
    return BASE.format(minute, second)


def _report(n: int, sha: str, org: int, dev: int, minute: int, behaviors: list[str],
            verdict: float, signed: bool = False) -> dict:
    return {"report_id": f"r-{n}", "ts": ts(minute, n % 60), "org_id": f"org-{org}",
            "device_id": f"org-{org}-dev-{dev}", "sha256": sha, "source": "edr",
            "file": {"name": "x.exe", "size": 123456, "type": "pe", "signed": signed,
                     "signer": "Admin Tools Inc" if signed else None, "path": "downloads"},
            "behaviors": behaviors, "verdicts": {"static_ml": verdict}, "parent_sha256": None}


def warm_sha(i: int, malicious: bool) -> str:
    return f"{'d' if malicious else 'e'}{i:063x}"


def _warm() -> tuple[list[dict], list[dict]]:
    reps: list[dict] = []
    fbs: list[dict] = []
    for i in range(WARM):
        for malicious in (False, True):   # in time order, as a capture is
            sha = warm_sha(i, malicious)
            rep = _report(1000 + 2 * i + malicious, sha, 9, i, 0,
                          ["process_injection", "persistence"] if malicious else [],
                          0.95 if malicious else 0.05, signed=not malicious)
            rep["ts"] = WARM_BASE.format(2 * i, 10 + malicious)
            reps.append(rep)
            fbs.append({"feedback_id": f"w-{i}-{int(malicious)}",
                        "ts": WARM_BASE.format(2 * i + 1, 10 + malicious), "sha256": sha,
                        "verdict": "malicious" if malicious else "benign",
                        "source": "sandbox", "org_id": None})
    return reps, fbs


def warm_reports() -> list[bytes]:
    return [orjson.dumps(r) for r in _warm()[0]]


def warm_feedback() -> list[bytes]:
    return [orjson.dumps(f) for f in _warm()[1]]


def is_warm(sha: str) -> bool:
    return sha[0] in "de" and sha not in (CAMPAIGN, TOOL, SANDBOXED)


def reports(warm: bool = True) -> list[bytes]:
    out: list[dict] = _warm()[0] if warm else []
    bad = ["ransomware_encryption", "defense_evasion"]
    spread = ((1, 1), (2, 1), (10, 2), (20, 3), (30, 4), (31, 4))
    for n, (minute, org) in enumerate(spread, 1):
        out.append(_report(n, CAMPAIGN, org, n, minute, bad, 0.97))
    out.append(_report(100, TOOL, 1, 7, 5, ["lateral_movement", "credential_dumping"], 0.9))
    lines = [orjson.dumps(r) for r in out]
    lines.append(lines[0])                                    # redelivered duplicate
    lines += [b"{not json", b'{"report_id": "x"}',            # malformed
              orjson.dumps({**out[0], "report_id": "r-bad", "sha256": "abc"}),
              b"\xff\xfe invalid utf-8"]
    return lines


def feedback(warm: bool = True) -> list[bytes]:
    fb = (_warm()[1] if warm else []) + [
        {"feedback_id": "f-1", "ts": ts(40), "sha256": TOOL, "verdict": "benign",
         "source": "analyst", "org_id": None},
        {"feedback_id": "f-2", "ts": ts(41), "sha256": SANDBOXED, "verdict": "malicious",
         "source": "sandbox", "org_id": None},
        {"feedback_id": "f-3", "ts": ts(42), "sha256": CAMPAIGN, "verdict": "benign",
         "source": "org_report", "org_id": "org-5"},
    ]
    return [orjson.dumps(f) for f in fb] + [b'{"feedback_id": "f-x", "verdict": "maybe"}']


def check(decisions: list[dict]) -> None:
    """Assert the story's expected decisions are all there, and nothing unexpected."""
    def has(sha: str, action: str, scope: str, org: str | None = None) -> bool:
        return any(d["sha256"] == sha and d["action"] == action and d["scope"] == scope
                   and (org is None or d["org_id"] == org) for d in decisions)

    assert has(CAMPAIGN, "block", "org", "org-1"), decisions
    assert has(CAMPAIGN, "block", "global"), decisions
    assert has(CAMPAIGN, "allow", "org", "org-5")
    assert not any(d["sha256"] == CAMPAIGN and d["action"] in ("allow", "unblock")
                   and d["org_id"] != "org-5" for d in decisions)
    assert has(TOOL, "block", "org", "org-1") or has(TOOL, "block", "device", "org-1")
    assert has(TOOL, "unblock", "org", "org-1") or has(TOOL, "unblock", "device", "org-1")
    assert has(SANDBOXED, "block", "global")
    glob = next(d for d in decisions if d["sha256"] == SANDBOXED)
    assert glob["reasons"][0] == "sandbox verdict malicious"
    ids = [d["decision_id"] for d in decisions]
    assert len(ids) == len(set(ids))
