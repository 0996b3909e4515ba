"""The examples in the docstrings are run: an example that no longer holds is a bug."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rapidloop

PACKAGES = ("rapidloop.operators", "rapidloop.schemas", "rapidloop.flows", "rapidloop.tools.sim")


def _modules() -> list[str]:
    names = []
    for pkg in PACKAGES:
        mod = importlib.import_module(pkg)
        names += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules(mod.__path__)]
    return [*names, *(f"rapidloop.{m.name}" for m in pkgutil.iter_modules(rapidloop.__path__)
                      if not m.ispkg)]


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"
