"""The models' view of an input, event by event, without Bytewax.

Tools that judge the loop (evaluation, explain) need the ensemble's score at
each report and at each label *before* it is learned. The dataflow's
replicas all see every trusted label in input order, so the job's own
operators, one Correlator and one Decider, walking the same input in the
same order reproduce what any replica knew at each event. What the Decider
learns from an event, and when, is ``Decider.process``'s business: the walk
only shows each event before the Decider takes it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from rapidloop.base.config import Config
from rapidloop.operators.classifiers import Ensemble
from rapidloop.operators.correlate import Correlator, Sighting, Verdict
from rapidloop.operators.decide import Decider
from rapidloop.operators.settings import Settings
from rapidloop.schemas.model import Feedback, Report


def walk(cfg: Config, events: Iterable[Report | Feedback]
         ) -> Iterator[tuple[Sighting | Verdict, Ensemble]]:
    """Each correlated event with the ensemble as it stood when the job met it.

    The Decider processes each event after it is yielded, so a caller scoring a
    trusted label scores it unseen. Lessons (a labelled file seen again) teach
    the Decider but are not yielded: they are not events of the input.
    """
    settings = Settings.from_config(cfg)   # read once; both share its prior, as in the flow
    correlator = Correlator(settings)
    decider = Decider(settings)
    for i, ev in enumerate(events):
        out, _ = correlator.process([(i, ev)], 0.0)   # one shard: no copies for other replicas
        for _, item in out:
            if not (isinstance(item, Verdict) and item.lesson):
                yield item, decider.ensemble
            decider.process((item,), 0.0)
        decider.latencies.clear()   # the flow drains these; nobody reads them here


def score_history(cfg: Config, files: list[tuple[str, str]], kinds: dict[str, str],
                  sha256: str) -> list[dict[str, object]]:
    """The ensemble's and each classifier's score at every report of ``sha256``.

    ``files`` and ``kinds`` are a replay's inputs ((path, name) pairs, name →
    report/feedback), merged in the same event-time order as the replay, so
    this is the score each report met in the dataflow, whether or not it led
    to a decision: when could the loop have decided?
    """
    from rapidloop.flows.file_io import merged_timed_lines
    from rapidloop.schemas.intake import Intake
    from rapidloop.schemas.timefmt import format_ts
    from rapidloop.schemas.wire import Limits, WireParser

    intake = Intake(WireParser(Limits.from_config(cfg)), kinds)

    def events() -> Iterator[Report | Feedback]:
        batch = []
        for _, msg in merged_timed_lines(files, float(cfg.limits.max_future_skew_s)):
            batch.append(msg)
            if len(batch) >= cfg.kafka.consume_batch:
                yield from intake.parse(batch, 0.0).events
                batch = []
        if batch:
            yield from intake.parse(batch, 0.0).events

    out: list[dict[str, object]] = []
    for item, ensemble in walk(cfg, events()):
        if isinstance(item, Sighting) and item.report.sha256 == sha256:
            r = item.report
            score, per = ensemble.score(item.features)
            out.append({"ts": format_ts(r.ts), "report_id": r.report_id, "org_id": r.org_id,
                        "device_id": r.device_id, "score": round(score, 6),
                        "classifiers": {k: round(v, 6) for k, v in per.items()}})
    return out
