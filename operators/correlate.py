"""Stage one of the loop: join every event with its file's history.

A ``Correlator`` owns the files of one shard (sha256 → ``FileState``). Each
report updates its file and leaves as a ``Sighting`` carrying the file's
feature vector and cross-organization counts at that moment; each verdict
leaves as a ``Verdict`` carrying the features at the time of the verdict, the
join the classifiers learn from. Redelivered duplicates are recognised and
counted here, and files idle for ``state.idle_ttl_s`` of event time are
evicted, so memory follows the working set rather than history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rapidloop.config import Config
from rapidloop.schemas.model import Feedback, Report

from .dedup import RecentIds
from .filestate import FileState


@dataclass(slots=True)
class Sighting:
    """A report joined with everything known about its file."""

    report: Report
    features: dict[str, float]
    orgs_in_windows: list[int]   # distinct orgs per window in windows.sizes_s
    orgs_ever: int
    arrived: float               # wall clock when the batch was parsed (latency metric)


@dataclass(slots=True)
class Verdict:
    """A verdict joined with its file's features at the time of the verdict."""

    feedback: Feedback
    features: dict[str, float] | None   # None: the file was never reported (or evicted)
    owner: bool = True                   # False on copies broadcast only to teach other replicas
    arrived: float = 0.0
    signer: str | None = None            # the file's signer, for the allow-list


class Correlator:
    """Per-shard file states; plain Python, picklable."""

    def __init__(self, cfg: Config) -> None:
        self.windows = tuple(float(w) for w in cfg.windows.sizes_s)
        self.max_orgs = cfg.state.max_orgs
        self.max_devices = cfg.state.max_devices
        self.max_parents = cfg.state.max_parents
        self.max_behaviors = cfg.state.max_behaviors
        self.idle_ttl = float(cfg.state.idle_ttl_s)
        self.sweep_interval = float(cfg.state.sweep_interval_s)
        self.files: dict[str, FileState] = {}
        self.ids = RecentIds(cfg.dedup.ids_per_shard)
        self.now = float("-inf")         # newest event time seen by this shard
        self.next_sweep = float("-inf")
        self.duplicates = 0
        self.evicted = 0

    def process(self, events: Iterable[tuple[int, Report | Feedback]], arrived: float
                ) -> tuple[list[tuple[int, Sighting | Verdict]], list[tuple[int, Verdict]]]:
        """Fold ``(index, event)`` pairs, in input order, into file state.

        Returns this shard's outputs and the verdict copies every other model
        replica must learn from (``owner=False``).
        """
        out: list[tuple[int, Sighting | Verdict]] = []
        copies: list[tuple[int, Verdict]] = []
        files = self.files
        for idx, ev in events:
            if type(ev) is Report:
                if self.ids.seen(ev.report_id):
                    self.duplicates += 1
                    continue
                if ev.ts > self.now:
                    self.now = ev.ts
                state = files.get(ev.sha256)
                if state is None:
                    state = files[ev.sha256] = FileState(
                        self.windows, self.max_orgs, self.max_devices)
                state.observe(ev, self.max_parents, self.max_behaviors)
                orgs = state.window_orgs(ev.ts)
                out.append((idx, Sighting(ev, state.features(ev.ts, orgs), orgs,
                                          state.orgs.ever, arrived)))
            else:
                if self.ids.seen("fb:" + ev.feedback_id):
                    self.duplicates += 1
                    continue
                if ev.ts > self.now:
                    self.now = ev.ts
                state = files.get(ev.sha256)
                feats = state.features(ev.ts) if state is not None else None
                signer = state.signer if state is not None else None
                out.append((idx, Verdict(ev, feats, True, arrived, signer)))
                if ev.trusted and feats is not None:
                    copies.append((idx, Verdict(ev, feats, False, arrived, signer)))
        if self.now >= self.next_sweep:
            self.sweep()
        return out, copies

    def sweep(self) -> int:
        """Evict files idle for longer than the TTL; returns how many."""
        horizon = self.now - self.idle_ttl
        cold = [sha for sha, st in self.files.items() if st.last_seen < horizon]
        for sha in cold:
            del self.files[sha]
        self.evicted += len(cold)
        self.next_sweep = self.now + self.sweep_interval
        return len(cold)
