"""Output records: what the stream jobs publish and ClickHouse stores.

``EnrichedFeedback`` (topic ``feedback.enriched``, table ``feedback``),
``RateWindow`` (``rates`` / ``feedback_rates``), ``Alert`` (``alerts`` /
``alerts``) and ``DeadLetter`` (``dlq`` / ``dead_letters``). Each carries a
``version``: ClickHouse keeps the row with the highest version per key, so a
re-emitted record replaces the earlier one and a re-delivered one collapses
into it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field

from thumbline.schemas._base import Contract
from thumbline.schemas.feedback import (
    Annotator,
    FeedbackEvent,
    FeedbackKind,
    Id,
    Name,
    Source,
    Target,
    target_key,
)
from thumbline.schemas.trace import TraceEvent, TraceStatus


class KeyedBatch(Contract):
    """Internal (topic ``keyed``): validated events moved to the partition of their trace_id."""

    schema_version: Literal[1] = 1
    feedback: tuple[FeedbackEvent, ...] = ()
    traces: tuple[TraceEvent, ...] = ()


class JoinStatus(StrEnum):
    JOINED = "joined"  # the trace was known when the feedback was emitted
    ORPHAN = "orphan"  # no trace within the grace period: feedback fields only
    CORRECTED = "corrected"  # an orphan whose trace turned up later
    #: still waiting for its trace: stored in the ``feedback`` table only (never on
    #: ``feedback.enriched``), replaced there by the joined or orphan row
    PENDING = "pending"


class EnrichedFeedback(Contract):
    """A feedback event with the attributes it inherits from its trace.

    Where feedback and trace both carry a field (user, session, capability...),
    the feedback's own value wins: it describes who reacted and to what.
    """

    schema_version: Literal[1] = 1
    event_id: Id
    client_event_id: str | None = None
    trace_id: str = Field("", description="Empty for feedback on a conversation or session.")
    target: Target = Target.TRACE
    span_id: Id | None = None
    name: Name
    kind: FeedbackKind
    value: bool | float | str | None = None
    score: float | None = None
    label: str
    comment: str | None = None
    correction: str | None = None
    category: str | None = None
    tags: tuple[str, ...] = ()
    source: Source
    annotator: Annotator = Annotator.END_USER
    user_id: str | None = None
    session_id: str | None = None
    conversation_id: str | None = None
    project: str = ""
    environment: str = ""
    model: str = ""
    capability: str | None = None
    step: str | None = None
    trace_name: str | None = None
    trace_status: TraceStatus | None = None
    latency_ms: float | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    ts: datetime
    received_at: datetime | None = None
    join_status: JoinStatus
    retracted: bool = False
    score_config_version: int = Field(
        0, ge=0, description="The score config version that decided label and score; 0: none."
    )
    version: int = Field(ge=0, description="Higher replaces lower for the same event_id.")

    @property
    def join_key(self) -> str:
        """The key the join held it by: its trace id, or its conversation's or session's."""
        return target_key(self.target, self.trace_id, self.conversation_id, self.session_id)


class _Window(Contract):
    """The dimensions and event-time window that rates and alerts are about."""

    schema_version: Literal[1] = 1
    project: str
    environment: str
    model: str
    capability: str = ""
    window_seconds: int = Field(gt=0)
    window_start: datetime
    window_end: datetime


class RateWindow(_Window):
    """Feedback counts of one event-time window for one set of dimensions."""

    good: int = Field(0, ge=0)
    bad: int = Field(0, ge=0)
    neutral: int = Field(0, ge=0)
    total: int = Field(0, ge=0)
    with_comment: int = Field(0, ge=0)
    implicit: int = Field(0, ge=0)
    score_sum: float = 0.0
    score_count: int = Field(0, ge=0)
    mean_score: float | None = None
    bad_rate: float = Field(0.0, ge=0.0, le=1.0)
    version: int = Field(ge=0)


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(_Window):
    """A spike of the bad-feedback rate, firing or resolved."""

    alert_id: Id
    rule: Name
    state: AlertState
    bad_rate: float = Field(ge=0.0, le=1.0)
    baseline_rate: float = Field(ge=0.0, le=1.0)
    bad: int = Field(ge=0)
    total: int = Field(ge=0)
    sample_trace_ids: tuple[str, ...] = ()
    sample_comments: tuple[str, ...] = ()
    inbox_command: str = ""
    at: datetime
    version: int = Field(ge=0)


class DeadLetter(Contract):
    """An input that could not be processed, with where it came from and why.

    ``raw`` holds the offending bytes decoded as UTF-8 with replacement, so a
    message that is not even text still lands somewhere a person can read.
    ``batch_index`` is the position inside a batch message, -1 for the whole message.
    """

    schema_version: Literal[1] = 1
    topic: str
    partition: int = Field(ge=-1)
    offset: int = Field(ge=-1)
    batch_index: int = Field(-1, ge=-1)
    reason: Name = Field(description="A short code: bad_json, invalid_event, oversize...")
    error: str
    raw: str
    key: str | None = None
    at: datetime
