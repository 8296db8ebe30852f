"""The gateway's read routes: the feedback inbox, one trace, the judge's agreement with the
users, and SQL for admin keys.

Reads go through :class:`thumbline.sqlpool.SqlPool`: ``reads`` serves the inbox
and traces, ``sql`` serves ``POST /v1/sql``, on separate threads and clients, so
a slow admin query never delays a read. A key bound to a project reads only it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import orjson
from fastapi import FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel

from thumbline.agreement import AgreementFilter, agreement_sql, disagreements_sql
from thumbline.keys import ApiKey
from thumbline.producers.gateway_core import GatewayCore
from thumbline.producers.gateway_errors import NO_KEY, responses
from thumbline.queries import InboxFilter, inbox_sql, literal, parse_since
from thumbline.sqlpool import SqlPool


class SqlError(BaseModel):
    """Why SQL got no rows: what was refused and what the sandbox runs."""

    error: str
    reason: str | None = None  # the sandbox's rule (table_function, table, settings...)
    code: int | None = None  # ClickHouse's error code, when it answered


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

    @app.get("/v1/feedback", responses=responses({**READ_ERRORS, 422: "A filter is invalid "
             "(e.g. since=7 parsecs, limit=0): the error names it."}))  # fmt: skip
    async def get_feedback(
        request: Request,
        label: Annotated[list[str], Query(description="bad, good, edit or a custom label")] = [],  # noqa: B006
        kind: Annotated[list[str], Query(description="thumb, rating, correction...")] = [],  # noqa: B006
        annotator: Annotated[list[str], Query(description="end_user, evaluator, code...")] = [],  # noqa: B006
        project: str | None = None,
        environment: str | None = None,
        model: str | None = None,
        capability: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        trace_id: str | None = None,
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
    ) -> Response:
        """The feedback inbox, newest first, with the filters of ``thumbline inbox``."""
        key = await core.authenticate(request, "read")
        try:
            filters = InboxFilter(
                labels=tuple(label), kinds=tuple(kind), project=own_project(key, project),
                annotators=tuple(annotator),
                environment=environment, model=model, capability=capability, user_id=user_id,
                session_id=session_id, trace_id=trace_id, status=status,
                has_comment=has_comment, since=parse_since(since) if since else None,
                start=start, end=end, limit=limit,
            )  # fmt: skip
            query = inbox_sql(database, filters)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return await select(query)

    @app.get("/v1/traces/{trace_id}", responses=responses({**READ_ERRORS, 404: "No span and no "
             "feedback of this trace (in the key's project)."}))  # fmt: skip
    async def get_trace(trace_id: str, request: Request) -> Response:
        """A trace's spans and all its feedback."""
        key = await core.authenticate(request, "read")
        project = own_project(key, None)
        scope = f" AND project = {literal(project)}" if project else ""
        spans = await select(
            "SELECT span_id, parent_span_id, name, project, environment, model, capability, "  # noqa: S608
            "step, user_id, session_id, start_time, end_time, latency_ms, total_tokens, cost_usd, "
            f"status, error, input, output FROM {database}.traces FINAL "
            f"WHERE trace_id = {literal(trace_id)}{scope} ORDER BY start_time, span_id"
        )
        feedback = await get_feedback_rows(trace_id, project)
        if spans.body == b"[]" and feedback == b"[]":
            raise HTTPException(
                404, f"no trace {trace_id!r}" + (f" in project {project!r}" if project else "")
            )
        body = b'{"trace_id":%s,"spans":%s,"feedback":%s}' % (
            orjson.dumps(trace_id), spans.body, feedback,
        )  # fmt: skip
        return Response(body, media_type="application/json")

    @app.get("/v1/conversations/{conversation_id}", responses=responses({**READ_ERRORS, 404: "No "
             "trace and no feedback of this conversation (in the key's project)."}))  # fmt: skip
    async def get_conversation(conversation_id: str, request: Request) -> Response:
        """A conversation's traces (their spans, oldest first) and all feedback on them and on
        the conversation itself (feedback on the whole conversation has an empty trace_id)."""
        key = await core.authenticate(request, "read")
        project = own_project(key, None)
        scope = f" AND project = {literal(project)}" if project else ""
        spans = await select(
            "SELECT trace_id, span_id, parent_span_id, name, project, environment, model, "  # noqa: S608
            "capability, step, user_id, session_id, start_time, end_time, latency_ms, "
            f"total_tokens, cost_usd, status, error, input, output FROM {database}.traces FINAL "
            f"WHERE conversation_id = {literal(conversation_id)}{scope} "
            "ORDER BY start_time, trace_id, span_id"
        )
        filters = InboxFilter(project=project, conversation_id=conversation_id, limit=10_000)
        feedback = bytes((await select(inbox_sql(database, filters))).body)
        if spans.body == b"[]" and feedback == b"[]":
            raise HTTPException(404, f"no conversation {conversation_id!r}"
                                + (f" in project {project!r}" if project else ""))  # fmt: skip
        body = b'{"conversation_id":%s,"spans":%s,"feedback":%s}' % (
            orjson.dumps(conversation_id), spans.body, feedback,
        )  # fmt: skip
        return Response(body, media_type="application/json")

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
        return await select(query)

    async def get_feedback_rows(trace_id: str, project: str | None) -> bytes:
        filters = InboxFilter(trace_id=trace_id, project=project, limit=10_000)
        return bytes((await select(inbox_sql(database, filters))).body)

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
