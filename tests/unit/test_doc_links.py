"""Every relative link in the README, the CHANGELOG and docs/ resolves to a file inside
the repository: the project stands alone, and a clone has no ``../shared``. An anchor
(``#section``) names a heading of the page it points to, and the README stays a front
door."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "infra").rglob("README.md"))]
README_MAX_LINES = 250


def _ids(p: Path) -> str:
    return str(p.relative_to(ROOT))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped but for ``-``
    and ``_``, spaces to ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)   # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    """The anchors of a page's headings (code blocks skipped; repeats get -1, -2 ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    fenced = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_the_slug_follows_github() -> None:
    assert slug("Detection quality, measured") == "detection-quality-measured"
    assert slug("Simulated worlds (`rapidloop simulate`)") == "simulated-worlds-rapidloop-simulate"
    assert slug("0.1.0 — Unreleased") == "010--unreleased"
    assert slug("Policy: the expected cost of a block") == "policy-the-expected-cost-of-a-block"
    assert slug("`rapidloop evaluate` and `make eval`") == "rapidloop-evaluate-and-make-eval"
    assert slug("What-if: the same input") == "what-if-the-same-input"
    assert slug("stream_input order") == "stream_input-order"


@pytest.mark.parametrize("doc", DOCS, ids=_ids)
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    bad = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue   # a URL or an anchor in the same page
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            bad.append(target)
    assert not bad, f"{doc.relative_to(ROOT)}: links that leave or miss the repository: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids)
def test_anchors_name_a_heading(doc: Path) -> None:
    """``#anchor`` in the same page, or ``page.md#anchor`` in another Markdown page."""
    bad = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"^[a-z]+:", target) or "#" not in target:
            continue
        page, anchor = target.split("#", 1)
        path = (doc.parent / page).resolve() if page else doc
        if path.suffix == ".md" and path.is_file() and anchor not in anchors(path):
            bad.append(target)
    assert not bad, f"{doc.relative_to(ROOT)}: anchors that name no heading: {bad}"


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < README_MAX_LINES, (
        f"README.md has {lines} lines (under {README_MAX_LINES}): the depth goes to docs/")


def test_the_contract_is_docs_contract_md() -> None:
    contract = ROOT / "docs" / "contract.md"
    assert contract.is_file(), "the wire and command contract lives in docs/contract.md"
    text = contract.read_text(encoding="utf-8")
    for schema in sorted((ROOT / "schemas" / "json").glob("*.schema.json")):
        assert f"../schemas/json/{schema.name}" in text, f"docs/contract.md links no {schema.name}"
