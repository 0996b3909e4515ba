"""Incident captures: the input topics (and optionally the decisions) between two times.

A capture is a directory an incident ticket can carry::

    manifest.json          topics, partitions, offset ranges, time range, counts
    reports.jsonl.gz       Report values, one per line
    feedback.jsonl.gz      Feedback values
    decisions.jsonl.gz     Decision values (only with ``decisions=True``)
    reports.tenant.ORG.jsonl.gz, feedback.tenant.ORG.jsonl.gz
                           each tenant's own input topics (``[tenants] orgs``)

Tenants' topics are kept apart, one file per topic, because what a message
may say depends on the topic it came in on (``schemas.intake``: a report on
org-3's topic must be org-3's): the manifest records, for each file, its
topic and the org the topic speaks for, and the rules the shared topics had
(``tenants.shared_reports``, ``tenants.shared_feedback``), so a replay binds
each file as the live job bound its topic and dead-letters exactly what the
job dead-lettered, in the same order (:func:`replay_inputs`). A capture with
tenant topics is format ``rapidloop-capture/2``, which a reader that would
ignore them refuses; one without is ``rapidloop-capture/1``, as before.

How it reads: plain consumers with ``assign()`` (no consumer-group join, no
commits, ``enable.auto.commit=false``), so capturing never moves the live
job's position (the job keeps its offsets in Bytewax snapshots anyway). Each
partition starts at the broker's offsets-for-times answer for ``since`` and
ends at the first message whose Kafka timestamp is past ``until``, or at the
end-of-partition event (``enable.partition.eof``; never the high watermark,
which the embedded broker reports wrongly). The offsets-for-times answer is
taken as a *lower bound*: messages before ``since`` are still dropped here,
because the embedded broker (Tansu) ignores the timestamp and answers offset
0 whatever is asked. On Apache Kafka the answer is exact and nothing is
dropped. Times are the Kafka message timestamps (producer or broker time),
not the events' own ``ts``.

Determinism: each topic's file is the merge of its partitions by event time
(``ts``; ``event_ts`` for decisions), ties broken by partition then offset,
and the gzip header carries no timestamp, so the same messages always give
byte-identical files whatever order the broker delivered them in.
``rapidloop replay --capture`` feeds these files to the same
``MergedFileSource`` as any other replay.

Nothing in the directory looks complete before it is: each file is written
under ``.partial/`` and moved into place once whole, the manifest last, so a
directory without ``manifest.json`` is not a capture (``read_manifest`` says
so) and a file in it is never a truncated one. A capture that fails or is
interrupted (Ctrl-C, SIGTERM) removes what it wrote; one killed outright
leaves only ``.partial/``, a name that says what it is.

A value that is not one line (JSON with line breaks) is rewritten compactly;
a value that is not JSON and has line breaks has them escaped; a message
with no value is written as ``null`` (the replay dead-letters it, as the
live job would). The manifest counts each of these.
"""

from __future__ import annotations

import contextlib
import gzip
import heapq
import json
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rapidloop.base.kafka import BrokerUnavailable, describe_error, quiet, topic_partitions
from rapidloop.schemas.intake import bind_topics
from rapidloop.schemas.timefmt import format_ts, parse_ts

FORMAT = "rapidloop-capture/1"
FORMAT_TENANTS = "rapidloop-capture/2"   # /1 plus the tenants' own topics
FORMATS = (FORMAT, FORMAT_TENANTS)
MANIFEST = "manifest.json"
KINDS = ("reports", "feedback", "decisions")
FILES = {kind: f"{kind}.jsonl.gz" for kind in KINDS}
TENANT_KINDS = ("reports", "feedback")
TIME_FIELD = {"reports": "ts", "feedback": "ts", "decisions": "event_ts"}

# librdkafka needs a group.id even for assign()-only consumers; nothing is committed under it.
_NO_COMMITS_GROUP = "rapidloop-no-commits"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])(?:\s+ago)?", re.ASCII | re.IGNORECASE)
_PARTIAL = ".partial"


class CaptureError(RuntimeError):
    """A capture could not be made or read (one line, for the CLI)."""


def parse_time_arg(text: str, now: float | None = None) -> float:
    """``--since``/``--until`` as epoch seconds: RFC 3339, ``now``, or a time ago (``2h``).

    Relative units: ``s``, ``m``, ``h``, ``d``, ``w`` (``90s``, ``30m``, ``2h``,
    ``1d``, ``1.5h``, optionally followed by ``ago``). Raises ``ValueError``.
    """
    value = text.strip()
    now = time.time() if now is None else now
    if value.lower() == "now":
        return now
    m = _RELATIVE.fullmatch(value)
    if m is not None:
        return now - float(m[1]) * _UNITS[m[2].lower()]
    try:
        return parse_ts(value)
    except ValueError:
        shown = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
        raise ValueError(f"not an RFC 3339 time (2026-11-29T01:02:03Z) nor a time ago "
                         f"(90s, 30m, 2h, 1d): {shown}") from None


# ---------------------------------------------------------------- the manifest

@dataclass
class PartitionRange:
    """What was captured from one partition."""

    partition: int
    lookup_offset: int | None       # the broker's offsets-for-times answer (None: nothing)
    first_offset: int | None = None
    last_offset: int | None = None  # inclusive
    count: int = 0
    skipped_before_since: int = 0   # read from lookup_offset on, timestamp before since
    first_ts: str | None = None     # Kafka timestamps of the first and last message kept
    last_ts: str | None = None
    ended_by: str = "end of partition"   # or "message past until", "nothing at or after since"


@dataclass
class TopicCapture:
    topic: str
    file: str
    count: int = 0
    rewritten: int = 0     # values made one line
    null_values: int = 0   # messages without a value, written as null
    unreadable: int = 0    # messages the client could not read (not written)
    partitions: list[PartitionRange] = field(default_factory=list)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a capture directory, checked; CaptureError if it is not a capture."""
    path = Path(directory)
    if not path.is_dir():
        raise CaptureError(f"capture directory not found: {path}")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CaptureError(f"{path} is not a capture (no {MANIFEST}; an unfinished "
                           "capture has none)") from None
    except ValueError as exc:
        raise CaptureError(f"{path / MANIFEST} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") not in FORMATS:
        raise CaptureError(f"{path / MANIFEST} is not a {' or '.join(FORMATS)} manifest")
    topics = manifest.get("topics")
    if not isinstance(topics, dict) or "reports" not in topics:
        raise CaptureError(f"{path / MANIFEST} lists no reports topic")
    for kind, entry in topics.items():
        if kind not in KINDS or not isinstance(entry, dict):
            raise CaptureError(f"{path / MANIFEST}: unknown entry {kind!r}")
        if not (path / str(entry.get("file"))).is_file():
            raise CaptureError(f"capture {path} is missing {entry.get('file')}")
    for entry in _tenant_entries(manifest, path):
        if not (path / str(entry.get("file"))).is_file():
            raise CaptureError(f"capture {path} is missing {entry.get('file')}")
    return manifest


def _tenant_entries(manifest: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    """The tenants' topics of a manifest (none before format /2), checked."""
    tenants = manifest.get("tenants")
    if tenants is None and manifest.get("format") == FORMAT:
        return []
    entries = tenants.get("topics") if isinstance(tenants, dict) else None
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and e.get("kind") in TENANT_KINDS
            and isinstance(e.get("org"), str) and isinstance(e.get("topic"), str)
            for e in entries):
        raise CaptureError(f"{path / MANIFEST}: unreadable tenant topics")
    return entries


def capture_files(directory: str | Path) -> list[tuple[str, str, str]]:
    """(kind, path, topic) of each captured topic in the order replay merges them (the live
    job's tie order): reports, each tenant's reports, feedback, each tenant's feedback,
    then decisions."""
    path = Path(directory)
    manifest = read_manifest(path)
    shared, tenants = manifest["topics"], _tenant_entries(manifest, path)
    out: list[tuple[str, str, str]] = []
    for kind in KINDS:
        if kind in shared:
            out.append((kind, str(path / shared[kind]["file"]), shared[kind]["topic"]))
        out += [(kind, str(path / e["file"]), e["topic"]) for e in tenants if e["kind"] == kind]
    return out


def replay_inputs(directory: str | Path) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """A capture as replay input: (path, topic) pairs in merge order, and topic → kind,
    each tenant topic bound to its org and the shared ones under the rules they had live
    (:func:`rapidloop.schemas.intake.bind_topics`), so the replay dead-letters what the
    job did. CaptureError if it is not a capture."""
    path = Path(directory)
    manifest = read_manifest(path)
    shared = manifest["topics"]
    files = [(p, topic) for kind, p, topic in capture_files(path) if kind in TENANT_KINDS]
    rules = manifest.get("tenants") or {}
    own: dict[str, dict[str, str]] = {}
    for e in _tenant_entries(manifest, path):
        own.setdefault(e["org"], {})[e["kind"]] = e["topic"]
    # A topic missing from the capture gets a name no file has; only the files' ones matter.
    absent = "\0absent"
    kinds = bind_topics(
        shared.get("reports", {}).get("topic", absent + "-reports"),
        shared.get("feedback", {}).get("topic", absent + "-feedback"),
        [(org, t.get("reports", f"{absent}-{org}-r"), t.get("feedback", f"{absent}-{org}-f"))
         for org, t in own.items()],
        shared_reports=str(rules.get("shared_reports", "any")),
        shared_feedback=str(rules.get("shared_feedback", "any")))
    return files, {topic: kinds[topic] for _, topic in files}


def message_total(directory: str | Path) -> int | None:
    """How many reports and feedback messages a capture holds, from its manifest (None:
    unknown), for a replay's progress line."""
    try:
        counts = read_manifest(directory).get("counts", {})
    except CaptureError:
        return None
    n = [counts.get(k) for k in ("reports", "feedback") if k in counts]
    return sum(n) if n and all(isinstance(x, int) for x in n) else None


def iter_values(path: str | Path) -> Iterator[bytes]:
    """The non-empty lines of a (gzipped) JSONL file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


# ---------------------------------------------------------------- capturing

def _one_line(value: bytes | None, stats: TopicCapture) -> bytes:
    if value is None:
        stats.null_values += 1
        return b"null"
    if b"\n" not in value and b"\r" not in value:
        return value
    stats.rewritten += 1
    try:
        return orjson.dumps(orjson.loads(value))
    except orjson.JSONDecodeError:
        return value.replace(b"\\", b"\\\\").replace(b"\r", b"\\r").replace(b"\n", b"\\n")


def _timed(path: Path, field_name: str, order: int) -> Iterator[tuple[float, int, int, bytes]]:
    last = float("-inf")
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            line = line.rstrip(b"\n")
            with contextlib.suppress(Exception):   # unreadable time: keeps its place
                last = parse_ts(orjson.loads(line)[field_name])
            yield (last, order, n, line)


def _merge_to(out: Path, parts: list[Path], field_name: str) -> None:
    streams = [_timed(p, field_name, i) for i, p in enumerate(parts)]
    with open(out, "wb") as raw, gzip.GzipFile(filename=out.name, mode="wb", fileobj=raw,
                                               mtime=0) as gz:
        for _, _, _, line in heapq.merge(*streams, key=lambda t: (t[0], t[1], t[2])):
            gz.write(line + b"\n")


def capture(conf: dict[str, Any], topics: dict[str, str], since: float, until: float,
            out_dir: str | Path, *, tenants: Sequence[tuple[str, str, str]] = (),
            shared_reports: str = "any", shared_feedback: str = "any",
            timeout_s: float = 10.0, metadata_timeout_s: float = 10.0) -> dict[str, Any]:
    """Capture ``topics`` (kind → topic name) between ``since`` and ``until`` into ``out_dir``.

    ``conf`` is librdkafka settings (``rapidloop.base.kafka.client_config``).
    ``tenants``: (org, reports topic, feedback topic) of each tenant with
    topics of its own (``rapidloop.base.config.tenant_topics``), each captured to a
    file of its own; ``shared_reports`` / ``shared_feedback``: the shared
    topics' rules (``[tenants]``), recorded for the replay.
    Returns the manifest, also written to ``out_dir/manifest.json`` last, so
    a directory with a manifest is a complete capture. ``out_dir`` must not
    exist or be empty; it is made (and found writable) before the broker is
    asked anything. ``timeout_s`` bounds how long the capture waits without
    news from the broker. Raises :class:`CaptureError`; on any failure or
    interruption, what it wrote is removed.
    """
    from confluent_kafka import (
        TIMESTAMP_NOT_AVAILABLE,
        Consumer,
        KafkaError,
        KafkaException,
        TopicPartition,
    )

    if since > until:
        raise CaptureError(f"--since ({format_ts(since)}) is after --until ({format_ts(until)})")
    unknown = set(topics) - set(KINDS)
    if unknown or "reports" not in topics:
        raise CaptureError(f"capture kinds must include reports and be among {KINDS}")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if out.is_dir() and [p.name for p in out.iterdir()] == [_PARTIAL]:
            raise CaptureError(f"{out} holds an unfinished capture ({_PARTIAL}, no {MANIFEST}); "
                               "delete it first")
        raise CaptureError(f"{out} already exists and is not an empty directory")
    kinds = [k for k in KINDS if k in topics]
    # One stream per topic, in the order replay merges them (capture_files): its name is
    # its file's stem, "reports" or "reports.tenant.org-3".
    streams: dict[str, tuple[str, str, str | None]] = {}   # name → (kind, topic, org)
    for kind in kinds:
        streams[kind] = (kind, topics[kind], None)
        if kind in TENANT_KINDS:
            for org, *pair in tenants:
                streams[f"{kind}.tenant.{org}"] = (kind, pair[TENANT_KINDS.index(kind)], org)
    by_topic = {topic: name for name, (_, topic, _) in streams.items()}
    if len(by_topic) != len(streams):
        raise CaptureError("each kind and each tenant needs its own topic")
    partial = out / _PARTIAL
    created = not out.exists()
    try:
        partial.mkdir(parents=True)
    except OSError as exc:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise CaptureError(f"cannot write {exc.filename or partial}: {exc.strerror}") from None

    errors: list[Any] = []
    consumer_conf = quiet(conf)
    consumer_conf.update({
        "group.id": consumer_conf.get("group.id", _NO_COMMITS_GROUP),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "error_cb": errors.append,
    })
    consumer: Any = None
    since_ms, until_ms = int(since * 1000), int(until * 1000)
    stats = {name: TopicCapture(topic, f"{name}.jsonl.gz")
             for name, (_, topic, _) in streams.items()}
    ranges: dict[tuple[str, int], PartitionRange] = {}
    writers: dict[tuple[str, int], Any] = {}
    done = False
    try:
        try:
            parts = topic_partitions(conf, list(by_topic), metadata_timeout_s)
        except BrokerUnavailable as exc:
            raise CaptureError(str(exc)) from None
        consumer = Consumer(consumer_conf)
        try:
            found = consumer.offsets_for_times(
                [TopicPartition(t, p, since_ms) for t, p in parts], timeout=metadata_timeout_s)
        except KafkaException as exc:
            raise CaptureError(f"offsets-for-times lookup failed: "
                               f"{describe_error(exc.args[0])}") from None
        assign: list[Any] = []
        for tp in found:
            if tp.error is not None:
                raise CaptureError(f"offsets-for-times lookup failed for {tp.topic}#"
                                   f"{tp.partition}: {describe_error(tp.error)}")
            key = (tp.topic, tp.partition)
            if tp.offset < 0:   # no message at or after since
                ranges[key] = PartitionRange(tp.partition, None,
                                             ended_by="nothing at or after since")
                continue
            ranges[key] = PartitionRange(tp.partition, tp.offset)
            writers[key] = open(partial / f"{by_topic[tp.topic]}-{tp.partition}.jsonl", "wb")  # noqa: SIM115
            assign.append(TopicPartition(tp.topic, tp.partition, tp.offset))
        open_parts = set(writers)
        if assign:
            consumer.assign(assign)
        last_news = time.monotonic()
        while open_parts:
            msgs = consumer.consume(1000, 0.2)
            if msgs:
                last_news = time.monotonic()
            elif time.monotonic() - last_news > timeout_s:
                why = "; ".join(sorted({describe_error(e) for e in errors[-5:]}))
                left = ", ".join(f"{t}#{p}" for t, p in sorted(open_parts))
                raise CaptureError(f"no end of partition for {left} within {timeout_s:g}s"
                                   + (f" ({why})" if why else ""))
            finished: list[Any] = []
            for msg in msgs:
                key = (msg.topic(), msg.partition())
                if key not in open_parts:
                    continue   # already ended (paused; a few fetched messages may trail)
                err = msg.error()
                rng, st = ranges[key], stats[by_topic[key[0]]]
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(key)
                        finished.append(TopicPartition(*key))
                    elif err.fatal():
                        raise CaptureError(f"fatal Kafka error on {key[0]}#{key[1]}: "
                                           f"{describe_error(err)}")
                    elif msg.offset() is not None and msg.offset() >= 0:
                        st.unreadable += 1
                    continue
                ts_type, ts_ms = msg.timestamp()
                if ts_type != TIMESTAMP_NOT_AVAILABLE:
                    if ts_ms < since_ms:
                        rng.skipped_before_since += 1
                        continue
                    if ts_ms > until_ms:
                        rng.ended_by = "message past until"
                        open_parts.discard(key)
                        finished.append(TopicPartition(*key))
                        continue
                    stamp: str | None = format_ts(ts_ms / 1000)
                else:
                    stamp = None
                writers[key].write(_one_line(msg.value(), st) + b"\n")
                if rng.first_offset is None:
                    rng.first_offset, rng.first_ts = msg.offset(), stamp
                rng.last_offset, rng.last_ts = msg.offset(), stamp
                rng.count += 1
                st.count += 1
            if finished:
                consumer.pause(finished)
        for w in writers.values():
            w.close()
        for name, (kind, topic, _) in streams.items():
            keys = sorted(k for k in ranges if k[0] == topic)
            stats[name].partitions = [ranges[k] for k in keys]
            _merge_to(partial / stats[name].file,
                      [partial / f"{name}-{p}.jsonl" for t, p in keys if (t, p) in writers],
                      TIME_FIELD[kind])
        counts = {k: sum(stats[n].count for n, s in streams.items() if s[0] == k) for k in kinds}
        manifest: dict[str, Any] = {
            "format": FORMAT_TENANTS if tenants else FORMAT,
            "created_at": format_ts(time.time()),
            "brokers": conf.get("bootstrap.servers"),
            "since": format_ts(since),
            "until": format_ts(until),
            "time_basis": "Kafka message timestamps",
            "counts": counts,
            "topics": {k: asdict(stats[k]) for k in kinds},
        }
        if tenants:
            # What each tenant file's topic allows (the org it speaks for) and what the shared
            # topics allowed: a replay binds its files as the live job bound the topics.
            manifest["tenants"] = {
                "shared_reports": shared_reports,
                "shared_feedback": shared_feedback,
                "topics": [{"org": org, "kind": kind, **asdict(stats[name])}
                           for name, (kind, _, org) in streams.items() if org is not None],
            }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for st in stats.values():   # whole files into place, then the manifest (what makes
            (partial / st.file).replace(out / st.file)   # a capture) last
        (partial / MANIFEST).replace(out / MANIFEST)
        done = True
        shutil.rmtree(partial, ignore_errors=True)
        return manifest
    except OSError as exc:
        raise CaptureError(f"cannot write {exc.filename or out}: {exc.strerror}") from None
    finally:
        for w in writers.values():
            w.close()
        if consumer is not None:
            consumer.close()
        if not done:
            shutil.rmtree(out if created else partial, ignore_errors=True)


def summary(manifest: dict[str, Any]) -> str:
    """One line: what a capture holds (and how much of it came in on tenants' own topics)."""
    counts = manifest.get("counts", {})
    parts = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    tenants = manifest.get("tenants")
    if isinstance(tenants, dict) and isinstance(tenants.get("topics"), list):
        entries = tenants["topics"]
        orgs = {e.get("org") for e in entries if isinstance(e, dict)}
        own = sum(e.get("count", 0) for e in entries if isinstance(e, dict))
        parts += (f" ({own} of the reports and feedback on the own topics of {len(orgs)} "
                  "tenant(s))")
    return f"{parts} from {manifest.get('since')} to {manifest.get('until')}"
