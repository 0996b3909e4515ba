"""The bulk of a shard's snapshot, written once beside Bytewax's snapshots.

Bytewax writes every stateful step's snapshot whole at each epoch close and
holds the input meanwhile. A shard's state is mostly its files and its dedup
ring's ids, which change little from one epoch to the next: written whole,
they made the pause grow with the state (about 1.3 µs a file and 25 bytes
an id on a 2-core machine, every epoch). So the correlate step writes them
here as *chunks*, files of its own in the recovery directory
(``rapidloop-chunks/``), each written once, and hands Bytewax only their
names: the ring's sealed chunks (immutable once full, ``operators.dedup``)
and the file log's segments (``operators.filelog``), each epoch's new ones
only.

A chunk is written (and synced) before the snapshot naming it is returned,
so any snapshot Bytewax stores names chunks that exist. A chunk no longer
named is deleted only ``grace`` snapshots of its shard later, as Bytewax
may still resume from a snapshot that named it until a newer one is
committed (and keeps superseded ones ``recovery.backup_interval_s``).
Names are unique (shard, kind, sequence, random token), never reused, so a
chunk left by a crash cannot be mistaken for a new one. Such leftovers are
removed when a whole recovery directory is checked before a start
(:func:`remove_unnamed`); in a multi-machine share, whose shards' snapshots
may be held by other processes, each shard's store takes up its own at its
first snapshot (the grace applies, a partial write goes at once).

>>> import tempfile
>>> store = ChunkStore(tempfile.mkdtemp(), shard=3, grace=1)
>>> name = store.put(b"ids", "ring")
>>> store.get(name)
b'ids'
>>> store.retain({name})   # a snapshot names it
>>> store.retain(set())    # the next does not: its grace starts
>>> store.exists(name)
True
>>> store.retain(set())    # one snapshot later it is gone
>>> store.exists(name)
False
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

CHUNKS_DIR = "rapidloop-chunks"


class ChunkMissing(ValueError):
    """A snapshot names a chunk the directory does not hold (one line, says which)."""


class ChunkStore:
    """One shard's chunks in ``directory`` (shared by every shard and process of a run)."""

    def __init__(self, directory: str | Path, shard: int, grace: int) -> None:
        self.dir = Path(directory)
        self.shard = shard
        self.grace = max(1, grace)
        self._named: set[str] = set()          # named by the last snapshot
        self._dropped: dict[str, int] = {}     # name -> snapshot count when it left
        self._snapshots = 0

    def put(self, data: bytes, kind: str) -> str:
        """Write ``data`` as a new chunk, synced; its name."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{self.shard:03d}-{kind}-{secrets.token_hex(8)}"
        tmp = self.dir / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.dir / name)
        return name

    def sync_dir(self) -> None:
        """Make the chunks just written survive a power cut (their directory entries)."""
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, name: str) -> bytes:
        if not _valid(name):
            raise ChunkMissing(f"not a chunk name: {name!r}")
        try:
            return (self.dir / name).read_bytes()
        except FileNotFoundError:
            raise ChunkMissing(f"chunk {name} is missing from {self.dir}") from None

    def exists(self, name: str) -> bool:
        return (self.dir / name).is_file()

    def retain(self, named: set[str]) -> None:
        """A snapshot naming ``named`` is being handed to Bytewax: chunks the last one
        named and this one does not start their grace; those past it are deleted. The
        first time, so do this shard's chunks that nothing here names (a crash's
        leftovers, or a previous run's, whose snapshots this one no longer resumes
        from once its own are committed), and its partial writes go at once."""
        self._snapshots += 1
        now = self._snapshots
        if now == 1:
            self._leftovers(named, now)
        for name in self._named - named:
            self._dropped[name] = now
        self._named = set(named)
        for name in [n for n, t in self._dropped.items() if now - t >= self.grace]:
            del self._dropped[name]
            (self.dir / name).unlink(missing_ok=True)

    def _leftovers(self, named: set[str], now: int) -> None:
        mine = f"{self.shard:03d}-"
        try:
            entries = list(self.dir.iterdir())
        except FileNotFoundError:
            return
        for path in entries:
            name = path.name
            if name.startswith(f".{mine}") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)
            elif name.startswith(mine) and name not in named and name not in self._named:
                self._dropped.setdefault(name, now)

    def adopt(self, named: Iterable[str]) -> None:
        """The chunks a restored snapshot names are this store's, as if it had written them."""
        self._named = set(named)


def _valid(name: str) -> bool:
    """A name ``put`` made (so a damaged snapshot cannot point outside the directory)."""
    return (isinstance(name, str) and 0 < len(name) < 64 and "/" not in name
            and not name.startswith(".") and name.isascii())


def remove_unnamed(directory: str | Path, named: set[str]) -> int:
    """Delete every chunk in ``directory`` that no stored snapshot names (and any partial
    write): a crash's leftovers. Only for a whole recovery directory checked before a
    start, every snapshot read. How many."""
    d = Path(directory)
    if not d.is_dir():
        return 0
    gone = 0
    for path in d.iterdir():
        if path.is_file() and path.name not in named:
            path.unlink(missing_ok=True)
            gone += 1
    return gone
