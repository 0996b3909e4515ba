"""The layout reads bottom-up: each layer imports only the layers below it.

    base  <  schemas  <  operators  <  flows  <  tools  <  feeds  <  client, cli

``base`` (configuration, Kafka client settings, stats) imports nothing of the
project; the logic never imports the flow; the flow never imports the tools
built on it; and CLI subcommands share ``cli.common`` but never import each
other. Imports inside function bodies count as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package prefix -> (layer rank, its folder)
LAYERS: dict[str, tuple[int, Path]] = {
    "rapidloop.base": (0, ROOT / "rapidloop" / "base"),
    "rapidloop.schemas": (1, ROOT / "schemas"),
    "rapidloop.operators": (2, ROOT / "operators"),
    "rapidloop.flows": (3, ROOT / "flows"),
    "rapidloop.tools": (4, ROOT / "rapidloop" / "tools"),
    "rapidloop.feeds": (5, ROOT / "rapidloop" / "feeds"),
    "rapidloop.client": (6, ROOT / "rapidloop" / "client.py"),
    "rapidloop.cli": (7, ROOT / "rapidloop" / "cli"),
}


def _layer(module: str) -> str | None:
    for name in sorted(LAYERS, key=len, reverse=True):
        if module == name or module.startswith(name + "."):
            return name
    return None


def _imports(path: Path, package: str) -> list[str]:
    """Every project module ``path`` imports, relative imports resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            out.append(mod)
            # `from rapidloop import config` names a module, not an attribute
            out += [f"{mod}.{a.name}" for a in node.names if mod == "rapidloop"]
    return [m for m in out if m == "rapidloop" or m.startswith("rapidloop.")]


def _modules(prefix: str) -> list[tuple[Path, str]]:
    """(file, the package it sits in) for every module of one layer."""
    _, where = LAYERS[prefix]
    if where.is_file():
        return [(where, "rapidloop")]
    out = []
    for path in sorted(where.rglob("*.py")):
        rel = path.relative_to(where).with_suffix("")
        parts = [prefix, *rel.parts[:-1]]
        out.append((path, ".".join(parts)))
    return out


@pytest.mark.parametrize("prefix", list(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(prefix: str) -> None:
    rank = LAYERS[prefix][0]
    wrong = []
    for path, package in _modules(prefix):
        for mod in _imports(path, package):
            target = _layer(mod)
            if mod in ("rapidloop",) or target is None:
                continue
            if LAYERS[target][0] > rank:
                wrong.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_every_project_module_sits_in_a_layer() -> None:
    loose = [p.name for p in (ROOT / "rapidloop").glob("*.py")
             if p.name not in ("__init__.py", "client.py")]
    assert not loose, f"modules outside a layer: {loose}"


def test_cli_subcommands_never_import_each_other() -> None:
    wrong = []
    for path, package in _modules("rapidloop.cli"):
        for mod in _imports(path, package):
            if (mod.startswith("rapidloop.cli.") and mod != "rapidloop.cli.common"
                    and path.name != "__main__.py"):
                wrong.append(f"{path.name} imports {mod}")
    assert not wrong, "\n".join(wrong)


def test_the_scan_sees_imports_inside_functions() -> None:
    found = _imports(ROOT / "flows" / "replay.py", "rapidloop.flows")
    assert "rapidloop.flows.dataflow" in found          # imported inside a function body
    assert "rapidloop.base.progress" in found
