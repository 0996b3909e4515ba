"""Stage one of the loop: join every event with its file's history.

A ``Correlator`` owns the files of one shard (sha256 → ``FileState``). Each
report updates its file and leaves as a ``Sighting`` carrying the file's
feature vector and cross-organization counts at that moment; each verdict
leaves as a ``Verdict`` carrying the features at the time of the verdict, the
join the classifiers learn from. Redelivered duplicates are recognised and
counted here, and files idle for ``state.idle_ttl_s`` of event time are
evicted, so memory follows the working set rather than history.

Organization and device ids arrive as a fresh string in every message; a
file's state keeps the ids it has seen, so the correlator hands it one shared
object per distinct id (``_canonical``, a bounded table: when full it starts
over, which only costs sharing, never correctness).
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rapidloop.base.config import Config
from rapidloop.schemas.model import Feedback, FileInfo, Report

from .accusation import Accusation
from .dedup import RecentIds
from .filestate import FileState
from .lineage import lineage_key
from .settings import CorrelatorSettings, Settings
from .snapshot import loads_plain, register

KIND = "correlator"


def _rows_as_bytes(state: dict[str, Any]) -> dict[str, Any]:
    """Version 1 → 2: each file, hash and row, becomes one pickle (``Correlator.snapshot``)."""
    shas, rows = state["files"]
    return {**state, "files": [_dump_row(sha, row) for sha, row in zip(shas, rows, strict=True)]}


# version 1: the first plain layout (snapshot, FileState.ROW); 2: each file pickled apart
register(KIND, 2, {1: _rows_as_bytes})


@dataclass(slots=True)
class Sighting:
    """A report joined with everything known about its file."""

    report: Report
    features: dict[str, float]
    orgs_in_windows: list[int]   # distinct orgs per window in windows.sizes_s
    orgs_ever: int
    arrived: float               # wall clock when the batch was parsed (latency metric)
    accusers: list[str] = field(default_factory=list)   # orgs whose own reports accused it
    signed: bool = False         # the file's signature as most organizations report it
    signer: str | None = None    # ...and its signer (for the signer's record of verdicts)
    lineage: str | None = None   # name pattern, signer and type (``operators.lineage``)
    allowers: tuple[str, ...] = ()   # orgs whose org_report called the file benign
    parent: str | None = None    # the first file reported to have dropped or launched it


@dataclass(slots=True)
class Verdict:
    """A verdict joined with its file's features at the time of the verdict."""

    feedback: Feedback
    features: dict[str, float] | None   # None: the file was never reported (or evicted)
    owner: bool = True                   # False on copies broadcast only to teach other replicas
    arrived: float = 0.0
    signer: str | None = None            # the file's signer, for the allow-list
    accusers: list[str] = field(default_factory=list)   # orgs whose accusations it settles
    lesson: bool = False                 # a labelled file seen again: teaches, decides nothing
    lineage: str | None = None           # the file's lineage, for the siblings' record
    allowers: tuple[str, ...] = ()       # orgs that vouched for it, whose word this settles
    orgs_ever: int = 0                   # organizations that reported the file so far
    earlier: tuple[tuple[str, str], ...] = ()   # trusted (source, verdict) before this one


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_REPORT, _FILE, _FEEDBACK = _fields(Report), _fields(FileInfo), _fields(Feedback)
_SIGHTING, _VERDICT = _fields(Sighting)[1:], _fields(Verdict)[1:]   # after the event


def item_state(item: Any) -> tuple[Any, ...]:
    """A stream item (a report, a verdict, or either joined: ``Sighting``, ``Verdict``)
    as plain data, for the snapshot of the pieces a decider holds (``UnitAssembler``):
    a tag, then the fields in declaration order, the event's nested."""
    kind = type(item)
    if kind is Sighting:
        return ("S", item_state(item.report), *[getattr(item, f) for f in _SIGHTING])
    if kind is Verdict:
        return ("V", item_state(item.feedback), *[getattr(item, f) for f in _VERDICT])
    if kind is Report:
        return ("R", *[getattr(item, f) for f in _REPORT if f != "file"],
                tuple(getattr(item.file, f) for f in _FILE))
    if kind is Feedback:
        return ("F", *[getattr(item, f) for f in _FEEDBACK])
    raise TypeError(f"no plain form for {kind.__name__}")


def item_from_state(state: tuple[Any, ...]) -> Any:
    """The inverse of ``item_state``."""
    tag = state[0]
    if tag == "S":
        return Sighting(item_from_state(state[1]), *state[2:])
    if tag == "V":
        return Verdict(item_from_state(state[1]), *state[2:])
    if tag == "R":
        fields = dict(zip([f for f in _REPORT if f != "file"], state[1:-1], strict=True))
        return Report(**fields, file=FileInfo(*state[-1]))
    if tag == "F":
        return Feedback(*state[1:])
    raise ValueError(f"unknown item tag {tag!r}")


_CANONICAL_IDS = 1 << 16   # distinct org/device ids remembered for sharing, per shard
_VERDICTS_KEPT = 4         # trusted verdicts remembered per file (for sources' reliability)


class Correlator:
    """Per-shard file states; plain Python, its state plain data (``snapshot``)."""

    def __init__(self, settings: Settings) -> None:
        """``settings``: the job's, read once and shared by every shard (with its prior)."""
        s: CorrelatorSettings = settings.correlator
        self.settings = s
        self.accusation = Accusation(s.accusation, settings.prior)
        self.files: dict[str, FileState] = {}
        self.ids = RecentIds(s.ids_per_shard)
        self.now = float("-inf")         # newest event time seen by this shard
        self.next_sweep = float("-inf")
        self.duplicates = 0
        self.evicted = 0
        self._canonical: dict[str, str] = {}
        # What the last snapshot saved of each file (its row, pickled), and the files an
        # event has touched since: a snapshot pickles only those again (``snapshot``).
        self._saved: dict[str, bytes] | None = None   # None: no snapshot taken yet
        self._touched: set[str] = set()

    @classmethod
    def from_config(cls, cfg: Config) -> Correlator:
        """A shard of a job of ``cfg`` on its own (tools and tests; a job's shards share
        one ``Settings``)."""
        return cls(Settings.from_config(cfg))

    def snapshot(self, files: bool = True) -> dict[str, Any]:
        """The shard's state as plain data (``operators.snapshot``); settings, the
        accusation memo and the id table are not state. ``files=False``: without the
        files (their rows are saved apart: ``saved_rows``, ``operators.filelog``).

        With recovery on this runs for every shard at every epoch close, and the
        input waits for it: the files go as one list, each file's hash and
        ``FileState.row`` pickled on their own. A file's pickle is kept and
        made again only once an event has touched the file, so a snapshot
        costs a pickle per file that changed in the epoch and a copy of the
        bytes of the rest (a fleet's state is mostly files not seen today),
        for the memory of one pickled row a file (~250 bytes for a file one
        organization reported).
        """
        rows = list(self.saved_rows()[0].values()) if files else []
        return {"files": rows,
                "ids": self.ids.snapshot(), "now": self.now, "next_sweep": self.next_sweep,
                "duplicates": self.duplicates, "evicted": self.evicted}

    def saved_rows(self) -> tuple[dict[str, bytes], set[str]]:
        """Every tracked file's row as the snapshots save it (hash and ``FileState.row``,
        pickled), brought up to date, and the files an event touched (or the sweep
        forgot) since the last call: all of them the first time."""
        files, saved = self.files, self._saved
        if saved is None:
            saved = self._saved = {sha: _dump_row(sha, st.row()) for sha, st in files.items()}
            changed = set(saved)
        else:
            changed = self._touched
            for sha in changed:
                st = files.get(sha)
                if st is not None:
                    saved[sha] = _dump_row(sha, st.row())
                else:
                    saved.pop(sha, None)
        self._touched = set()
        return saved, changed

    @classmethod
    def from_snapshot(cls, settings: Settings, state: dict[str, Any]) -> Correlator:
        """The correlator ``snapshot`` saved, with ``settings``."""
        c = cls(settings)
        s = c.settings
        windows, max_orgs, max_devices = s.windows, s.max_orgs, s.max_devices
        evidence_orgs, from_row = s.evidence_orgs, FileState.from_row
        files, saved = c.files, {}
        for blob in state["files"]:
            sha, row = loads_plain(blob)
            files[sha] = from_row(row, windows, max_orgs, max_devices, evidence_orgs)
            saved[sha] = blob   # what was restored is what is saved
        c._saved = saved
        c.ids = RecentIds.from_snapshot(s.ids_per_shard, state["ids"])
        c.now, c.next_sweep = state["now"], state["next_sweep"]
        c.duplicates, c.evicted = state["duplicates"], state["evicted"]
        return c

    def process(self, events: Iterable[tuple[int, Report | Feedback]], arrived: float
                ) -> tuple[list[tuple[int, Sighting | Verdict]], list[tuple[int, Verdict]]]:
        """Fold ``(index, event)`` pairs, in input order, into file state.

        Returns this shard's outputs and the verdict copies every other model
        replica must learn from (``owner=False``).
        """
        out: list[tuple[int, Sighting | Verdict]] = []
        copies: list[tuple[int, Verdict]] = []
        files = self.files
        canonical = self._canonical
        s = self.settings
        windows, max_orgs, max_devices = s.windows, s.max_orgs, s.max_devices
        max_parents, max_behaviors = s.max_parents, s.max_behaviors
        evidence_orgs, max_accusers = s.evidence_orgs, s.max_accusers
        accuse_window, lesson_max = s.accuse_window, s.lesson_max
        # bound once per batch: the loop below runs for every event
        seen, accuses = self.ids.seen, self.accusation.accuses
        touch = self._touched.add if self._saved is not None else None
        append = out.append
        for idx, ev in events:
            if type(ev) is Report:
                if seen(ev.report_id):
                    self.duplicates += 1
                    continue
                ts = ev.ts
                if ts > self.now:
                    self.now = ts
                sha = ev.sha256
                if touch is not None:
                    touch(sha)
                state = files.get(sha)
                if state is None:
                    state = files[sha] = FileState(windows, max_orgs, max_devices)
                org = canonical.get(ev.org_id)
                if org is None:
                    org = self._remember(ev.org_id)
                device = canonical.get(ev.device_id)
                if device is None:
                    device = self._remember(ev.device_id)
                top = state.observe(ev, max_parents, max_behaviors, org, device, evidence_orgs)
                if (ev.behaviors or ev.verdicts) and accuses(ev, 0.0, top):
                    state.accuse(org, ts, max_accusers)
                orgs = state.orgs.counts(ts)   # state.window_orgs(ts)
                feats = state.features(ts, orgs)
                signed, signer = state.signature()
                acc = state.accusers   # state.accusing(ts - accuse_window), inline
                if acc:
                    since = ts - accuse_window
                    accusers = [o for o, t in acc.items() if t >= since]
                else:
                    accusers = []
                signer = signer if signed else None
                parents = state.parents
                append((idx, Sighting(ev, feats, orgs, state.orgs.ever, arrived, accusers,
                                      signed, signer, lineage_key(state.name, signer, state.ftype),
                                      state.allowers, parents[0] if parents else None)))
                n = state.since_label
                if n and n & (n - 1) == 0 and n <= lesson_max:
                    # The labelled file as it looks now teaches every replica (lessons).
                    fb = Feedback(f"lesson:{ev.report_id}", ts, sha, state.label or "", "lesson")
                    lesson = Verdict(fb, feats, False, arrived, None, [], True)
                    append((idx, lesson))
                    copies.append((idx, lesson))
            else:
                if self.ids.seen("fb:" + ev.feedback_id):
                    self.duplicates += 1
                    continue
                if ev.ts > self.now:
                    self.now = ev.ts
                if touch is not None:
                    touch(ev.sha256)
                state = files.get(ev.sha256)
                feats = signer = lineage = None
                accusers: list[str] = []
                allowers: tuple[str, ...] = ()
                earlier: tuple[tuple[str, str], ...] = ()
                orgs_ever = 0
                if state is not None:
                    feats = state.features(ev.ts)
                    signed, signer = state.signature()
                    lineage = lineage_key(state.name, signer if signed else None, state.ftype)
                    accusers = state.accusing(ev.ts - accuse_window)
                    allowers = state.allowers
                    orgs_ever = state.orgs.ever
                    if ev.trusted:
                        state.label = ev.verdict
                        state.since_label = 0
                        earlier = state.verdicts
                        state.verdicts = (*earlier, (ev.source, ev.verdict))[-_VERDICTS_KEPT:]
                    elif ev.verdict == "benign" and ev.org_id:
                        state.allow(ev.org_id, s.max_allowers)
                out.append((idx, Verdict(ev, feats, True, arrived, signer, accusers,
                                         lineage=lineage, allowers=allowers,
                                         orgs_ever=orgs_ever, earlier=earlier)))
                if ev.trusted and feats is not None:
                    copies.append((idx, Verdict(ev, feats, False, arrived, signer, accusers,
                                                lineage=lineage, allowers=allowers,
                                                orgs_ever=orgs_ever, earlier=earlier)))
        if self.now >= self.next_sweep:
            self.sweep()
        return out, copies

    def _remember(self, name: str) -> str:
        """Make ``name`` the shared object for its value (the table is bounded)."""
        canonical = self._canonical
        if len(canonical) >= _CANONICAL_IDS:
            canonical.clear()
        canonical[name] = name
        return name

    def sweep(self) -> int:
        """Evict files idle for longer than the TTL; returns how many."""
        horizon = self.now - self.settings.idle_ttl
        cold = [sha for sha, st in self.files.items() if st.last_seen < horizon]
        for sha in cold:
            del self.files[sha]
        if cold and self._saved is not None:
            self._touched.update(cold)   # the next snapshot drops them
        self.evicted += len(cold)
        self.next_sweep = self.now + self.settings.sweep_interval
        return len(cold)


def _dump_row(sha: str, row: tuple[Any, ...]) -> bytes:
    """One file in a snapshot: its hash and row, pickled (plain data: ``operators.snapshot``)."""
    return pickle.dumps((sha, row), protocol=pickle.HIGHEST_PROTOCOL)
