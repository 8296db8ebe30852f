"""The HTTP ingest gateway: feedback and traces over HTTP, published to Kafka.

For browsers, mobile apps and services in other languages. ``thumbline up``
runs it beside the stream; ``thumbline gateway`` runs it alone against a
configured broker and store.

- ``POST /v1/feedback`` (one event or an array of up to 1,000),
  ``POST /v1/feedback/{shape}`` (a hosted product's payload: trulayer,
  braintrust, honeyhive, axiom, attributes; see :mod:`thumbline.schemas.shapes`) and
  ``POST /v1/traces``.
- **A 202 means durable**: the answer comes after Kafka acknowledged the
  write (``acks=all``), within ``ack_timeout`` of the request. If the broker
  does not acknowledge by then, the answer is 503 with ``Retry-After``, never a
  late 202; the events may still land, and sending them again is safe.
- Each item of a batch gets its own result (accepted with its event ids, or
  rejected with the reason naming the field); 202 when all were accepted, 207
  when some were, 422 when none was.
- **Idempotent by event_id**: the store keeps one row per ``event_id``, so a
  client's retry never makes a second row.
- The server stamps ``received_at``, the key's project and the feedback's
  ``source`` (derived from its kind): a client cannot forge them.
- Auth: API keys (:mod:`thumbline.keys`) as ``Authorization: Bearer tl_...``
  or ``X-API-Key``. Until a key exists, a gateway bound to loopback accepts
  requests without one (and says so at start); bound elsewhere it refuses to
  start without keys.
- Limits: request bodies over ``gateway_max_body_bytes`` get 413; a key over
  ``gateway_rate_limit`` events per second gets 429 with ``Retry-After``.
- Errors: ``{"error": ...}`` (:mod:`thumbline.producers.gateway_errors`), with
  ``"retriable": true`` on 429 and 503; the OpenAPI spec lists each route's.
- ``GET /healthz`` (the process answers), ``GET /readyz`` (Kafka and the key
  store reachable), ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from thumbline.errors import ConfigError, SqlRefused, StoreError
from thumbline.keys import ApiKey, KeyRing, Scope
from thumbline.metrics import Metrics
from thumbline.outages import transient
from thumbline.producers import gateway_errors
from thumbline.producers.errors import DeliveryFailed, ProducerClosed
from thumbline.producers.gateway_errors import INGEST, NO_KEY, responses
from thumbline.producers.kafka import FeedbackProducer
from thumbline.queries import InboxFilter, inbox_sql, literal, parse_since
from thumbline.schemas import FeedbackEvent, InvalidEvent, TimeBounds, TraceEvent
from thumbline.schemas.shapes import SHAPES, to_events
from thumbline.schemas.wire import MAX_BATCH_EVENTS
from thumbline.sqlpool import SqlPool

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class ItemResult(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    event_ids: list[str] = []
    error: str | None = None


class IngestResult(BaseModel):
    accepted: int
    rejected: int
    results: list[ItemResult]


class SqlError(BaseModel):
    """Why SQL got no rows: what was refused and what the sandbox runs."""

    error: str
    reason: str | None = None  # the sandbox's rule (table_function, table, settings...)
    code: int | None = None  # ClickHouse's error code, when it answered


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RateLimiter:
    """A token bucket per key: ``rate`` events a second, bursts of one second's worth.

    A batch larger than the bucket passes when the bucket is full and leaves it
    in debt, so the key's average stays at ``rate``. At most ``max_buckets``
    are held: past that the least recently used is dropped (``on_evict`` is
    called), so a flood of keys never wipes the debt of a key in use; a dropped
    key starts again with a full bucket.
    """

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_buckets: int = 100_000,
        on_evict: Callable[[], object] = lambda: None,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._max_buckets = max_buckets
        self._on_evict = on_evict
        self._buckets: dict[str, tuple[float, float]] = {}  # least recently used first

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, who: str, events: int) -> float:
        """0 if allowed (and counted), else the seconds to wait before it would be."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(who, (self.rate, now))  # re-inserted: most recent
        if len(self._buckets) >= self._max_buckets:
            del self._buckets[next(iter(self._buckets))]
            self._on_evict()
        tokens = min(self.rate, tokens + (now - at) * self.rate)
        needed = min(events, self.rate)
        if tokens < needed:
            self._buckets[who] = (tokens, now)
            return (needed - tokens) / self.rate
        self._buckets[who] = (tokens - events, now)
        return 0.0


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def build_app(
    *,
    producer: FeedbackProducer,
    keys: KeyRing,
    reads: SqlPool,
    sql: SqlPool,
    database: str,
    host: str,
    metrics: Metrics,
    max_body_bytes: int = 5 * 1024 * 1024,
    rate_limit: float = 0.0,
    cors_origins: tuple[str, ...] = (),
    ack_timeout: float = 10.0,
    time_bounds: TimeBounds = TimeBounds(),  # noqa: B008 (frozen)
    problems: Callable[[], list[str]] = list,
) -> FastAPI:
    """The gateway's ASGI app (``producer`` and the pools started by the caller).

    ``reads`` serves the inbox and trace reads, ``sql`` serves ``POST /v1/sql``:
    separate threads and clients, so a slow admin query never delays a read.
    ``ack_timeout`` bounds the whole wait for Kafka's acknowledgement of a
    request's events: past it the answer is 503, never a late 202.
    ``time_bounds``: how far an event's time may lie from the server's clock
    (422 naming the field beyond). ``problems`` says what the rest of the
    process waits for (Kafka, the store): ``/readyz`` is not ready meanwhile.
    """
    app = FastAPI(
        title="thumbline gateway",
        version="1",
        description="Feedback and traces over HTTP; a 202 means Kafka has them.",
    )
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            max_age=600,
        )
    loopback = is_loopback(host)
    limiter = RateLimiter(rate_limit, on_evict=metrics.bound_hits.labels("rate_limit_buckets").inc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        extra = {"retriable": True} if exc.status_code in (429, 503) else {}
        return _error(exc.status_code, str(exc.detail), headers=exc.headers, **extra)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the same body as every other error: {"error": ...}, naming each field
        problems = [
            f"{'.'.join(str(part) for part in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        ]  # fmt: skip
        return _error(422, "; ".join(problems))

    @app.exception_handler(StoreError)
    async def store_refused(request: Request, exc: StoreError) -> JSONResponse:
        """400 for SQL the sandbox refused (or stopped at a limit) and SQL ClickHouse refused;
        503 while the store does not answer."""
        if exc.retriable:
            return _error(
                503, f"the store did not answer: {exc}", retriable=True,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )  # fmt: skip
        if isinstance(exc, SqlRefused):
            return _error(400, str(exc), reason=exc.reason, code=exc.code)
        return _error(400, f"ClickHouse refused the query: {exc}", reason="clickhouse",
                      code=exc.code)  # fmt: skip

    async def authenticate(request: Request, scope: Scope) -> ApiKey | None:
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else None
        token = token or request.headers.get("x-api-key")
        if keys.stale:  # the key table is read in a thread; fresh, it costs no hop
            try:
                await keys.refreshed()
            except Exception as exc:
                if not transient(exc):
                    raise
                raise HTTPException(
                    503, f"the key store did not answer: {exc}",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                ) from None  # fmt: skip
        if token is None:
            if loopback and not keys.has_keys:
                return None  # no key exists yet, and only this machine can reach us
            raise HTTPException(
                401, "send an API key: Authorization: Bearer tl_... (thumbline keys create)",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        key = keys.lookup(token)  # from memory, the same work for unknown and wrong keys
        if key is None:
            raise HTTPException(
                401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if not key.may(scope):
            raise HTTPException(403, f"this key's scope is {key.scope}: it cannot {scope}")
        return key

    async def read_body(request: Request) -> Any:
        try:
            return orjson.loads(await read_raw(request))
        except orjson.JSONDecodeError as exc:
            raise HTTPException(400, f"the body is not JSON: {exc}") from None

    async def read_raw(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPException(
                413, f"the body is over {max_body_bytes} bytes: send smaller batches"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise HTTPException(
                    413, f"the body is over {max_body_bytes} bytes: send smaller batches"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def ingest(
        request: Request,
        kind: Literal["feedback", "traces"],
        prepare: Callable[[Any, ApiKey | None, datetime], list[FeedbackEvent | TraceEvent]],
    ) -> Response:
        key = await authenticate(request, "ingest")
        body = await read_body(request)
        items = body if isinstance(body, list) else [body]
        if not items:
            raise HTTPException(422, "the batch is empty")
        if len(items) > MAX_BATCH_EVENTS:
            raise HTTPException(413, f"at most {MAX_BATCH_EVENTS} items per request")
        wait = limiter.take(key.key_id if key else "anonymous", len(items))
        if wait > 0:
            retry = max(1, math.ceil(wait))
            return _error(
                429, f"over {limiter.rate:g} events a second for this key: retry in {retry} s",
                retriable=True, headers={"Retry-After": str(retry)},
            )  # fmt: skip
        now = datetime.now(UTC)
        results: list[ItemResult] = []
        events: list[FeedbackEvent | TraceEvent] = []
        for index, item in enumerate(items):
            try:
                built = prepare(item, key, now)
            except InvalidEvent as exc:
                results.append(ItemResult(index=index, status="rejected", error=exc.reason))
                continue
            events.extend(built)
            results.append(
                ItemResult(index=index, status="accepted", event_ids=[_id(e) for e in built])
            )
        rejected = sum(r.status == "rejected" for r in results)
        if events:
            try:
                # The whole wait: the linger, the queue behind a batch in flight, the request.
                async with asyncio.timeout(ack_timeout):
                    await producer.send_many(events)
            except (DeliveryFailed, ProducerClosed, TimeoutError) as exc:
                logger.warning(
                    "Kafka did not acknowledge %d events: %s", len(events),
                    str(exc) or f"no answer within {ack_timeout:g} s",
                )  # fmt: skip
                metrics.gateway_events.labels(kind, "unavailable").inc(len(events))
                return _error(
                    503, f"Kafka did not acknowledge the events within {ack_timeout:g} s: they "
                    "may still land; send the same events again (the event ids keep it to one row)",
                    retriable=True, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )  # fmt: skip
        metrics.gateway_events.labels(kind, "accepted").inc(len(events))
        metrics.gateway_events.labels(kind, "rejected").inc(rejected)
        status = 422 if rejected == len(items) else 207 if rejected else 202
        result = IngestResult(accepted=len(items) - rejected, rejected=rejected, results=results)
        return Response(result.model_dump_json(), status_code=status, media_type="application/json")

    def stamp(item: Any, key: ApiKey | None, now: datetime, what: str) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise InvalidEvent(what, [("(item)", item, "must be a JSON object")])
        fields = {k: v for k, v in item.items() if k not in ("received_at", "source")}
        if key is not None and key.project:
            sent = fields.get("project")
            if sent is not None and sent != key.project:
                raise InvalidEvent(
                    what, [("project", sent, f"this key writes only to project {key.project!r}")]
                )
            fields["project"] = key.project
        fields["received_at"] = now
        return fields

    def feedback_from(shape: str | None) -> Callable[[Any, ApiKey | None, datetime], list[Any]]:
        def prepare(
            item: Any, key: ApiKey | None, now: datetime
        ) -> list[FeedbackEvent | TraceEvent]:
            payloads = to_events(shape, item) if shape else [item]
            events: list[FeedbackEvent | TraceEvent] = [
                FeedbackEvent.parse(stamp(fields, key, now, "FeedbackEvent")) for fields in payloads
            ]
            for event in events:
                time_bounds.check(event, now)
            return events

        return prepare

    def trace_prepare(
        item: Any, key: ApiKey | None, now: datetime
    ) -> list[FeedbackEvent | TraceEvent]:
        event = TraceEvent.parse(stamp(item, key, now, "TraceEvent"))
        time_bounds.check(event, now)
        return [event]

    ingest_errors = responses(INGEST, per_item=IngestResult)

    @app.post("/v1/feedback", status_code=202, response_model=IngestResult,
              responses={207: {"model": IngestResult}, **ingest_errors})  # fmt: skip
    async def post_feedback(request: Request) -> Response:
        """One FeedbackEvent, or an array of up to 1,000."""
        return await ingest(request, "feedback", feedback_from(None))

    @app.post("/v1/feedback/{shape}", status_code=202, response_model=IngestResult,
              responses={207: {"model": IngestResult}, **responses(
                  {**INGEST, 404: "No such shape: the error names the known ones."},
                  per_item=IngestResult)})  # fmt: skip
    async def post_feedback_shape(shape: str, request: Request) -> Response:
        """A hosted product's feedback payload (or an array of them)."""
        if shape not in SHAPES:
            raise HTTPException(
                404, f"unknown shape {shape!r}: use one of {', '.join(sorted(SHAPES))}"
            )
        return await ingest(request, "feedback", feedback_from(shape))

    @app.post("/v1/traces", status_code=202, response_model=IngestResult,
              responses={207: {"model": IngestResult}, **ingest_errors})  # fmt: skip
    async def post_traces(request: Request) -> Response:
        """One TraceEvent (a trace or a span), or an array of up to 1,000."""
        return await ingest(request, "traces", trace_prepare)

    async def select(query: str, pool: SqlPool = reads) -> Response:
        """Rows as a JSON array, from the SQL sandbox (raises StoreError: a 400 above)."""
        lines = await pool.run(query, fmt="JSONEachRow")
        body = b"[" + b",".join(line for line in lines.splitlines() if line.strip()) + b"]"
        return Response(body, media_type="application/json")

    def own_project(key: ApiKey | None, asked: str | None) -> str | None:
        if key is None or not key.project:
            return asked
        if asked is not None and asked != key.project:
            raise HTTPException(403, f"this key reads only project {key.project!r}")
        return key.project

    read_errors = {
        401: NO_KEY,
        403: "The key's scope is ingest, or it asks for another project than the key's.",
        503: "The store did not answer: try again later.",
    }

    @app.get("/v1/feedback", responses=responses({**read_errors, 422: "A filter is invalid "
             "(e.g. since=7 parsecs, limit=0): the error names it."}))  # fmt: skip
    async def get_feedback(
        request: Request,
        label: Annotated[list[str], Query(description="bad, good, edit or a custom label")] = [],  # noqa: B006
        kind: Annotated[list[str], Query(description="thumb, rating, correction...")] = [],  # noqa: B006
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
        key = await authenticate(request, "read")
        try:
            filters = InboxFilter(
                labels=tuple(label), kinds=tuple(kind), project=own_project(key, project),
                environment=environment, model=model, capability=capability, user_id=user_id,
                session_id=session_id, trace_id=trace_id, status=status,
                has_comment=has_comment, since=parse_since(since) if since else None,
                start=start, end=end, limit=limit,
            )  # fmt: skip
            query = inbox_sql(database, filters)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return await select(query)

    @app.get("/v1/traces/{trace_id}", responses=responses({**read_errors, 404: "No span and no "
             "feedback of this trace (in the key's project)."}))  # fmt: skip
    async def get_trace(trace_id: str, request: Request) -> Response:
        """A trace's spans and all its feedback."""
        key = await authenticate(request, "read")
        project = own_project(key, None)
        scope = f" AND project = {literal(project)}" if project else ""
        spans = await select(
            "SELECT span_id, parent_span_id, name, project, environment, model, capability, "  # noqa: S608
            "step, user_id, session_id, start_time, end_time, latency_ms, total_tokens, cost_usd, "
            f"status, error FROM {database}.traces FINAL WHERE trace_id = {literal(trace_id)}"
            f"{scope} ORDER BY start_time, span_id"
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
        key = await authenticate(request, "admin")
        if key is not None and key.project:  # made before admin keys took no project
            raise HTTPException(
                403, f"this admin key is bound to project {key.project!r} and SQL reads every "
                "project: use an admin key without a project (thumbline keys create --scope "
                "admin), and revoke this one",
            )  # fmt: skip
        body = await read_raw(request)
        return await select(body.decode("utf-8", errors="replace"), sql)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    waiting = problems

    @app.get("/readyz", responses={503: {"model": gateway_errors.Error,
             "description": "Kafka or the store does not answer (each reason)."}})  # fmt: skip
    async def readyz() -> Response:
        problems = []
        if not producer.running:
            problems.append("the Kafka producer is not running")
        try:
            await keys.refreshed()
        except Exception as exc:  # noqa: BLE001 (any store failure means not ready)
            problems.append(f"the key store did not answer: {exc}")
        problems.extend(waiting())
        if problems:
            return _error(
                503, "; ".join(problems), retriable=True,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )  # fmt: skip
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        """FastAPI's spec plus the request bodies the handlers read themselves."""
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)  # fmt: skip
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in (FeedbackEvent, TraceEvent):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema

        def one_or_many(name: str) -> dict[str, Any]:
            one = {"$ref": f"#/components/schemas/{name}"}
            many = {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_BATCH_EVENTS}
            body = {"schema": {"oneOf": [one, many]}}
            return {"required": True, "content": {"application/json": body}}

        paths = spec["paths"]
        paths["/v1/feedback"]["post"]["requestBody"] = one_or_many("FeedbackEvent")
        paths["/v1/traces"]["post"]["requestBody"] = one_or_many("TraceEvent")
        shaped = paths["/v1/feedback/{shape}"]["post"]
        shaped["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
        shaped["parameters"][0]["schema"] = {"type": "string", "enum": sorted(SHAPES)}
        # FastAPI documents a 422 wherever a route has parameters; a str in the path cannot fail
        paths["/v1/traces/{trace_id}"]["get"]["responses"].pop("422", None)
        if b"HTTPValidationError" not in orjson.dumps(paths):  # every 422 is ours: {"error"}
            components.pop("HTTPValidationError", None)
            components.pop("ValidationError", None)
        paths["/v1/sql"]["post"]["requestBody"] = {
            "required": True, "content": {"text/plain": {"schema": {"type": "string"}}},
        }  # fmt: skip
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        metrics.gateway_requests.labels(path, str(response.status_code)).inc()
        return response

    return app


def _id(event: FeedbackEvent | TraceEvent) -> str:
    return event.event_id if isinstance(event, FeedbackEvent) else (event.span_id or event.trace_id)


async def check_exposure(keys: KeyRing, host: str) -> None:
    """Refuse to serve beyond loopback with no API key; say so when auth is off."""
    if await asyncio.to_thread(keys.any_keys):
        return
    if not is_loopback(host):
        raise ConfigError(
            f"the gateway would listen on {host} with no API key: create one "
            "(thumbline keys create --scope ingest --project NAME) or bind to 127.0.0.1"
        )
    logger.warning(
        "gateway auth is off: no API key exists and it listens on loopback only "
        "(thumbline keys create turns it on)"
    )


class _Server(uvicorn.Server):
    """uvicorn inside a process that owns its own signal handling (``thumbline up``)."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


class Gateway:
    """Serves the app with uvicorn on the running event loop; ``stop()`` is safe twice.

    Call :func:`check_exposure` first (``thumbline.server.gateway`` does, before it
    connects to Kafka): this class does not check who may reach it.
    """

    def __init__(self, app: FastAPI, *, host: str, port: int) -> None:
        self._app, self._host, self._port = app, host, port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> Gateway:
        # Bound here, not by uvicorn: a port in use is then an error we can word
        # (uvicorn would exit the process).
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # IPPROTO_TCP said explicitly: asyncio sets TCP_NODELAY on accepted sockets only
        # then, and without it every keep-alive response waits 40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the gateway cannot listen on {self._host}:{self._port}: {exc.strerror}; "
                "set THUMBLINE_GATEWAY_PORT (0: any free port)"
            ) from None
        sock.set_inheritable(True)
        config = uvicorn.Config(
            self._app, log_level="warning", access_log=False, lifespan="off",
        )  # fmt: skip
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve([sock]), name="thumbline-gateway")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError(f"the gateway stopped at start on {self._host}:{self._port}")
            await asyncio.sleep(0.02)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None and self._task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
