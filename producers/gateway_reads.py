"""The gateway's read routes: the feedback inbox, one trace, the judge's agreement with the
users, and SQL for admin keys.

Reads go through :class:`thumbline.sqlpool.SqlPool`: ``reads`` serves the inbox
and traces, ``sql`` serves ``POST /v1/sql``, on separate threads and clients, so
a slow admin query never delays a read. A key bound to a project reads only it.
"""

from __future__ import annotations

import gzip
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel

from thumbline.agreement import AgreementFilter, agreement_sql, disagreements_sql
from thumbline.inbox import (
    MAX_FILTER_CHARS,
    MAX_FILTER_VALUES,
    TIME_COLUMNS,
    BoundQuery,
    InboxFilter,
    Position,
    inbox_sql,
    iso_time,
)
from thumbline.keys import ApiKey
from thumbline.producers.gateway_core import GatewayCore
from thumbline.producers.gateway_errors import NO_KEY, responses
from thumbline.queries import literal, parse_since
from thumbline.sqlpool import SqlPool


class SqlError(BaseModel):
    """Why SQL got no rows: what was refused and what the sandbox runs."""

    error: str
    reason: str | None = None  # the sandbox's rule (table_function, table, settings...)
    code: int | None = None  # ClickHouse's error code, when it answered


#: A span's times, in ``GET /v1/traces/{trace_id}``.
SPAN_TIMES = ("start_time", "end_time")
#: The times of ``GET /v1/agreement``'s rows (a summary's, a disagreement's).
AGREEMENT_TIMES = ("last_at", "ts")
#: The header that carries the cursor of the next page of ``GET /v1/feedback``.
NEXT_CURSOR = "X-Next-Cursor"

#: The inbox's page: a JSON array of rows, and where the next page is when there is one.
PAGE: dict[str, Any] = {
    "description": "The rows, newest first, times in ISO 8601 with Z.",
    "headers": {
        NEXT_CURSOR: {
            "description": "The next page's cursor (pass it as cursor); absent on the last page.",
            "required": False, "schema": {"type": "string"},
        },
        "Link": {
            "description": 'The next page\'s URL, rel="next"; absent on the last page.',
            "required": False, "schema": {"type": "string"},
        },
    },
}  # fmt: skip

#: A filter's value: bounded, like the inbox's (thumbline.inbox).
Bounded = Annotated[str | None, Query(max_length=MAX_FILTER_CHARS)]


def _many(description: str) -> Any:
    return Query(description=f"{description}; repeatable (any of them)",
                 max_length=MAX_FILTER_VALUES)  # fmt: skip


#: Bodies smaller than this go out as they are: gzip would save less than it costs.
GZIP_FROM_BYTES = 1400


def json_body(request: Request, value: Any, headers: dict[str, str] | None = None) -> Response:
    """``value`` as JSON, gzipped when the client takes it (every browser does): a page of
    1,000 feedback rows is 850 KB as it is and 85 KB gzipped, a week of minute windows
    mostly digits that repeat."""
    body = orjson.dumps(value)
    headers = {**(headers or {}), "Vary": "Accept-Encoding"}
    accepted = request.headers.get("accept-encoding", "")
    if len(body) >= GZIP_FROM_BYTES and "gzip" in accepted.lower():
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


def with_zones(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """``rows`` with their times (UTC in the store) as ISO 8601 with ``Z``."""
    for row in rows:
        for column in columns:
            if column in row:
                row[column] = iso_time(row[column])
    return rows


READ_ERRORS = {
    401: NO_KEY,
    403: "The key's scope is ingest, or it asks for another project than the key's.",
    503: "The store did not answer: try again later.",
}


def own_project(key: ApiKey | None, asked: str | None) -> str | None:
    """The project a read covers: the key's, or what was asked when the key has none."""
    if key is None or not key.project:
        return asked
    if asked is not None and asked != key.project:
        raise HTTPException(403, f"this key reads only project {key.project!r}")
    return key.project


def add_read_routes(
    app: FastAPI, core: GatewayCore, *, reads: SqlPool, sql: SqlPool, database: str
) -> None:
    async def select(query: str, pool: SqlPool = reads) -> Response:
        """Rows as a JSON array, from the SQL sandbox (raises StoreError: a 400 above)."""
        lines = await pool.run(query, fmt="JSONEachRow")
        body = b"[" + b",".join(line for line in lines.splitlines() if line.strip()) + b"]"
        return Response(body, media_type="application/json")

    async def rows_of(query: BoundQuery) -> list[dict[str, Any]]:
        """The rows of a query with bound parameters (raises StoreError: a 400 above)."""
        lines = await reads.run(query.text, fmt="JSONEachRow", parameters=query.parameters)
        return [orjson.loads(line) for line in lines.splitlines() if line.strip()]

    @app.get("/v1/feedback", responses={200: PAGE, **responses({**READ_ERRORS, 422: "A filter "
             "or the cursor is invalid (e.g. since=7 parsecs, limit=0, annotator=judge, a cursor "
             "this API did not give): the error names it."})})  # fmt: skip
    async def get_feedback(
        request: Request,
        label: Annotated[list[str], _many("bad, good, edit or a custom label")] = [],  # noqa: B006
        kind: Annotated[list[str], _many("thumb, rating, correction...")] = [],  # noqa: B006
        name: Annotated[list[str], _many("the feedback's name: helpful, correctness...")] = [],  # noqa: B006
        category: Annotated[list[str], _many("the feedback's category")] = [],  # noqa: B006
        tag: Annotated[list[str], _many("a tag the feedback carries")] = [],  # noqa: B006
        annotator: Annotated[list[str], _many("end_user, reviewer, evaluator or code")] = [],  # noqa: B006
        project: Bounded = None,
        environment: Bounded = None,
        model: Bounded = None,
        capability: Bounded = None,
        user_id: Bounded = None,
        session_id: Bounded = None,
        trace_id: Bounded = None,
        conversation_id: Bounded = None,
        status: Annotated[
            str | None,
            Query(
                description="pending (waiting for its trace), joined, orphan or "
                "corrected; absent: all"
            ),
        ] = None,
        has_comment: bool = False,
        since: Annotated[str | None, Query(description="e.g. 30m, 24h, 7d")] = None,
        start: Annotated[datetime | None, Query(alias="from")] = None,
        end: Annotated[datetime | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
        cursor: Annotated[
            str | None,
            Query(description="The next page: the X-Next-Cursor header of the previous one."),
        ] = None,
    ) -> Response:
        """The feedback inbox, newest first, with the filters of ``thumbline inbox``.

        The body is a JSON array of rows, times in ISO 8601 with ``Z``. When more
        rows match, the ``X-Next-Cursor`` header holds the cursor of the next page
        (and ``Link`` its URL, ``rel="next"``): pass it as ``cursor`` with the same
        filters. Pages are keyset pages: rows stored meanwhile never repeat a row
        or skip one of the older pages.
        """
        key = await core.authenticate(request, "read")
        try:
            filters = InboxFilter(
                labels=tuple(label), kinds=tuple(kind), names=tuple(name),
                categories=tuple(category), tags=tuple(tag), annotators=tuple(annotator),
                project=own_project(key, project), environment=environment, model=model,
                capability=capability, user_id=user_id, session_id=session_id,
                trace_id=trace_id, conversation_id=conversation_id, status=status,
                has_comment=has_comment, since=parse_since(since) if since else None,
                start=start, end=end, limit=limit,
                after=Position.from_cursor(cursor) if cursor is not None else None,
            )  # fmt: skip
            query = inbox_sql(database, filters, extra=1)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        rows = await rows_of(query)
        headers = {}
        if len(rows) > limit:  # one more than asked: there is a next page
            rows = rows[:limit]
            after = Position.of(rows[-1]).cursor()
            headers[NEXT_CURSOR] = after
            headers["Link"] = f'<{request.url.include_query_params(cursor=after)}>; rel="next"'
        return json_body(request, with_zones(rows, TIME_COLUMNS), headers)

    async def spans_and_feedback(request: Request, column: str, value: str) -> Response:
        """The spans of a trace, or of a conversation's traces (oldest first, each with its
        trace_id), and all feedback on them, in the key's project; 404 when none is stored."""
        key = await core.authenticate(request, "read")
        what = column.removesuffix("_id")
        if not value:  # "/v1/traces/" matches the path route: no id is no trace
            raise HTTPException(404, f"no {what} id: put it after /{what}s/")
        project = own_project(key, None)
        scope = f" AND project = {literal(project)}" if project else ""
        first = "trace_id, " if column == "conversation_id" else ""
        spans = await select(
            f"SELECT {first}span_id, parent_span_id, name, project, environment, model, "  # noqa: S608
            "capability, step, user_id, session_id, start_time, end_time, latency_ms, "
            f"total_tokens, cost_usd, status, error, input, output FROM {database}.traces FINAL "
            f"WHERE {column} = {literal(value)}{scope} ORDER BY start_time, {first}span_id"
        )
        try:
            filters = (
                InboxFilter(project=project, limit=10_000, trace_id=value) if column == "trace_id"
                else InboxFilter(project=project, limit=10_000, conversation_id=value)
            )  # fmt: skip
            own = inbox_sql(database, filters)
        except ValueError as exc:  # an id longer than any the inbox takes
            raise HTTPException(404, f"no {what} {value[:64]!r}...: {exc}") from None
        feedback = await rows_of(own)
        if spans.body == b"[]" and not feedback:
            raise HTTPException(
                404, f"no {what} {value!r}" + (f" in project {project!r}" if project else "")
            )
        return json_body(request, {
            column: value, "spans": with_zones(orjson.loads(spans.body), SPAN_TIMES),
            "feedback": with_zones(feedback, TIME_COLUMNS),
        })  # fmt: skip

    # ``:path``: an id may hold "/" (ids are any text without whitespace); the server
    # decodes %2F before routing, so a plain {trace_id} could never match such an id
    @app.get("/v1/traces/{trace_id:path}", responses=responses({**READ_ERRORS, 404: "No span "
             "and no feedback of this trace (in the key's project)."}))  # fmt: skip
    async def get_trace(trace_id: str, request: Request) -> Response:
        """A trace's spans and all its feedback (an id with "/" sent as %2F or as is)."""
        return await spans_and_feedback(request, "trace_id", trace_id)

    @app.get("/v1/conversations/{conversation_id:path}", responses=responses({
        **READ_ERRORS, 404: "No trace and no feedback of this conversation (in the key's project).",
    }))  # fmt: skip
    async def get_conversation(conversation_id: str, request: Request) -> Response:
        """A conversation's traces (their spans, oldest first) and all feedback on them and on
        the conversation itself (feedback on the whole conversation has an empty trace_id)."""
        return await spans_and_feedback(request, "conversation_id", conversation_id)

    @app.get("/v1/agreement", responses=responses({**READ_ERRORS, 422: "A filter is invalid "
             "(e.g. since=7 parsecs, limit=0): the error names it."}))  # fmt: skip
    async def get_agreement(
        request: Request,
        project: str | None = None,
        model: str | None = None,
        capability: str | None = None,
        evaluator: Annotated[str | None, Query(description="the judge's feedback name")] = None,
        since: Annotated[str | None, Query(description="e.g. 24h, 7d")] = None,
        disagreements: Annotated[
            bool, Query(description="the traces where they disagree, newest first")
        ] = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
    ) -> Response:
        """An LLM judge against the end users, as ``thumbline agreement``: per project, model,
        capability and judge, the traces both rated and how many agree (or, with
        ``disagreements``, the traces where they do not)."""
        key = await core.authenticate(request, "read")
        try:
            filters = AgreementFilter(
                project=own_project(key, project), model=model, capability=capability,
                evaluator=evaluator, since=parse_since(since) if since else None, limit=limit,
            )  # fmt: skip
            query = (disagreements_sql if disagreements else agreement_sql)(database, filters)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        rows = orjson.loads((await select(query)).body)
        body = orjson.dumps(with_zones(rows, AGREEMENT_TIMES))
        return Response(body, media_type="application/json")

    @app.post("/v1/sql", responses={
        400: {"model": SqlError, "description": "the SQL sandbox or ClickHouse refused the SQL, "
              "or it ran over a limit (THUMBLINE_SQL_MAX_*)"},
        401: {"model": SqlError, "description": "no key, or an unknown or revoked key"},
        403: {"model": SqlError, "description": "the key's scope is not admin, or it is an "
              "admin key bound to a project (older versions made them)"},
        **responses({503: "The store did not answer: try again later."}),
    })  # fmt: skip
    async def post_sql(request: Request) -> Response:
        """SQL in the sandbox (admin keys): the body is one SELECT, EXPLAIN or DESCRIBE over
        thumbline's database (no table functions, files or settings); rows come back as a
        JSON array."""
        key = await core.authenticate(request, "admin")
        if key is not None and key.project:  # made before admin keys took no project
            raise HTTPException(
                403, f"this admin key is bound to project {key.project!r} and SQL reads every "
                "project: use an admin key without a project (thumbline keys create --scope "
                "admin), and revoke this one",
            )  # fmt: skip
        body = await core.read_raw(request)
        return await select(body.decode("utf-8", errors="replace"), sql)
