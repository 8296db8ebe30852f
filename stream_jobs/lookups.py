"""What the join asks ClickHouse: traces it no longer holds, orphans it may still correct,
and the score configs in force.

Both are batched: one query per micro-batch of trace ids (in chunks of at most
:data:`LOOKUP_CHUNK_KEYS` ids and :data:`LOOKUP_CHUNK_BYTES` of them, so that no
micro-batch meets a limit on the way: a ClickHouse server's URL size, the
store owner's request size, the SQL sandbox's result limits), one query at
start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from thumbline.schemas import FeedbackEvent, TraceEvent
from thumbline.schemas.score_configs import ScoreConfig
from thumbline.score_configs import latest_sql, stored
from thumbline.stream_jobs.enriched_rows import TraceAttributes
from thumbline.stream_jobs.join_state import Key
from thumbline.stream_jobs.sink import StoreClient

_TRACE_FIELDS = (
    "trace_id", "span_id", "parent_span_id", "name", "project", "environment", "model",
    "capability", "step", "user_id", "session_id", "conversation_id", "latency_ms",
    "total_tokens", "cost_usd", "status",
)  # fmt: skip

_FEEDBACK_FIELDS = (
    "event_id", "client_event_id", "trace_id", "target", "span_id", "name", "kind", "value",
    "score", "label", "comment", "correction", "category", "tags", "source", "annotator",
    "user_id", "session_id", "conversation_id", "project", "environment", "capability", "step",
    "metadata", "ts", "received_at", "retracted", "score_config_version",
)  # fmt: skip


#: Most trace ids in one lookup query, and most bytes of them (a trace id is up
#: to 256 characters; ClickHouse servers take URLs of up to 1 MiB by default).
LOOKUP_CHUNK_KEYS = 5_000
LOOKUP_CHUNK_BYTES = 256 * 1024


def chunks(keys: Sequence[Key]) -> list[list[Key]]:
    """``keys`` in order, cut where a chunk would pass either bound."""
    out: list[list[Key]] = []
    chunk: list[Key] = []
    size = 0
    for key in keys:
        length = len(key[1].encode()) + 1
        if chunk and (len(chunk) >= LOOKUP_CHUNK_KEYS or size + length > LOOKUP_CHUNK_BYTES):
            out.append(chunk)
            chunk, size = [], 0
        chunk.append(key)
        size += length
    if chunk:
        out.append(chunk)
    return out


def lookup_traces(
    client: StoreClient, database: str, keys: Sequence[Key], now: float = 0.0
) -> dict[Key, TraceAttributes]:
    """The merged attributes of those of ``keys`` (project, trace_id) that ``traces`` holds.

    One query per chunk of keys (see :func:`chunks`), however many keys come.
    """
    found: dict[Key, TraceAttributes] = {}
    traces = [key for key in keys if " " not in key[1]]
    for chunk in chunks(traces):
        _lookup_chunk(client, database, chunk, now, found)
    for column in _TARGETS:
        targets = [key for key in keys if key[1].startswith(f"{column} ")]
        for chunk in chunks(targets):
            _lookup_targets(client, database, column, chunk, now, found)
    return found


#: Feedback on a whole conversation or session is keyed ``"<target> <id>"``
#: (:func:`thumbline.schemas.target_key`), and found by the traces' column of that name.
_TARGETS = {"conversation": "conversation_id", "session": "session_id"}


def _lookup_targets(
    client: StoreClient, database: str, target: str, keys: Sequence[Key], now: float,
    found: dict[Key, TraceAttributes],
) -> None:  # fmt: skip
    """The attributes of the latest trace of each conversation (or session) of ``keys``:
    the one that started last (else was received last). Its feedback inherits them."""
    column, prefix = _TARGETS[target], f"{target} "
    wanted = {(project, key.removeprefix(prefix)) for project, key in keys}
    rows = client.query(
        f"SELECT {', '.join(_TRACE_FIELDS)}, ifNull(start_time, received_at) AS at "  # noqa: S608
        f"FROM {database}.traces FINAL WHERE project IN {{projects:Array(String)}} "
        f"AND {column} IN (SELECT arrayJoin(splitByChar('\\n', {{ids:String}})))",
        parameters={
            "projects": sorted({project for project, _ in wanted}),
            "ids": "\n".join(dict.fromkeys(target_id for _, target_id in wanted)),
        },
    ).result_rows
    by_trace: dict[tuple[Key, str], tuple[Any, TraceAttributes]] = {}
    for row in rows:
        data = dict(zip(_TRACE_FIELDS, row[:-1], strict=True))
        owner = (data["project"], data[column])
        if owner not in wanted:
            continue
        for name in ("span_id", "parent_span_id"):
            data[name] = data[name] or None
        event = TraceEvent.model_construct(**{k: v for k, v in data.items() if v not in ("",)})
        at, attrs = by_trace.get((owner, event.trace_id), (row[-1], None))
        if attrs is None:
            attrs = TraceAttributes(event.trace_id, project=owner[0])
        attrs.merge(event, now)
        by_trace[(owner, event.trace_id)] = (max(at, row[-1]), attrs)
    latest: dict[Key, tuple[Any, TraceAttributes]] = {}
    for (owner, _), (at, attrs) in by_trace.items():
        if owner not in latest or at > latest[owner][0]:
            latest[owner] = (at, attrs)
    for (project, target_id), (_, attrs) in latest.items():
        found[(project, prefix + target_id)] = attrs


def _lookup_chunk(
    client: StoreClient, database: str, keys: Sequence[Key], now: float,
    found: dict[Key, TraceAttributes],
) -> None:  # fmt: skip
    wanted = set(keys)
    # The projects as an array (few per batch), the ids as one string split by
    # ClickHouse: an Array(String) parameter of tens of thousands of ids is
    # parsed as a literal, several times slower. Trace ids hold no whitespace
    # (the contract's pattern), so newlines separate. Both filters are on the
    # table's sort key (project, trace_id, span_id); pairs are matched here.
    rows = client.query(
        f"SELECT {', '.join(_TRACE_FIELDS)} FROM {database}.traces FINAL "  # noqa: S608
        "WHERE project IN {projects:Array(String)} "
        "AND trace_id IN (SELECT arrayJoin(splitByChar('\\n', {ids:String})))",
        parameters={
            "projects": sorted({project for project, _ in wanted}),
            "ids": "\n".join(dict.fromkeys(trace_id for _, trace_id in keys)),
        },
    ).result_rows
    for row in rows:
        data = dict(zip(_TRACE_FIELDS, row, strict=True))
        key = (data["project"], data["trace_id"])
        if key not in wanted:
            continue
        for name in ("span_id", "parent_span_id"):
            data[name] = data[name] or None
        event = TraceEvent.model_construct(**{k: v for k, v in data.items() if v not in ("",)})
        attrs = found.get(key)
        if attrs is None:
            attrs = found[key] = TraceAttributes(event.trace_id, project=key[0])
        attrs.merge(event, now)


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
        data["project"] = data["project"] or "default"
        for key in ("client_event_id", "trace_id", "target", "span_id", "comment", "correction",
                    "category", "user_id", "session_id", "conversation_id", "environment",
                    "capability", "step"):  # fmt: skip
            data[key] = data[key] or None
        orphans.append(FeedbackEvent.model_construct(**data))
    return orphans


def load_score_configs(client: StoreClient, database: str) -> list[ScoreConfig]:
    """The newest version of every score config that is not deleted (one small query)."""
    result = client.query(latest_sql(database))
    rows = (dict(zip(result.column_names, row, strict=True)) for row in result.result_rows)
    return [c.config for c in map(stored, rows) if c.config is not None]
