"""Operator state as versioned plain data: what a recovery snapshot holds.

Recovery stores each stateful step's state at every epoch close. Were that
a pickle of the operator objects, the class layout would be the on-disk
format: renaming a field would break every directory, and the code would
fill with shims for snapshots of older layouts. Instead each stateful
operator says what its state is (``snapshot()``: plain data) and how to
rebuild itself from it (``from_snapshot``), and the state travels in an
envelope naming its kind and version::

    {"format": "rapidloop-state", "kind": "correlator", "version": 1, "state": ...}

A change of layout bumps the kind's version and registers one migration
function from the version before (:func:`register`): an older snapshot is
migrated step by step on load, and domain code only ever sees the current
layout. Settings are not state: an operator restored takes them from the
configuration it is restored under.

**Serialisation.** The envelopes a step saves are pickled as plain data:
dicts, lists, tuples, sets, str, bytes, int, float, bool and None, and
nothing else; :func:`decode` refuses any class reference, so no rapidloop
class (nor any other) is ever unpickled from state. Not JSON: the state
holds infinities (times not yet set), tuple keys (enforcement targets), bytes
(the dedup ring's sealed chunks) and exact float and bool/int types, which
JSON would all change, and pickle of plain tuples is as fast as the per-file
rows need (a snapshot is taken of every shard at every epoch close). The
exception is River's estimators and metrics (the logistic regression, the
Hoeffding tree, the ROC AUC and log-loss trackers): third-party objects
with no plain form. They travel as one opaque pickled blob inside the state
(:func:`dump_objects`), loaded by an unpickler that refuses any class of
rapidloop's own (:func:`load_objects`); naive Bayes, a rapidloop subclass,
is saved as its counts.

>>> register("example", 2, {1: lambda s: {**s, "b": 0}})
>>> blob = encode([envelope("example", {"a": 1, "b": 2})])
>>> decode(blob, "example")
[{'a': 1, 'b': 2}]
>>> decode(encode([{**envelope("example", {"a": 1}), "version": 1}]), "example")
[{'a': 1, 'b': 0}]
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT = "rapidloop-state"
STATE_FORMAT = 1
"""The version of this envelope scheme, recorded in a recovery directory's manifest
(``flows.recovery``); a directory of another scheme is refused, not misread. Layout
changes within one kind are migrations, not a new scheme."""

Migration = Callable[[Any], Any]


class SnapshotError(ValueError):
    """Bytes that are not a snapshot this rapidloop can restore (one line, says why)."""


@dataclass(frozen=True)
class Kind:
    """A stateful operator's state: its current version and how to reach it."""

    version: int
    migrations: Mapping[int, Migration]   # from version v to v + 1


_KINDS: dict[str, Kind] = {}


def register(kind: str, version: int, migrations: Mapping[int, Migration] | None = None
             ) -> None:
    """Declare ``kind``'s current state ``version`` and a migration from each older one."""
    steps = dict(migrations or {})
    missing = [v for v in range(1, version) if v not in steps]
    if missing:
        raise ValueError(f"state {kind!r} version {version}: no migration from "
                         f"{', '.join(map(str, missing))}")
    _KINDS[kind] = Kind(version, steps)


def migrate(kind: str, version: int, state: Any) -> Any:
    """``state`` of ``kind`` at ``version``, brought to the current version."""
    spec = _KINDS.get(kind)
    if spec is None:
        raise SnapshotError(f"unknown state kind {kind!r}")
    if not isinstance(version, int) or version < 1 or version > spec.version:
        raise SnapshotError(f"state {kind!r} version {version!r} is not one this rapidloop "
                            f"reads (1 to {spec.version})")
    for v in range(version, spec.version):
        state = spec.migrations[v](state)
    return state


def envelope(kind: str, state: Any) -> dict[str, Any]:
    """``state`` (plain data, as ``snapshot()`` returns it) with its kind and version."""
    return {"format": FORMAT, "kind": kind, "version": _KINDS[kind].version, "state": state}


def encode(envelopes: list[dict[str, Any]]) -> bytes:
    """A step's snapshot: its operators' envelopes, as bytes.

    The state may share objects with the live operator: encode it before the
    operator moves on (it is serialised here, at once).
    """
    return pickle.dumps(envelopes, protocol=pickle.HIGHEST_PROTOCOL)


class _PlainUnpickler(pickle.Unpickler):
    """Loads plain data only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise SnapshotError(f"not plain data: it names {module}.{name} (a snapshot "
                            f"written as pickled objects, by an older rapidloop?)")


def loads_plain(blob: bytes) -> Any:
    """Plain data pickled by this module (or by ``pickle`` from plain data only)."""
    try:
        return _PlainUnpickler(io.BytesIO(blob)).load()
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(f"unreadable snapshot: {exc}") from None


def decode(blob: bytes, *kinds: str, optional: int = 0) -> list[Any]:
    """The states of ``kinds``, in order, from a step's snapshot, each migrated to its
    current version; the last ``optional`` kinds may be absent (None in their place).
    :class:`SnapshotError` if the bytes are anything else."""
    data = loads_plain(blob)
    if not isinstance(data, list) or not len(kinds) - optional <= len(data) <= len(kinds):
        raise SnapshotError(f"not a snapshot of {', '.join(kinds)}")
    out: list[Any] = []
    for env, kind in zip(data, kinds[:len(data)], strict=True):
        if (not isinstance(env, dict) or env.get("format") != FORMAT
                or env.get("kind") != kind):
            raise SnapshotError(f"not a {FORMAT} envelope of {kind!r}")
        out.append(migrate(kind, env.get("version"), env.get("state")))
    return out + [None] * (len(kinds) - len(data))


def dump_objects(obj: Any) -> bytes:
    """Third-party objects with no plain form (River's estimators and metrics), as one
    pickled blob. Only for them: a rapidloop object inside fails :func:`load_objects`."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class _ForeignUnpickler(pickle.Unpickler):
    """Loads third-party objects; refuses rapidloop's own classes (state must stay plain)."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in ("rapidloop", "__main__"):
            raise SnapshotError(f"a snapshot's blob names {module}.{name}: rapidloop "
                                f"state is plain data, never pickled classes")
        return super().find_class(module, name)


def load_objects(blob: bytes) -> Any:
    """The objects :func:`dump_objects` saved."""
    return _ForeignUnpickler(io.BytesIO(blob)).load()
