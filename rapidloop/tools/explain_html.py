"""`rapidloop explain --html`: the story of one file as one self-contained page.

One HTML file with inline CSS and an inline SVG chart, no script and no
network reference (no external stylesheet, font, image or link), so it can
be attached to a ticket and opened anywhere. The chart plots the ensemble's
score (:data:`SCORE_COLOUR`) and each classifier's score over event time,
taken from the decisions' ``classifiers`` field (a sampled series: one point
per decision), with every decision as a vertical marker, trusted and visible
feedback as diamonds on top, and the reports as ticks along the time axis.
Below it, the same text story ``rapidloop explain`` prints.

The tenant view (``org=...``) draws only what the text view shows: that
organization's reports, its own and global decisions, trusted verdicts and
its own org reports; tooltips go through the same scrubber as the text.
"""

from __future__ import annotations

import html
from typing import Any

from rapidloop.schemas.enforcement import in_view
from rapidloop.schemas.timefmt import format_ts, parse_ts_or_none
from rapidloop.schemas.wire import DecisionRecord
from rapidloop.tools.explain import Story, clean, render, target, tenant_scrubber

Point = tuple[float, float | None, dict[str, float]]   # (time, ensemble score, each classifier's)

SCORE_COLOUR = "#d62728"   # the ensemble score line: the colour tests look for
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2",
           "#7f7f7f")
ACTION_COLOUR = {"block": "#222222", "unblock": "#2ca02c", "allow": "#1f77b4", "audit": "#999999"}
W, H = 1100, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 64, 60
# Width of one character of the chart's 11px sans-serif text, above the real average
# (about 6px for the labels' digits and lowercase in DejaVu Sans, a wide fallback), so
# that labels placed with it stay inside the viewBox: the page has no script to measure
# text, and text past the edge is clipped.
CHAR_W = 6.8
_TRUSTED = ("sandbox", "analyst")

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; word-break: break-all; }
.meta { color: #555; margin: 0 0 12px; }
.legend span { display: inline-block; margin-right: 16px; }
.legend i { display: inline-block; width: 18px; height: 4px; vertical-align: middle;
            margin-right: 6px; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _short(t: float) -> str:
    return format_ts(t)[5:16].replace("T", " ")


def _fit(x: float, text: str, anchor: str = "middle") -> str:
    """The text-anchor that keeps ``text`` drawn at ``x`` inside the chart's width.

    A label that would run past the right edge is anchored at its end instead (and past
    the left edge at its start), so the last time label and a decision near the end of
    the axis are not clipped by the viewBox.
    """
    width = len(text) * CHAR_W
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    if left + width > W:
        return "end"
    if left < 0:
        return "start"
    return anchor


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _report_point(t: float, x: dict[str, Any]) -> Point:
    """A row of ``story.scores`` (``modelwalk.score_history``) as a chart point."""
    c = x.get("classifiers")
    per = {k: v for k, v in ((k, _number(v)) for k, v in c.items()) if v is not None} \
        if isinstance(c, dict) else {}
    return (t, _number(x.get("score")), per)


def render_html(story: Story, org: str | None = None, source: str = "") -> str:
    """The story as a self-contained HTML page (chart plus the text story)."""
    scrub = tenant_scrubber(story, org)

    def visible_feedback(f: dict[str, Any]) -> bool:
        return org is None or f.get("source") in _TRUSTED or f.get("org_id") == org

    decisions = [(d.event_ts, d) for d in story.decisions if in_view(d, org)
                 if d.event_ts is not None]
    feedback = [(t, f) for f in story.feedback if visible_feedback(f)
                if (t := parse_ts_or_none(f.get("ts"))) is not None]
    reports = [(t, r) for r in story.reports if org is None or r.get("org_id") == org
               if (t := parse_ts_or_none(r.get("ts"))) is not None]
    # scores: at every report when the models were replayed, else at each decision
    replayed = [_report_point(t, x) for x in story.scores if org is None or x.get("org_id") == org
                if (t := parse_ts_or_none(x.get("ts"))) is not None]
    points = replayed or [(t, d.score, d.classifiers) for t, d in decisions]
    times = [t for t, _ in decisions + feedback + reports]
    svg = _chart(decisions, feedback, reports, times, scrub, points)

    names = _classifier_names(points)
    legend = [f'<span><i style="background:{SCORE_COLOUR}"></i>ensemble score</span>']
    legend += [f'<span><i style="background:{PALETTE[i % len(PALETTE)]}"></i>{_e(clean(n, 30))}'
               f"</span>" for i, n in enumerate(names[:8])]
    legend += [f'<span><i style="background:{c}"></i>{a} decision</span>'
               for a, c in ACTION_COLOUR.items() if any(d.action == a for _, d in decisions)]
    text = render(story, org=org, source=source)
    score_note = ("scores at every report (the models replayed over the input)"
                  if replayed else
                  "scores are each decision's <code>classifiers</code> (one point per decision)")
    view = ("everything (operator view)" if org is None
            else f"organization {clean(org, 40)}: other organizations appear only as counts")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>rapidloop explain {_e(story.sha256[:16])}…</title>"
        f"<style>{CSS}</style></head><body>\n"
        f"<h1>rapidloop explain {_e(story.sha256)}</h1>\n"
        f'<p class="meta">{_e(scrub(source))}<br>view: {_e(view)}<br>'
        f"{len(reports)} report(s), {len(feedback)} feedback, {len(decisions)} decision(s) "
        f"shown; {score_note}</p>\n"
        f"{svg}\n<p class=\"legend\">{''.join(legend)}</p>\n"
        f"<pre>{_e(text)}</pre>\n</body></html>\n")


def _classifier_names(points: list[Point]) -> list[str]:
    names: list[str] = []
    for _, _, c in points:
        names.extend(k for k in c if k not in names)
    return names


def _chart(decisions: list[tuple[float, DecisionRecord]],
           feedback: list[tuple[float, dict[str, Any]]],
           reports: list[tuple[float, dict[str, Any]]], times: list[float],
           scrub: Any, points: list[Point] | None = None) -> str:
    """``points``: where the score series come from (default: the decisions)."""
    if points is None:
        points = [(t, d.score, d.classifiers) for t, d in decisions]
    parts = [f'<svg id="chart" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
             'aria-label="classifier scores over event time">',
             f'<rect x="0" y="0" width="{W}" height="{H}" fill="#ffffff"/>']
    if not times:
        parts.append(f'<text x="{W // 2}" y="{H // 2}" text-anchor="middle">'
                     "nothing about this file</text></svg>")
        return "".join(parts)
    t0, t1 = min(times), max(times)
    span = max(t1 - t0, 1.0)
    t0 -= span * 0.03
    t1 += span * 0.03
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return round(LEFT + (t - t0) / (t1 - t0) * pw, 1)

    def y(v: float) -> float:
        return round(TOP + (1 - max(0.0, min(1.0, v))) * ph, 1)

    # axes and grid
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v)}" y2="{y(v)}" '
                     f'stroke="#e5e5e5"/><text x="{LEFT - 8}" y="{y(v) + 4}" '
                     f'text-anchor="end">{v:.2f}</text>')
    for i in range(5):
        t = t0 + (t1 - t0) * i / 4
        parts.append(f'<text x="{x(t)}" y="{H - BOTTOM + 32}" '
                     f'text-anchor="{_fit(x(t), _short(t))}">'
                     f"{_e(_short(t))}</text>")
    parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{TOP + ph}" y2="{TOP + ph}" '
                 'stroke="#888"/>')
    parts.append(f'<text x="{LEFT}" y="{H - 6}">event time (UTC)</text>'
                 f'<text x="{LEFT - 50}" y="{TOP - 12}">score</text>')
    # reports: ticks under the axis
    for t, r in reports:
        tip = scrub(f"report {format_ts(t)} {clean(r.get('org_id'), 40)} "
                    f"{clean(r.get('device_id'), 40)}")
        parts.append(f'<line x1="{x(t)}" x2="{x(t)}" y1="{TOP + ph + 2}" y2="{TOP + ph + 12}" '
                     f'stroke="#777"><title>{_e(tip)}</title></line>')
    # decisions: vertical markers
    for i, (t, d) in enumerate(decisions):
        colour = ACTION_COLOUR.get(str(d.action), "#999999")
        tip = scrub(f"{clean(d.action, 10)} {target(d)} at {format_ts(t)}: "
                    + "; ".join(clean(r, 120) for r in d.reasons))
        parts.append(f'<line x1="{x(t)}" x2="{x(t)}" y1="{TOP}" y2="{TOP + ph}" '
                     f'stroke="{colour}" stroke-dasharray="4 3" stroke-width="1.5">'
                     f"<title>{_e(tip)}</title></line>")
        label = scrub(f"{clean(d.action, 10)} {clean(d.scope, 10)}")
        ly = TOP - 4 - (i % 3) * 14   # staggered: close decisions stay readable
        # right of its line, or left of it when that would run past the edge
        anchor = _fit(x(t) + 3, label, "start")
        lx = x(t) - 3 if anchor == "end" else x(t) + 3
        parts.append(f'<text x="{lx}" y="{ly}" text-anchor="{anchor}" fill="{colour}">'
                     f"{_e(label)}</text>")
    # classifier series, then the ensemble on top of them
    series: list[tuple[str, str, float, list[tuple[float, float]]]] = []
    for i, n in enumerate(_classifier_names(points)[:8]):
        pts = [(t, c[n]) for t, _, c in points if n in c]
        series.append((n, PALETTE[i % len(PALETTE)], 1.5, pts))
    series.append(("ensemble score", SCORE_COLOUR, 3.0,
                   [(t, score) for t, score, _ in points if score is not None]))
    for name, colour, width, pts in series:
        if not pts:
            continue
        coords = " ".join(f"{x(t)},{y(v)}" for t, v in pts)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                     f'stroke-width="{width}"><title>{_e(clean(name, 30))}</title></polyline>')
        for t, v in pts:
            parts.append(f'<circle cx="{x(t)}" cy="{y(v)}" r="{width + 1.5}" fill="{colour}">'
                         f"<title>{_e(clean(name, 30))} {v:.3f} at {format_ts(t)}</title>"
                         "</circle>")
    # feedback: diamonds near the top, drawn last (SVG paints in document order) so a
    # score near 1, the usual case once a file is blocked, does not hide the verdict;
    # the white outline keeps the diamond apart from a line of the same colour crossing it
    for t, f in feedback:
        cx, cy = x(t), TOP + 10
        tip = scrub(f"feedback {clean(f.get('verdict'), 12)} from {clean(f.get('source'), 20)} "
                    f"at {format_ts(t)}")
        colour = "#b00020" if f.get("verdict") == "malicious" else "#2ca02c"
        parts.append(f'<polygon class="verdict" points="{cx},{cy - 7} {cx + 7},{cy} '
                     f'{cx},{cy + 7} {cx - 7},{cy}" fill="{colour}" stroke="#ffffff" '
                     f'stroke-width="1.5"><title>{_e(tip)}</title></polygon>')
    parts.append("</svg>")
    return "".join(parts)
