"""The SQL behind ``thumbline inbox`` and ``thumbline trace`` (and, later, the read API).

Values are written into the SQL as escaped literals because the store's SQL
endpoint takes plain text; every value passes through :func:`literal`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from thumbline.schemas import Annotator

_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

INBOX_COLUMNS = (
    "ts", "trace_id", "label", "comment", "user_id", "session_id", "project", "model",
    "environment", "capability", "kind", "name", "score", "join_status", "event_id", "annotator",
    "target", "conversation_id",
)  # fmt: skip


#: What ``--status`` takes: the join's outcomes, and feedback still waiting for its trace.
JOIN_STATUSES = ("joined", "orphan", "corrected", "pending")

#: What ``--annotator`` takes: who gave the feedback.
ANNOTATORS = tuple(a.value for a in Annotator)

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


#: What ClickHouse's DateTime64 holds.
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def _as_utc(value: datetime) -> datetime:
    """A time without a zone is taken as UTC; one with a zone is converted."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _within_store(value: datetime) -> int:
    """-1 before the earliest time the store holds, 1 after its latest, else 0."""
    try:
        utc = _as_utc(value)
    except OverflowError:  # year 1 or 9999 with an offset
        return -1 if value.year < 1900 else 1
    return -1 if utc < _EARLIEST else 1 if utc > _LATEST else 0


def _time(value: datetime) -> str:
    """A DateTime64 literal; a time without a zone is taken as UTC."""
    stamp = _as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"toDateTime64({literal(stamp)}, 6, 'UTC')"


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """The filters of the feedback inbox; empty fields do not filter."""

    labels: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()  # of ANNOTATORS; empty: all
    project: str | None = None
    environment: str | None = None
    model: str | None = None
    capability: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    conversation_id: str | None = None
    trace_id: str | None = None
    status: str | None = None  # one of JOIN_STATUSES; None: all, pending ones included
    has_comment: bool = False
    since: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 50
    extra: tuple[str, ...] = field(default=())

    def where(self, now: datetime | None = None) -> str:
        clauses = ["retracted = 0"]
        for column in ("project", "environment", "model", "capability", "user_id", "session_id",
                       "conversation_id", "trace_id"):  # fmt: skip
            value = getattr(self, column)
            if value:
                clauses.append(f"{column} = {literal(value)}")
        if self.status:
            clauses.append(f"join_status = {literal(self.status)}")
        if self.labels:
            clauses.append(f"label IN ({', '.join(literal(v) for v in self.labels)})")
        if self.kinds:
            clauses.append(f"kind IN ({', '.join(literal(v) for v in self.kinds)})")
        if self.annotators:
            clauses.append(f"annotator IN ({', '.join(literal(v) for v in self.annotators)})")
        if self.has_comment:
            clauses.append("comment != ''")
        if self.since is not None:
            clauses.append(f"ts >= {_time((now or datetime.now(UTC)) - self.since)}")
        # Any time is accepted; beyond what the store holds (1900-2299) a bound is
        # either always true (dropped) or never (an empty answer).
        if self.start is not None and (side := _within_store(self.start)) >= 0:
            clauses.append("0" if side > 0 else f"ts >= {_time(self.start)}")
        if self.end is not None and (side := _within_store(self.end)) <= 0:
            clauses.append("0" if side < 0 else f"ts < {_time(self.end)}")
        return " AND ".join(clauses)


def inbox_sql(database: str, filters: InboxFilter, now: datetime | None = None) -> str:
    """Newest feedback first, with the inbox's columns and its trace's ``input`` and
    ``output``; feedback still waiting for its trace included (``join_status``
    pending) unless ``filters.status`` says otherwise.

    The question and the answer are the root span's (``parent_span_id`` empty)
    when it has them, else the earliest span's question and the latest span's
    answer; empty when the trace has none (or is not stored). They are looked
    up only for the traces of the page (on the ``traces`` sort key).
    """
    if not 1 <= filters.limit <= 10_000:
        raise ValueError("--limit must be between 1 and 10000")
    if filters.status is not None and filters.status not in JOIN_STATUSES:
        raise ValueError(
            f"--status takes joined, orphan, corrected or pending, not {filters.status!r}"
        )
    unknown = [a for a in filters.annotators if a not in ANNOTATORS]
    if unknown:
        raise ValueError(
            f"--annotator takes end_user, reviewer, evaluator or code, not {unknown[0]!r}"
        )
    columns, order = ", ".join(INBOX_COLUMNS), f"ORDER BY ts DESC, event_id LIMIT {filters.limit}"
    page = f"FROM {database}.feedback FINAL WHERE {filters.where(now)} {order}"
    return (
        f"SELECT {columns}, content.trace_input AS input, content.trace_output AS output "
        f"FROM (SELECT {columns} {page}) AS page LEFT JOIN ("
        f"SELECT project, trace_id, {_TRACE_CONTENT} FROM {database}.traces FINAL "
        # the page's traces only: its keys read again, two columns of the same rows
        f"WHERE (project, trace_id) IN (SELECT project, trace_id {page}) "
        f"GROUP BY project, trace_id) AS content USING (project, trace_id) {order}"
    )


#: A trace's question and answer from its spans (the root's, else the earliest question
#: and the latest answer), one row per (project, trace_id).
_TRACE_CONTENT = (
    "anyIf(input, parent_span_id = '' AND input != '') AS root_input, "
    "anyIf(output, parent_span_id = '' AND output != '') AS root_output, "
    "if(root_input != '', root_input, "
    "argMinIf(input, (ifNull(start_time, received_at), span_id), input != '')) AS trace_input, "
    "if(root_output != '', root_output, "
    "argMaxIf(output, (ifNull(start_time, received_at), span_id), output != '')) AS trace_output"
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
