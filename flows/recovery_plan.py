"""Which recovery state one process of ``rapidloop run`` runs with, prepared and locked.

``rapidloop.flows.recovery`` owns the directory format (manifest, lock,
shares); this module decides, from how the process runs, which of them it
gets and prepares it:

* one process, or the supervisor of a local cluster (``--processes``): one
  directory holding every partition (:func:`prepare_whole`);
* a child of that supervisor: the directory the supervisor prepared and
  locked, shared as it is (no lock of its own: the supervisor holds it);
* process k of a multi-machine cluster (``-i k -a ...``): its own share
  (:func:`prepare_share`), partitions j with j mod N == k.

Either way the directory's snapshots are checked before the flow starts
(:func:`check_snapshots`): each step restores its own inside Bytewax, where a
snapshot that cannot be restored (garbled bytes, an envelope of an unknown
version) ends the job in a long traceback, or a panic when the bytes are not
even Bytewax's pickle, with other steps perhaps already resumed.

Every refusal is a :class:`~rapidloop.flows.recovery.RecoveryError` whose
text is the one line the CLI prints.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bytewax.recovery import RecoveryConfig

from rapidloop.base.config import Config
from rapidloop.base.kafka import BrokerUnavailable
from rapidloop.operators.settings import Settings
from rapidloop.operators.snapshot import SnapshotError, loads_plain
from rapidloop.schemas.intake import input_kinds

from .chunkstore import remove_unnamed
from .placement import resolve_replicas
from .recovery import (
    SHARE,
    Recovery,
    RecoveryError,
    create_share,
    prepare,
    set_aside,
    stored_replicas,
    stored_snapshots,
    topic_ids,
)
from .steps import CORRELATE, correlate_chunk_names, restorers


def _nothing() -> None:
    return None


@dataclass
class RunRecovery:
    """The recovery state one process runs with, however it was prepared."""

    config: RecoveryConfig
    description: str                 # for the start line
    close: Callable[[], None] = field(default=_nothing)


def replicas(cfg: Config, directory: str | None, workers: int) -> int:
    """Model replicas: as configured, else as the recovery state was made, else one per worker."""
    stored = stored_replicas(directory, int(cfg.stream.shards)) if directory else None
    return resolve_replicas(int(cfg.stream.replicas), workers, stored)


def feeds_active(cfg: Config, conf: dict[str, Any]) -> bool:
    """Whether this job keeps the compacted feed of decisions in force: it does when the
    topic exists (``rapidloop topics create`` makes it), from a recovery state's start."""
    from rapidloop.base.kafka import cluster_metadata

    k = cfg.kafka
    try:
        return k.active_topic in cluster_metadata(conf, k.connect_timeout_s).topics
    except BrokerUnavailable:
        return False


def input_topic_ids(cfg: Config, conf: dict[str, Any]) -> dict[str, str | None]:
    """The input topics' ids (tenants' included), which the recovery manifest records to
    catch a recreated topic."""
    k = cfg.kafka
    ids = topic_ids(conf, list(input_kinds(cfg)), k.connect_timeout_s)
    if feeds_active(cfg, conf):
        ids[k.active_topic] = None   # fed: the recovery state must always have been
    return ids


def check_snapshots(cfg: Config, directory: Path, flow_id: str, whole: bool = True) -> None:
    """RecoveryError naming the first snapshot in ``directory`` that its step could not
    restore under ``cfg``, and why.

    Each is restored as its step's builder would (``flows.steps.restorers``),
    chunks included (``flows.chunked``); snapshots of other steps (the sources'
    read positions) are only read back (they are plain data). Every stored
    snapshot is checked, not only those the next run would resume from: one
    that cannot be read is a sign the directory is damaged, and it costs no
    more than one resume. In a ``whole`` directory (every snapshot of the
    run is here, none in another process's share) the chunks no snapshot
    names, a crash's leftovers, are then removed. A multi-machine process's
    share holds snapshots of other processes' shards, whose chunks are in
    their shares: those are read back without their chunks (each process
    reads its own when it restores a shard, and takes up its leftovers).
    """
    from .job import chunk_settings

    chunks = chunk_settings(cfg, directory)
    restore = restorers(Settings.from_config(cfg), chunks, read_chunks=whole)
    prefix = f"{flow_id}."
    named: set[str] = set()
    for snap in stored_snapshots(directory):
        step = snap.step_id.removeprefix(prefix)
        try:
            resume = loads_plain(snap.blob)
            if resume is not None and step in restore:
                restore[step](resume)
                if step == CORRELATE:
                    named |= correlate_chunk_names(resume)
        except Exception as exc:   # whatever fails here would fail inside Bytewax
            why = str(exc) if isinstance(exc, SnapshotError) else f"{type(exc).__name__}: {exc}"
            raise RecoveryError(
                f"recovery dir {directory}: the snapshot of step {step} for key "
                f"{snap.state_key} (epoch {snap.epoch}) in {snap.partition} cannot be restored "
                f"({' '.join(why.split())}); {set_aside(directory)}") from None
    if whole and chunks is not None:
        remove_unnamed(chunks.directory, named)


def _checked(cfg: Config, rec: Recovery, whole: bool = True) -> Recovery:
    """``rec`` once all of its snapshots restore; else released, and RecoveryError."""
    try:
        check_snapshots(cfg, rec.directory, str(rec.manifest["flow"]), whole)
    except RecoveryError:
        rec.close()
        raise
    return rec


def prepare_whole(cfg: Config, directory: str, conf: dict[str, Any], replicas: int
                  ) -> Recovery:
    """Create or check and lock a directory holding every partition (one machine)."""
    if (Path(directory) / SHARE).is_file():
        raise RecoveryError(f"recovery dir {directory} holds one process's share of a "
                            f"multi-machine cluster's state: run it with that cluster's -i/-a, "
                            f"or pass another --recovery-dir")
    return _checked(cfg, prepare(cfg, directory, input_topic_ids(cfg, conf), replicas=replicas))


def prepare_share(cfg: Config, directory: str, conf: dict[str, Any], index: int,
                  count: int, replicas: int) -> Recovery:
    """Create or check and lock this process's share of a multi-machine cluster's state."""
    d = Path(directory)
    ids = input_topic_ids(cfg, conf)
    if d.exists() and not d.is_dir():
        raise RecoveryError(f"recovery dir {d} exists and is not a directory")
    fresh = not d.exists() or not any(d.iterdir())
    if fresh:
        try:
            create_share(cfg, d, ids, index, count, replicas)
        except OSError as exc:
            raise RecoveryError(f"cannot create recovery dir {d}: "
                                f"{exc.strerror or exc}") from None
    rec = prepare(cfg, d, ids, replicas=replicas)
    rec.created = fresh
    try:
        share = json.loads((d / SHARE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        rec.close()
        raise RecoveryError(f"recovery dir {d} holds a single process's state, not a share "
                            f"of a cluster's: resume it without -i/-a (or with --processes), "
                            f"or pass another --recovery-dir") from None
    if share.get("processes") != count or share.get("process_id") != index:
        rec.close()
        raise RecoveryError(f"recovery dir {d} holds the share of process "
                            f"{share.get('process_id')} of a {share.get('processes')}-process "
                            f"cluster, not of process {index} of {count}: give each process "
                            f"its own directory, and keep the process count (or delete every "
                            f"process's directory to start over)")
    return _checked(cfg, rec, whole=False)   # its keys' snapshots may be in other shares


def plan(cfg: Config, conf: dict[str, Any], directory: str | None, replicas: int, *,
         cluster_child: bool = False, process_id: int | None = None,
         addresses: list[str] | None = None) -> RunRecovery | None:
    """The recovery state of one process (None: recovery off), prepared and locked.

    ``cluster_child``: a child of a ``--processes`` supervisor, which created,
    checked and locked ``directory`` for every child. ``process_id`` and
    ``addresses``: this process's place in a multi-machine cluster.
    """
    if not directory:
        return None
    if cluster_child:
        d = Path(directory)
        return RunRecovery(
            RecoveryConfig(d, timedelta(seconds=float(cfg.recovery.backup_interval_s))),
            f"recovery state in {d} (shared by the cluster)")
    addresses = addresses or []
    if process_id is not None and len(addresses) > 1:
        rec = prepare_share(cfg, directory, conf, process_id, len(addresses), replicas)
        share = json.loads((rec.directory / SHARE).read_text(encoding="utf-8"))
        held = ", ".join(f"part-{j}" for j in share["holds"]) or "no partition"
        verb = "created in" if rec.created else "resumed from"
        return RunRecovery(rec.config, f"recovery state {verb} {rec.directory}: {held} of "
                                       f"{share['partitions']}", rec.close)
    rec = prepare_whole(cfg, directory, conf, replicas)
    verb = "created in" if rec.created else "resumed from"
    return RunRecovery(rec.config, f"recovery state {verb} {rec.directory}", rec.close)

