"""The story of one file: reports, feedback and decisions on one timeline, as text.

Plain functions over contract messages (Report and Feedback dicts,
Decisions read once into ``rapidloop.schemas.wire.DecisionRecord``), no
Kafka, no Bytewax: :func:`select` picks one sha256's messages out of any
iterables (dicts or raw JSONL lines; decisions also as records), :func:`render`
writes the story. Decisions files of any release are read: a field a
decision lacks shows as ``?`` or is left out.

Classifier scores come from the decisions' ``classifiers`` field: each row
is the ensemble and every classifier at the moment a decision was made (a
decision is emitted only when enforcement changes, so this is a sampled
series, not a score per report).

The tenant view (``org=...``) shows that organization's own reports,
devices, feedback and decisions, global decisions and trusted verdicts;
everything of other tenants appears only as counts. As a last guard every
line of a tenant view is scrubbed of any other tenant's org and device ids
seen in the data, so a stray id in free text (a reason, a file name) cannot
leak.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import orjson

from rapidloop.schemas.enforcement import in_force, in_view
from rapidloop.schemas.timefmt import format_ts, parse_ts_or_none
from rapidloop.schemas.wire import DecisionRecord, InvalidMessage, read_decision

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_TRUSTED = ("sandbox", "analyst")
# an id boundary: ids are made of these characters
_ID_CHARS = r"A-Za-z0-9_.:@-"


def normalise_sha256(text: str) -> str | None:
    """``text`` as a lower-case sha256, or None if it is not 64 hex digits."""
    text = text.strip()
    return text.lower() if _HEX64.fullmatch(text) else None


def clean(value: Any, limit: int = 80) -> str:
    """A field as safe, bounded terminal text (control characters replaced)."""
    text = _CONTROL.sub("?", value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class Story:
    """One file's messages, each list in event-time order (decisions stably)."""

    sha256: str
    reports: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[DecisionRecord] = field(default_factory=list)   # each with its event_ts
    untimed: int = 0      # messages for this file without a readable time (not shown)
    # the models' score at each report (rapidloop.tools.modelwalk.score_history), if computed
    scores: list[dict[str, Any]] = field(default_factory=list)


def _pick(sha: str, items: Iterable[dict[str, Any] | bytes], time_field: str,
          story: Story) -> list[tuple[float, dict[str, Any]]]:
    needle = sha.encode()
    out: list[tuple[float, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, bytes | bytearray):
            if needle not in item.lower():   # cheap: most lines are other files
                continue
            try:
                item = orjson.loads(item)
            except orjson.JSONDecodeError:
                continue
        if not isinstance(item, dict):
            continue
        s = item.get("sha256")
        if not isinstance(s, str) or s.lower() != sha:
            continue
        t = parse_ts_or_none(item.get(time_field))
        if t is None:
            story.untimed += 1
            continue
        out.append((t, item))
    out.sort(key=lambda p: p[0])   # stable: same-time items keep their order
    return out


def _pick_decisions(sha: str, items: Iterable[DecisionRecord | dict[str, Any] | bytes],
                    story: Story) -> list[DecisionRecord]:
    needle = sha.encode()
    out: list[DecisionRecord] = []
    for item in items:
        if isinstance(item, bytes | bytearray) and needle not in item.lower():
            continue   # cheap: most lines are other files
        try:
            d = read_decision(item)
        except InvalidMessage:
            continue
        if d.sha256 != sha:
            continue
        if d.event_ts is None:
            story.untimed += 1
            continue
        out.append(d)
    out.sort(key=attrgetter("event_ts"))   # stable: same-time decisions keep their order
    return out


def select(sha256: str, reports: Iterable[dict[str, Any] | bytes],
           feedback: Iterable[dict[str, Any] | bytes] = (),
           decisions: Iterable[DecisionRecord | dict[str, Any] | bytes] = ()) -> Story:
    """The messages about ``sha256`` (any case) from each source (dicts or JSONL lines;
    decisions also as records)."""
    sha = normalise_sha256(sha256)
    if sha is None:
        raise ValueError(f"not a sha256 (64 hex digits): {clean(sha256, 70)!r}")
    story = Story(sha)
    story.reports = [d for _, d in _pick(sha, reports, "ts", story)]
    story.feedback = [d for _, d in _pick(sha, feedback, "ts", story)]
    story.decisions = _pick_decisions(sha, decisions, story)
    return story


# ---------------------------------------------------------------- pieces

def _ts(value: Any) -> str:
    t = parse_ts_or_none(value)
    return format_ts(t) if t is not None else clean(value, 30)


def _expiry(d: DecisionRecord) -> str:
    """When ``d`` lapses, as text ("" if never)."""
    if d.expires_at is not None:
        return format_ts(d.expires_at)
    return clean(d.expires_at_text, 30) if d.expires_at_text else ""


def _num(value: Any, digits: int = 3) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "?"


def target(d: DecisionRecord, width: int = 40, scope_width: int = 20) -> str:
    """Where a decision applies: ``global``, ``org ORG`` or ``device ORG/DEVICE`` (each id
    cut to ``width``; an unknown scope, to ``scope_width``)."""
    scope = d.scope
    if scope == "global":
        return "global"
    if scope == "org":
        return f"org {clean(d.org_id, width)}"
    if scope == "device":
        return f"device {clean(d.org_id, width)}/{clean(d.device_id, width)}"
    return clean(scope or "?", scope_width)


def _decision_line(d: DecisionRecord) -> str:
    why = "; ".join(clean(r, 120) for r in d.reasons) or "(no reason given)"
    line = (f"DECISION {clean(d.action or '?', 10).upper():<7} {target(d)}  "
            f"score {_num(d.score)}  {why}")
    expires = _expiry(d)
    if expires:
        line += f"  (until {expires})"
    return line


def _report_line(r: dict[str, Any], duplicate: bool) -> str:
    behaviours = r.get("behaviors") if isinstance(r.get("behaviors"), list) else []
    verdicts = r.get("verdicts") if isinstance(r.get("verdicts"), dict) else {}
    parts = [f"report   {clean(r.get('org_id'), 40)} {clean(r.get('device_id'), 40)}",
             clean(r.get("source") or "other", 20)]
    if behaviours:
        parts.append(", ".join(clean(b, 40) for b in behaviours))
    if verdicts:
        parts.append(" ".join(f"{clean(k, 30)} {_num(v, 2)}" for k, v in verdicts.items()))
    if duplicate:
        parts.append(f"(redelivered duplicate of {clean(r.get('report_id'), 40)}: not counted)")
    return "  ".join(parts)


def _feedback_text(f: dict[str, Any], show_org: bool) -> str:
    source = clean(f.get("source") or "?", 20)
    text = f"{clean(f.get('verdict') or '?', 12)} from {source}"
    if f.get("org_id") and show_org:
        text += f" (org {clean(f.get('org_id'), 40)})"
    return text


def _unique_reports(reports: list[dict[str, Any]]) -> list[tuple[dict[str, Any], bool]]:
    seen: set[Any] = set()
    out = []
    for r in reports:
        rid = r.get("report_id")
        dup = rid is not None and rid in seen
        seen.add(rid)
        out.append((r, dup))
    return out


def _counted(counter: Counter[str]) -> str:
    return ", ".join(f"{clean(k, 40)} ×{n}" for k, n in sorted(counter.items(),
                                                             key=lambda kv: (-kv[1], kv[0])))


def _file_summary(reports: list[dict[str, Any]]) -> str:
    files: Counter[str] = Counter()
    for r in reports:
        f = r.get("file") if isinstance(r.get("file"), dict) else {}
        size = f.get("size")
        bits = [clean(f.get("name") or "?", 60), clean(f.get("type") or "other", 12),
                f"{size:,} bytes" if isinstance(size, int) else "size ?",
                f"signed by {clean(f.get('signer'), 40)}" if f.get("signed") else "unsigned",
                clean(f.get("path") or "other", 16)]
        files[" · ".join(bits)] += 1
    if not files:
        return "(no report)"
    top = files.most_common()
    more = f" (and {len(top) - 1} other variant(s))" if len(top) > 1 else ""
    return top[0][0] + more


def _sensor_summary(reports: list[dict[str, Any]]) -> str:
    scores: dict[str, list[float]] = {}
    for r in reports:
        v = r.get("verdicts")
        if isinstance(v, dict):
            for k, s in v.items():
                if isinstance(s, int | float) and not isinstance(s, bool):
                    scores.setdefault(k, []).append(float(s))
    if not scores:
        return "(none)"
    return "; ".join(f"{clean(k, 30)} max {max(v):.2f}, mean {sum(v) / len(v):.2f} "
                     f"over {len(v)}" for k, v in sorted(scores.items()))


MAX_SCORE_ROWS = 24   # per-report score rows shown in text (evenly spaced, first and last kept)


def _report_score_table(scores: list[dict[str, Any]]) -> list[str]:
    if len(scores) > MAX_SCORE_ROWS:
        step = (len(scores) - 1) / (MAX_SCORE_ROWS - 1)
        scores = [scores[round(i * step)] for i in range(MAX_SCORE_ROWS)]
    return _score_table([
        (_ts(s.get("ts")), s.get("score"),
         s.get("classifiers") if isinstance(s.get("classifiers"), dict) else {},
         f"report {clean(s.get('org_id'), 40)} {clean(s.get('device_id'), 40)}")
        for s in scores])


def _decision_score_table(decisions: list[DecisionRecord]) -> list[str]:
    return _score_table([(format_ts(d.event_ts), d.score, d.classifiers,
                          f"{clean(d.action or '?', 10)} {target(d)}") for d in decisions])


ScoreRow = tuple[str, Any, dict[str, Any], str]   # (time, score, classifiers, what), as shown


def _score_table(rows: list[ScoreRow]) -> list[str]:
    names: list[str] = []
    for _, _, c, _ in rows:
        names.extend(k for k in c if k not in names)
    names = names[:8]
    widths = [max(6, min(len(clean(n, 12)), 12)) for n in names]
    head = f"  {'event time':<24}  {'score':>6}  " + "  ".join(
        f"{clean(n, 12):>{w}}" for n, w in zip(names, widths, strict=True))
    out = [head.rstrip()]
    for when, score, c, what in rows:
        cells = "  ".join(f"{_num(c.get(n)) if n in c else '-':>{w}}"
                          for n, w in zip(names, widths, strict=True))
        out.append(f"  {when:<24}  {_num(score):>6}  {cells}  {what}")
    return out


class _Scrubber:
    """Replaces other tenants' org and device ids in text (whole ids only)."""

    def __init__(self, orgs: set[str], devices: set[str]) -> None:
        names = sorted(orgs | devices, key=len, reverse=True)
        self.kind = {n: ("another org" if n in orgs else "another device") for n in names}
        self.pattern = (re.compile("|".join(
            f"(?<![{_ID_CHARS}]){re.escape(n)}(?![{_ID_CHARS}])" for n in names))
            if names else None)

    def __call__(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: f"({self.kind[m.group(0)]})", text)


# ---------------------------------------------------------------- the story

def render(story: Story, org: str | None = None, source: str = "",
           timeline: bool = True) -> str:
    """The story as text: summary, classifier scores, timeline.

    ``org``: that tenant's own view; other tenants appear only as counts.
    ``source``: one line saying where the data came from.
    """
    reports = _unique_reports(story.reports)
    own = (lambda x: x.get("org_id") == org) if org is not None else (lambda x: True)

    def visible_feedback(f: dict[str, Any]) -> bool:
        return org is None or f.get("source") in _TRUSTED or f.get("org_id") == org

    out: list[str] = [f"rapidloop explain {story.sha256}"]
    if source:
        out.append(f"  from      {source}")
    out.append("  view      " + ("everything (operator view)" if org is None else
                                 f"organization {clean(org, 40)}: other organizations "
                                 "appear only as counts"))
    out.append("")

    # --- summary
    uniq = [r for r, dup in reports if not dup]
    dups = sum(dup for _, dup in reports)
    mine = [r for r in uniq if own(r)]
    others = [r for r in uniq if not own(r)]
    out.append("Summary")
    if org is None:
        orgs = Counter(clean(r.get("org_id"), 40) for r in uniq)
        devices = {(r.get("org_id"), r.get("device_id")) for r in uniq}
        span = (f", {_ts(uniq[0].get('ts'))} → {_ts(uniq[-1].get('ts'))}" if uniq else "")
        out.append(f"  reports     {len(uniq)} from {len(orgs)} org(s) on {len(devices)} "
                   f"device(s){span}" + (f"; {dups} redelivered duplicate(s)" if dups else ""))
        for o, n in sorted(orgs.items()):
            devs = len({r.get("device_id") for r in uniq if clean(r.get("org_id"), 40) == o})
            out.append(f"              {o}: {n} report(s), {devs} device(s)")
    else:
        devs = len({r.get("device_id") for r in mine})
        other_orgs = len({r.get("org_id") for r in others})
        out.append(f"  reports     {len(mine)} from your organization on {devs} device(s); "
                   f"{len(others)} from {other_orgs} other organization(s)")
    label = "" if org is None else " (your reports)"
    behaviours: Counter[str] = Counter()
    for r in mine:
        if isinstance(r.get("behaviors"), list):
            behaviours.update(str(b) for b in dict.fromkeys(r["behaviors"]))
    out.append(f"  file        {_file_summary(mine)}{label}")
    out.append(f"  behaviours  {_counted(behaviours) or '(none)'}{label}")
    out.append(f"  sensors     {_sensor_summary(mine)}{label}")
    shown_fb = [f for f in story.feedback if visible_feedback(f)]
    hidden_fb = len(story.feedback) - len(shown_fb)
    fb_text = "; ".join(f"{_feedback_text(f, org is None or f.get('org_id') == org)} "
                        f"at {_ts(f.get('ts'))}"
                        for f in shown_fb) or "(none)"
    if hidden_fb:
        fb_text += f"; {hidden_fb} org report(s) from other organizations"
    out.append(f"  feedback    {fb_text}")
    shown_dec = [d for d in story.decisions if in_view(d, org)]
    hidden_dec = len(story.decisions) - len(shown_dec)
    kinds = Counter(f"{clean(d.action, 10)}/{clean(d.scope, 10)}" for d in shown_dec)
    dec_text = f"{len(shown_dec)}" + (f": {_counted(kinds)}" if kinds else "")
    if hidden_dec:
        dec_text += f"; {hidden_dec} for other organizations"
    out.append(f"  decisions   {dec_text}")
    times = [t for t in (parse_ts_or_none(x.get("ts")) for x in story.reports + story.feedback)
             if t is not None]
    times += [d.event_ts for d in story.decisions]
    if times:
        last = max(times)
        active = in_force(shown_dec, last)
        text = "; ".join(f"{clean(d.action, 10)} {target(d)}"
                         + (f" until {until}" if (until := _expiry(d)) else "")
                         for d in active) or "nothing"
        out.append(f"  in force    at {format_ts(last)} (the last event): {text}")
    if story.untimed:
        out.append(f"  unreadable  {story.untimed} message(s) without a readable time "
                   "(not shown)")
    out.append("")

    # --- scores
    out.append("Classifier scores (each decision's `classifiers`: the models at that moment)")
    out.extend(_decision_score_table(shown_dec) if shown_dec else ["  (no decision)"])
    shown_scores = [x for x in story.scores if org is None or x.get("org_id") == org]
    if shown_scores:
        out.append("")
        out.append(f"Scores at the file's reports ({len(shown_scores)}; the models replayed over "
                   "the input, as each report met them)")
        out.extend(_report_score_table(shown_scores))
    out.append("")

    # --- timeline
    if timeline:
        out.append("Timeline (event time)")
        events: list[tuple[float, int, int, str | None, str]] = []

        def add(t: float | None, order: int, i: int, hidden: str | None, text: str) -> None:
            if t is not None:
                events.append((t, order, i, hidden, text))

        for i, (r, dup) in enumerate(reports):
            vis = own(r)
            if dup and not vis:
                continue   # hidden and not counted anyway
            add(parse_ts_or_none(r.get("ts")), 0, i, None if vis else "r",
                _report_line(r, dup) if vis else str(r.get("org_id")))
        for i, f in enumerate(story.feedback):
            vis = visible_feedback(f)
            add(parse_ts_or_none(f.get("ts")), 0, 10**9 + i, None if vis else "f",
                "feedback " + _feedback_text(f, org is None or f.get("org_id") == org)
                if vis else str(f.get("org_id")))
        for i, d in enumerate(story.decisions):
            vis = in_view(d, org)
            add(d.event_ts, 1, i, None if vis else "d",
                _decision_line(d) if vis else str(d.org_id))
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        pending: list[tuple[float, str, str]] = []

        def flush() -> None:
            if not pending:
                return
            n = Counter(kind for _, kind, _ in pending)
            what = ", ".join(f"{n[k]} {name}" for k, name in
                             (("r", "report(s)"), ("f", "org report(s)"), ("d", "decision(s)"))
                             if n[k])
            who = len({o for _, _, o in pending})
            out.append(f"  {format_ts(pending[0][0]):<24}  … other organizations: {what} "
                       f"({who} org(s))" + (f" until {format_ts(pending[-1][0])}"
                                             if pending[-1][0] != pending[0][0] else ""))
            pending.clear()

        for t, _, _, hidden_kind, text in events:
            if hidden_kind is not None:
                pending.append((t, hidden_kind, text))
                continue
            flush()
            out.append(f"  {format_ts(t):<24}  {text}")
        flush()
        if not events:
            out.append("  (nothing about this file)")

    scrub = tenant_scrubber(story, org)
    return "\n".join(scrub(line) for line in out) + "\n"


def tenant_scrubber(story: Story, org: str | None) -> Callable[[str], str]:
    """For ``org``'s view: text with every other tenant's org and device ids replaced."""
    if org is None:
        return lambda text: text
    other_orgs = {str(x.get("org_id")) for x in story.reports + story.feedback
                  if x.get("org_id") not in (None, org)}
    other_orgs |= {d.org_id for d in story.decisions if d.org_id not in (None, org)}
    other_devices = {str(x.get("device_id")) for x in story.reports
                     if x.get("device_id") and x.get("org_id") != org}
    other_devices |= {d.device_id for d in story.decisions
                      if d.device_id and d.org_id != org}
    own_devices = {str(r.get("device_id")) for r in story.reports if r.get("org_id") == org}
    return _Scrubber(other_orgs - {org}, other_devices - own_devices - {org})
