"""The SQL of the web pages' charts: bad rate over time as columns, and alert episodes.

Behind ``GET /v1/rates`` and ``GET /v1/alerts`` (:mod:`thumbline.producers.gateway_charts`).
As in :mod:`thumbline.inbox`, no value a caller gives is written into the SQL
text: each travels as a ClickHouse query parameter (``{name:Type}``), checked
here first (bounded lengths, known windows, a bounded number of points).

The rates are ``feedback_rates`` rows: per ``(project, environment, model)`` with
``capability = '*'``, and per ``(project, environment, capability)`` with
``model = '*'``; a chart reads one of the two kinds (``by``). Each series comes
back as one row of parallel arrays, built in ClickHouse, so no caller loops
over the windows.

An alert episode is every row of one ``alert_id`` (one row per state): its
latest state, when it began (``onset``: its first window) and, once resolved,
when (``resolved_at``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from thumbline.inbox import MAX_FILTER_CHARS, BoundQuery, store_time

#: The most windows of one series: 14 days of 1-minute windows.
MAX_POINTS = 14 * 24 * 60
#: The most series of one chart (the largest totals).
MAX_SERIES = 50
#: The most alert episodes of one answer.
MAX_ALERTS = 1000
#: How a chart splits the rates: per model (all capabilities) or per capability (all models).
BY = ("model", "capability")
#: The states an alert episode ends in, as ``alerts.state`` holds them.
ALERT_STATES = ("firing", "resolved")
#: What ``"*"`` means in a rate or alert row: all of them.
ALL = "*"


#: What ClickHouse's DateTime64 holds: a time beyond is held to it (a range wholly beyond
#: it is empty), never written as text the store cannot read.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    """A time without a zone is taken as UTC; one with a zone is converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset
        return EARLIEST if value.year < EARLIEST.year else LATEST


def _in_store(value: datetime) -> datetime:
    return min(max(value, EARLIEST), LATEST)


def time_range(
    *, since: timedelta | None, start: datetime | None, end: datetime | None,
    default: timedelta, now: datetime | None = None,
) -> tuple[datetime, datetime]:  # fmt: skip
    """The ``[start, end)`` a read covers, in UTC and within what the store holds:
    ``since`` ago until now, or ``from`` and ``to`` (``to`` defaults to now, ``from`` to
    ``default`` before ``to``).

    Raises:
        ValueError: both ``since`` and ``from``/``to`` were given, or ``from`` is not
            before ``to``.
    """
    if since is not None and (start is not None or end is not None):
        raise ValueError("give since, or from and to, not both")
    until = _utc(end) if end is not None else _utc(now or datetime.now(UTC))
    if start is not None:
        begin = _utc(start)
        if begin >= until:
            raise ValueError("from must be before to")
    else:
        try:
            begin = until - (since if since is not None else default)
        except OverflowError:  # before the year 1
            begin = min(EARLIEST, until)
    return _in_store(begin), _in_store(until)


def _bounded(option: str, value: str | None) -> None:
    if value is not None and len(value) > MAX_FILTER_CHARS:
        raise ValueError(f"{option} takes at most {MAX_FILTER_CHARS} characters")


def _dimensions(filters: RatesFilter | AlertsFilter) -> tuple[list[str], dict[str, Any]]:
    """Equality on each dimension given, as bound parameters."""
    clauses, parameters = [], {}
    for name in ("project", "environment", "model", "capability"):
        value = getattr(filters, name)
        if value is not None:
            clauses.append(f"{name} = {{{name}:String}}")
            parameters[name] = value
    return clauses, parameters


def _time(name: str) -> str:
    return f"toDateTime64({{{name}:String}}, 6, 'UTC')"


@dataclass(frozen=True, slots=True)
class RatesFilter:
    """One chart of ``feedback_rates``: a window size, a range, per model or per capability.

    ``model`` filters the per-model rows only and ``capability`` the per-capability
    rows only: the rates are not kept per both.
    """

    window_seconds: int
    start: datetime
    end: datetime
    by: str = "model"
    project: str | None = None
    environment: str | None = None
    model: str | None = None
    capability: str | None = None
    max_series: int = MAX_SERIES

    def check(self, windows: tuple[int, ...]) -> None:
        """Refuse what a chart cannot show; ``windows``: the sizes the rates keep.

        Raises:
            ValueError: naming the option, and what to ask instead.
        """
        if self.by not in BY:
            raise ValueError(f"by takes model or capability, not {self.by!r}")
        if self.window_seconds not in windows:
            kept = ", ".join(map(str, windows[:-1])) + f" or {windows[-1]}" if len(windows) > 1 \
                else str(windows[0])  # fmt: skip
            raise ValueError(
                f"window takes {kept} (seconds), not {self.window_seconds}: the sizes the rates "
                "keep (THUMBLINE_RATE_WINDOW_SECONDS, THUMBLINE_RATE_SLIDING_SECONDS)"
            )
        for option in ("project", "environment", "model", "capability"):
            _bounded(option, getattr(self, option))
        if self.by == "model" and self.capability is not None:
            raise ValueError(
                "capability filters the rates per capability: add by=capability (the rates "
                "are kept per model or per capability, not per both)"
            )
        if self.by == "capability" and self.model is not None:
            raise ValueError(
                "model filters the rates per model: use by=model (the rates are kept per "
                "model or per capability, not per both)"
            )
        if _utc(self.start) > _utc(self.end):
            raise ValueError("from must be before to")
        span = (_utc(self.end) - _utc(self.start)).total_seconds()
        points = -int(-span // self.window_seconds)  # the windows that start in the range
        if points > MAX_POINTS:
            wider = [
                w for w in sorted(windows) if w > self.window_seconds and span / w <= MAX_POINTS
            ]
            fix = f"use window={wider[0]} or a shorter range" if wider else "use a shorter range"
            raise ValueError(
                f"the range holds {points:,} windows of {self.window_seconds} s and a chart takes "
                f"at most {MAX_POINTS:,} per series: {fix}"
            )

    def where(self) -> tuple[str, dict[str, Any]]:
        """Rows of this chart's kind in its range, as a WHERE clause and its parameters."""
        clauses, parameters = _dimensions(self)
        clauses.append("capability = '*'" if self.by == "model" else "model = '*'")
        return " AND ".join(clauses), parameters


def rates_series_sql(database: str, filters: RatesFilter, windows: tuple[int, ...]) -> BoundQuery:
    """One row per series (the ``max_series`` with the largest total first): its dimensions,
    ``t`` (window starts in unix seconds, ascending), ``total``, ``bad``, ``bad_rate`` (4
    decimals) as parallel arrays, and ``series`` (how many series the range has in all).

    The windows are back to back: a sliding window (one ends with every base window) is
    read where it starts on a multiple of its size, so a point is ``window_seconds`` of
    feedback, none counted in two points, and a range has ``span / window_seconds``
    points at most. Only windows that counted something (``total + implicit > 0``) are
    points. The points are sorted in the array (a tuple sort), not left to the order rows
    reach ``groupArray``, which parallel reading does not keep.

    Raises:
        ValueError: a filter a chart refuses (:meth:`RatesFilter.check`).
    """
    filters.check(windows)
    where, parameters = filters.where()
    parameters.update(
        window_seconds=filters.window_seconds, start=store_time(filters.start),
        end=store_time(filters.end),
    )  # fmt: skip
    dims = "project, environment, model, capability"
    return BoundQuery(  # every value a caller gave is a bound parameter
        f"SELECT {dims}, arrayMap(p -> p.1, points) AS t, arrayMap(p -> p.2, points) AS total, "  # noqa: S608
        "arrayMap(p -> p.3, points) AS bad, arrayMap(p -> p.4, points) AS bad_rate, series "
        f"FROM (SELECT {dims}, arraySort(groupArray((w_t, w_total, w_bad, w_rate))) AS points, "
        "sum(w_total) AS volume, count() OVER () AS series FROM ("
        f"SELECT {dims}, toUnixTimestamp(window_start) AS w_t, total AS w_total, bad AS w_bad, "
        f"round(bad_rate, 4) AS w_rate FROM {database}.feedback_rates FINAL WHERE {where} "
        "AND window_seconds = {window_seconds:UInt32} "
        "AND toUnixTimestamp(window_start) % {window_seconds:UInt32} = 0 "
        f"AND window_start >= {_time('start')} AND window_start < {_time('end')} "
        f"AND total + implicit > 0) GROUP BY {dims} "
        f"ORDER BY volume DESC, {dims} LIMIT {int(filters.max_series)}) "
        f"ORDER BY volume DESC, {dims}",
        parameters,
    )


#: One row per alert episode (``alert_id``): the latest state; the values of the row that
#: fired it (the spike, not the quiet window that resolved it); when it fired and resolved.
_EPISODES = (
    "SELECT alert_id, rule, argMax(state, at) AS latest_state, project, environment, model, "
    "capability, window_seconds, min(window_start) AS onset, argMax(window_end, at) AS window_end, "
    "minIfOrNull(at, state = 'firing') AS fired_at, "
    "maxIfOrNull(at, state = 'resolved') AS resolved_at, max(at) AS last_at, "
    "argMax(bad_rate, (state = 'firing', at)) AS bad_rate, "
    "argMax(baseline_rate, (state = 'firing', at)) AS baseline_rate, "
    "argMax(bad, (state = 'firing', at)) AS bad, argMax(total, (state = 'firing', at)) AS total, "
    "argMax(sample_trace_ids, (state = 'firing', at)) AS sample_trace_ids, "
    "argMax(sample_comments, (state = 'firing', at)) AS sample_comments "
    "FROM {database}.alerts FINAL WHERE {where} "
    # constant within an episode: grouped on, so that a filter on them is a WHERE
    "GROUP BY alert_id, rule, project, environment, model, capability, window_seconds"
)
#: The episodes that overlap ``[start, end)``: begun before its end, not resolved before it.
_OVERLAP = f"onset < {_time('end')} AND (resolved_at IS NULL OR resolved_at >= {_time('start')})"


def rate_alerts_sql(database: str, filters: RatesFilter, windows: tuple[int, ...]) -> BoundQuery:
    """The alert episodes over a chart (:func:`rates_series_sql`): of its kind of rows and
    dimensions, overlapping its range, oldest onset first, at most :data:`MAX_ALERTS`.

    Raises:
        ValueError: a filter a chart refuses.
    """
    filters.check(windows)
    where, parameters = filters.where()
    parameters.update(start=store_time(filters.start), end=store_time(filters.end))
    return BoundQuery(
        "SELECT alert_id, latest_state AS state, project, environment, model, capability, "  # noqa: S608
        # until: the end of the window that resolved it, in event time as the chart is
        "window_seconds, onset, if(latest_state = 'resolved', window_end, NULL) AS until, "
        "round(bad_rate, 4) AS bad_rate, "
        "round(baseline_rate, 4) AS baseline_rate "
        f"FROM ({_EPISODES.format(database=database, where=where)}) WHERE {_OVERLAP} "
        f"ORDER BY onset, alert_id LIMIT {MAX_ALERTS}",
        parameters,
    )


@dataclass(frozen=True, slots=True)
class AlertsFilter:
    """Alert episodes that overlap ``[start, end)``, newest first; None does not filter."""

    start: datetime
    end: datetime
    state: str | None = None  # of ALERT_STATES: the latest state
    project: str | None = None
    environment: str | None = None
    model: str | None = None
    capability: str | None = None
    limit: int = 100

    def check(self) -> None:
        """Raises:
        ValueError: naming the option and what it takes."""
        if not 1 <= self.limit <= MAX_ALERTS:
            raise ValueError(f"limit must be between 1 and {MAX_ALERTS}")
        if self.state is not None and self.state not in ALERT_STATES:
            raise ValueError(f"state takes firing or resolved, not {self.state!r}")
        for option in ("project", "environment", "model", "capability"):
            _bounded(option, getattr(self, option))
        if _utc(self.start) > _utc(self.end):
            raise ValueError("from must be before to")


#: The columns of ``GET /v1/alerts``, in its order.
ALERT_COLUMNS = (
    "alert_id", "rule", "state", "project", "environment", "model", "capability",
    "window_seconds", "onset", "window_end", "fired_at", "resolved_at", "last_at", "bad_rate",
    "baseline_rate", "bad", "total", "sample_trace_ids", "sample_comments",
)  # fmt: skip
#: Its times (UTC in the store).
ALERT_TIMES = ("onset", "window_end", "fired_at", "resolved_at", "last_at")


def alert_episodes_sql(database: str, filters: AlertsFilter) -> BoundQuery:
    """Alert episodes newest first (by their latest row), with :data:`ALERT_COLUMNS`.

    Raises:
        ValueError: a filter the alerts refuse (:meth:`AlertsFilter.check`).
    """
    filters.check()
    clauses, parameters = _dimensions(filters)
    parameters.update(start=store_time(filters.start), end=store_time(filters.end))
    where = " AND ".join(clauses) or "1"
    having = _OVERLAP
    if filters.state is not None:
        having += " AND latest_state = {state:String}"
        parameters["state"] = filters.state
    columns = ", ".join("latest_state AS state" if c == "state" else c for c in ALERT_COLUMNS)
    return BoundQuery(
        f"SELECT {columns} FROM ({_EPISODES.format(database=database, where=where)}) "  # noqa: S608
        f"WHERE {having} ORDER BY last_at DESC, alert_id LIMIT {int(filters.limit)}",
        parameters,
    )


def open_windows_sql(
    database: str, filters: RatesFilter, annotators: tuple[str, ...], *, reach: timedelta
) -> BoundQuery:
    """The base windows the stream has not completed yet, counted so far from ``feedback``:
    one row per series and window (``t``, ``total``, ``bad``), after the last complete
    window (``complete``: unix seconds, 0 when none is) and within ``reach`` of the range's
    end, so a chart shows the minute that is still open, and a new store shows a chart
    within its first minute.

    Counted as the stream counts them (:mod:`thumbline.stream_jobs.rates_store`): stored
    rows of ``annotators``, not retracted, not waiting for their trace; ``total`` is the
    explicit feedback. The stream's own row replaces a point once its window completes.
    """
    clauses, parameters = _dimensions(filters)
    where = " AND ".join(clauses) or "1"
    by = filters.by
    dims = f"project, environment, {by}"
    series = (
        "project, environment, model, '*' AS capability" if by == "model"
        else "project, environment, '*' AS model, capability"
    )  # fmt: skip
    parameters.update(
        window_seconds=filters.window_seconds, start=store_time(filters.start),
        end=store_time(filters.end), annotators=list(annotators),
        reach=int(reach.total_seconds()),
    )  # fmt: skip
    complete = (  # of this chart's rows only: a key sees nothing of another project
        "(SELECT toUnixTimestamp(max(window_end)) FROM "  # noqa: S608
        f"{database}.feedback_rates WHERE {where} AND window_seconds = {{window_seconds:UInt32}})"
    )
    return BoundQuery(
        f"SELECT {series}, {complete} AS complete, "  # noqa: S608
        "toUnixTimestamp(toStartOfInterval(ts, toIntervalSecond({window_seconds:UInt32}))) AS t, "
        "countIf(source != 'implicit') AS total, "
        "countIf(source != 'implicit' AND label = 'bad') AS bad "
        f"FROM {database}.feedback FINAL WHERE {where} "
        f"AND ts >= greatest({_time('start')}, toDateTime64({complete}, 3, 'UTC'), "
        f"{_time('end')} - toIntervalSecond({{reach:UInt32}})) AND ts < {_time('end')} "
        "AND retracted = 0 AND join_status != 'pending' "
        "AND has({annotators:Array(String)}, annotator) "
        f"GROUP BY {dims}, t HAVING total > 0 ORDER BY {dims}, t",
        parameters,
    )
