"""Bytewax recovery for ``rapidloop run``: the state directory, its manifest, its lock.

Bytewax snapshots every stateful step (file state, models, enforcement state)
and every input partition's next offset together at each epoch close, into
SQLite partitions in one directory. A restart resumes from the last
snapshot: the input read since then is read again and the decisions it
caused are emitted again, with the same ``decision_id`` (at-least-once).

State is only meaningful for the input it was built from, so the directory
carries a manifest (``rapidloop-recovery.json``) naming the flow, the input
topics (and their topic ids where the cluster reports them: a topic deleted
and recreated, or a memory-only broker restarted, gets a new id), the
shard count and the model replica count (state is keyed by both). A job
whose settings differ refuses to start, in one line, rather than resume
garbage. The manifest also records the state format (``state_format``,
``operators.snapshot``): snapshots are versioned plain data whose older
versions are migrated on load, and a directory of another format (one
written by a rapidloop that pickled its operators has none) is refused in
one line saying to delete it or to finish it with the version that made it.
The manifest is also locked (``flock``) for the life of the job, so two jobs
cannot share one directory; the kernel drops the lock however the job dies,
``kill -9`` included.

Tenants' own input topics (``[tenants] orgs``) are recorded too, with their
ids. A tenant added since is accepted: its topics are new input, read from
their beginning like a partition added to a topic, and the manifest then
records them (onboarding a tenant must not cost the state). A tenant
removed is refused: the state holds where its topics were read to, and the
sources cannot resume without them (keep the org listed and revoke its
WRITE ACL instead: its topics then stay quiet).

The directory is created on first start, equivalent to
``python -m bytewax.recovery DIR N``, in a temporary sibling renamed into
place at the end, so a crash during creation leaves nothing half-made. A
process of a multi-machine cluster gets a *share* instead
(:func:`create_share`): the same directory and manifest holding only its
partitions, and a ``rapidloop-cluster.json`` saying which. Which directory
or share a process runs with is decided in ``rapidloop.flows.recovery_plan``,
which also reads every snapshot the partitions hold (:func:`stored_snapshots`)
before the flow starts: one that cannot be restored is refused in one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from bytewax.recovery import RecoveryConfig, init_db_dir

from rapidloop.base.config import Config, tenant_topics
from rapidloop.operators.snapshot import STATE_FORMAT

MANIFEST = "rapidloop-recovery.json"
PARTITIONS = "part-*.sqlite3"   # Bytewax's recovery partitions (``init_db_dir``'s names)
SHARE = "rapidloop-cluster.json"
"""In a multi-machine process's recovery dir: which partitions of how many it holds."""
# 2: decide state holds the siblings' record, vouching and verdict reliability, and file
# state the name, vouchers and verdicts they learn from; a format-1 directory is refused.
# 3: the input is one event-time merge of every partition ("input_order"), whose resume
# state is per merge, not per partition.
FORMAT = 3


class RecoveryError(RuntimeError):
    """The recovery directory cannot be used by this job (one line, says what to do)."""


@dataclass(frozen=True)
class StoredSnapshot:
    """One snapshot of one step's state for one key, as a recovery partition holds it."""

    partition: str     # the partition's file name
    step_id: str       # the flow's id, a dot, the step's name
    state_key: str
    epoch: int
    blob: bytes        # Bytewax's pickle of what the step's ``snapshot()`` returned


@dataclass
class Recovery:
    """What ``rapidloop run`` needs to run with recovery; keep it alive while the job runs."""

    directory: Path
    config: RecoveryConfig
    created: bool
    manifest: dict[str, Any]
    _lock: IO[str]

    def close(self) -> None:
        """Release the directory (also released by the kernel when the process dies)."""
        self._lock.close()


def identity(cfg: Config, topic_ids: dict[str, str | None], flow_id: str = "rapidloop",
             replicas: int | None = None) -> dict[str, Any]:
    """What a recovery state depends on: resuming it under anything else is wrong.

    ``replicas``: the model replicas the job runs (default: as configured, 0 meaning one).
    """
    k = cfg.kafka
    return {
        "format": FORMAT,
        # how the operators' snapshots are written (operators.snapshot): absent before
        # they were versioned plain data, when they were pickled objects
        "state_format": STATE_FORMAT,
        "flow": flow_id,
        "reports_topic": k.reports_topic,
        "reports_topic_id": topic_ids.get(k.reports_topic),
        "feedback_topic": k.feedback_topic,
        "feedback_topic_id": topic_ids.get(k.feedback_topic),
        "shards": int(cfg.stream.shards),
        "input_order": str(cfg.stream.input_order),
        # the feed of decisions in force is whole only if fed from the state's start
        "active_topic": k.active_topic if k.active_topic in topic_ids else None,
        "replicas": replicas if replicas is not None else max(1, int(cfg.stream.replicas)),
        # tenants' own input topics → their ids (see the module docstring)
        "tenant_topics": {t: topic_ids.get(t) for _, *pair in tenant_topics(cfg) for t in pair},
    }


def stored_replicas(directory: str | os.PathLike[str], shards: int) -> int | None:
    """The replica count a recovery dir was made with (None: no readable manifest yet).

    Manifests from before replicas were a setting ran one replica per shard.
    """
    try:
        have = json.loads((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(have, dict):
        return None
    value = have.get("replicas", shards)
    return value if isinstance(value, int) and value > 0 else None


def topic_ids(conf: dict[str, Any], topics: list[str], timeout: float) -> dict[str, str | None]:
    """Each topic's id as the cluster reports it, or None (older brokers, or no answer)."""
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AdminClient

    from rapidloop.base.kafka import quiet

    out: dict[str, str | None] = {t: None for t in topics}
    client = AdminClient(quiet(conf))   # held: the futures fail once it is collected
    try:
        futures = client.describe_topics(TopicCollection(topics), request_timeout=timeout)
        for name, fut in futures.items():
            tid = fut.result(timeout=timeout).topic_id
            text = str(tid) if tid is not None else ""
            out[name] = text if text.strip("A") else None   # all zeroes: no id
    except Exception:   # ids are an extra check; names are still compared
        pass
    return out


def stored_snapshots(directory: Path) -> Iterator[StoredSnapshot]:
    """Every snapshot the recovery partitions of ``directory`` hold, partition by partition.

    Bytewax 0.21 keeps them in each partition's ``snaps`` table, one row per
    step, key and epoch, the value its pickle of what the step returned (NULL
    for a state discarded: nothing to restore, left out here). Older epochs
    than the last committed are collected as it goes, so this is about one
    snapshot per key. Read with the directory locked, so nothing writes
    meanwhile. RecoveryError if a partition is not such a database.
    """
    for path in sorted(directory.glob(PARTITIONS)):
        try:
            with contextlib.closing(sqlite3.connect(path)) as db:
                rows = db.execute("SELECT step_id, state_key, snap_epoch, ser_change FROM snaps "
                                  "WHERE ser_change IS NOT NULL "
                                  "ORDER BY step_id, state_key, snap_epoch")
                for step_id, key, epoch, blob in rows:
                    yield StoredSnapshot(path.name, step_id, key, epoch, blob)
        except sqlite3.Error as exc:
            raise RecoveryError(f"recovery dir {directory}: partition {path.name} is not a "
                                f"readable recovery partition ({exc}); "
                                f"{set_aside(directory)}") from None


def set_aside(directory: Path) -> str:
    """What to do with a directory whose state cannot be resumed (kept, not deleted: it
    may be worth a look)."""
    return (f"move {directory} aside to start over from the beginning of the topics "
            f"(or run with --no-recovery)")


def _differences(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    diffs = []
    for key in ("format", "flow", "reports_topic", "feedback_topic", "shards", "replicas"):
        have_value = have.get(key, have.get("shards")) if key == "replicas" else have.get(key)
        if have_value != want.get(key):
            label = key.replace("_", " ")
            diffs.append(f"{label} {have_value!r} (now {want.get(key)!r})")
    for key in ("reports_topic_id", "feedback_topic_id"):
        topic = want[key.removesuffix("_id")]
        if (have.get(key) and want.get(key) and have.get(key) != want.get(key)
                and have.get(key.removesuffix("_id")) == topic):
            diffs.append(f"topic {topic} as it was before it was recreated "
                         f"(id {have[key]}, now {want[key]})")
    had, now = _tenant_topics(have), want.get("tenant_topics", {})
    gone = [t for t in had if t not in now]
    if gone:
        diffs.append(f"tenant topic(s) {', '.join(gone)} (now not read: keep their orgs in "
                     "tenants.orgs and revoke the tenants' ACLs instead)")
    for topic, tid in now.items():
        if had.get(topic) and tid and had[topic] != tid:
            diffs.append(f"topic {topic} as it was before it was recreated "
                         f"(id {had[topic]}, now {tid})")
    return diffs


def _state_format_refusal(have: dict[str, Any], directory: Path) -> str | None:
    """Why a directory's snapshots cannot be read by this rapidloop (None: they can).

    Snapshots of another state format are refused in one line, never misread:
    the format of the state itself (``operators.snapshot``) changes by
    migrations, so this only happens across a change of the scheme, such as
    from the pickled operator objects written before ``state_format`` existed.
    """
    found = have.get("state_format")
    if found == STATE_FORMAT:
        return None
    if isinstance(found, int) and found > STATE_FORMAT:
        return (f"recovery dir {directory} was written by a newer rapidloop (state format "
                f"{found}, this one reads {STATE_FORMAT}): run the newer version, or delete "
                f"{directory} to start over from the beginning of the topics")
    return (f"recovery dir {directory} was written by an older rapidloop, in a state format "
            f"this one does not read ({'pickled operators' if found is None else found}); "
            f"delete {directory} to start over from the beginning of the topics, or finish "
            f"it with the previous version first")


def _tenant_topics(manifest: dict[str, Any]) -> dict[str, str | None]:
    """The tenant topics a manifest records (none in one made before tenants existed)."""
    value = manifest.get("tenant_topics")
    return value if isinstance(value, dict) else {}


def _record_added_tenants(path: Path, directory: Path, have: dict[str, Any],
                          want: dict[str, Any], lock: IO[str]) -> IO[str]:
    """Record tenant topics added since the manifest was written; the lock held after.

    Written whole beside it and renamed into place (a crash leaves the old
    manifest or the new one, never half of one). The lock is on the file, so
    the new file is locked before the old lock goes: if another job took the
    new one in between, it holds the directory and this one stops.
    """
    had = _tenant_topics(have)
    added = {t: tid for t, tid in want.get("tenant_topics", {}).items() if t not in had}
    if not added:
        return lock
    have["tenant_topics"] = {**had, **added}
    tmp = path.with_name(f".{path.name}.new")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(have, indent=2) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        lock.close()
        raise RecoveryError(f"recovery dir {directory}: cannot record the new tenant topics "
                            f"in {MANIFEST} ({exc.strerror or exc})") from None
    try:
        return _lock(path, directory)
    finally:
        lock.close()


def _lock(path: Path, directory: Path) -> IO[str]:
    f = open(path, encoding="utf-8")  # noqa: SIM115 - held open for the life of the job
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RecoveryError(f"recovery dir {directory} is in use by another rapidloop run "
                            f"(pass a different --recovery-dir)") from None
    return f


def _new_manifest(cfg: Config, ids: dict[str, str | None], flow_id: str,
                  replicas: int | None, partitions: int) -> dict[str, Any]:
    """The manifest of a directory created now (whole or a share: the same one)."""
    return {**identity(cfg, ids, flow_id, replicas), "partitions": partitions,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _create(directory: Path, partitions: int, manifest: dict[str, Any],
            share: dict[str, Any] | None = None) -> bool:
    """Make a complete directory beside ``directory`` and rename it into place.

    ``share``: a cluster process's share (:data:`SHARE`); only the partitions
    it ``holds`` are kept. Returns False if another job created it first (the
    caller then checks it).
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".new",
                                dir=directory.parent))
    try:
        init_db_dir(tmp, partitions)
        if share is not None:
            for j in range(partitions):
                if j not in share["holds"]:
                    (tmp / f"part-{j}.sqlite3").unlink()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if share is not None:
            (tmp / SHARE).write_text(json.dumps(share, indent=2) + "\n", encoding="utf-8")
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()   # an empty directory made by hand: take its place
        try:
            os.rename(tmp, directory)
        except OSError:
            if directory.exists():
                return False
            raise
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def prepare(cfg: Config, directory: str | os.PathLike[str], ids: dict[str, str | None],
            flow_id: str = "rapidloop", replicas: int | None = None) -> Recovery:
    """Create (first start) or check and lock the recovery directory of this job.

    Raises :class:`RecoveryError` with one line saying what is wrong and what
    to do if the directory belongs to other input, another job, or nothing.
    """
    rc = cfg.recovery
    partitions = int(rc.partitions)
    if partitions < 1:
        raise RecoveryError("recovery.partitions must be at least 1")
    if rc.backup_interval_s < 0:
        raise RecoveryError("recovery.backup_interval_s must be >= 0")
    directory = Path(directory)
    want = identity(cfg, ids, flow_id, replicas)
    created = False
    if directory.exists() and not directory.is_dir():
        raise RecoveryError(f"recovery dir {directory} exists and is not a directory")
    if not directory.exists() or not any(directory.iterdir()):
        manifest = _new_manifest(cfg, ids, flow_id, replicas, partitions)
        try:
            created = _create(directory, partitions, manifest)
        except OSError as exc:
            raise RecoveryError(f"cannot create recovery dir {directory}: "
                                f"{exc.strerror or exc}") from None
    path = directory / MANIFEST
    reset = (f"delete {directory} to start over from the beginning of the topics, or pass "
             f"another --recovery-dir")
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(have, dict):
            raise ValueError("not an object")
    except FileNotFoundError:
        raise RecoveryError(f"recovery dir {directory} has no {MANIFEST}: it was not made by "
                            f"rapidloop run; {reset}") from None
    except (OSError, ValueError) as exc:
        raise RecoveryError(f"recovery dir {directory}: unreadable {MANIFEST} ({exc}); "
                            f"{reset}") from None
    lock = _lock(path, directory)
    older = _state_format_refusal(have, directory)
    if older:
        lock.close()
        raise RecoveryError(older)
    diffs = _differences(have, want)
    if diffs:
        lock.close()
        raise RecoveryError(f"recovery dir {directory} holds state of other input: made for "
                            f"{'; '.join(diffs)}; {reset}")
    lock = _record_added_tenants(path, directory, have, want, lock)
    config = RecoveryConfig(directory, timedelta(seconds=float(rc.backup_interval_s)))
    return Recovery(directory, config, created, have, lock)


def create_share(cfg: Config, directory: Path, ids: dict[str, str | None], index: int,
                 count: int, replicas: int) -> None:
    """First start of process ``index`` of ``count``: a dir with its share of the partitions.

    Bytewax needs the cluster as a whole to hold every recovery partition
    exactly once (two processes each holding a fresh copy of one partition
    would each write half of its snapshots), so process k keeps partitions
    j with j mod count == k. Built in a temporary sibling and renamed into
    place, like a whole directory, so a crash here leaves nothing half-made.
    :func:`prepare` then checks and locks it like any other. OSError if it
    cannot be made.
    """
    partitions = int(cfg.recovery.partitions)
    if partitions < 1:
        raise RecoveryError("recovery.partitions must be at least 1")
    mine = [j for j in range(partitions) if j % count == index]
    share = {"process_id": index, "processes": count, "partitions": partitions, "holds": mine}
    _create(directory, partitions, _new_manifest(cfg, ids, "rapidloop", replicas, partitions),
            share)
