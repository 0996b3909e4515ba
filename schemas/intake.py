"""Turning a batch of raw messages into events and dead letters.

Every message that arrives is accounted for here: it becomes a Report or a
Feedback, or a DeadLetter that says exactly what was wrong with it. Nothing
raises past this point, so one bad message can never stop the job.

Where a message came in decides whom it may speak for. Kafka does not tell
a consumer which principal produced a message, so a tenant that must not be
impersonated gets input topics of its own, which only it may write (Kafka
ACLs), and the topic is bound to its org here (:class:`TopicKind`): a report
there must carry that ``org_id``, a verdict there must be that org's own
``org_report``. Anything else is a dead letter whose error starts with its
code (``tenant_mismatch: ...``). What passes is exactly what the same
message on a shared topic would have been: nothing downstream knows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .model import DeadLetter, Feedback, RawMessage, Report
from .wire import InvalidMessage, WireParser, dead_letter

if TYPE_CHECKING:
    from rapidloop.base.config import Config

REPORT = "report"
FEEDBACK = "feedback"
ORG_REPORT = "org_report"
_topic = attrgetter("topic")


class TopicKind(str):
    """A topic's kind (it *is* ``REPORT`` or ``FEEDBACK``: compares and hashes as one) and
    whom the topic speaks for.

    Why a ``str``: a ``kinds`` mapping (topic → kind) is how every caller tells
    the flow what to parse, and code that compares kinds keeps working with a
    bound topic in it.

    ``org``: the one org a tenant topic speaks for (None: a shared topic).
    ``own_topics``: on a shared topic, the orgs it may not speak for because
    they have topics of their own (empty: any org). ``trusted_only``: a shared
    feedback topic that carries sandbox and analyst verdicts only.
    """

    org: str | None
    own_topics: frozenset[str]
    trusted_only: bool

    def __new__(cls, kind: str, org: str | None = None, own_topics: frozenset[str] = frozenset(),
                trusted_only: bool = False) -> TopicKind:
        if kind not in (REPORT, FEEDBACK):
            raise ValueError(f"a topic carries {REPORT!r} or {FEEDBACK!r}, not {kind!r}")
        self = super().__new__(cls, kind)
        self.org = org
        self.own_topics = frozenset(own_topics)
        self.trusted_only = trusted_only
        return self

    @property
    def plain(self) -> bool:
        """Whether the topic takes whatever it is given (nothing to check per message)."""
        return self.org is None and not self.own_topics and not self.trusted_only

    def __reduce__(self) -> tuple[Any, ...]:   # sources and flows are pickled across workers
        return (TopicKind, (str(self), self.org, self.own_topics, self.trusted_only))

    def __repr__(self) -> str:
        extra = [f"org={self.org!r}"] if self.org is not None else []
        if self.own_topics:
            extra.append(f"own_topics={sorted(self.own_topics)!r}")
        if self.trusted_only:
            extra.append("trusted_only=True")
        return f"TopicKind({str(self)!r}{''.join(', ' + e for e in extra)})"


def bind_topics(reports_topic: str, feedback_topic: str,
                tenants: Sequence[tuple[str, str, str]] = (), *,
                shared_reports: str = "any", shared_feedback: str = "any") -> dict[str, str]:
    """Every input topic → its kind, bound where it must be: the ``kinds`` of a flow.

    ``tenants``: (org, reports topic, feedback topic) of each org with topics of
    its own (``rapidloop.base.config.tenant_topics``). ``shared_reports`` /
    ``shared_feedback``: what the shared topics still accept once there are
    tenant topics (``[tenants]`` in the configuration; without tenants they
    change nothing). The order is the event-time merge's tie order (reports
    topics before feedback topics, shared before tenants', tenants in the
    given order), which the live job and a capture's replay must share.
    """
    if not tenants:
        return {reports_topic: REPORT, feedback_topic: FEEDBACK}
    orgs = frozenset(org for org, _, _ in tenants)
    kinds: dict[str, str] = {reports_topic: TopicKind(
        REPORT, own_topics=orgs if shared_reports == "unbound_only" else frozenset())}
    kinds.update((reports, TopicKind(REPORT, org)) for org, reports, _ in tenants)
    kinds[feedback_topic] = TopicKind(
        FEEDBACK, own_topics=orgs if shared_feedback == "unbound_only" else frozenset(),
        trusted_only=shared_feedback == "trusted_only")
    kinds.update((feedback, TopicKind(FEEDBACK, org)) for org, _, feedback in tenants)
    return kinds


def input_kinds(cfg: Config) -> dict[str, str]:
    """The configured input topics (shared, and each tenant's) → their kinds, in merge order."""
    from rapidloop.base.config import tenant_topics

    k, t = cfg.kafka, cfg.tenants
    return bind_topics(k.reports_topic, k.feedback_topic, tenant_topics(cfg),
                       shared_reports=t.shared_reports, shared_feedback=t.shared_feedback)


def check_origin(event: Report | Feedback, kind: TopicKind, topic: str) -> None:
    """Raise InvalidMessage if ``event`` may not come in on ``topic`` (bound as ``kind``)."""
    org, claimed = kind.org, event.org_id
    if type(event) is Feedback:
        if org is not None:
            if event.source != ORG_REPORT:
                raise InvalidMessage(
                    "tenant_trusted_verdict",
                    f"tenant_trusted_verdict: a {event.source} verdict on topic {topic}, which "
                    f"speaks for {org}: a tenant topic cannot carry sandbox or analyst verdicts")
        elif event.source == ORG_REPORT:
            if kind.trusted_only:
                raise InvalidMessage(
                    "shared_org_report",
                    f"shared_org_report: an org_report (org_id {claimed!r}) on topic {topic}, "
                    "which carries sandbox and analyst verdicts only: a tenant sends its "
                    "verdicts on its own topic")
        else:
            return   # a trusted verdict on a shared topic speaks for no org
    if org is not None:
        if claimed != org:
            raise InvalidMessage(
                "tenant_mismatch",
                f"tenant_mismatch: org_id {claimed!r} on topic {topic}, which speaks for {org}")
    elif claimed in kind.own_topics:
        raise InvalidMessage(
            "tenant_shared_topic",
            f"tenant_shared_topic: org_id {claimed!r} on the shared topic {topic}: {claimed} "
            "has topics of its own and speaks on those only")


@dataclass(slots=True)
class Unit:
    """One source batch, parsed: the unit of deterministic processing."""

    source: str
    unit: str
    seq: int | None
    events: list[Report | Feedback]
    dead: list[DeadLetter]
    arrived: float
    counts: Counter[str] = field(default_factory=Counter)       # messages in, by topic
    dead_codes: Counter[str] = field(default_factory=Counter)   # dead letters, by reason code


class Intake:
    """Parses batches; ``kinds`` maps a topic (or input file) name to report/feedback, a
    :class:`TopicKind` where the topic is bound (:func:`bind_topics`)."""

    def __init__(self, parser: WireParser, kinds: dict[str, str]) -> None:
        self.parser = parser
        self.kinds = kinds
        # Per message, one lookup: a plain topic maps to the REPORT / FEEDBACK constants
        # themselves (compared by identity), a bound one to its TopicKind (checked).
        self._routes: dict[str, str] = {
            topic: kind if isinstance(kind, TopicKind) and not kind.plain
            else REPORT if kind == REPORT else FEEDBACK if kind == FEEDBACK else kind
            for topic, kind in kinds.items()}

    def parse(self, messages: list[RawMessage], now: float, seq: int | None = None,
              source: str | None = None) -> Unit:
        events: list[Report | Feedback] = []
        dead: list[DeadLetter] = []
        counts: Counter[str] = Counter(map(_topic, messages))   # counted in C, not per message
        codes: Counter[str] = Counter()
        report = self.parser.report
        feedback = self.parser.feedback
        routes = self._routes
        append = events.append
        plain_report, plain_feedback = REPORT, FEEDBACK
        for msg in messages:
            kind = routes.get(msg.topic)
            try:
                if msg.value is None:
                    raise InvalidMessage("empty", "message has no value")
                if kind is plain_report:
                    append(report(msg.value, msg.decoded))
                elif kind is plain_feedback:
                    append(feedback(msg.value, msg.decoded))
                elif isinstance(kind, TopicKind):
                    event = (report(msg.value, msg.decoded) if kind == REPORT
                             else feedback(msg.value, msg.decoded))
                    check_origin(event, kind, msg.topic)
                    append(event)
                else:
                    raise InvalidMessage("unknown_topic", f"no parser for topic {msg.topic!r}")
            except InvalidMessage as exc:
                codes[exc.code] += 1
                dead.append(dead_letter(msg, str(exc), now))
            except Exception as exc:  # a parser bug must not stop the job either
                codes["internal"] += 1
                dead.append(dead_letter(msg, f"internal error: {type(exc).__name__}: {exc}", now))
        first = messages[0] if messages else None
        src = source or (f"{first.topic}:{first.partition}" if first else "empty")
        unit = (f"{src}#{seq}" if seq is not None
                else f"{src}@{first.offset if first else 0}:{now!r}")
        return Unit(src, unit, seq, events, dead, now, counts, codes)
