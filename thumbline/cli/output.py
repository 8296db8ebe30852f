"""What the read commands share: rows from the store, JSON lines, times with their zone."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from typing import Any

import orjson

from thumbline.cli.common import fail
from thumbline.inbox import BoundQuery, iso_time
from thumbline.settings import Settings

#: A feedback row's label in colour.
LABEL_STYLE = {"good": "green", "bad": "red"}
LABEL = {"label": lambda text: LABEL_STYLE.get(text, "")}


def rows(settings: Settings, query: str | BoundQuery) -> tuple[list[str], list[list[Any]]]:
    """The column names and the rows of ``query`` (SQL text, or SQL with bound parameters)."""
    from thumbline.sqlclient import run_sql

    if isinstance(query, BoundQuery):
        body = run_sql(settings, query.text, fmt="JSONCompact", parameters=query.parameters)
    else:
        body = run_sql(settings, query, fmt="JSONCompact")
    result = orjson.loads(body)
    return [c["name"] for c in result["meta"]], result["data"]


def listing(
    settings: Settings, build: Callable[[], str | BoundQuery], as_json: bool
) -> list[list[Any]] | None:
    """The rows of the query ``build`` makes from a command's filters (a filter it
    refuses ends the command, exit 2); with ``as_json`` they are printed as JSON lines
    here and None is returned."""
    try:
        query = build()
    except ValueError as exc:
        fail(str(exc), 2)
    if as_json:
        json_lines(settings, query)
        return None
    return rows(settings, query)[1]


def json_lines(settings: Settings, query: str | BoundQuery) -> None:
    """The rows as one JSON object a line, times in ISO 8601 with Z (to the millisecond)."""
    for row in json_rows(settings, query):
        sys.stdout.write(orjson.dumps(row).decode() + "\n")
    sys.stdout.flush()


def json_rows(settings: Settings, query: str | BoundQuery) -> list[dict[str, Any]]:
    """The rows as objects, times in ISO 8601 with Z (to the millisecond)."""
    from thumbline.sqlclient import run_sql

    if isinstance(query, BoundQuery):
        body = run_sql(settings, query.text, fmt="JSON", parameters=query.parameters)
    else:
        body = run_sql(settings, query, fmt="JSON")
    result = orjson.loads(body)
    times = [c["name"] for c in result["meta"] if "DateTime" in c["type"]]
    for row in result["data"]:
        for name in times:
            row[name] = iso_time(row[name])
    return list(result["data"])


def short(text: Any, width: int) -> str:
    text = "" if text is None else str(text).replace("\n", " ")
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def when(value: Any, zone: tzinfo | None = None) -> str:
    """A time from the store (UTC, ClickHouse's text) as ISO 8601 with its zone, to the
    second: ``Z`` in UTC (the default), else the offset of ``zone``."""
    if value is None or value == "":
        return "-"
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:  # thumbline's columns are DateTime64(3, 'UTC')
        moment = moment.replace(tzinfo=UTC)
    if zone is None:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.astimezone(zone).isoformat(timespec="seconds").replace("+00:00", "Z")
