"""What the join asks ClickHouse: traces it no longer holds, and orphans it may still correct.

Both are batched: one query per micro-batch of trace ids, one query at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from schemas import FeedbackEvent, TraceEvent
from stream_jobs.join_state import TraceAttributes
from stream_jobs.sink import StoreClient

_TRACE_FIELDS = (
    "trace_id", "span_id", "parent_span_id", "name", "project", "environment", "model",
    "capability", "step", "user_id", "session_id", "conversation_id", "latency_ms",
    "total_tokens", "cost_usd", "status",
)  # fmt: skip

_FEEDBACK_FIELDS = (
    "event_id", "trace_id", "span_id", "name", "kind", "value", "score", "label", "comment",
    "correction", "category", "tags", "source", "user_id", "session_id", "conversation_id",
    "project", "environment", "capability", "step", "metadata", "ts", "received_at", "retracted",
)  # fmt: skip


def lookup_traces(
    client: StoreClient, database: str, trace_ids: Sequence[str], now: float = 0.0
) -> dict[str, TraceAttributes]:
    """The merged attributes of those of ``trace_ids`` that the ``traces`` table holds."""
    if not trace_ids:
        return {}
    # One string parameter, split by ClickHouse: an Array(String) parameter of
    # tens of thousands of ids is parsed as a literal, several times slower.
    # Trace ids hold no whitespace (the contract's pattern), so newlines separate.
    rows = client.query(
        f"SELECT {', '.join(_TRACE_FIELDS)} FROM {database}.traces FINAL "  # noqa: S608
        "WHERE trace_id IN (SELECT arrayJoin(splitByChar('\\n', {ids:String})))",
        parameters={"ids": "\n".join(dict.fromkeys(trace_ids))},
    ).result_rows
    found: dict[str, TraceAttributes] = {}
    for row in rows:
        data = dict(zip(_TRACE_FIELDS, row, strict=True))
        for key in ("span_id", "parent_span_id"):
            data[key] = data[key] or None
        event = TraceEvent.model_construct(**{k: v for k, v in data.items() if v not in ("",)})
        attrs = found.setdefault(event.trace_id, TraceAttributes(event.trace_id))
        attrs.merge(event, now)
    return found


def _value(text: str) -> Any:
    """The ``value`` column: numbers, bools and objects as JSON text, strings bare."""
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def load_orphans(client: StoreClient, database: str, since: datetime) -> list[FeedbackEvent]:
    """Orphan feedback received since ``since``: a late trace should still correct it."""
    rows = client.query(
        f"SELECT {', '.join(_FEEDBACK_FIELDS)} FROM {database}.feedback FINAL "  # noqa: S608
        "WHERE join_status = 'orphan' AND received_at >= {since:DateTime64(3, 'UTC')}",
        parameters={"since": since},
    ).result_rows
    orphans = []
    for row in rows:
        data = dict(zip(_FEEDBACK_FIELDS, row, strict=True))
        data["value"] = _value(data["value"])
        data["metadata"] = orjson.loads(data["metadata"]) if data["metadata"] else {}
        data["tags"] = tuple(data["tags"])
        data["retracted"] = bool(data["retracted"])
        for key in ("span_id", "comment", "correction", "category", "user_id", "session_id",
                    "conversation_id", "project", "environment", "capability", "step"):  # fmt: skip
            data[key] = data[key] or None
        orphans.append(FeedbackEvent.model_construct(**data))
    return orphans
