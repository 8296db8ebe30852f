"""The join's state machine: feedback meets its trace, with no broker and no database.

``JoinState`` holds, per ``trace_id``, the merged attributes of its trace and
the feedback still waiting for it. It is fed micro-batches and returns the
enriched rows to write; the Faust job (``join_traces``) wraps it with Kafka and
ClickHouse. Every output row carries a version that orders the states of one
``event_id``, so the store keeps the latest whatever order the rows land in:

    version = received_at in microseconds * 4 + rank
    rank: orphan 1 < joined 2 < corrected 3

A re-delivered event has the same ``received_at`` and so the same version (it
collapses into its row); a re-sent event (a user changing their mind) has a
later ``received_at`` and replaces it.

The grace period for a trace to arrive is measured in wall time from when the
feedback reached the join, not in event time: trace exporters lag in wall time,
and a replay of old events after an outage would otherwise orphan them all
before their traces, read a moment later, could match.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from schemas import (
    EnrichedFeedback,
    FeedbackEvent,
    FeedbackKind,
    JoinStatus,
    Source,
    TraceEvent,
    TraceStatus,
)


def _nones() -> Iterator[None]:
    while True:
        yield None


_STATUS = {s.value: s for s in TraceStatus}  # Enum(value) is slow on the hot path
RANK = {JoinStatus.ORPHAN: 1, JoinStatus.JOINED: 2, JoinStatus.CORRECTED: 3}


@dataclass(slots=True)
class TraceAttributes:
    """What feedback inherits from its trace, merged from one or many span events.

    The whole-trace event or root span (no parent) wins for the trace's own
    values; other spans fill what is still missing. Costs and tokens are the
    root's when it reports them, else the sum over spans. An error in any span
    makes the trace an error.
    """

    trace_id: str
    project: str = ""
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
    span_ids: set[str] = field(default_factory=set)
    seen_at: float = 0.0  # wall time of the last update, for retention

    _TEXT = (
        "project", "environment", "model", "capability", "step",
        "user_id", "session_id", "conversation_id", "name",
    )  # fmt: skip

    def merge(self, event: TraceEvent, now: float) -> None:
        root = event.span_id is None or event.parent_span_id is None
        span_key = event.span_id or ""
        first_time = span_key not in self.span_ids
        self.span_ids.add(span_key)
        for name in self._TEXT:
            value = getattr(event, name) or ""
            if not value:
                continue
            current = getattr(self, name)
            # TraceEvent defaults project and environment to "default": a span that
            # did not say must not overwrite a value another span did say.
            weak = name in ("project", "environment") and value == "default"
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
            self.status = status
        self.seen_at = now

    @property
    def cost(self) -> float | None:
        return self.cost_usd if self.cost_usd is not None else (self.span_cost or None)

    @property
    def tokens(self) -> int | None:
        return self.total_tokens if self.total_tokens is not None else (self.span_tokens or None)


@dataclass(slots=True)
class Pending:
    event: FeedbackEvent
    deadline: float
    ref: Any = None  # the caller's handle on the input it came from (released when emitted)


def version_of(event: FeedbackEvent, status: JoinStatus) -> int:
    received = event.received_at or event.ts
    return int(received.timestamp() * 1_000_000) * 4 + RANK[status]


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
            trace_id=event.trace_id,
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
            user_id=pick(event.user_id, t.user_id if t else "") or None,
            session_id=pick(event.session_id, t.session_id if t else "") or None,
            conversation_id=pick(event.conversation_id, t.conversation_id if t else "") or None,
            project=pick(event.project, t.project if t else ""),
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
            version=version_of(event, status),
        )
    )


class JoinState:
    """Traces and waiting feedback of the partitions one worker owns.

    Args:
        grace_seconds: how long feedback waits for its trace before it is
            emitted as an orphan (wall time; default 10 minutes).
        retention_seconds: how long a trace's attributes, and orphans that
            may still be corrected, are kept after their last update (7 days).
        clock: wall time in seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        grace_seconds: float = 600.0,
        retention_seconds: float = 7 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.grace = grace_seconds
        self.retention = retention_seconds
        self.clock = clock
        self.traces: dict[str, TraceAttributes] = {}
        self.pending: dict[str, dict[str, Pending]] = {}  # trace_id -> event_id -> entry
        self.orphans: dict[str, dict[str, FeedbackEvent]] = {}  # may still be corrected
        self._released: list[Any] = []
        # (deadline, trace_id) in the order feedback was held: deadlines only grow,
        # so expiry looks at the front instead of every held trace on each tick.
        self._deadlines: deque[tuple[float, str]] = deque()
        self._next_sweep = 0.0  # retention sweeps (a scan of the state) at most every minute

    def add_traces(self, events: Iterable[TraceEvent]) -> list[EnrichedFeedback]:
        """Merge trace events; emit waiting feedback (joined) and orphans (corrected)."""
        now = self.clock()
        touched: set[str] = set()
        for event in events:
            attrs = self.traces.get(event.trace_id)
            if attrs is None:
                attrs = self.traces[event.trace_id] = TraceAttributes(event.trace_id)
            attrs.merge(event, now)
            touched.add(event.trace_id)
        out: list[EnrichedFeedback] = []
        for trace_id in touched:
            attrs = self.traces[trace_id]
            for entry in self.pending.pop(trace_id, {}).values():
                out.append(enrich(entry.event, attrs, JoinStatus.JOINED))
                self._released.append(entry.ref)
            for orphan in self.orphans.pop(trace_id, {}).values():
                out.append(enrich(orphan, attrs, JoinStatus.CORRECTED))
        return out

    def add_feedback(
        self, events: Iterable[FeedbackEvent], refs: Iterable[Any] | None = None
    ) -> list[EnrichedFeedback]:
        """Emit feedback whose trace is known; hold the rest until its trace or the grace ends.

        ``refs`` (one per event, optional) are handed back by :meth:`take_released`
        once the held event has been emitted or superseded, so the caller knows
        when the input that carried it may be acknowledged.
        """
        now = self.clock()
        out: list[EnrichedFeedback] = []
        for event, ref in zip(events, refs if refs is not None else _nones(), strict=False):
            attrs = self.traces.get(event.trace_id)
            if attrs is not None:
                out.append(enrich(event, attrs, JoinStatus.JOINED))
                continue
            waiting = self.pending.setdefault(event.trace_id, {})
            previous = waiting.get(event.event_id)
            if previous is None or version_of(event, JoinStatus.JOINED) >= version_of(
                previous.event, JoinStatus.JOINED
            ):
                if previous is not None:
                    self._released.append(previous.ref)
                waiting[event.event_id] = Pending(event, now + self.grace, ref)
                self._deadlines.append((now + self.grace, event.trace_id))
            else:
                self._released.append(ref)  # an older copy of what is already held
        return out

    def add_orphans(self, events: Iterable[FeedbackEvent]) -> None:
        """Remember orphans emitted before a restart, so a late trace still corrects them."""
        for event in events:
            self.orphans.setdefault(event.trace_id, {})[event.event_id] = event

    def add_known_traces(self, found: dict[str, TraceAttributes]) -> None:
        """Traces looked up in the store (the state did not hold them)."""
        now = self.clock()
        for trace_id, attrs in found.items():
            if trace_id not in self.traces:
                attrs.seen_at = now
                self.traces[trace_id] = attrs

    def forget(self, moved: Callable[[str], bool]) -> None:
        """Drop the traces, waiting feedback and orphans of trace ids for which ``moved`` is true.

        For partitions another worker now holds: their waiting feedback is not
        released (its input stays unacknowledged, and the new holder replays it).
        """
        for table in (self.traces, self.pending, self.orphans):
            for trace_id in [t for t in table if moved(t)]:
                del table[trace_id]

    def take_released(self) -> list[Any]:
        """The refs of held events emitted or superseded since the last call."""
        released, self._released = self._released, []
        return [r for r in released if r is not None]

    def known(self, trace_ids: Iterable[str]) -> set[str]:
        return {t for t in trace_ids if t in self.traces}

    def waiting_trace_ids(self) -> list[str]:
        return list(self.pending)

    def expire(
        self, found: Callable[[list[str]], dict[str, TraceAttributes]] | None = None
    ) -> list[EnrichedFeedback]:
        """Emit as orphans the feedback whose grace ended, and forget stale traces.

        ``found`` looks up traces the state no longer holds (older than the
        retention, or from before a restart) in the store, for a batch of ids,
        before any feedback is called an orphan.
        """
        now = self.clock()
        due: dict[str, None] = {}  # ordered, unique
        while self._deadlines and self._deadlines[0][0] <= now:
            trace_id = self._deadlines.popleft()[1]
            waiting = self.pending.get(trace_id)
            if waiting and min(p.deadline for p in waiting.values()) <= now:
                due[trace_id] = None
        out: list[EnrichedFeedback] = []
        if due and found is not None:
            for trace_id, attrs in found(list(due)).items():
                attrs.seen_at = now
                self.traces[trace_id] = attrs
                for entry in self.pending.pop(trace_id, {}).values():
                    out.append(enrich(entry.event, attrs, JoinStatus.JOINED))
                    self._released.append(entry.ref)
        for trace_id in due:
            waiting = self.pending.get(trace_id)
            if not waiting:
                continue
            for event_id, entry in list(waiting.items()):
                if entry.deadline <= now:
                    del waiting[event_id]
                    out.append(enrich(entry.event, None, JoinStatus.ORPHAN))
                    self._released.append(entry.ref)
                    self.orphans.setdefault(trace_id, {})[event_id] = entry.event
            if not waiting:
                del self.pending[trace_id]
        if now >= self._next_sweep:
            self._sweep(now)
        return out

    def _sweep(self, now: float) -> None:
        """Forget traces and correctable orphans older than the retention."""
        self._next_sweep = now + min(60.0, self.retention / 10)
        horizon = now - self.retention
        for trace_id in [t for t, a in self.traces.items() if a.seen_at < horizon]:
            del self.traces[trace_id]
        for trace_id in [
            t for t, o in self.orphans.items()
            if all(self._received(e) < horizon for e in o.values())
        ]:  # fmt: skip
            del self.orphans[trace_id]

    @staticmethod
    def _received(event: FeedbackEvent) -> float:
        return (event.received_at or event.ts).timestamp()

    def next_deadline(self) -> float | None:
        """When the next held feedback becomes an orphan, if any is held."""
        deadlines = [p.deadline for w in self.pending.values() for p in w.values()]
        return min(deadlines) if deadlines else None

    def stats(self) -> dict[str, Any]:
        return {
            "traces": len(self.traces),
            "pending": sum(len(w) for w in self.pending.values()),
            "orphans": sum(len(o) for o in self.orphans.values()),
        }
