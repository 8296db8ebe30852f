"""OpenTelemetry payloads made the way an instrumented application makes them.

Spans come from the real ``opentelemetry-sdk``; requests are encoded by the OTLP
exporters' own encoder (``encode_spans``: the bytes the OTLP/HTTP exporter
posts and the Collector's ``otlp_proto`` Kafka encoding writes). OTLP/JSON is
protobuf's JSON mapping with the ids in hex, as the OTLP specification and the
Collector's ``otlp_json`` write it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

QUESTION = "What is the refund window for annual plans?"
ANSWER = "Annual plans can be refunded within 30 days of purchase."


def provider(service: str = "support-bot", environment: str = "production") -> tuple[
    TracerProvider, InMemorySpanExporter
]:  # fmt: skip
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(
        resource=Resource.create(
            {"service.name": service, "deployment.environment.name": environment}
        )
    )
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return tracer_provider, exporter


def traced_chat(
    tracer_provider: TracerProvider,
    *,
    user: str = "user-1",
    session: str = "session-1",
    model: str = "gpt-4o-mini",
    question: str = QUESTION,
    answer: str = ANSWER,
    evaluation: dict[str, Any] | None = None,
    fail: bool = False,
) -> tuple[str, str]:
    """One chat as the GenAI instrumentations trace it: a root span (the capability)
    and a ``chat`` span with the GenAI attributes. Returns (trace id, chat span id) in hex."""
    tracer = tracer_provider.get_tracer("thumbline.tests")
    with tracer.start_as_current_span("answer-question") as root:
        root.set_attribute("user.id", user)
        root.set_attribute("session.id", session)
        with tracer.start_as_current_span(f"chat {model}") as chat:
            chat.set_attributes({
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": model,
                "gen_ai.response.model": f"{model}-2024-07-18",
                "gen_ai.conversation.id": session,
                "gen_ai.usage.input_tokens": 31,
                "gen_ai.usage.output_tokens": 12,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.input.messages": orjson.dumps([
                    {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                    {"role": "user", "parts": [{"type": "text", "content": question}]},
                ]).decode(),
                "gen_ai.output.messages": orjson.dumps([
                    {"role": "assistant", "parts": [{"type": "text", "content": answer}],
                     "finish_reason": "stop"},
                ]).decode(),
            })  # fmt: skip
            if evaluation is not None:
                chat.add_event("gen_ai.evaluation.result", evaluation)
            if fail:
                chat.set_attribute("error.type", "timeout")
                chat.set_status(Status(StatusCode.ERROR, "the model timed out"))
            context = chat.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def request_of(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


def otlp_proto(spans: Sequence[ReadableSpan]) -> bytes:
    return request_of(spans).SerializeToString()


def otlp_json(spans: Sequence[ReadableSpan]) -> bytes:
    """OTLP/JSON: camelCase names, enums as numbers, 64-bit integers as strings, hex ids."""
    data = json_format.MessageToDict(request_of(spans), use_integers_for_enums=True)
    for resource in data.get("resourceSpans", []):
        for scope in resource.get("scopeSpans", []):
            for span in scope.get("spans", []):
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return orjson.dumps(data)
