"""`rapidloop explain --html` on a campaign hash of a simulated day, rendered by real chromium.

The page must be self-contained (no network reference) and, opened in a
headless browser, draw the score chart: the screenshot is checked for the
ensemble line's colour (``SCORE_COLOUR``).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from rapidloop.cli import main
from rapidloop.tools.explain_html import SCORE_COLOUR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Path]:
    """A simulated day, one replay of it, and a blocked campaign hash with a sandbox verdict."""
    tmp = tmp_path_factory.mktemp("explain-html")
    world = tmp / "day"
    assert main(["simulate", "--out", str(world), "--reports", "30000", "--seed", "1"]) == 0
    decisions = tmp / "decisions.jsonl"
    assert main(["replay", "--reports", str(world / "reports.jsonl.gz"),
                 "--feedback", str(world / "feedback.jsonl.gz"), "--output", str(decisions),
                 "--quiet"]) == 0
    blocked: dict[str, set[str]] = {}
    for line in decisions.read_text().splitlines():
        d = json.loads(line)
        if d["action"] == "block":
            blocked.setdefault(d["sha256"], set()).add(d["scope"])
    sandboxed = set()
    with gzip.open(world / "feedback.jsonl.gz", "rt") as f:
        for line in f:
            try:
                fb = json.loads(line)
            except ValueError:
                continue
            if isinstance(fb, dict) and fb.get("source") == "sandbox":
                sandboxed.add(fb.get("sha256"))
    for line in (world / "truth.jsonl").read_text().splitlines():
        t = json.loads(line)
        sha = t["sha256"]
        if (t["label"] == "malicious" and t.get("kind") == "campaign" and t["orgs"] >= 3
                and sha in sandboxed and {"global", "org"} <= blocked.get(sha, set())):
            return world, sha, decisions
    raise AssertionError("no blocked campaign hash with a sandbox verdict in the simulated day")


def test_explain_tells_the_campaign_story_and_writes_a_page(story, tmp_path: Path,
                                                            capsys) -> None:
    world, sha, decisions = story
    page = tmp_path / "story.html"
    capsys.readouterr()
    assert main(["explain", sha, "--from", str(world), "--decisions", str(decisions),
                 "--html", str(page)]) == 0
    out, err = capsys.readouterr()
    assert f"wrote {page}" in err
    orgs = re.findall(r"^ {14}(org-\d+): \d+ report", out, re.MULTILINE)
    assert len(orgs) >= 3, out
    assert "malicious from sandbox" in out
    assert re.search(r"DECISION BLOCK +global +score 0\.\d{3}", out)
    assert re.search(r"DECISION BLOCK +org org-\d+", out)
    assert re.search(r"^  event time +score +prior", out, re.MULTILINE)
    html = page.read_text()
    assert "<svg" in html and f'stroke="{SCORE_COLOUR}"' in html
    assert html.count("<polyline") >= 2
    assert not re.search(r"(?:src|href)\s*=|https?://|@import|url\(", html)
    assert "malicious from sandbox" in html and "block global" in html
    # the sandbox verdict's diamond is painted after (over) the score lines, and the last
    # time label is anchored at its end so the viewBox does not clip it
    # (tests/unit/test_explain_html_chart.py checks the geometry in detail)
    svg = html[html.index('<svg id="chart"'):html.index("</svg>")]
    assert svg.rindex("<polyline") < svg.index("<polygon")
    axis_labels = re.findall(r'<text x="([\d.]+)" y="\d+" text-anchor="(\w+)">'
                             r"\d\d-\d\d \d\d:\d\d</text>", svg)
    assert len(axis_labels) == 5 and axis_labels[-1][1] == "end", axis_labels

    # without --decisions the files are replayed on the spot, with the same story
    assert main(["explain", sha, "--from", str(world), "--no-timeline"]) == 0
    replayed = capsys.readouterr().out
    assert "decisions from a replay of the files" in replayed
    assert replayed.split("Summary")[1] == out.split("Summary")[1].split("Timeline")[0]


def test_tenant_page_shows_no_other_tenant(story, tmp_path: Path, capsys) -> None:
    world, sha, decisions = story
    page = tmp_path / "tenant.html"
    assert main(["explain", sha, "--from", str(world), "--decisions", str(decisions),
                 "--no-timeline"]) == 0
    text = capsys.readouterr().out
    orgs = re.findall(r"^ {14}(org-\d+): ", text, re.MULTILINE)
    me, others = orgs[0], orgs[1:]
    assert main(["explain", sha, "--from", str(world), "--decisions", str(decisions),
                 "--org", me, "--html", str(page)]) == 0
    html = page.read_text()
    assert me in html
    for other in others:
        assert other not in html


def _stroke_pixels(png: Path, colour: str, tolerance: int = 12) -> int:
    from PIL import Image

    want = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 24) or []
    return sum(n for n, px in colours
               if all(abs(a - b) <= tolerance for a, b in zip(px, want, strict=True)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install -y chromium): the page cannot be rendered")
def test_page_renders_a_chart_in_headless_chromium(story, tmp_path: Path) -> None:
    world, sha, decisions = story
    page = tmp_path / "story.html"
    assert main(["explain", sha, "--from", str(world), "--decisions", str(decisions),
                 "--html", str(page), "--no-timeline"]) == 0
    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory(prefix="rapidloop-chromium-") as profile:
        cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               f"--screenshot={shot}", "--window-size=1200,900", page.resolve().as_uri()]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            output = b"(timed out)"
        finally:
            # chromium runs helper processes: end the whole group it started, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert shot.is_file(), output.decode(errors="replace")[-2000:]
    drawn = _stroke_pixels(shot, SCORE_COLOUR)
    assert drawn > 150, f"only {drawn} pixels of the score line's colour in the screenshot"
    assert _stroke_pixels(shot, "#ffffff", 0) > 100_000   # and a mostly white page
