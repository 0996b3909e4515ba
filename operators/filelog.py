"""A shard's files as a log of segments: snapshots that grow with what changed.

With recovery on, a snapshot of every tracked file at every epoch close makes
the pause grow with the state (a fleet's state is mostly files nobody saw
today). Written as a log instead, each snapshot appends one *segment*: the
records of the files that changed since the last one (their row, pickled,
or ``None`` for a file forgotten), plus the files of the oldest segment,
rewritten so that segment can go. A file's *current* record is the newest
one written for it; the log's state is where each file's current record
lives. Reading the live segments in order and applying every record gives
back the files exactly: older records of a file are always followed by its
current one.

*Rolling*: each segment also takes 1/``roll_after`` of the files (rounded
up) from the oldest segments, their current records rewritten; a segment
left with none is dead (nothing needs it). So each snapshot writes the
changes plus a fixed share of the state, evenly, and a file not seen for a
while is rewritten about every ``roll_after`` snapshots. A record of a
forgotten file is kept while an older segment might still hold a row of
it, i.e. until its own segment is the oldest: then it is dropped.

Plain Python, no I/O: the caller stores the segments (``flows.chunkstore``).

>>> log = FileLog(roll_after=2)
>>> log.append({"a": b"A1"}, ["a"])
(0, [('a', b'A1')], [])
>>> log.append({"a": b"A2"}, ["a"])   # a's record moves on: segment 0 holds none now
(1, [('a', b'A2')], [0])
>>> log.append({}, ["a"])             # a forgotten: its record says so
(2, [('a', None)], [1])
>>> log.append({}, [])                # rolled from the oldest: dropped, nothing older
(3, [], [2])
>>> log.live()
[]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

Record = tuple[str, bytes | None]   # (sha256, the file's row pickled; None: forgotten)


class FileLog:
    """Which live segment holds each file's current record (see the module)."""

    def __init__(self, roll_after: int) -> None:
        if roll_after < 1:
            raise ValueError("roll_after must be at least 1")
        self.roll_after = roll_after
        self.next_seq = 0
        # seq -> the files whose current record the segment holds, oldest segment first
        self._members: dict[int, set[str]] = {}
        self._where: dict[str, int] = {}   # file -> seq of the segment of its current record

    def live(self) -> list[int]:
        """The segments a restore reads, oldest first."""
        return list(self._members)

    def append(self, rows: Mapping[str, bytes], changed: Iterable[str]
               ) -> tuple[int, list[Record], list[int]]:
        """The next segment for ``rows`` (every file tracked now → its row pickled) after
        ``changed`` (files touched since the last segment, forgotten ones included):
        ``(seq, records, dead)``, ``dead`` the segments no longer needed. No records:
        nothing to write (``seq`` is then not used)."""
        where, members = self._where, self._members
        records: dict[str, bytes | None] = {}
        for sha in changed:
            blob = rows.get(sha)
            if blob is not None or sha in where:   # a file never written and gone: nothing
                records[sha] = blob
        dead: list[int] = []
        budget = -(-len(where) // self.roll_after)   # a share of the files, rounded up
        for oldest in list(members):
            if budget <= 0:
                break
            held = members[oldest]
            while held and budget > 0:
                sha = held.pop()
                budget -= 1
                if sha in records:
                    continue
                blob = rows.get(sha)
                if blob is not None:
                    records[sha] = blob
                else:   # forgotten, and no older segment is left to hold a row of it
                    del where[sha]
            if not held:
                del members[oldest]
                dead.append(oldest)
        if not records:
            return self.next_seq, [], dead
        seq = self.next_seq
        self.next_seq += 1
        mine: set[str] = set()
        for sha in records:
            old = where.get(sha)
            if old is not None:
                holding = members.get(old)
                if holding is not None:
                    holding.discard(sha)
                    if not holding:
                        del members[old]
                        dead.append(old)
            where[sha] = seq
            mine.add(sha)
        members[seq] = mine
        return seq, list(records.items()), dead

    @classmethod
    def restored(cls, roll_after: int, segments: Iterable[tuple[int, list[Record]]]
                 ) -> tuple[FileLog, dict[str, bytes]]:
        """The log of the live ``segments`` (``(seq, records)``, oldest first) and the
        files they give (file → row pickled)."""
        log = cls(roll_after)
        files: dict[str, bytes] = {}
        where, members = log._where, log._members
        for seq, records in segments:
            members.setdefault(seq, set())
            for sha, blob in records:
                old = where.get(sha)
                if old is not None:
                    members[old].discard(sha)
                where[sha] = seq
                members[seq].add(sha)
                if blob is None:
                    files.pop(sha, None)
                else:
                    files[sha] = blob
            log.next_seq = max(log.next_seq, seq + 1)
        for seq in [s for s, held in members.items() if not held]:
            del members[seq]
        return log, files
