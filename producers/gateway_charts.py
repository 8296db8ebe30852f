"""The gateway's reads for the web pages: who am I, bad rate over time, alert episodes.

- ``GET /v1/whoami``: whether the gateway is open (loopback, no key yet), and the
  key's project, scope and name; never the key.
- ``GET /v1/rates``: per series (project, environment, model or capability) the
  windows of one size as parallel arrays (``t``, ``total``, ``bad``, ``bad_rate``),
  at most 50 series and 20,160 points each, with the alert episodes over the range.
- ``GET /v1/alerts``: alert episodes, newest first, with their samples.

Like the other reads (:mod:`thumbline.producers.gateway_reads`), they run in the
``reads`` pool with bound parameters (:mod:`thumbline.charts`), and a key bound to a
project reads only it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Query, Request, Response

from thumbline.charts import (
    ALERT_TIMES,
    MAX_ALERTS,
    MAX_POINTS,
    MAX_SERIES,
    AlertsFilter,
    RatesFilter,
    alert_episodes_sql,
    open_windows_sql,
    rate_alerts_sql,
    rates_series_sql,
    time_range,
)
from thumbline.inbox import BoundQuery
from thumbline.producers.gateway_core import GatewayCore
from thumbline.producers.gateway_errors import responses
from thumbline.producers.gateway_reads import (
    READ_ERRORS,
    Bounded,
    json_body,
    own_project,
    with_zones,
)
from thumbline.queries import parse_since
from thumbline.sqlpool import SqlPool

#: How far back a chart counts the windows the stream has not completed (a stream further
#: behind shows a gap: its lag).
OPEN_REACH = timedelta(hours=1)
_DAY, _WEEK = timedelta(days=1), timedelta(days=7)

Since = Annotated[str | None, Query(description="e.g. 30m, 24h, 7d; or from and to")]
From = Annotated[datetime | None, Query(alias="from", description="ISO 8601; no zone: UTC")]
To = Annotated[datetime | None, Query(alias="to", description="ISO 8601; absent: now")]
Window = Annotated[
    int | None,
    Query(
        description="Window seconds: the base window (default) or "
        "a sliding one (THUMBLINE_RATE_WINDOW_SECONDS, THUMBLINE_RATE_SLIDING_SECONDS)"
    ),
]


def with_open_windows(series: list[dict[str, Any]], open_rows: list[dict[str, Any]]) -> int | None:
    """Append the open windows (``open_rows``) to their series in ``series`` (a new series
    for dimensions without complete windows), in place; the first open window's start
    (unix seconds): where the chart's points are counts so far. None: no open window."""
    dims = ("project", "environment", "model", "capability")
    by_dims = {tuple(one[d] for d in dims): one for one in series}
    first = None
    for row in open_rows:
        after = int(row["complete"] or 0)
        if row["t"] < after:  # completed meanwhile
            continue
        first = row["t"] if first is None else min(first, row["t"])
        one = by_dims.get(tuple(row[d] for d in dims))
        if one is None:
            if len(series) >= MAX_SERIES:
                continue
            one = {**{d: row[d] for d in dims}, "t": [], "total": [], "bad": [], "bad_rate": []}
            by_dims[tuple(row[d] for d in dims)] = one
            series.append(one)
        if one["t"] and one["t"][-1] >= row["t"]:
            continue  # the stream wrote it: its count is the complete one
        one["t"].append(row["t"])
        one["total"].append(row["total"])
        one["bad"].append(row["bad"])
        one["bad_rate"].append(round(row["bad"] / row["total"], 4))
    return first


def add_chart_routes(
    app: FastAPI, core: GatewayCore, *, reads: SqlPool, database: str,
    windows: tuple[int, ...] = (60, 300, 3600), annotators: tuple[str, ...] = ("end_user",),
) -> None:  # fmt: skip
    """Add ``/v1/whoami``, ``/v1/rates`` and ``/v1/alerts``; ``windows``: the rate window
    sizes the stream keeps (the base window first, then the sliding ones); ``annotators``:
    whose feedback they count (the open windows are counted the same way)."""

    async def rows_of(query: BoundQuery) -> list[dict[str, Any]]:
        """The rows of a query with bound parameters (raises StoreError: a 400 above)."""
        lines = await reads.run(query.text, fmt="JSONEachRow", parameters=query.parameters)
        return [orjson.loads(line) for line in lines.splitlines() if line.strip()]

    @app.get("/v1/whoami", responses=responses(READ_ERRORS))
    async def get_whoami(request: Request) -> Response:
        """Who the request's key is: ``open`` (no key needed: a loopback gateway before any
        key exists), the key's ``project`` (null: every project), ``scope`` and ``name``.
        Never the key or its hash."""
        key = await core.authenticate(request, "read")
        if key is None:
            me: dict[str, Any] = {"open": True, "project": None, "scope": None, "name": None}
        else:
            me = {"open": False, "project": key.project or None, "scope": key.scope,
                  "name": key.name or None}  # fmt: skip
        return Response(orjson.dumps(me), media_type="application/json")

    @app.get("/v1/rates", responses=responses({**READ_ERRORS, 422: "A filter is invalid (e.g. "
             f"window=61, since=7 parsecs) or the range holds more than {MAX_POINTS:,} windows "
             "of the size asked: the error names the fix."}))  # fmt: skip
    async def get_rates(
        request: Request,
        window: Window = None,
        by: Annotated[
            Literal["model", "capability"],
            Query(description="Series per model (all capabilities) or per capability (all models)"),
        ] = "model",  # fmt: skip
        since: Since = None,
        start: From = None,
        end: To = None,
        project: Bounded = None,
        environment: Bounded = None,
        model: Bounded = None,
        capability: Bounded = None,
    ) -> Response:
        """Bad rate over time, as columns: per series the window starts (``t``, unix
        seconds, ascending) and ``total``, ``bad``, ``bad_rate`` at the same positions, for
        the windows that counted feedback (gaps are windows without any). Windows are back
        to back: a sliding size gives the windows that start on a multiple of it. At most
        50 series, the largest total first
        (``more_series``: how many more); ``alerts``: the alert episodes of the same rows
        that overlap the range. Default range: the last 24 h.
        """
        key = await core.authenticate(request, "read")
        try:
            start, end = time_range(since=_since(since), start=start, end=end, default=_DAY)
            filters = RatesFilter(
                window_seconds=window if window is not None else windows[0], start=start,
                end=end, by=by, project=own_project(key, project), environment=environment,
                model=model, capability=capability,
            )  # fmt: skip
            series_sql = rates_series_sql(database, filters, windows)
            alerts_sql = rate_alerts_sql(database, filters, windows)
            base = filters.window_seconds == windows[0]
            open_sql = open_windows_sql(database, filters, annotators, reach=OPEN_REACH)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        series = await rows_of(series_sql)
        alerts = await rows_of(alerts_sql)
        total = series[0]["series"] if series else 0
        for one in series:
            del one["series"]
        complete = None
        if base:  # the minutes still open, counted so far: a chart from the first minute on
            complete = with_open_windows(series, await rows_of(open_sql))
        return json_body(request, {
            "window_seconds": filters.window_seconds, "by": by, "from": _iso(start),
            "to": _iso(end), "series": series,
            "more_series": max(0, int(total) - len(series)),
            "open_from": complete, "alerts": with_zones(alerts, ("onset", "until")),
        })  # fmt: skip

    @app.get("/v1/alerts", responses=responses({**READ_ERRORS, 422: "A filter is invalid "
             "(e.g. limit=0, since=7 parsecs): the error names it."}))  # fmt: skip
    async def get_alerts(
        request: Request,
        state: Annotated[
            Literal["firing", "resolved"] | None,
            Query(description="The episode's latest state; absent: both"),
        ] = None,
        since: Since = None,
        start: From = None,
        end: To = None,
        project: Bounded = None,
        environment: Bounded = None,
        model: Bounded = None,
        capability: Bounded = None,
        limit: Annotated[int, Query(ge=1, le=MAX_ALERTS)] = 100,
    ) -> Response:
        """Alert episodes that overlap the range (default: the last 7 days), newest first:
        each with its latest ``state``, when it began (``onset``, its first window), fired
        and resolved (``resolved_at`` null while firing), the rates that fired it and
        their samples; times in ISO 8601 with ``Z``."""
        key = await core.authenticate(request, "read")
        try:
            start, end = time_range(since=_since(since), start=start, end=end, default=_WEEK)
            query = alert_episodes_sql(database, AlertsFilter(
                start=start, end=end, state=state, project=own_project(key, project),
                environment=environment, model=model, capability=capability, limit=limit,
            ))  # fmt: skip
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return json_body(request, with_zones(await rows_of(query), ALERT_TIMES))


def _since(text: str | None) -> timedelta | None:
    """``since`` as a duration (ValueError: a 422 naming it)."""
    if not text:
        return None
    try:
        return parse_since(text)
    except OverflowError:  # more days than a timedelta holds
        raise ValueError(f"since {text!r} is longer ago than any time: use from and to") from None


def _iso(moment: datetime) -> str:
    """A UTC time as ISO 8601 with ``Z``, to the millisecond (as the other reads give)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
