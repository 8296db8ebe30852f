"""OpenTelemetry traces in: an OTLP ``ExportTraceServiceRequest`` as TraceEvents and FeedbackEvents.

What the Collector's Kafka exporter writes (``otlp_proto``, ``otlp_json``) and
what an SDK posts over OTLP/HTTP (``application/x-protobuf``, ``application/json``)
is one request of many spans of many traces. :func:`decode_request` reads it,
:func:`events_from_request` maps each span (the table is in
:mod:`thumbline.schemas.otlp_mapping` and the README; the feedback in
:mod:`thumbline.schemas.otlp_feedback`):

- every span becomes a :class:`TraceEvent` (the join merges a trace's spans);
- a ``gen_ai.evaluation.result`` span event becomes a FeedbackEvent from an
  evaluator, about the span it sits on;
- ``user_feedback``-style attributes on a span or a span event become end-user
  feedback, as the ``attributes`` shape reads them.

A span or event that does not map (bad ids, a field over its bound) is
rejected alone, with the reason; the rest of the request is kept. Only the
protobuf and JSON decoding need ``opentelemetry-proto`` (a server dependency):
this module is not imported by the SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from thumbline.schemas.errors import InvalidEvent, WireError
from thumbline.schemas.feedback import FeedbackEvent
from thumbline.schemas.otlp_feedback import feedback_of
from thumbline.schemas.otlp_json import NotOtlpJson, resources_from_json
from thumbline.schemas.otlp_mapping import (
    PlainEvent,
    PlainResource,
    PlainSpan,
    SpanView,
    trace_of,
    value_of,
)
from thumbline.schemas.trace import TraceEvent

Encoding = Literal["otlp_proto", "otlp_json"]
ENCODINGS: tuple[Encoding, ...] = ("otlp_proto", "otlp_json")
#: Spans in one request or Kafka message, at most.
MAX_SPANS = 10_000
#: Span events (of all spans) looked at in one request, at most.
MAX_SPAN_EVENTS = 50_000

__all__ = [
    "ENCODINGS",
    "MAX_SPANS",
    "Encoding",
    "ExportTraceServiceResponse",
    "Mapped",
    "Rejected",
    "decode_request",
    "events_from_request",
    "fields_from_request",
    "span_count",
]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A span, or an event of a span, that did not map: what it was and why."""

    where: str  # "span 5b8aa5a2... of trace 5b8e..." or "event 2 of span ..."
    reason: str
    fields: dict[str, Any]  # what it mapped to (for a dead letter)


@dataclass(slots=True)
class Mapped:
    """What one request became."""

    traces: list[TraceEvent] = field(default_factory=list)
    feedback: list[FeedbackEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    spans: int = 0
    rejected_spans: int = 0

    @property
    def events(self) -> list[TraceEvent | FeedbackEvent]:
        return [*self.traces, *self.feedback]


def decode_request(body: bytes, encoding: Encoding) -> list[PlainResource]:
    """One ``ExportTraceServiceRequest`` from its bytes, as plain spans per resource.

    JSON follows OTLP/JSON: lowerCamelCase names (the proto names are read too),
    ids as hex (base64 too), 64-bit integers as strings or numbers, enums as numbers
    or names.

    Raises:
        WireError: ``bad_otlp`` (not a request in this encoding, with the parser's
            words) or ``too_many_spans``.
    """
    if encoding == "otlp_json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise WireError("bad_otlp", f"not OTLP/JSON: not JSON: {exc}") from None
        try:
            resources = resources_from_json(data)
        except NotOtlpJson as exc:
            raise WireError("bad_otlp", f"not OTLP/JSON: {exc}") from None
    else:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            hint = " (it looks like JSON: send it as otlp_json)" if body[:1] == b"{" else ""
            raise WireError("bad_otlp", f"not OTLP protobuf: {exc}{hint}") from None
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        if spans > MAX_SPANS:  # counted before anything is converted
            raise WireError("too_many_spans", f"{spans} spans in one request; at most {MAX_SPANS}")
        resources = [_plain_resource(r) for r in request.resource_spans]
    spans = span_count(resources)
    if spans > MAX_SPANS:
        raise WireError("too_many_spans", f"{spans} spans in one request; at most {MAX_SPANS}")
    return resources


def span_count(resources: list[PlainResource]) -> int:
    return sum(len(r.spans) for r in resources)


def _attrs(items: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in items}


def _plain_resource(resource_spans: Any) -> PlainResource:
    spans = [
        (scope_spans.scope.name, PlainSpan(
            span.trace_id.hex() if len(span.trace_id) == 16 else "",
            span.span_id.hex() if len(span.span_id) == 8 else "",
            span.parent_span_id.hex() if len(span.parent_span_id) == 8 else "",
            span.name, span.kind, span.start_time_unix_nano, span.end_time_unix_nano,
            span.status.code, span.status.message, _attrs(span.attributes),
            [PlainEvent(e.name, e.time_unix_nano, _attrs(e.attributes)) for e in span.events],
        ))
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]  # fmt: skip
    return PlainResource(_attrs(resource_spans.resource.attributes), spans)


@dataclass(frozen=True, slots=True)
class Item:
    """One event a span maps to, not validated yet (``problem``: it could not be mapped)."""

    span: int  # the span's position in the request
    where: str
    kind: Literal["traces", "feedback"]
    fields: dict[str, Any]
    problem: str | None = None


def fields_from_request(
    request: list[PlainResource],
    *,
    project: str | None = None,
    received_at: datetime | None = None,
    capture_content: bool = True,
) -> Iterator[Item]:
    """The fields of each span's TraceEvent and of the feedback it carries, unvalidated.

    ``project``: every span's project (an API key's, or a configured one); None:
    the resource's ``service.name``. ``received_at``: stamped on every event.
    ``capture_content``: False leaves the question and the answer out.

    Raises:
        WireError: ``too_many_spans`` when the spans carry over MAX_SPAN_EVENTS events.
    """
    looked_at = 0
    for n, view in enumerate(_spans(request, project)):
        fields = trace_of(view, capture_content=capture_content)
        if received_at is not None:
            fields["received_at"] = received_at
        yield Item(n, view.where, "traces", fields)
        looked_at += len(view.span.events)
        if looked_at > MAX_SPAN_EVENTS:
            raise WireError("too_many_spans", f"over {MAX_SPAN_EVENTS} span events in one request")
        try:
            items = feedback_of(view)
        except InvalidEvent as exc:
            yield Item(n, view.where, "feedback", {}, exc.reason)
            continue
        for where, item in items:
            if received_at is not None:
                item["received_at"] = received_at
            yield Item(n, where, "feedback", item)


def events_from_request(
    request: list[PlainResource],
    *,
    project: str | None = None,
    received_at: datetime | None = None,
    capture_content: bool = True,
) -> Mapped:
    """Each span as a validated TraceEvent, and the feedback its events and attributes
    carry; what does not validate is rejected alone (see :func:`fields_from_request`)."""
    out = Mapped()
    bad: set[int] = set()
    for item in fields_from_request(
        request, project=project, received_at=received_at, capture_content=capture_content
    ):
        out.spans = max(out.spans, item.span + 1)
        if item.problem is not None:
            out.rejected.append(Rejected(item.where, item.problem, item.fields))
            bad.add(item.span)
            continue
        try:
            if item.kind == "traces":
                out.traces.append(TraceEvent.parse(item.fields))
            else:
                out.feedback.append(FeedbackEvent.parse(item.fields))
        except InvalidEvent as exc:
            out.rejected.append(Rejected(item.where, exc.reason, item.fields))
            bad.add(item.span)
    out.rejected_spans = len(bad)
    return out


def _spans(request: list[PlainResource], project: str | None) -> Iterator[SpanView]:
    for resource in request:
        for scope, span in resource.spans:
            yield SpanView(span, resource.attributes, scope, project)
