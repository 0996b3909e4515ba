"""The correlate step's snapshot with its files and ids in chunks (``flows.chunkstore``).

What Bytewax stores for a shard is then small: the correlator's state
without its files, the names of its dedup ring's sealed chunks instead of
their bytes, and the names of its file log's live segments
(``operators.filelog``), in a ``shard-chunks`` envelope beside the
``correlator`` one. Each snapshot writes the segment of the files changed
since the last one (plus the oldest segment's files, rolled forward) and
any ring chunk sealed since: the pause grows with what changed, not with
the state. A restore reads the chunks back and hands the correlator its
usual state, so ``Correlator.from_snapshot`` is the same either way.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from rapidloop.operators import correlate
from rapidloop.operators.correlate import Correlator
from rapidloop.operators.filelog import FileLog
from rapidloop.operators.settings import Settings
from rapidloop.operators.snapshot import SnapshotError, encode, envelope, loads_plain, register

from .chunkstore import ChunkMissing, ChunkStore

KIND = "shard-chunks"
register(KIND, 1)   # version 1: the shard, its file log's live segments and next sequence


class ChunkedSnapshots:
    """One correlate step's (one shard's) snapshots in chunks under ``directory``.

    ``grace``: snapshots of the shard a chunk no longer named is kept for;
    ``roll_after``: live segments before the oldest is rolled forward.
    """

    def __init__(self, directory: str | Path, grace: int, roll_after: int) -> None:
        self.directory = Path(directory)
        self.grace = grace
        self.roll_after = roll_after
        self.store: ChunkStore | None = None
        self.log = FileLog(roll_after)
        self.segments: dict[int, str] = {}   # live segment's sequence -> its chunk
        # the ring's sealed chunks already stored: id(chunk) -> (chunk, name)
        self._ring: dict[int, tuple[bytes, str]] = {}

    def _store(self, shard: int) -> ChunkStore:
        if self.store is None or self.store.shard != shard:
            self.store = ChunkStore(self.directory, shard, self.grace)
        return self.store

    def snapshot(self, c: Correlator, shard: int) -> bytes:
        """The step's snapshot of ``c`` (shard ``shard``), its new chunks written first."""
        store = self._store(shard)
        rows, changed = c.saved_rows()
        seq, records, dead = self.log.append(rows, changed)
        wrote = False
        if records:
            self.segments[seq] = store.put(pickle.dumps(records, pickle.HIGHEST_PROTOCOL),
                                           "files")
            wrote = True
        for gone in dead:
            self.segments.pop(gone, None)
        state = c.snapshot(files=False)
        skip, sealed, opened = state["ids"]
        names: list[str] = []
        kept: dict[int, tuple[bytes, str]] = {}
        for chunk in sealed:
            got = self._ring.get(id(chunk))
            if got is None or got[0] is not chunk:
                got = (chunk, store.put(chunk, "ids"))
                wrote = True
            kept[id(chunk)] = got
            names.append(got[1])
        self._ring = kept
        if wrote:
            store.sync_dir()
        store.retain({*names, *self.segments.values()})
        return encode([envelope(correlate.KIND, {**state, "ids": (skip, names, opened)}),
                       envelope(KIND, {"shard": shard, "segments": list(self.segments.items()),
                                       "next_seq": self.log.next_seq})])

    def restore(self, settings: Settings, state: dict[str, Any], chunks: dict[str, Any]
                ) -> Correlator:
        """The correlator a snapshot of this kind saved (its chunks read back)."""
        try:
            store = self._store(int(chunks["shard"]))
            live = [(int(seq), str(name)) for seq, name in chunks["segments"]]
            segments = [(seq, loads_plain(store.get(name))) for seq, name in live]
            self.log, rows = FileLog.restored(self.roll_after, segments)
            self.log.next_seq = max(self.log.next_seq, int(chunks["next_seq"]))
            self.segments = dict(live)
            skip, names, opened = state["ids"]
            sealed = [store.get(name) for name in names]
        except ChunkMissing as exc:
            raise SnapshotError(str(exc)) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"not a snapshot in chunks: {exc}") from None
        self._ring = {id(chunk): (chunk, name) for chunk, name in zip(sealed, names, strict=True)}
        store.adopt({*names, *self.segments.values()})
        return Correlator.from_snapshot(settings, {**state, "ids": (skip, sealed, opened),
                                                   "files": list(rows.values())})


def named_chunks(state: dict[str, Any], chunks: dict[str, Any]) -> set[str]:
    """The chunks a snapshot of this kind names (``state``: its ``correlator`` part)."""
    return {*(name for name in state["ids"][1] if isinstance(name, str)),
            *(name for _, name in chunks["segments"])}
