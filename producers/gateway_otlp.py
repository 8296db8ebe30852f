"""OTLP/HTTP on the gateway: ``POST /otlp/v1/traces``, what an OpenTelemetry SDK or Collector sends.

Point an exporter at it with ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://HOST:PORT/otlp/v1/traces``
(or ``OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:PORT/otlp``) and an ingest key in
``OTEL_EXPORTER_OTLP_HEADERS=x-api-key=tl_...``. The path is under ``/otlp``
because ``/v1/traces`` is thumbline's own JSON route.

As the OTLP specification asks: ``application/x-protobuf`` or ``application/json``
bodies, gzip or not; the answer is an ``ExportTraceServiceResponse`` in the
request's encoding, with ``partial_success`` counting the spans refused (and
why) while the rest are kept; errors are a ``google.rpc.Status`` in the same
encoding, and 429 and 503 carry ``Retry-After`` (exporters retry them). As on
every ingest route, 200 means Kafka acknowledged the events.

Who gave the feedback comes from the key
(:func:`~thumbline.producers.gateway_core.stamp_annotator`): a
``gen_ai.evaluation.result`` is an evaluator's, so an end users' key has it
refused (counted in ``partial_success``, the span itself kept); a key made
with ``--annotator evaluator`` sends it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from fastapi import FastAPI, HTTPException, Request, Response
from google.protobuf import json_format

from thumbline.keys import ApiKey
from thumbline.producers.gateway_core import (
    RETRY_AFTER_SECONDS,
    GatewayCore,
    Unacknowledged,
    stamp_annotator,
)
from thumbline.schemas import Annotator, FeedbackEvent, InvalidEvent, WireError
from thumbline.schemas.otlp import (
    Encoding,
    ExportTraceServiceResponse,
    decode_request,
    events_from_request,
    span_count,
)

PATH = "/otlp/v1/traces"
MEDIA: dict[str, Encoding] = {
    "application/x-protobuf": "otlp_proto",
    "application/json": "otlp_json",
}
#: gRPC status codes for the HTTP answers (google.rpc.Code)
GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 415: 3, 429: 8, 503: 14}
#: Reasons of refused spans named in ``partial_success.error_message``, at most.
MAX_REASONS = 5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def status_body(code: int, message: str, encoding: Encoding) -> bytes:
    """A ``google.rpc.Status`` (code, message) in the request's encoding."""
    if encoding == "otlp_json":
        return orjson.dumps({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def add_otlp_routes(
    app: FastAPI, core: GatewayCore, *, project: str | None, capture_content: bool
) -> None:
    """``project``: the project of spans sent without a project-bound key (None: each
    span's ``service.name``)."""

    def answer(status: int, message: str, encoding: Encoding, retry: int | None = None) -> Response:
        headers = {"Retry-After": str(retry)} if retry is not None else None
        return Response(
            status_body(GRPC_CODES.get(status, 2), message, encoding), status_code=status,
            media_type=_media(encoding), headers=headers,
        )  # fmt: skip

    @app.post(
        PATH,
        summary="OTLP/HTTP traces",
        responses={
            200: {"description": "ExportTraceServiceResponse: partial_success counts the spans "
                  "refused and says why; the rest are in Kafka."},
            400: {"description": "Not an OTLP request in the declared encoding (Status)."},
            401: {"description": "No key, or an unknown or revoked key (Status)."},
            403: {"description": "The key's scope is not ingest (Status)."},
            413: {"description": "The body (inflated) is over the limit (Status)."},
            415: {"description": "Not application/x-protobuf or application/json, or not "
                  "gzip (Status)."},
            429: {"description": "Over the key's rate: retry after Retry-After (Status)."},
            503: {"description": "Kafka or the key store did not answer: retry after "
                  "Retry-After (Status)."},
        },
    )  # fmt: skip
    async def otlp_traces(request: Request) -> Response:
        """Spans from an OpenTelemetry SDK or Collector (OTLP/HTTP, protobuf or JSON)."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        encoding = MEDIA.get(media)
        if encoding is None:
            return answer(415, f"Content-Type {media or '(none)'!r}: send "
                          "application/x-protobuf or application/json", "otlp_json")  # fmt: skip
        try:
            key = await core.authenticate(request, "ingest")
            body = await core.read_raw(request, gzip_ok=True)
        except HTTPException as exc:
            retry = RETRY_AFTER_SECONDS if exc.status_code == 503 else None
            return answer(exc.status_code, str(exc.detail), encoding, retry)
        try:
            otlp = decode_request(body, encoding)
        except WireError as exc:
            return answer(413 if exc.reason == "too_many_spans" else 400, exc.detail, encoding)
        spans = span_count(otlp)
        refused = core.charge(key, max(1, spans))
        if refused is not None:
            retry = int(refused.headers["Retry-After"])
            return answer(429, f"over {core.limiter.rate:g} spans a second for this key", encoding,
                          retry)  # fmt: skip
        now = datetime.now(UTC)
        try:
            mapped = events_from_request(
                otlp, project=key.project if key and key.project else project,
                received_at=now, capture_content=capture_content,
            )  # fmt: skip
        except WireError as exc:
            return answer(413, exc.detail, encoding)
        reasons = [f"{r.where}: {r.reason}" for r in mapped.rejected]
        events = []
        dropped = set()  # spans an event of which was refused here
        for event in mapped.events:
            try:
                core.time_bounds.check(event, now)
                if isinstance(event, FeedbackEvent):
                    event = _from_the_key(event, key)
            except InvalidEvent as exc:
                reasons.append(f"{event.trace_id}/{event.span_id}: {exc.reason}")
                dropped.add(event.span_id)
                continue
            events.append(event)
        try:
            await core.publish("traces", events)
        except Unacknowledged as exc:
            return answer(503, str(exc), encoding, RETRY_AFTER_SECONDS)
        core.metrics.gateway_events.labels("traces", "rejected").inc(len(reasons))
        result = ExportTraceServiceResponse()
        rejected = mapped.rejected_spans + len(dropped)
        if reasons:
            result.partial_success.rejected_spans = rejected
            more = f" (and {len(reasons) - MAX_REASONS} more)" if len(reasons) > MAX_REASONS else ""
            result.partial_success.error_message = "; ".join(reasons[:MAX_REASONS]) + more
        if encoding == "otlp_json":
            content = orjson.dumps(json_format.MessageToDict(result))
        else:
            content = result.SerializeToString()
        return Response(content, media_type=_media(encoding))


def _from_the_key(event: FeedbackEvent, key: ApiKey | None) -> FeedbackEvent:
    """``event`` with the annotator its key gives it (raises InvalidEvent: an end users'
    key sent an evaluation result, which is a judge's)."""
    fields: dict[str, object] = {"annotator": event.annotator.value}
    stamp_annotator(fields, key, "FeedbackEvent")
    if fields["annotator"] == event.annotator:
        return event
    return event.model_copy(update={"annotator": Annotator(str(fields["annotator"]))})


def _media(encoding: Encoding) -> str:
    return "application/json" if encoding == "otlp_json" else "application/x-protobuf"
