"""The ClickHouse sink: batched, columnar, idempotent inserts of the stream's output.

Guarantee: ``flush()`` returns only after every row added before it is
acknowledged by ClickHouse. The stream acknowledges its Kafka offsets only
after that (at-least-once delivery), and the tables are ReplacingMergeTrees
keyed on each row's identity, so a batch sent again after a crash or a failed
flush collapses into the rows already there: exactly once in the final query.

When ClickHouse is unavailable ``flush()`` raises :class:`SinkUnavailable`
(retriable, with ``retry_after``) and keeps every row; the caller stops pulling
input and retries, it never drops. One code path serves ``chdb://`` and
``http://`` stores; calls block, so run them off the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas import DeadLetter, EnrichedFeedback, ThumblineError, TraceEvent

logger = logging.getLogger(__name__)


class SinkUnavailable(ThumblineError):
    """ClickHouse did not take a batch; the rows are kept. Retry after ``retry_after`` s."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _json_or_empty(value: Any) -> str:
    return "" if value is None else orjson.dumps(value).decode()


def _micros(event: Any) -> int:
    received = event.received_at or event.ts
    return int(received.timestamp() * 1_000_000)


FEEDBACK_COLUMNS = (
    "event_id", "trace_id", "span_id", "name", "kind", "value", "score", "label", "comment",
    "correction", "category", "tags", "source", "user_id", "session_id", "conversation_id",
    "project", "environment", "model", "capability", "step", "trace_name", "trace_status",
    "latency_ms", "total_tokens", "cost_usd", "metadata", "ts", "received_at", "join_status",
    "retracted", "version",
)  # fmt: skip


def feedback_row(r: EnrichedFeedback) -> tuple[Any, ...]:
    return (
        r.event_id, r.trace_id, r.span_id or "", r.name, str(r.kind), _json_or_empty(r.value),
        r.score, r.label, r.comment or "", r.correction or "", r.category or "", list(r.tags),
        str(r.source), r.user_id or "", r.session_id or "", r.conversation_id or "", r.project,
        r.environment, r.model, r.capability or "", r.step or "", r.trace_name or "",
        str(r.trace_status or ""), r.latency_ms, r.total_tokens, r.cost_usd,
        orjson.dumps(r.metadata).decode() if r.metadata else "", r.ts, r.received_at or r.ts,
        str(r.join_status), int(r.retracted), r.version,
    )  # fmt: skip


TRACE_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "name", "project", "environment", "model",
    "capability", "step", "user_id", "session_id", "conversation_id", "start_time", "end_time",
    "latency_ms", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "status", "error",
    "attributes", "received_at", "version",
)  # fmt: skip


def trace_row(t: TraceEvent) -> tuple[Any, ...]:
    # The stream stamps received_at on every event; a trace without any time
    # gets version 0, so any stamped copy of it replaces this one.
    received = t.received_at or t.end_time or t.start_time or _EPOCH
    return (
        t.trace_id, t.span_id or "", t.parent_span_id or "", t.name or "", t.project,
        t.environment, t.model or "", t.capability or "", t.step or "", t.user_id or "",
        t.session_id or "", t.conversation_id or "", t.start_time, t.end_time, t.latency_ms,
        t.input_tokens, t.output_tokens, t.total_tokens, t.cost_usd, str(t.status),
        t.error or "", orjson.dumps(t.attributes).decode() if t.attributes else "",
        received, int(received.timestamp() * 1_000_000),
    )  # fmt: skip


DEAD_LETTER_COLUMNS = (
    "topic", "partition", "offset", "batch_index", "reason", "error", "raw", "key", "at",
)  # fmt: skip


def dead_letter_row(d: DeadLetter) -> tuple[Any, ...]:
    return (
        d.topic, d.partition, d.offset, d.batch_index, d.reason, d.error, d.raw, d.key or "", d.at,
    )  # fmt: skip


@dataclass(slots=True)
class _Buffer:
    columns: Sequence[str]
    rows: list[tuple[Any, ...]] = field(default_factory=list)


class ClickHouseSink:
    """Buffers rows per table; ``flush()`` writes each table in one columnar insert.

    Args:
        client: a clickhouse-connect client used only by this sink (one per thread).
        database: where the tables live.
        max_rows: rows buffered before :meth:`due` says flush.
        max_age: seconds the oldest buffered row may wait before :meth:`due` says flush.
    """

    def __init__(
        self,
        client: Client,
        database: str,
        *,
        max_rows: int = 50_000,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._database = database
        self.max_rows = max_rows
        self.max_age = max_age
        self._clock = clock
        self._oldest: float | None = None
        self._failures = 0
        self._buffers = {
            "feedback": _Buffer(FEEDBACK_COLUMNS),
            "traces": _Buffer(TRACE_COLUMNS),
            "dead_letters": _Buffer(DEAD_LETTER_COLUMNS),
        }

    def add_feedback(self, rows: Iterable[EnrichedFeedback]) -> None:
        self._add("feedback", (feedback_row(r) for r in rows))

    def add_traces(self, rows: Iterable[TraceEvent]) -> None:
        self._add("traces", (trace_row(t) for t in rows))

    def add_dead_letters(self, rows: Iterable[DeadLetter]) -> None:
        self._add("dead_letters", (dead_letter_row(d) for d in rows))

    def _add(self, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
        buffer = self._buffers[table].rows
        before = len(buffer)
        buffer.extend(rows)
        if len(buffer) > before and self._oldest is None:
            self._oldest = self._clock()

    @property
    def pending(self) -> int:
        return sum(len(b.rows) for b in self._buffers.values())

    def due(self) -> bool:
        """True when the buffered rows should be flushed (by size or by age)."""
        if self._oldest is None:
            return False
        return self.pending >= self.max_rows or self._clock() - self._oldest >= self.max_age

    def flush(self) -> int:
        """Write every buffered row; return how many.

        Raises:
            SinkUnavailable: ClickHouse refused or could not be reached; the rows
                not yet written stay buffered for the next call.
        """
        written = 0
        for table, buffer in self._buffers.items():
            if not buffer.rows:
                continue
            columns = [list(c) for c in zip(*buffer.rows, strict=True)]
            try:
                self._client.insert(
                    f"{self._database}.{table}",
                    columns,
                    column_names=list(buffer.columns),
                    column_oriented=True,
                )
            except (ClickHouseError, OSError) as exc:
                self._failures += 1
                retry_after = min(30.0, 0.25 * 2 ** min(self._failures, 7))
                logger.warning(
                    "ClickHouse refused %d rows for %s (attempt %d, retry in %.1fs): %s",
                    len(buffer.rows), table, self._failures, retry_after, exc,
                )  # fmt: skip
                raise SinkUnavailable(
                    f"could not write {len(buffer.rows)} rows to {table}: {exc}",
                    retry_after=retry_after,
                ) from exc
            written += len(buffer.rows)
            buffer.rows = []
        self._failures = 0
        self._oldest = None
        return written

    def close(self) -> None:
        """Flush what is left (raises if that fails) and close the client."""
        try:
            self.flush()
        finally:
            self._client.close()
