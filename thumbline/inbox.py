"""The feedback inbox's SQL: filters as bound parameters, keyset pages and their cursors.

Behind ``thumbline inbox`` (its table, ``--json`` and ``--follow``), ``GET
/v1/feedback`` and the feedback of ``thumbline trace``. No value a caller gives
is written into the SQL text: each travels as a ClickHouse query parameter
(``{name:Type}``), bound by the store, and is checked here first (known
annotators and join statuses, bounded lengths and counts).

Pages are keyset pages on the ORDER BY (``ts``, ``project``, ``event_id``, all
descending): a page's cursor names its last row, and the next page starts
strictly after it, so rows stored meanwhile never shift a page or repeat a row.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from thumbline.schemas import Annotator

INBOX_COLUMNS = (
    "ts", "trace_id", "label", "comment", "user_id", "session_id", "project", "model",
    "environment", "capability", "kind", "name", "score", "join_status", "event_id", "annotator",
    "value", "correction", "category", "tags", "conversation_id", "span_id", "received_at",
    "score_config_version", "target",
)  # fmt: skip
#: The columns that hold a time (UTC in the store).
TIME_COLUMNS = ("ts", "received_at")

#: What ``--status`` takes: the join's outcomes, and feedback still waiting for its trace.
JOIN_STATUSES = ("joined", "orphan", "corrected", "pending")

#: What ``--annotator`` takes: who gave the feedback.
ANNOTATORS = tuple(a.value for a in Annotator)

#: The longest value a filter takes (ids, names, tags), in characters.
MAX_FILTER_CHARS = 512
#: The most values a repeatable filter takes.
MAX_FILTER_VALUES = 100
#: The most rows of one page.
MAX_LIMIT = 10_000

#: What ClickHouse's DateTime64 holds.
_EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
_LATEST = datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
#: A time as the store writes it in JSON (DateTime64(3, 'UTC')), and as a cursor carries it.
_STORE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,6})?$")
_CURSOR_CHARS = 2048


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


def store_time(value: datetime) -> str:
    """``value`` as the text a ``toDateTime64(..., 6, 'UTC')`` parameter takes (UTC)."""
    return _as_utc(value).strftime("%Y-%m-%d %H:%M:%S.%f")


def iso_time(value: Any) -> Any:
    """A time from the store (UTC, ClickHouse's text) as ISO 8601 with ``Z``, to the
    millisecond; anything else (None, empty) as it is."""
    if not isinstance(value, str) or not value:
        return value
    moment = _as_utc(datetime.fromisoformat(value))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class BoundQuery:
    """SQL with ``{name:Type}`` placeholders and the values the store binds to them."""

    text: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: its last row's place in the ORDER BY."""

    ts: str  # as the store wrote it: "2026-11-26 04:00:00.123" (UTC)
    project: str
    event_id: str

    @classmethod
    def of(cls, row: dict[str, Any]) -> Position:
        """The position of a row of :func:`inbox_sql` (JSON, times as the store wrote them)."""
        return cls(str(row["ts"]), str(row["project"]), str(row["event_id"]))

    def cursor(self) -> str:
        """An opaque cursor: URL-safe base64 of the position."""
        raw = orjson.dumps({"v": 1, "ts": self.ts, "p": self.project, "e": self.event_id})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_cursor(cls, text: str) -> Position:
        """The position a cursor of :meth:`cursor` names.

        Raises:
            ValueError: the cursor is not one this inbox made (malformed or changed).
        """
        refused = ValueError(
            "cursor is not one the inbox gave: pass next_cursor of the previous page as it "
            "came, or leave cursor out for the first page"
        )
        if not text or len(text) > _CURSOR_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
            raise refused
        try:
            data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            raise refused from None
        if not isinstance(data, dict) or set(data) != {"v", "ts", "p", "e"} or data["v"] != 1:
            raise refused
        ts, project, event_id = data["ts"], data["p"], data["e"]
        if not all(isinstance(v, str) for v in (ts, project, event_id)):
            raise refused
        if not _STORE_TIME.match(ts) or not event_id or len(event_id) > MAX_FILTER_CHARS:
            raise refused
        if len(project) > MAX_FILTER_CHARS:
            raise refused
        try:
            datetime.fromisoformat(ts)
        except ValueError:
            raise refused from None
        return cls(ts, project, event_id)


#: Single-valued filters: the option's name, the column it compares.
_EXACT = {
    "project": "project", "environment": "environment", "model": "model",
    "capability": "capability", "user_id": "user_id", "session_id": "session_id",
    "trace_id": "trace_id", "conversation_id": "conversation_id",
}  # fmt: skip
#: Repeatable filters: the field, the option's name, the column (a tag: any of the row's).
_ANY_OF = (
    ("labels", "label", "label"), ("kinds", "kind", "kind"), ("names", "name", "name"),
    ("categories", "category", "category"), ("annotators", "annotator", "annotator"),
    ("tags", "tag", "tags"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class InboxFilter:
    """The filters of the feedback inbox; empty fields do not filter.

    Repeatable filters (labels, kinds, names, categories, annotators, tags)
    match a row holding any of their values (a tag: any of the row's tags).
    """

    labels: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()  # of ANNOTATORS; empty: all
    project: str | None = None
    environment: str | None = None
    model: str | None = None
    capability: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    trace_id: str | None = None
    conversation_id: str | None = None
    status: str | None = None  # one of JOIN_STATUSES; None: all, pending ones included
    has_comment: bool = False
    since: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None
    limit: int = 50
    after: Position | None = None  # the page starts after this row

    def check(self) -> None:
        """Refuse what the inbox cannot filter on.

        Raises:
            ValueError: naming the option and what it takes.
        """
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"--limit must be between 1 and {MAX_LIMIT}")
        if self.status is not None and self.status not in JOIN_STATUSES:
            raise ValueError(
                f"--status takes joined, orphan, corrected or pending, not {self.status!r}"
            )
        unknown = [a for a in self.annotators if a not in ANNOTATORS]
        if unknown:
            raise ValueError(
                f"--annotator takes end_user, reviewer, evaluator or code, not {unknown[0]!r}"
            )
        for field_name, option, _ in _ANY_OF:
            values = getattr(self, field_name)
            if len(values) > MAX_FILTER_VALUES:
                raise ValueError(f"--{option} takes at most {MAX_FILTER_VALUES} values")
            for value in values:
                _bounded(option, value)
        for option in _EXACT:
            value = getattr(self, option)
            if value is not None:
                _bounded(option.replace("_", "-"), value)

    def where(self, now: datetime | None = None) -> tuple[str, dict[str, Any]]:
        """The WHERE clause, and the parameters it binds."""
        clauses: list[str] = ["retracted = 0"]
        parameters: dict[str, Any] = {}
        for option, column in _EXACT.items():
            value = getattr(self, option)
            if value:
                clauses.append(f"{column} = {{{option}:String}}")
                parameters[option] = value
        if self.status:
            clauses.append("join_status = {status:String}")
            parameters["status"] = self.status
        for field_name, _, column in _ANY_OF:
            values = getattr(self, field_name)
            if values:
                bound = f"{{{field_name}:Array(String)}}"
                test = f"hasAny(tags, {bound})" if column == "tags" else f"{column} IN {bound}"
                clauses.append(test)
                parameters[field_name] = list(values)
        if self.has_comment:
            clauses.append("comment != ''")
        if self.since is not None:
            clauses.append("ts >= toDateTime64({since:String}, 6, 'UTC')")
            parameters["since"] = store_time((now or datetime.now(UTC)) - self.since)
        # Any time is accepted; beyond what the store holds (1900-2299) a bound is
        # either always true (dropped) or never (an empty answer).
        for bound, value, later in (("start", self.start, 1), ("end", self.end, -1)):
            side = 0 if value is None else _within_store(value)
            if value is None or side == -later:
                continue  # no bound, or one every stored time meets
            if side == later:
                clauses.append("0")  # one no stored time meets
                continue
            test = ">=" if bound == "start" else "<"
            clauses.append(f"ts {test} toDateTime64({{{bound}:String}}, 6, 'UTC')")
            parameters[bound] = store_time(value)
        if self.after is not None:
            after = "toDateTime64({after_ts:String}, 3, 'UTC')"
            clauses.append(  # the first: the time's index skips the newer parts
                f"ts <= {after} AND (ts, project, event_id) < ({after}, "
                "{after_project:String}, {after_event_id:String})"
            )
            parameters.update(
                after_ts=self.after.ts, after_project=self.after.project,
                after_event_id=self.after.event_id,
            )  # fmt: skip
        return " AND ".join(clauses), parameters


def _bounded(option: str, value: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_FILTER_CHARS:
        raise ValueError(f"--{option} takes at most {MAX_FILTER_CHARS} characters")


#: Newest first; the keyset of a page's cursor.
ORDER = "ORDER BY ts DESC, project DESC, event_id DESC"


def inbox_sql(
    database: str,
    filters: InboxFilter,
    now: datetime | None = None,
    *,
    extra: int = 0,
    candidates: int | None = None,
) -> BoundQuery:
    """Newest feedback first, with the inbox's columns and its trace's ``input`` and
    ``output``; feedback still waiting for its trace included (``join_status``
    pending) unless ``filters.status`` says otherwise. ``extra`` more rows than
    ``filters.limit`` are read (one tells whether a next page exists).

    The page is exact (one row per event, its newest version) without ``FINAL`` over
    the filtered rows (:func:`_page_sql`): ``candidates`` is how many stored rows it
    looks at first (default: the page, a quarter more and 20: each costs a read of a
    part of the table, since rows are stored by identity, and too few for the older
    versions among them costs the FINAL read after the rest); 0 reads with ``FINAL``.

    The question and the answer are the root span's (``parent_span_id`` empty)
    when it has them, else the earliest span's question and the latest answer;
    empty when the trace has none (or is not stored, or the feedback has no
    trace). They are looked up only for the traces of the page.

    Raises:
        ValueError: a filter the inbox refuses (:meth:`InboxFilter.check`).
    """
    filters.check()
    where, parameters = filters.where(now)
    rows = filters.limit + int(extra)
    wanted = rows + rows // 4 + 20 if candidates is None else int(candidates)
    columns = ", ".join(INBOX_COLUMNS)
    page = _page_sql(database, where, rows, wanted)
    return BoundQuery(
        f"SELECT {columns}, content.trace_input AS input, content.trace_output AS output "
        f"FROM ({page}) AS page LEFT JOIN ("
        f"SELECT project, trace_id, {_TRACE_CONTENT} FROM {database}.traces FINAL "
        # the page's traces only: its keys read again, two columns of the same rows
        f"WHERE (project, trace_id) IN (SELECT project, trace_id FROM ({page})) "
        "AND trace_id != '' "
        f"GROUP BY project, trace_id) AS content USING (project, trace_id) {ORDER}",
        parameters,
    )


def _page_sql(database: str, where: str, rows: int, candidates: int) -> str:
    """The first ``rows`` rows of feedback (newest version of each event) that meet
    ``where``, newest first, read without ``FINAL`` over the table when it can be.

    ``feedback`` is sorted by its identity ``(project, event_id)``, not by time, so
    ``FINAL`` with ``ORDER BY ts DESC LIMIT n`` merges every version of every row the
    filter keeps (all of a big project's). Instead:

    1. *candidates*: the newest ``candidates`` stored rows that meet ``where``, any
       version, reading only the columns of the filter and the order;
    2. their events' newest versions, looked up by identity (``LIMIT 1 BY`` on
       ``version``, as the table's ``ReplacingMergeTree(version)`` keeps them), kept
       where they still meet ``where`` and sort no later than the last candidate ``C``.

    That is exact down to ``C``: an event whose newest version meets ``where`` and
    sorts before ``C`` is a stored row that does so too, so it is a candidate. When
    fewer than ``rows`` are left although ``candidates`` rows were found (older versions
    crowded the candidates out), the page is read with ``FINAL`` instead, in the same
    query: the branch not taken reads nothing (its condition is a constant by then).
    """
    order = "ORDER BY ts DESC, project DESC, event_id DESC"
    columns = ", ".join(INBOX_COLUMNS)
    final = f"SELECT {columns} FROM {database}.feedback FINAL WHERE {where} {order} LIMIT {rows}"
    if candidates <= 0:
        return final
    k = int(candidates)
    # Each step is a scalar subquery: the store computes one once per query, however
    # often its text comes back (by its hash), and the rest reads it as a constant.
    # The time of the k-th candidate first, reading the order's first column only: then
    # the identities of the rows from it on (the order's other columns: few rows).
    cut = f"(SELECT min(ts) FROM (SELECT ts FROM {database}.feedback WHERE {where} ORDER BY ts DESC LIMIT {k}))"  # noqa: E501
    found = (
        f"(SELECT groupArray((ts, project, event_id)) FROM (SELECT ts, project, event_id "
        f"FROM {database}.feedback WHERE {where} AND ts >= {cut} {order} LIMIT {k}))"
    )
    keys = f"(SELECT arrayJoin({found}) AS c)"
    newest = (
        f"SELECT {columns}, retracted FROM {database}.feedback "
        f"WHERE event_id IN (SELECT c.3 FROM {keys}) "
        f"AND (project, event_id) IN (SELECT (c.2, c.3) FROM {keys}) "
        "ORDER BY version DESC, inserted_at DESC LIMIT 1 BY project, event_id"
    )
    fresh = (
        f"(SELECT groupArray(({columns})) FROM (SELECT {columns} FROM ({newest}) WHERE {where} "
        f"AND (ts, project, event_id) >= arrayMin({found}) {order} LIMIT {rows}))"
    )
    short = f"(length({fresh}) < {rows} AND length({found}) = {k})"
    unpacked = ", ".join(f"r.{i} AS {c}" for i, c in enumerate(INBOX_COLUMNS, start=1))
    return (
        f"SELECT {columns} FROM (SELECT {unpacked} FROM (SELECT arrayJoin({fresh}) AS r) "
        f"WHERE NOT {short} UNION ALL SELECT {columns} FROM {database}.feedback FINAL "
        f"WHERE {where} AND {short}) {order} LIMIT {rows}"
    )


def stored_since_sql(database: str, filters: InboxFilter, floor: str, *, limit: int) -> BoundQuery:
    """The filtered rows the store took at ``floor`` (its time, as it writes it) or later,
    in the order it took them, with when (``inserted_at``): what ``--follow`` polls.

    Raises:
        ValueError: a filter the inbox refuses.
    """
    filters.check()
    where, parameters = filters.where()
    columns = ", ".join(INBOX_COLUMNS)
    return BoundQuery(
        f"SELECT {columns}, inserted_at FROM {database}.feedback FINAL WHERE {where} "
        "AND inserted_at >= toDateTime64({floor:String}, 3, 'UTC') "
        f"ORDER BY inserted_at, event_id LIMIT {int(limit)}",
        {**parameters, "floor": floor},
    )


def store_now_sql() -> str:
    """The store's clock (what ``inserted_at`` is stamped with)."""
    return "SELECT toString(now64(3, 'UTC')) AS now"


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
