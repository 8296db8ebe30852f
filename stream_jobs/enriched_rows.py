"""enriched_rows: the row feedback becomes, with what it inherits from its trace, and its version.

:class:`TraceAttributes` merges a trace's span events into what its feedback
inherits; :func:`enrich` makes the output row of a feedback event in a join
outcome (:mod:`thumbline.stream_jobs.join_state` decides which). Every output
row carries a version that orders the states of one ``event_id``, so the store
keeps the latest whatever order the rows land in:

    version = received_at in microseconds * 4 + rank
    rank: pending 0 < orphan 1 < joined 2 < corrected 3

A re-delivered event has the same ``received_at`` and so the same version (it
collapses into its row); a re-sent event (a user changing their mind) has a
later ``received_at`` and replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

from thumbline.schemas import (
    EnrichedFeedback,
    FeedbackEvent,
    FeedbackKind,
    JoinStatus,
    Source,
    Target,
    TraceEvent,
    TraceStatus,
)

_STATUS = {s.value: s for s in TraceStatus}  # Enum(value) is slow on the hot path
DEFAULT_PROJECT = "default"

RANK = {JoinStatus.PENDING: 0, JoinStatus.ORPHAN: 1, JoinStatus.JOINED: 2, JoinStatus.CORRECTED: 3}


#: Attributes with few distinct values (a model, not a user): one string object each.
_DIMENSIONS = frozenset({"environment", "model", "capability", "step", "name"})
_SHARED: dict[str, str] = {}
_SHARED_MAX = 100_000


def shared(value: str) -> str:
    """``value`` as the one string object held for it (up to ``_SHARED_MAX`` values)."""
    held = _SHARED.get(value)
    if held is not None:
        return held
    if len(_SHARED) < _SHARED_MAX:
        _SHARED[value] = value
    return value


@dataclass(slots=True)
class TraceAttributes:
    """What feedback inherits from its trace, merged from one or many span events.

    The whole-trace event or root span (no parent) wins for the trace's own
    values; other spans fill what is still missing. Costs and tokens are the
    root's when it reports them, else the sum over spans. An error in any span
    makes the trace an error.
    """

    trace_id: str
    project: str = DEFAULT_PROJECT  # part of the identity: the same for all its spans
    environment: str = ""
    model: str = ""
    capability: str = ""
    step: str = ""
    user_id: str = ""
    session_id: str = ""
    conversation_id: str = ""
    name: str = ""
    status: str = ""
    latency_ms: float | None = None
    cost_usd: float | None = None
    total_tokens: int | None = None
    has_root: bool = False
    span_cost: float = 0.0
    span_tokens: int = 0
    spans: str | set[str] | None = None  # the span ids merged: one alone, or a set of them
    seen_at: float = 0.0  # wall time of the last update, for retention

    _TEXT = (
        "environment", "model", "capability", "step",
        "user_id", "session_id", "conversation_id", "name",
    )  # fmt: skip

    def merge(self, event: TraceEvent, now: float) -> None:
        root = event.span_id is None or event.parent_span_id is None
        span_key = event.span_id or ""
        spans = self.spans
        if spans is None:  # most traces come as one event: no set for them (216 bytes)
            first_time, self.spans = True, span_key
        elif isinstance(spans, str):
            first_time = span_key != spans
            if first_time:
                self.spans = {spans, span_key}
        else:
            first_time = span_key not in spans
            spans.add(span_key)
        for name in self._TEXT:
            value = getattr(event, name) or ""
            if not value:
                continue
            if name in _DIMENSIONS:  # a few values shared by many traces: held once
                value = shared(value)
            current = getattr(self, name)
            # TraceEvent defaults environment to "default": a span that did not
            # say must not overwrite a value another span did say.
            weak = name == "environment" and value == "default"
            if not current or (not weak and (root or current == "default")):
                setattr(self, name, value)
        if root:
            self.has_root = True
            if event.latency_ms is not None:
                self.latency_ms = event.latency_ms
            if event.cost_usd is not None:
                self.cost_usd = event.cost_usd
            if event.total_tokens is not None:
                self.total_tokens = event.total_tokens
        elif first_time:  # a span sent twice is counted once
            self.span_cost += event.cost_usd or 0.0
            self.span_tokens += event.total_tokens or 0
            if self.latency_ms is None and event.latency_ms is not None and not self.has_root:
                self.latency_ms = event.latency_ms
        status = str(event.status)
        if self.status != TraceStatus.ERROR and (
            not self.status
            or status == TraceStatus.ERROR
            or (status != TraceStatus.UNSET and (root or self.status == TraceStatus.UNSET))
        ):
            self.status = shared(status)
        self.seen_at = now

    @property
    def cost(self) -> float | None:
        return self.cost_usd if self.cost_usd is not None else (self.span_cost or None)

    @property
    def tokens(self) -> int | None:
        return self.total_tokens if self.total_tokens is not None else (self.span_tokens or None)


def version_of(event: FeedbackEvent, status: JoinStatus) -> int:
    """The row's version: when it was received, or for a person's vote when it was given.

    A vote (one vote per person: ``client_event_id`` is set, see
    :mod:`thumbline.stream_jobs.votes`) shares its event id with the person's other votes
    on the target, and the later click must win even when both arrive in one message
    (same ``received_at``) or the earlier one arrives last (a retry): its event time
    ``ts`` orders them. A copy of the same click has the same ``ts`` and collapses.
    """
    when = event.ts if event.client_event_id else (event.received_at or event.ts)
    return int(when.timestamp() * 1_000_000) * 4 + RANK[status]


def enrich(
    event: FeedbackEvent, trace: TraceAttributes | None, status: JoinStatus
) -> EnrichedFeedback:
    """The output row: the feedback's own fields win; the trace fills the rest."""

    def pick(own: str | None, inherited: str) -> str:
        return own if own else inherited

    t = trace
    return EnrichedFeedback.trusted(
        dict(
            schema_version=1,
            event_id=event.event_id,
            client_event_id=event.client_event_id,
            trace_id=event.trace_id or "",
            target=event.target or Target.TRACE,
            span_id=event.span_id,
            name=event.name or "",
            kind=event.kind or FeedbackKind.LABEL,  # always set by validation
            value=event.value,
            score=event.score,
            label=event.label or "",
            comment=event.comment,
            correction=event.correction,
            category=event.category,
            tags=event.tags,
            source=event.source or Source.EXPLICIT,  # always set by validation
            annotator=event.annotator,
            user_id=pick(event.user_id, t.user_id if t else "") or None,
            session_id=pick(event.session_id, t.session_id if t else "") or None,
            conversation_id=pick(event.conversation_id, t.conversation_id if t else "") or None,
            project=event.project or DEFAULT_PROJECT,  # identity: never inherited
            environment=pick(event.environment, t.environment if t else ""),
            model=t.model if t else "",
            capability=pick(event.capability, t.capability if t else "") or None,
            step=pick(event.step, t.step if t else "") or None,
            trace_name=(t.name or None) if t else None,
            trace_status=_STATUS.get(t.status) if t else None,
            latency_ms=t.latency_ms if t else None,
            total_tokens=t.tokens if t else None,
            cost_usd=t.cost if t else None,
            metadata=event.metadata,
            ts=event.ts,
            received_at=event.received_at,
            join_status=status,
            retracted=event.retracted,
            score_config_version=event.score_config_version,
            version=version_of(event, status),
        )
    )
