"""The HTTP ingest gateway: feedback and traces over HTTP, published to Kafka.

For browsers, mobile apps and services in other languages. ``thumbline up``
runs it beside the stream; ``thumbline gateway`` runs it alone against a
configured broker and store.

- ``POST /v1/feedback`` (one event or an array of up to 1,000),
  ``POST /v1/feedback/{shape}`` (a hosted product's payload: trulayer,
  braintrust, honeyhive, axiom, attributes; see :mod:`thumbline.schemas.shapes`),
  ``POST /v1/traces`` and ``POST /otlp/v1/traces`` (OTLP/HTTP from an OpenTelemetry
  SDK or Collector: :mod:`thumbline.producers.gateway_otlp`); hosted products' own
  paths (Axiom, Braintrust, a trace's PATCH: :mod:`thumbline.producers.gateway_vendors`).
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
  ``source`` (derived from its kind): a client cannot forge them. ``annotator``
  (who gave it) comes from the key: an end users' key writes ``end_user`` only
  and refuses feedback that says otherwise; see :func:`stamp_annotator`.
- Auth: API keys (:mod:`thumbline.keys`) as ``Authorization: Bearer tl_...``
  or ``X-API-Key``. Until a key exists, a gateway bound to loopback accepts
  requests without one (and says so at start); bound elsewhere it refuses to
  start without keys.
- Limits: request bodies over ``gateway_max_body_bytes`` get 413; a key over
  ``gateway_rate_limit`` events per second gets 429 with ``Retry-After``.
- Errors: ``{"error": ...}`` (:mod:`thumbline.producers.gateway_errors`), with
  ``"retriable": true`` on 429 and 503; the OpenAPI spec lists each route's.
- Every answer carries a strict Content-Security-Policy and the other security
  headers (:mod:`thumbline.producers.gateway_headers`).
- ``GET /healthz`` (the process answers), ``GET /readyz`` (Kafka and the key
  store reachable), ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from thumbline.errors import SqlRefused, StoreError
from thumbline.keys import ApiKey, KeyRing
from thumbline.metrics import Metrics
from thumbline.producers import gateway_errors
from thumbline.producers.gateway_charts import add_chart_routes
from thumbline.producers.gateway_core import (
    RETRY_AFTER_SECONDS,
    GatewayCore,
    RateLimiter,
    Unacknowledged,
    error,
    is_loopback,
    stamp_annotator,
)
from thumbline.producers.gateway_docs import add_docs_routes
from thumbline.producers.gateway_errors import INGEST, responses
from thumbline.producers.gateway_headers import add_security_headers
from thumbline.producers.gateway_openapi import openapi_of
from thumbline.producers.gateway_otlp import add_otlp_routes
from thumbline.producers.gateway_reads import SqlError, add_read_routes
from thumbline.producers.gateway_scores import add_score_routes
from thumbline.producers.gateway_vendors import add_vendor_routes
from thumbline.producers.gateway_web import add_web_routes
from thumbline.producers.kafka import FeedbackProducer
from thumbline.schemas import FeedbackEvent, InvalidEvent, TimeBounds, TraceEvent
from thumbline.schemas.shapes import SHAPES, to_events
from thumbline.schemas.wire import MAX_BATCH_EVENTS
from thumbline.sqlpool import SqlPool

__all__ = ["RateLimiter", "SqlError", "build_app", "is_loopback"]

logger = logging.getLogger(__name__)

#: Fields only thumbline sets, dropped from a body: the gateway stamps ``received_at`` and
#: derives ``source``; the join sets ``client_event_id`` (a vote) and ``score_config_version``.
#: Most FeedbackEvents one hosted product's payload may stand for (Braintrust's scores,
#: HoneyHive's actions: a measurement each).
MAX_PAYLOAD_EVENTS = 100
_SERVER_FIELDS = frozenset({"received_at", "source", "client_event_id", "score_config_version"})


class ItemResult(BaseModel):
    index: int
    status: Literal["accepted", "rejected"]
    event_ids: list[str] = []
    error: str | None = None


class IngestResult(BaseModel):
    accepted: int
    rejected: int
    results: list[ItemResult]


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
    otlp_project: str | None = None,
    capture_content: bool = True,
    score_sql: Callable[[str, bool], bytes] | None = None,
    rate_windows: tuple[int, ...] = (60, 300, 3600),
    rate_annotators: tuple[str, ...] = ("end_user",),
) -> FastAPI:
    """The gateway's ASGI app (``producer`` and the pools started by the caller).

    ``reads`` serves the inbox and trace reads, ``sql`` serves ``POST /v1/sql``:
    separate threads and clients, so a slow admin query never delays a read.
    ``ack_timeout`` bounds the whole wait for Kafka's acknowledgement of a
    request's events: past it the answer is 503, never a late 202.
    ``time_bounds``: how far an event's time may lie from the server's clock
    (422 naming the field beyond). ``otlp_project``: the project of OTLP spans sent
    without a project-bound key (None: their ``service.name``); ``capture_content``
    False drops the question and the answer. ``score_sql`` reaches the score configs
    (:mod:`thumbline.producers.gateway_scores`; None: no such routes). ``problems`` says
    what the rest of the process waits for (Kafka, the store): ``/readyz`` is not ready
    meanwhile. ``rate_windows``: the rate window sizes the stream keeps, the base first;
    ``rate_annotators``: whose feedback they count.
    """
    app = FastAPI(
        title="thumbline gateway",
        version="1",
        description="Feedback and traces over HTTP; a 202 means Kafka has them.",
        docs_url=None,  # gateway_docs serves /docs from the package, not from a CDN
        redoc_url=None,
    )
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "PATCH"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key"],
            max_age=600,
        )
    core = GatewayCore(
        producer=producer, keys=keys, metrics=metrics, host=host, max_body_bytes=max_body_bytes,
        rate_limit=rate_limit, ack_timeout=ack_timeout, time_bounds=time_bounds,
    )  # fmt: skip

    @app.exception_handler(HTTPException)
    async def httperror(request: Request, exc: HTTPException) -> JSONResponse:
        extra = {"retriable": True} if exc.status_code in (429, 503) else {}
        return error(exc.status_code, str(exc.detail), headers=exc.headers, **extra)

    @app.exception_handler(Unacknowledged)
    async def unacknowledged(request: Request, exc: Unacknowledged) -> JSONResponse:
        return error(503, str(exc), retriable=True,
                     headers={"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # the same body as every other error: {"error": ...}, naming each field
        problems = [
            f"{'.'.join(str(part) for part in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
            for e in exc.errors()
        ]  # fmt: skip
        return error(422, "; ".join(problems))

    @app.exception_handler(StoreError)
    async def store_refused(request: Request, exc: StoreError) -> JSONResponse:
        """400 for SQL the sandbox refused (or stopped at a limit) and SQL ClickHouse refused;
        503 while the store does not answer."""
        if exc.retriable:
            return error(
                503, f"the store did not answer: {exc}", retriable=True,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )  # fmt: skip
        if isinstance(exc, SqlRefused):
            return error(400, str(exc), reason=exc.reason, code=exc.code)
        return error(400, f"ClickHouse refused the query: {exc}", reason="clickhouse",
                      code=exc.code)  # fmt: skip

    async def ingest(
        request: Request,
        kind: Literal["feedback", "traces"],
        prepare: Callable[[Any, ApiKey | None, datetime], list[FeedbackEvent | TraceEvent]],
        items_of: Callable[[Any], list[Any]] | None = None,
        answer: Callable[[list[Any], IngestResult], dict[str, Any]] | None = None,
    ) -> Response:
        """``items_of``: the items of a product's envelope (InvalidEvent: 422);
        ``answer``: fields a product's SDK reads, added to the result."""
        key = await core.authenticate(request, "ingest")
        body = await core.read_json(request)
        try:
            items = items_of(body) if items_of else body if isinstance(body, list) else [body]
        except InvalidEvent as exc:
            raise HTTPException(422, exc.reason) from None
        if not items:
            raise HTTPException(422, "the batch is empty")
        if len(items) > MAX_BATCH_EVENTS:
            raise HTTPException(413, f"at most {MAX_BATCH_EVENTS} items per request")
        if (refused := core.charge(key, len(items))) is not None:
            return refused
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
        # a hosted product's payload is several events: the rate counts every one
        beyond = len(events) - (len(items) - rejected)
        if beyond > 0 and (refused := core.charge(key, beyond)) is not None:
            return refused
        await core.publish(kind, events)
        metrics.gateway_events.labels(kind, "rejected").inc(rejected)
        status = 422 if rejected == len(items) else 207 if rejected else 202
        result = IngestResult(accepted=len(items) - rejected, rejected=rejected, results=results)
        if answer is not None:
            extra = orjson.dumps({**result.model_dump(mode="json"), **answer(items, result)})
            return Response(extra, status_code=status, media_type="application/json")
        return Response(result.model_dump_json(), status_code=status, media_type="application/json")

    def stamp(item: Any, key: ApiKey | None, now: datetime, what: str) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise InvalidEvent(what, [("(item)", item, "must be a JSON object")])
        fields = {k: v for k, v in item.items() if k not in _SERVER_FIELDS}
        if what == "FeedbackEvent":
            stamp_annotator(fields, key, what)  # who gave it: the key says
        else:
            fields.pop("annotator", None)
        if key is not None and key.project:
            sent = fields.get("project")
            if sent is not None and sent != key.project:
                raise InvalidEvent(
                    what, [("project", sent, f"this key writes only to project {key.project!r}")]
                )
            fields["project"] = key.project
        fields["received_at"] = now
        return fields

    def feedback_from(
        shape: str | Callable[[Any], list[dict[str, Any]]] | None,
    ) -> Callable[[Any, ApiKey | None, datetime], list[Any]]:
        """``shape``: a name of :data:`SHAPES`, a function mapping one item, or None."""

        def prepare(
            item: Any, key: ApiKey | None, now: datetime
        ) -> list[FeedbackEvent | TraceEvent]:
            if shape is None:
                payloads = [item]
            else:
                payloads = to_events(shape, item) if isinstance(shape, str) else shape(item)
                if len(payloads) > MAX_PAYLOAD_EVENTS:
                    raise InvalidEvent("payload", [("(item)", None, (
                        f"carries {len(payloads)} measurements; at most {MAX_PAYLOAD_EVENTS} in "
                        "one payload: split it"))])  # fmt: skip
            events: list[FeedbackEvent | TraceEvent] = [
                FeedbackEvent.parse(stamp(fields, key, now, "FeedbackEvent")) for fields in payloads
            ]
            for event in events:
                core.time_bounds.check(event, now)
            return events

        return prepare

    def trace_prepare(
        item: Any, key: ApiKey | None, now: datetime
    ) -> list[FeedbackEvent | TraceEvent]:
        event = TraceEvent.parse(stamp(item, key, now, "TraceEvent"))
        core.time_bounds.check(event, now)
        if not capture_content:  # THUMBLINE_CAPTURE_CONTENT=false: not even in Kafka
            event = event.model_copy(update={"input": None, "output": None})
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

    add_otlp_routes(app, core, project=otlp_project, capture_content=capture_content)
    add_vendor_routes(app, ingest=ingest, feedback=feedback_from, result=IngestResult)
    add_read_routes(app, core, reads=reads, sql=sql, database=database)
    add_chart_routes(app, core, reads=reads, database=database, windows=rate_windows,
                     annotators=rate_annotators)  # fmt: skip
    add_docs_routes(app)
    add_web_routes(app)
    if score_sql is not None:
        add_score_routes(app, core, sql=score_sql, database=database)

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
            return error(
                503, "; ".join(problems), retriable=True,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )  # fmt: skip
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: openapi_of(app)  # type: ignore[method-assign]

    @app.middleware("http")
    async def count(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "other")
        metrics.gateway_requests.labels(path, str(response.status_code)).inc()
        return response

    add_security_headers(app)  # on every answer: outside CORS, the counter and a 500
    return app


def _id(event: FeedbackEvent | TraceEvent) -> str:
    return event.event_id if isinstance(event, FeedbackEvent) else (event.span_id or event.trace_id)
