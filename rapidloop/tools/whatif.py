"""What-if: the difference between two runs' decisions, in terms a person can act on.

Plain functions over contract Decisions (read once into
``rapidloop.schemas.wire.DecisionRecord``) and, optionally, the Report dicts
both runs were fed; no Kafka, no Bytewax. Run A is the baseline, run
B the alternative (another configuration over the same input):

* **blocks gained / lost by scope**: targets (sha256, scope, org, device)
  blocked at some point in B but never in A, and the reverse;
* **earlier / later**: targets blocked in both whose first block moved, with
  how much event time;
* **unblocks**: unblock decisions present in only one run, or moved;
* **the most consequential hashes**: ranked by the sightings (reports) whose
  enforcement differs between the runs (covered by a block in one and not
  the other, applying decisions as enforcement points do: most specific
  active decision wins), then by the organizations those sightings are in,
  then by how far the first block moved.

:func:`compare` returns a JSON-ready dict; :func:`render` writes it as text;
:func:`compare_files` compares two decisions files over the replay input both
runs were fed. ``rapidloop replay --compare DECISIONS_A.jsonl`` compares its
run (B, with ``--config``) against earlier decisions A over the same input;
``--compare-config B.toml`` runs the input twice, with ``--config`` (A) and
with B, and compares them; the difference goes to stdout, as JSON with
``--json``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import orjson

from rapidloop.schemas.enforcement import Target, Timeline
from rapidloop.schemas.timefmt import format_ts, parse_ts_or_none
from rapidloop.schemas.wire import DecisionRecord, InvalidMessage, read_decision

SCOPES = ("global", "org", "device")


def load_jsonl(lines: Iterable[bytes | dict[str, Any]]) -> list[dict[str, Any]]:
    """Dicts from JSONL lines (dicts pass through; blank and unreadable lines are skipped):
    the reports both runs were fed."""
    out = []
    for line in lines:
        if isinstance(line, dict):
            out.append(line)
            continue
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def load_decisions(lines: Iterable[bytes | dict[str, Any] | DecisionRecord]
                   ) -> list[DecisionRecord]:
    """Decisions from JSONL lines, dicts or records (blank and unreadable lines skipped)."""
    out = []
    for line in lines:
        if isinstance(line, bytes | bytearray) and not line.strip():
            continue
        try:
            out.append(read_decision(line))
        except InvalidMessage:
            continue
    return out


def _firsts(decisions: list[DecisionRecord], action: str) -> dict[Target, float]:
    """First event time of ``action`` per target."""
    out: dict[Target, float] = {}
    for d in decisions:
        t = d.event_ts
        if d.action != action or t is None:
            continue
        key = d.target
        if key not in out or t < out[key]:
            out[key] = t
    return out


def _sorted(targets: Iterable[Target]) -> list[Target]:
    """Targets in order (a missing scope, org or device sorts as empty)."""
    return sorted(targets, key=lambda k: tuple("" if x is None else x for x in k))


def _shift_stats(shifts: list[float]) -> dict[str, Any]:
    if not shifts:
        return {"count": 0, "median_s": None, "max_s": None, "total_s": 0.0}
    s = sorted(shifts)
    return {"count": len(s), "median_s": s[len(s) // 2], "max_s": s[-1], "total_s": sum(s)}


def _by_sha(decisions: list[DecisionRecord]) -> dict[str, list[DecisionRecord]]:
    out: dict[str, list[DecisionRecord]] = defaultdict(list)
    for d in decisions:
        out[d.sha256].append(d)
    return out


def sightings_affected(sha: str, reports: list[dict[str, Any]], a: list[DecisionRecord],
                       b: list[DecisionRecord]) -> dict[str, Any]:
    """The reports of ``sha`` covered by a block in exactly one run: counts and orgs
    (a sighting is covered by the decisions made strictly before it)."""
    ea, eb = Timeline(a), Timeline(b)
    gained = lost = 0
    orgs: set[str] = set()
    seen: set[Any] = set()
    for r in reports:
        rid = r.get("report_id")
        if rid is not None:
            if rid in seen:
                continue
            seen.add(rid)
        t = parse_ts_or_none(r.get("ts"))
        if t is None:
            continue
        org, dev = r.get("org_id"), r.get("device_id")
        in_a = ea.blocked(sha, org, dev, t, inclusive=False)
        in_b = eb.blocked(sha, org, dev, t, inclusive=False)
        if in_a != in_b:
            gained += in_b
            lost += in_a
            orgs.add(str(org))
    return {"sightings": gained + lost, "sightings_blocked_only_in_b": gained,
            "sightings_blocked_only_in_a": lost, "orgs": len(orgs)}


def compare(a: Iterable[DecisionRecord | dict[str, Any] | bytes],
            b: Iterable[DecisionRecord | dict[str, Any] | bytes],
            reports: Iterable[dict[str, Any] | bytes] | None = None,
            label_a: str = "A", label_b: str = "B", top: int = 10) -> dict[str, Any]:
    """The what-if of B against A (decision records, dicts or JSONL lines), as a JSON-ready
    dict.

    ``reports`` (the input both runs saw) lets the ranking count the sightings
    whose enforcement differs; without it hashes are ranked by the targets
    and organizations whose blocks changed.
    """
    da, db = load_decisions(a), load_decisions(b)
    blocks_a, blocks_b = _firsts(da, "block"), _firsts(db, "block")
    unb_a, unb_b = _firsts(da, "unblock"), _firsts(db, "unblock")

    def by_scope(keys: Iterable[Target]) -> dict[str, int]:
        c = Counter(k[1] for k in keys)
        return {s: c.get(s, 0) for s in SCOPES}

    gained = _sorted(set(blocks_b) - set(blocks_a))
    lost = _sorted(set(blocks_a) - set(blocks_b))
    moved = {k: blocks_b[k] - blocks_a[k] for k in set(blocks_a) & set(blocks_b)
             if blocks_b[k] != blocks_a[k]}
    unb_gained = _sorted(set(unb_b) - set(unb_a))
    unb_lost = _sorted(set(unb_a) - set(unb_b))
    unb_moved = {k: unb_b[k] - unb_a[k] for k in set(unb_a) & set(unb_b)
                 if unb_b[k] != unb_a[k]}

    changes: list[dict[str, Any]] = []

    def change(kind: str, k: Target, ta: float | None, tb: float | None) -> None:
        changes.append({"sha256": k[0], "scope": k[1], "org_id": k[2], "device_id": k[3],
                        "change": kind,
                        "a": format_ts(ta) if ta is not None else None,
                        "b": format_ts(tb) if tb is not None else None,
                        "shift_s": (tb - ta) if ta is not None and tb is not None else None})

    for k in gained:
        change("block gained", k, None, blocks_b[k])
    for k in lost:
        change("block lost", k, blocks_a[k], None)
    for k in _sorted(moved):
        change("block earlier" if moved[k] < 0 else "block later", k, blocks_a[k], blocks_b[k])
    for k in unb_gained:
        change("unblock gained", k, None, unb_b[k])
    for k in unb_lost:
        change("unblock lost", k, unb_a[k], None)
    for k in _sorted(unb_moved):
        change("unblock earlier" if unb_moved[k] < 0 else "unblock later", k,
               unb_a[k], unb_b[k])

    # --- per hash
    changed_shas = {c["sha256"] for c in changes}
    reps: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if reports is not None:
        for r in load_jsonl(reports):
            s = str(r.get("sha256", "")).lower()
            if s in changed_shas:
                reps[s].append(r)
    sha_a, sha_b = _by_sha(da), _by_sha(db)
    hashes = []
    for sha in sorted(changed_shas):
        mine = [c for c in changes if c["sha256"] == sha]
        kinds = Counter(f"{c['change']} {c['scope']}" for c in mine)
        shifts = [abs(c["shift_s"]) for c in mine if c["shift_s"] is not None]
        first_a = min((t for k, t in blocks_a.items() if k[0] == sha), default=None)
        first_b = min((t for k, t in blocks_b.items() if k[0] == sha), default=None)
        row: dict[str, Any] = {
            "sha256": sha,
            "changes": dict(sorted(kinds.items())),
            "orgs_with_changed_blocks": len({c["org_id"] for c in mine if c["org_id"]}
                                            | ({"*"} if any(c["scope"] == "global"
                                                            for c in mine) else set())),
            "first_block_a": format_ts(first_a) if first_a is not None else None,
            "first_block_b": format_ts(first_b) if first_b is not None else None,
            "max_shift_s": max(shifts) if shifts else None,
        }
        if reports is not None:
            row.update(sightings_affected(sha, reps.get(sha, []), sha_a.get(sha, []),
                                          sha_b.get(sha, [])))
        hashes.append(row)

    def rank(h: dict[str, Any]) -> tuple[Any, ...]:
        return (-h.get("sightings", 0), -h.get("orgs", 0), -h["orgs_with_changed_blocks"],
                -(h["max_shift_s"] or 0), -sum(h["changes"].values()), h["sha256"])

    hashes.sort(key=rank)
    sightings = None
    if reports is not None:
        sightings = {"blocked_only_in_b": sum(h["sightings_blocked_only_in_b"] for h in hashes),
                     "blocked_only_in_a": sum(h["sightings_blocked_only_in_a"] for h in hashes)}
    return {
        "a": {"label": label_a, "decisions": len(da), "blocked_targets": by_scope(blocks_a),
              "unblocked_targets": by_scope(unb_a)},
        "b": {"label": label_b, "decisions": len(db), "blocked_targets": by_scope(blocks_b),
              "unblocked_targets": by_scope(unb_b)},
        "blocks": {"gained": by_scope(gained), "lost": by_scope(lost)},
        "earlier": {s: _shift_stats([-v for k, v in moved.items() if v < 0 and k[1] == s])
                    for s in SCOPES},
        "later": {s: _shift_stats([v for k, v in moved.items() if v > 0 and k[1] == s])
                  for s in SCOPES},
        "unblocks": {"gained": by_scope(unb_gained), "lost": by_scope(unb_lost),
                     "earlier": sum(1 for v in unb_moved.values() if v < 0),
                     "later": sum(1 for v in unb_moved.values() if v > 0)},
        "sightings_ranked": reports is not None,
        "sightings": sightings,
        "hashes_changed": len(hashes),
        "top_hashes": hashes[:top],
        "changes": changes,
    }


def compare_files(path_a: str, path_b: str, files: list[tuple[str, str]],
                  kinds: dict[str, str], max_bytes: int, label_a: str = "A",
                  label_b: str = "B", top: int = 10) -> dict[str, Any]:
    """:func:`compare` of two decisions files (JSONL, ``.gz`` ok) over the replay input both
    runs were fed (``files``, ``kinds``: its reports weigh the ranking; a line over
    ``max_bytes`` never parses). OSError or EOFError when a file cannot be read."""
    from rapidloop.flows.file_io import open_lines
    from rapidloop.flows.replay import report_lines

    with open_lines(path_a) as fa, open_lines(path_b) as fb:
        return compare(fa, fb, report_lines(files, kinds, max_bytes), label_a, label_b,
                       top=top)


def duration(seconds: float | None) -> str:
    """A short human duration: ``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    if seconds is None:
        return "-"
    s = round(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s % 60 else f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _scoped(counts: dict[str, int]) -> str:
    return ", ".join(f"{s} {counts[s]:,}" for s in SCOPES)


def render(diff: dict[str, Any]) -> str:
    """The what-if as text."""
    a, b = diff["a"], diff["b"]
    out = [f"what-if: B = {b['label']}  against  A = {a['label']}",
           f"  decisions      A {a['decisions']:,}   B {b['decisions']:,}",
           f"  blocked        A {_scoped(a['blocked_targets'])}",
           f"                 B {_scoped(b['blocked_targets'])}",
           "",
           "Blocks (targets blocked at some point)",
           f"  gained in B    {_scoped(diff['blocks']['gained'])}",
           f"  lost in B      {_scoped(diff['blocks']['lost'])}"]
    for word in ("earlier", "later"):
        for s in SCOPES:
            st = diff[word][s]
            if st["count"]:
                out.append(f"  {word + ' in B':<14} {s}: {st['count']:,} target(s), "
                           f"median {duration(st['median_s'])}, max {duration(st['max_s'])}")
    if not any(diff[w][s]["count"] for w in ("earlier", "later") for s in SCOPES):
        out.append("  timing         no block moved")
    if diff.get("sightings"):
        st = diff["sightings"]
        out.append(f"  sightings      {st['blocked_only_in_b']:,} blocked only in B, "
                   f"{st['blocked_only_in_a']:,} only in A (a block lost where a wider one "
                   "covers the same devices changes nothing)")
    u = diff["unblocks"]
    out += ["",
            "Unblocks",
            f"  gained in B    {_scoped(u['gained'])}",
            f"  lost in B      {_scoped(u['lost'])}",
            f"  moved          {u['earlier']} earlier, {u['later']} later",
            ""]
    top = diff["top_hashes"]
    rank = ("sightings whose enforcement differs" if diff["sightings_ranked"]
            else "targets and orgs changed")
    out.append(f"Most consequential hashes ({len(top)} of {diff['hashes_changed']} changed; "
               f"by {rank})")
    if not top:
        out.append("  (no difference)")
    for h in top:
        what = ", ".join(f"{k}{f' ×{n}' if n > 1 else ''}" for k, n in h["changes"].items())
        line = f"  {h['sha256']}  "
        if diff["sightings_ranked"]:
            line += (f"{h['sightings']:,} sighting(s) in {h['orgs']} org(s) "
                     f"(+{h['sightings_blocked_only_in_b']} blocked only in B, "
                     f"-{h['sightings_blocked_only_in_a']} only in A)  ")
        out.append(line.rstrip())
        fa, fb = h["first_block_a"] or "never", h["first_block_b"] or "never"
        out.append(f"      {what}; first block A {fa}, B {fb}"
                   + (f" (moved up to {duration(h['max_shift_s'])})"
                      if h["max_shift_s"] else ""))
    return "\n".join(out) + "\n"
