"""The SQL behind ``thumbline trace``, ``rates`` and ``alerts``.

The inbox's SQL is in :mod:`thumbline.inbox` (its names are re-exported here).

Values are written into the SQL as escaped literals because the store's SQL
endpoint takes plain text; every value passes through :func:`literal`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from thumbline.inbox import (  # the inbox's SQL has a module of its own
    ANNOTATORS,
    INBOX_COLUMNS,
    JOIN_STATUSES,
    BoundQuery,
    InboxFilter,
    inbox_sql,
    store_time,
)

__all__ = [
    "ANNOTATORS", "INBOX_COLUMNS", "JOIN_STATUSES", "BoundQuery", "InboxFilter", "alerts_sql",
    "conversation_spans_sql", "inbox_sql", "literal", "parse_since", "rates_sql", "trace_spans_sql",
    "trace_stored_sql",
]  # fmt: skip

_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def literal(value: str) -> str:
    """A ClickHouse string literal for ``value``; control characters as ``\\xHH`` escapes
    (the SQL sandbox refuses raw ones in the text)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return "'" + _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", escaped) + "'"


def parse_since(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``2w`` as a duration.

    Raises:
        ValueError: with what is accepted.
    """
    match = _SINCE.match(text.strip())
    if not match:
        raise ValueError(
            f"--since takes a number and a unit (s, m, h, d, w), e.g. 7d; got {text!r}"
        )
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def _time(value: datetime) -> str:
    """A DateTime64 literal; a time without a zone is taken as UTC."""
    stamp = store_time(value)
    return f"toDateTime64({literal(stamp)}, 6, 'UTC')"


def conversation_spans_sql(database: str, conversation_id: str) -> str:
    """The spans of a conversation's traces by start time (so a trace first appears with
    its earliest span): the columns of :func:`trace_spans_sql`, then ``trace_id``."""
    return (
        "SELECT span_id, parent_span_id, name, project, environment, model, capability, step, "
        "user_id, session_id, start_time, latency_ms, total_tokens, cost_usd, status, error, "
        "input, output, trace_id "
        f"FROM {database}.traces FINAL WHERE conversation_id = {literal(conversation_id)} "
        "ORDER BY start_time, trace_id, span_id"
    )


def trace_stored_sql(database: str, project: str, trace_id: str) -> str:
    """How many spans of the trace are stored (read on the sort key's prefix)."""
    return (
        f"SELECT count() AS n FROM {database}.traces "
        f"WHERE project = {literal(project)} AND trace_id = {literal(trace_id)}"
    )


def trace_spans_sql(database: str, trace_id: str) -> str:
    return (
        "SELECT span_id, parent_span_id, name, project, environment, model, capability, step, "
        "user_id, session_id, start_time, latency_ms, total_tokens, cost_usd, status, error, "
        "input, output "
        f"FROM {database}.traces FINAL WHERE trace_id = {literal(trace_id)} "
        "ORDER BY start_time, span_id"
    )


def rates_sql(
    database: str,
    *,
    window_seconds: int,
    project: str | None = None,
    model: str | None = None,
    capability: str | None = None,
    since: timedelta = timedelta(hours=1),
    limit: int = 50,
    now: datetime | None = None,
) -> str:
    """Rate windows of one size, newest first; per model unless a capability is given."""
    clauses = [
        f"window_seconds = {int(window_seconds)}",
        f"window_start >= {_time((now or datetime.now(UTC)) - since)}",
        "total + implicit > 0",
        f"capability = {literal(capability)}" if capability else "capability = '*'",
    ]
    if project:
        clauses.append(f"project = {literal(project)}")
    if model:
        clauses.append(f"model = {literal(model)}")
    return (
        "SELECT window_start, project, environment, model, capability, total, good, bad, "
        "neutral, implicit, with_comment, round(bad_rate, 4) AS bad_rate, "
        f"round(mean_score, 3) AS mean_score FROM {database}.feedback_rates FINAL "
        f"WHERE {' AND '.join(clauses)} "
        f"ORDER BY window_start DESC, bad_rate DESC LIMIT {int(limit)}"
    )


def alerts_sql(
    database: str,
    *,
    state: str | None = None,
    since: timedelta = timedelta(days=7),
    limit: int = 50,
    now: datetime | None = None,
) -> str:
    """Alert episodes, newest first: the latest state of each alert_id."""
    having = f"HAVING latest_state = {literal(state)} " if state else ""
    return (
        "SELECT max(at) AS last_at, alert_id, any(rule) AS rule, "
        "argMax(state, at) AS latest_state, "
        "any(project) AS project, any(environment) AS environment, any(model) AS model, "
        "any(capability) AS capability, argMax(bad_rate, at) AS bad_rate, "
        "argMax(baseline_rate, at) AS baseline_rate, argMax(bad, at) AS bad, "
        "argMax(total, at) AS total, min(window_start) AS onset, "
        "argMax(inbox_command, at) AS inbox_command, "
        "argMax(sample_comments, at) AS sample_comments "
        f"FROM {database}.alerts FINAL "
        f"WHERE at >= {_time((now or datetime.now(UTC)) - since)} "
        f"GROUP BY alert_id {having}ORDER BY last_at DESC LIMIT {int(limit)}"
    )
