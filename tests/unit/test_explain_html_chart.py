"""The `explain --html` chart's geometry, checked on the SVG itself (no browser).

Two bugs were seen in the rendered page: the last time label ran past the
right edge of the viewBox and was clipped, and the sandbox verdict's diamond
was painted under the score line (SVG paints in document order), so a
blocked file's score near 1 hid it. Widths are measured with DejaVu Sans, the
wide fallback font Chromium uses for ``system-ui`` on a bare Linux (and which
matplotlib ships), not with the chart's own estimate, so the estimate is
checked too.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from rapidloop.schemas.wire import DecisionRecord, read_decision
from rapidloop.tools.explain import Story
from rapidloop.tools.explain_html import SCORE_COLOUR, H, W, render_html

SHA = "ab" * 32
FONT_PX = 11          # `svg text { font: 11px ... }` in explain_html.CSS


def _ts(minute: int) -> str:
    return f"2026-11-28T{10 + minute // 60:02d}:{minute % 60:02d}:00.000Z"


def _decision(n: int, action: str, scope: str, minute: int, score: float,
              org: str | None = "acme") -> DecisionRecord:
    return read_decision({
        "decision_id": f"d-{n}", "sha256": SHA, "action": action, "scope": scope,
        "org_id": None if scope == "global" else org, "device_id": None, "score": score,
        "classifiers": {"prior": score, "logreg": min(1.0, score + 0.02), "tree": 0.5},
        "reasons": [f"reason {n}"], "model_version": "ens-0", "event_ts": _ts(minute),
        "decided_at": _ts(minute), "expires_at": None})


def _story() -> Story:
    """A file blocked everywhere, its score pinned near 1 when the sandbox verdict lands,
    with the last decision at the last moment (its label at the right edge)."""
    reports = [{"report_id": f"r-{i}", "ts": _ts(i * 7), "org_id": f"org-{i % 3}",
                "device_id": f"dev-{i}", "sha256": SHA, "source": "edr",
                "file": {"name": "x.exe", "size": 1, "type": "pe", "signed": False,
                         "signer": None, "path": "downloads"},
                "behaviors": ["process_injection"], "verdicts": {}, "parent_sha256": None}
               for i in range(10)]
    decisions = [_decision(1, "block", "org", 7, 0.91),
                 _decision(2, "block", "global", 21, 0.98),
                 _decision(3, "block", "global", 35, 0.97),
                 _decision(4, "unblock", "global", 63, 0.99)]
    feedback = [{"feedback_id": "f-1", "ts": _ts(35), "sha256": SHA, "verdict": "malicious",
                 "source": "sandbox", "org_id": None}]
    return Story(sha256=SHA, reports=reports, feedback=feedback, decisions=decisions)


def _svg(page: str) -> ET.Element:
    m = re.search(r'<svg id="chart".*?</svg>', page, re.DOTALL)
    assert m, "no chart in the page"
    return ET.fromstring(m.group(0))


@cache
def _font() -> Any:
    pil = pytest.importorskip("PIL.ImageFont")
    mpl = pytest.importorskip("matplotlib")
    path = Path(mpl.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return pil.truetype(str(path), FONT_PX)


def _extent(el: ET.Element) -> tuple[float, float]:
    """Left and right edge of a <text>, from its anchor and its measured width."""
    x = float(el.get("x", "0"))
    width = float(_font().getlength(el.text or ""))
    anchor = el.get("text-anchor", "start")
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return left, left + width


def _points(el: ET.Element) -> list[tuple[float, float]]:
    """The (x, y) pairs of a polyline's or polygon's ``points``."""
    pairs = (p.split(",") for p in el.get("points", "").split())
    return [(float(px), float(py)) for px, py in pairs]


@pytest.mark.parametrize("org", [None, "org-1"])
def test_every_label_is_inside_the_view_box(org: str | None) -> None:
    svg = _svg(render_html(_story(), org=org, source="fixtures"))
    assert svg.get("viewBox") == f"0 0 {W} {H}"
    texts = svg.findall("text")
    assert len(texts) > 10
    for el in texts:
        left, right = _extent(el)
        assert left >= 0 and right <= W, (el.text, el.get("x"), el.get("text-anchor"),
                                          round(left, 1), round(right, 1))
        assert 0 < float(el.get("y", "0")) <= H, el.text


def test_the_last_time_label_ends_at_the_axis_end() -> None:
    svg = _svg(render_html(_story()))
    axis_y = max(float(el.get("y", "0")) for el in svg.findall("text")
                 if re.fullmatch(r"\d\d-\d\d \d\d:\d\d", el.text or ""))
    ticks = [el for el in svg.findall("text") if float(el.get("y", "0")) == axis_y
             and re.fullmatch(r"\d\d-\d\d \d\d:\d\d", el.text or "")]
    assert len(ticks) == 5
    assert ticks[-1].get("text-anchor") == "end"
    assert _extent(ticks[-1])[1] <= W
    # the others stay centred on their time
    assert {el.get("text-anchor") for el in ticks[1:-1]} == {"middle"}


def test_a_decision_at_the_end_is_labelled_left_of_its_line() -> None:
    svg = _svg(render_html(_story()))
    label = next(el for el in svg.findall("text") if el.text == "unblock global")
    line_x = max(float(el.get("x1", "0")) for el in svg.findall("line")
                 if el.get("stroke-dasharray"))
    assert label.get("text-anchor") == "end" and float(label.get("x", "0")) < line_x


def test_verdict_markers_are_painted_over_the_score_lines() -> None:
    svg = _svg(render_html(_story()))
    children = list(svg)
    lines = [i for i, el in enumerate(children) if el.tag == "polyline"]
    score = [i for i in lines if children[i].get("stroke") == SCORE_COLOUR]
    verdicts = [i for i, el in enumerate(children)
                if el.tag == "polygon" and (el.findtext("title") or "").startswith("feedback")]
    assert score and len(lines) >= 2
    assert len(verdicts) == 1
    assert "malicious from sandbox" in (children[verdicts[0]].findtext("title") or "")
    # SVG paints in document order: later is on top, of the lines and their point markers
    assert min(verdicts) > max(i for i, el in enumerate(children)
                               if el.tag in ("polyline", "circle"))
    # and this story is the case that hid it: the score line passes through the diamond
    diamond = _points(children[verdicts[0]])
    top, bottom = min(y for _, y in diamond), max(y for _, y in diamond)
    assert any(px == diamond[0][0] and top <= py <= bottom
               for px, py in _points(children[score[0]]))


def test_an_empty_story_still_draws_a_well_formed_chart() -> None:
    svg = _svg(render_html(Story(sha256=SHA)))
    (el,) = svg.findall("text")
    assert el.text == "nothing about this file" and _extent(el)[1] <= W
