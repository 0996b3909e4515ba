"""File connectors for ``rapidloop replay``: JSONL (or .jsonl.gz) in, JSONL out.

The replay source merges the report and feedback files into one stream in
event-time order, exactly as the contract promises, and numbers its batches
so the dataflow can process them in the same order however work is spread.
A line whose time cannot be read keeps its place after the previous line of
its file; it will be dead-lettered by the parser like any other bad input.

Bad input, one rule: a bad *line* is a dead letter and the run goes on; a
*file* that cannot be used stops the run before anything is decided, with one
line naming the file and what is wrong (:class:`InputFileError`). A file
cannot be used when it cannot be read to its end (:func:`check_readable`:
truncated or corrupt gzip, unreadable), or when the lines it starts with say it
is not what it was given as (:func:`check_content`: binary, not UTF-8, one
giant line, or verdicts given as reports and the like). A line longer than the
message size limit (``limits.max_message_bytes``, the same as for a Kafka
message) is never held whole: the parser dead-letters it as too large from its
first bytes and its length (:class:`OverlongLine`), so a 5 GB line costs what a
64 KB one does.
"""

from __future__ import annotations

import errno
import gzip
import heapq
import os
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import IO

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from rapidloop.operators.eventtime import DEFAULT_MAX_JUMP_S, read_time
from rapidloop.schemas.intake import FEEDBACK, REPORT
from rapidloop.schemas.model import RawMessage
from rapidloop.schemas.wire import (
    RAW_TEXT_CAP,
    InvalidMessage,
    Limits,
    WireParser,
    decode_decision,
)

DECISION = "decision"        # a file of decisions (a replay's output), for check_content
# How many non-blank lines check_content reads, at most, to tell what a file holds: enough
# that a few bad lines at the top of a good file do not condemn it, few enough to be instant.
SNIFF_LINES = 20
_GZIP_MAGIC = b"\x1f\x8b"
_LINE_END = b"\r\n"
_SKIP_CHUNK = 1 << 16        # bytes read at a time while skipping the rest of an overlong line


def open_lines(path: str) -> IO[bytes]:
    """Open a JSONL file for reading bytes, transparently gunzipping ``.gz``."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


class InputFileError(RuntimeError):
    """An input file that cannot be used: truncated, not gzip, unreadable, or not what it
    was given as (binary, not UTF-8, one giant line, the other kind of message).

    A bad *line* is a dead letter; a file that stops making sense stops the
    run, with one line naming the file and how far it got (``lines``; None when
    it was judged before the run by its first lines). ``found`` is the kind of
    message the file holds instead (REPORT, FEEDBACK, DECISION), if that is
    what is wrong, so the command can say which option it belongs to.
    """

    def __init__(self, path: str, lines: int | None, why: str,
                 found: str | None = None) -> None:
        after = f" (after {lines:,} line(s))" if lines is not None else ""
        super().__init__(f"{path}: {why}{after}")
        self.path = path
        self.lines = lines
        self.found = found


class OverlongLine(bytes):
    """The first bytes of a line too long to hold, whose ``len()`` is the whole line's length.

    Why the length is the line's and not the bytes kept: the parser judges a
    message's size by ``len()`` before anything else, so it dead-letters this
    one as too large with the true size, and the dead letter quotes the same
    preview (the first ``RAW_TEXT_CAP`` bytes, all kept here) it would have
    quoted from the whole line. Nothing but the memory it costs differs.
    """

    size: int

    def __new__(cls, head: bytes, size: int) -> OverlongLine:
        self = super().__new__(cls, head)
        self.size = size
        return self

    def __len__(self) -> int:
        return self.size

    def __reduce__(self) -> tuple[type[OverlongLine], tuple[bytes, int]]:
        return (OverlongLine, (bytes(self), self.size))


def read_lines(f: IO[bytes], max_bytes: int | None = None) -> Iterator[tuple[int, bytes]]:
    """``(line number, line without its end)`` of every line of ``f``, blank ones included.

    With ``max_bytes``, a line longer than that (and than the preview a dead
    letter keeps) comes as an :class:`OverlongLine`, read past in chunks, so
    memory stays bounded whatever the file holds (a file with no line break
    at all is one such line). Without it, lines are read whole, as they were.
    """
    if max_bytes is None:
        for n, line in enumerate(f, 1):
            yield n, line.rstrip(_LINE_END)
        return
    limit = max(max_bytes, RAW_TEXT_CAP) + len(_LINE_END)
    n = 0
    while line := f.readline(limit):
        n += 1
        if len(line) < limit or line.endswith(b"\n"):
            yield n, line.rstrip(_LINE_END)
        else:
            yield n, _rest_of_line(f, line)


def _rest_of_line(f: IO[bytes], head: bytes) -> OverlongLine:
    """Read past the rest of the line that starts with ``head``; the line as an OverlongLine."""
    size = len(head)
    ending = len(head) - len(head.rstrip(_LINE_END))   # trailing CR/LF bytes so far
    while chunk := f.readline(_SKIP_CHUNK):
        size += len(chunk)
        kept = len(chunk.rstrip(_LINE_END))
        ending = ending + len(chunk) if kept == 0 else len(chunk) - kept
        if chunk.endswith(b"\n"):
            break
    return OverlongLine(head, size - ending)


def check_readable(path: str, chunk: int = 1 << 16) -> int:
    """Read ``path`` to its end (gunzipping ``.gz``); its line count, or InputFileError.

    Run before a replay, so that a truncated or corrupt file stops it with one
    line before anything is decided, instead of in the middle of the flow.
    About 0.1 s per 10 MB of gzip on these machines.
    """
    lines = 0
    try:
        with open_lines(path) as f:
            while block := f.read(chunk):
                lines += block.count(b"\n")
    except (EOFError, zlib.error, OSError) as exc:
        raise _read_error(path, lines, exc) from None
    return lines


def _read_error(path: str, lines: int, exc: BaseException) -> InputFileError:
    """What went wrong with ``path``, in words, after ``lines`` lines."""
    if isinstance(exc, EOFError):
        return InputFileError(path, lines, "truncated: the compressed stream ends early")
    if isinstance(exc, gzip.BadGzipFile):
        return InputFileError(path, lines, f"not a gzip file ({exc})")
    return InputFileError(path, lines, f"unreadable: {exc}")


_PLURAL = {REPORT: "reports", FEEDBACK: "feedback", DECISION: "decisions"}
_ONE = {REPORT: "a report", FEEDBACK: "a verdict", DECISION: "a decision"}


def check_content(path: str, kind: str, max_bytes: int, limits: Limits | None = None) -> None:
    """Stop a file that is not JSON lines of ``kind`` (REPORT, FEEDBACK or DECISION) before
    it runs: InputFileError, one line saying what the file holds instead.

    Judged by its first non-blank lines (at most :data:`SNIFF_LINES`; the first
    one of ``kind`` ends the look), with the job's own parser. It stops only
    what no run could use: a file none of whose first lines is JSON text
    (binary, NUL bytes, not UTF-8, lines over ``max_bytes``: the message size
    limit), or whose first lines are mostly the *other* kind of message
    (verdicts given as reports, reports as verdicts, a replay's decisions as
    input). Anything else, a few bad lines at the top included, runs, and its
    bad lines are dead letters. For DECISION (a file ``explain`` reads) it also
    stops a file whose first lines are JSON but no decision.
    """
    if not path.endswith(".gz"):
        try:
            with open(path, "rb") as raw:
                if raw.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC:
                    raise InputFileError(path, None, "gzip-compressed but not named .gz "
                                                     "(rename it to end in .gz)")
        except OSError as exc:
            raise _read_error(path, 0, exc) from None
    parser = WireParser(limits)
    seen = 0
    kinds: Counter[str | None] = Counter()
    unreadable: list[str] = []
    longest = overlong = 0
    not_expected: str | None = None     # why the first JSON object is not of ``kind``
    n = 0
    try:
        with open_lines(path) as f:
            for n, line in read_lines(f, max_bytes):
                if not line or line.isspace():   # blank (``not line.strip()``, no copy)
                    continue
                seen += 1
                why = _not_json_text(n, line, max_bytes)
                if why is not None:
                    unreadable.append(why)
                    if len(line) > max_bytes:
                        overlong += 1
                        longest = max(longest, len(line))
                else:
                    found, reason = _kind_of(line, kind, parser)
                    if found == kind:
                        return
                    kinds[found] += 1
                    if not_expected is None:
                        not_expected = f"line {n}: {reason}"
                if seen >= SNIFF_LINES:
                    break
            at_end = not f.read(1)
    except (EOFError, zlib.error, OSError) as exc:
        raise _read_error(path, n, exc) from None
    if not seen:
        return   # nothing but blank lines: an empty input, nothing to stop
    lines = ("its only line" if seen == 1 else f"its {seen:,} lines") if at_end \
        else f"its first {seen:,} lines"
    others = [(c, k) for k, c in kinds.items() if k is not None and k != kind]
    if others:
        count, other = max(others)
        if 2 * count >= seen:
            verb = "is" if count == 1 else "are"
            raise InputFileError(path, None, f"holds {_PLURAL[other]}, not {_PLURAL[kind]}: of "
                                             f"{lines}, {count:,} {verb} {_PLURAL[other]} and "
                                             f"none is {_ONE[kind]}", found=other)
    if len(unreadable) == seen:
        if seen == 1 and overlong and at_end:
            raise InputFileError(path, None, f"one line of {longest:,} bytes with no line "
                                             "break, not JSON lines (a line is one message of "
                                             f"at most limits.max_message_bytes = {max_bytes:,})")
        if overlong == seen:
            raise InputFileError(path, None, f"every one of {lines} is longer than "
                                             f"limits.max_message_bytes ({max_bytes:,} bytes), "
                                             f"the longest {longest:,} bytes")
        also = f"; none of {lines} is JSON text" if seen > 1 else ""
        raise InputFileError(path, None, f"{unreadable[0]}{also}")
    if kind == DECISION:
        raise InputFileError(path, None, f"holds no decisions: none of {lines} is one "
                                         f"({not_expected or unreadable[0]})")


def _not_json_text(n: int, line: bytes, max_bytes: int) -> str | None:
    """Why line ``n`` is no JSON object at all (too long, binary, not UTF-8, not JSON), or None."""
    if len(line) > max_bytes:
        return (f"line {n} is {len(line):,} bytes long, more than limits.max_message_bytes "
                f"({max_bytes:,})")
    nul = line.find(b"\0")
    if nul >= 0:
        return f"binary data, not JSON lines: line {n} has a NUL byte at byte {nul:,}"
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (f"not UTF-8 text (binary, or another encoding such as Latin-1): line {n} has "
                f"byte 0x{line[exc.start]:02x} at byte {exc.start:,} ({exc.reason})")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return f"not JSON lines: line {n} is not JSON ({exc})"
    if not isinstance(obj, dict):
        return f"not JSON lines of objects: line {n} is a JSON {type(obj).__name__}"
    return None


def _kind_of(line: bytes, expected: str, parser: WireParser) -> tuple[str | None, str]:
    """What a JSON object line is (REPORT, FEEDBACK, DECISION or None) by the job's own
    parsers, expected kind first; and, if it is not ``expected``, why not."""
    parsers = {REPORT: parser.report, FEEDBACK: parser.feedback, DECISION: decode_decision}
    reason = ""
    for kind in (expected, *(k for k in parsers if k != expected)):
        try:
            parsers[kind](line)
        except InvalidMessage as exc:
            if kind == expected:
                reason = str(exc)
            continue
        return kind, reason
    return None, reason


def _timed_lines(path: str, name: str, order: int, max_jump: float = DEFAULT_MAX_JUMP_S,
                 max_bytes: int | None = None) -> Iterator[tuple[float, int, int, RawMessage]]:
    """Lines with the event time they merge at (:func:`merge_time`: a line whose time
    cannot be used keeps its place in the file; the parser judges it), each with what
    that decode read (``RawMessage.decoded``). ``max_bytes``: see :func:`read_lines`."""
    last = float("-inf")
    n = 0
    try:
        with open_lines(path) as f:
            for n, line in read_lines(f, max_bytes):
                if not line or line.isspace():   # blank (``not line.strip()``, no copy)
                    continue
                ts, last, obj, read = read_time(line, last, max_jump)
                yield (ts, order, n, RawMessage(name, line, None, None, n,
                                                (obj, read) if type(obj) is dict else None))
    except (EOFError, zlib.error, OSError) as exc:
        raise _read_error(path, n, exc) from None


def merged_timed_lines(files: list[tuple[str, str]], max_jump: float = DEFAULT_MAX_JUMP_S,
                       max_bytes: int | None = None) -> Iterator[tuple[float, RawMessage]]:
    """``(event time, line)`` of several files, merged by event time (ties: file, then line).

    ``max_bytes``: lines longer than that are not held whole (:func:`read_lines`);
    give the parser's ``limits.max_message_bytes``, never less.
    """
    for ts, _, _, msg in _merged(files, max_jump, max_bytes):
        yield ts, msg


def _merged(files: list[tuple[str, str]], max_jump: float, max_bytes: int | None
            ) -> Iterator[tuple[float, int, int, RawMessage]]:
    """``merged_timed_lines`` as ``(time, file, line, message)``, one generator fewer a line."""
    streams = [_timed_lines(path, name, i, max_jump, max_bytes)
               for i, (path, name) in enumerate(files)]
    # (time, file, line) is unique, so the tuples compare in C without reaching the message
    return heapq.merge(*streams)


def merged_lines(files: list[tuple[str, str]]) -> Iterator[RawMessage]:
    """Lines of several files, merged by event time (ties: file order, then line order)."""
    for _, msg in merged_timed_lines(files):
        yield msg


class _MergedPartition(StatefulSourcePartition[tuple[int, list[RawMessage]], int]):
    """Numbered batches of the merged files; with ``pace``, released no faster than
    ``pace`` × event time (demos, training). Batching never changes decisions:
    units are processed in sequence whatever their size."""

    def __init__(self, files: list[tuple[str, str]], batch_size: int, resume: int | None,
                 pace: float | None = None, max_jump: float = DEFAULT_MAX_JUMP_S,
                 max_bytes: int | None = None, stop: threading.Event | None = None) -> None:
        self._it = _merged(files, max_jump, max_bytes)
        self._stop = stop
        self._size = batch_size
        self._pace = pace
        self._seq = 0
        self._held: tuple[float, int, int, RawMessage] | None = None
        self._t0: float | None = None      # first readable event time, and when it was released
        self._w0 = 0.0
        self._wake: datetime | None = None
        for _ in range(resume or 0):   # skip batches already processed
            self._next()

    def _wait(self, ts: float) -> float:
        """Seconds until the event at ``ts`` is due under pacing (≤ 0: now)."""
        if self._pace is None or ts == float("-inf"):
            return 0.0
        if self._t0 is None:
            self._t0, self._w0 = ts, time.monotonic()
        return self._w0 + (ts - self._t0) / self._pace - time.monotonic()

    def _next(self) -> list[RawMessage]:
        self._wake = None
        if self._pace is None:   # as fast as possible: nothing is ever held back
            return [line[3] for line in islice(self._it, self._size)]
        batch: list[RawMessage] = []
        while len(batch) < self._size:
            if self._held is None:
                self._held = next(self._it, None)
                if self._held is None:
                    break
            ts, _, _, msg = self._held
            wait = self._wait(ts)
            if wait > 0:
                self._wake = datetime.fromtimestamp(time.time() + min(wait, 1.0), UTC)
                break
            batch.append(msg)
            self._held = None
        return batch

    def next_batch(self) -> list[tuple[int, list[RawMessage]]]:
        if self._stop is not None and self._stop.is_set():
            raise StopIteration   # asked to stop: the caller knows the run is incomplete
        batch = self._next()
        if not batch:
            if self._held is None:
                raise StopIteration
            return []   # paced: nothing due yet
        seq = self._seq
        self._seq += 1
        return [(seq, batch)]

    def next_awake(self) -> datetime | None:
        return self._wake

    def snapshot(self) -> int:
        return self._seq


class MergedFileSource(FixedPartitionedSource[tuple[int, list[RawMessage]], int]):
    """Report and feedback JSONL files as one event-time-ordered, numbered batch stream.

    ``max_bytes``: the parser's ``limits.max_message_bytes``; longer lines are
    passed on as :class:`OverlongLine` (dead letters) instead of being held whole.
    ``stop``: once set, the source ends as if the files had; whoever set it
    knows the run is incomplete and must not keep its output. Why not raise:
    Bytewax turns any exception inside the flow (a KeyboardInterrupt from a
    signal handler included) into a Rust panic with a backtrace on stderr.
    """

    def __init__(self, files: list[tuple[str, str]], batch_size: int,
                 pace: float | None = None, max_jump: float = DEFAULT_MAX_JUMP_S,
                 max_bytes: int | None = None, stop: threading.Event | None = None) -> None:
        for path, _ in files:
            if not Path(path).is_file():
                raise FileNotFoundError(path)
        self.files = files
        self.batch_size = batch_size
        self.pace = pace
        self.max_jump = max_jump
        self.max_bytes = max_bytes
        self.stop = stop

    def list_parts(self) -> list[str]:
        return ["replay"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _MergedPartition:
        return _MergedPartition(self.files, self.batch_size, resume_state, self.pace,
                                self.max_jump, self.max_bytes, self.stop)


_GZIP_LEVEL = 6   # zlib's own default: gzip.open's 9 costs far more time for a few per cent


class _JsonlPartition(StatelessSinkPartition[list[tuple[bytes | None, bytes]]]):
    """One worker's writes, through the sink's one file (:class:`JsonlSink`)."""

    def __init__(self, sink: JsonlSink) -> None:
        self._sink = sink

    def write_batch(self, items: list[list[tuple[bytes | None, bytes]]]) -> None:
        self._sink.write(b"".join(v + b"\n" for batch in items for _, v in batch))


class JsonlSink(DynamicSink[list[tuple[bytes | None, bytes]]]):
    """Message values as JSONL lines, written to ``PATH.partial`` until :meth:`commit`;
    gzipped if ``path`` ends in ``.gz``.

    Only a run that ended well renames the file into place, so a file at
    ``path`` is always complete; a failed run removes its partial file
    (:meth:`discard`), and one killed outright leaves a name that says so.
    Every worker's partition writes through one file object, a batch at a
    time under a lock: with several workers, lines never cut into each other
    and a ``.gz`` is one gzip stream (a file object per worker appended gzip
    members into each other).
    """

    def __init__(self, path: str) -> None:
        """Create the partial file now: an output that cannot be written (OSError naming
        it) stops the run before it starts, not after it has done all the work."""
        self.path = path
        self.partial = f"{path}.partial"
        if Path(path).is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:   # a file where a directory should be
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR),
                                     str(parent)) from None
        self._raw = open(self.partial, "wb")  # noqa: SIM115 (closed by commit or discard)
        # gzip names the file it holds after `path`, not the partial name
        self._f: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(path, "wb", _GZIP_LEVEL, self._raw) if path.endswith(".gz")
            else self._raw)
        self._lock = threading.Lock()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        return _JsonlPartition(self)

    def write(self, data: bytes) -> None:
        """Append whole lines (a batch), after any other worker's batch."""
        with self._lock:
            self._f.write(data)

    def _close(self) -> None:
        with self._lock:
            self._f.close()    # a GzipFile leaves the file it writes to open
            self._raw.close()

    def commit(self) -> None:
        self._close()
        os.replace(self.partial, self.path)

    def discard(self) -> None:
        self._close()
        Path(self.partial).unlink(missing_ok=True)


def estimate_total(files: list[tuple[str, str]], sample: int = 2000,
                   max_bytes: int | None = None) -> int | None:
    """Roughly how many lines ``files`` hold, from their sizes, without reading them all.

    The uncompressed size (a plain file's size, a ``.gz``'s trailer) divided by
    the mean length of the first ``sample`` lines. None if unknown. ``max_bytes``:
    lines longer than that are measured without being held (``read_lines``).
    """
    total = 0
    for path, _ in files:
        try:
            size = os.path.getsize(path)
            if path.endswith(".gz"):
                with open(path, "rb") as f:
                    f.seek(-4, os.SEEK_END)
                    size = int.from_bytes(f.read(4), "little")   # mod 2**32
            n = length = 0
            with open_lines(path) as f:
                for n, line in read_lines(f, max_bytes):
                    length += len(line) + 1
                    if n >= sample:
                        break
        except (OSError, EOFError, gzip.BadGzipFile):
            return None
        if n:
            total += n if n < sample else round(size / (length / n))
    return total
