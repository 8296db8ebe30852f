"""OTLP requests, as the OpenTelemetry SDK and the Collector write them, become thumbline events."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.otel import ANSWER, QUESTION, otlp_json, otlp_proto, provider, traced_chat
from thumbline.schemas import WireError
from thumbline.schemas.otlp import MAX_SPANS, decode_request, events_from_request


@pytest.fixture
def chat():
    tracer_provider, exporter = provider()
    trace_id, span_id = traced_chat(
        tracer_provider,
        evaluation={
            "gen_ai.evaluation.name": "relevance",
            "gen_ai.evaluation.score.value": 0.25,
            "gen_ai.evaluation.score.label": "irrelevant",
            "gen_ai.evaluation.explanation": "The answer is about monthly plans.",
        },
    )
    return trace_id, span_id, exporter.get_finished_spans()


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
def test_a_traced_chat_maps_to_the_join_attributes_in_either_encoding(chat, encoding):
    trace_id, span_id, spans = chat
    body = otlp_proto(spans) if encoding == "otlp_proto" else otlp_json(spans)
    mapped = events_from_request(decode_request(body, encoding))
    assert mapped.rejected == [] and mapped.spans == 2
    by_span = {t.span_id: t for t in mapped.traces}
    root = next(t for t in mapped.traces if t.parent_span_id is None)
    llm = by_span[span_id]
    assert {t.trace_id for t in mapped.traces} == {trace_id}
    assert (root.project, root.environment, root.capability) == (
        "support-bot", "production", "answer-question",
    )  # fmt: skip
    assert (root.user_id, root.session_id) == ("user-1", "session-1")
    assert llm.parent_span_id == root.span_id and llm.capability is None
    assert llm.model == "gpt-4o-mini-2024-07-18"  # the response's model before the request's
    assert (llm.input_tokens, llm.output_tokens, llm.total_tokens) == (31, 12, 43)
    assert llm.conversation_id == "session-1"
    assert llm.attributes["gen_ai.provider.name"] == "openai"
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert llm.start_time is not None and llm.latency_ms is not None
    assert (llm.input, llm.output) == (QUESTION, ANSWER)  # the last user message, the answer


def test_an_evaluation_event_is_feedback_from_an_evaluator_about_its_span(chat):
    trace_id, span_id, spans = chat
    mapped = events_from_request(decode_request(otlp_proto(spans), "otlp_proto"))
    (feedback,) = mapped.feedback
    assert (feedback.trace_id, feedback.span_id) == (trace_id, span_id)
    assert feedback.annotator == "evaluator"
    assert (feedback.name, feedback.kind, feedback.score) == ("relevance", "score", 0.25)
    assert feedback.label == "irrelevant"
    assert feedback.comment == "The answer is about monthly plans."
    assert feedback.project == "support-bot"  # the join gives it the trace's user and the rest
    # the same request read again gives the same event: a replay makes no second row
    again = events_from_request(decode_request(otlp_proto(spans), "otlp_proto"))
    assert again.feedback[0].event_id == feedback.event_id
    assert again.feedback[0].ts == feedback.ts


def test_user_feedback_attributes_on_a_span_are_end_user_feedback():
    tracer_provider, exporter = provider()
    tracer = tracer_provider.get_tracer("t")
    with tracer.start_as_current_span("answer") as span:
        span.set_attribute("user_feedback", "negative")
        span.set_attribute("user_feedback_comment", "wrong plan")
        span.add_event("feedback", {"user_feedback_rating": 2})
    mapped = events_from_request(
        decode_request(otlp_proto(exporter.get_finished_spans()), "otlp_proto")
    )
    kinds = sorted((f.kind, f.label) for f in mapped.feedback)
    assert kinds == [("rating", "bad"), ("thumb", "bad")]
    assert all(f.annotator == "end_user" for f in mapped.feedback)
    assert next(f for f in mapped.feedback if f.kind == "thumb").comment == "wrong plan"


def test_a_project_given_by_the_key_overrides_service_name(chat):
    _, _, spans = chat
    mapped = events_from_request(decode_request(otlp_proto(spans), "otlp_proto"), project="billing")
    assert {e.project for e in mapped.events} == {"billing"}
    assert mapped.traces[0].attributes["service.name"] == "support-bot"


def test_content_capture_off_leaves_the_question_and_answer_out(chat):
    _, _, spans = chat
    mapped = events_from_request(
        decode_request(otlp_proto(spans), "otlp_proto"), capture_content=False
    )
    assert all(t.input is None and t.output is None for t in mapped.traces)


def test_a_failed_span_is_an_error_with_the_status_message():
    tracer_provider, exporter = provider()
    traced_chat(tracer_provider, fail=True)
    mapped = events_from_request(
        decode_request(otlp_proto(exporter.get_finished_spans()), "otlp_proto")
    )
    failed = [t for t in mapped.traces if t.status == "error"]
    assert [t.error for t in failed] == ["the model timed out"]


def test_the_specification_example_in_otlp_json_with_upper_case_hex_ids():
    body = orjson.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name",
                                     "value": {"stringValue": "my.service"}}]},
        "scopeSpans": [{"scope": {"name": "my.library", "version": "1.0.0"}, "spans": [{
            "traceId": "5B8EFFF798038103D269B633813FC60C", "spanId": "EEE19B7EC3C1B174",
            "parentSpanId": "EEE19B7EC3C1B173", "name": "I'm a server span",
            "startTimeUnixNano": 1544712660000000000, "endTimeUnixNano": "1544712661000000000",
            "kind": 2, "status": {"code": "STATUS_CODE_OK"},
            "attributes": [{"key": "my.span.attr", "value": {"stringValue": "some value"}}],
        }]}],
    }]})  # fmt: skip
    (trace,) = events_from_request(decode_request(body, "otlp_json")).traces
    assert (trace.trace_id, trace.span_id) == ("5b8efff798038103d269b633813fc60c",
                                                "eee19b7ec3c1b174")  # fmt: skip
    assert trace.project == "my.service" and trace.latency_ms == 1000.0
    assert trace.status == "ok" and trace.attributes["otel.span.kind"] == "server"


def _span(trace_id: bytes, span_id: bytes, **attrs: str) -> Span:
    return Span(
        trace_id=trace_id, span_id=span_id, name="s", start_time_unix_nano=1_700_000_000 * 10**9,
        attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()],
    )  # fmt: skip


def test_a_bad_span_is_rejected_alone_and_the_rest_kept():
    good = _span(b"\x01" * 16, b"\x02" * 8)
    no_trace = _span(b"", b"\x03" * 8)
    long_user = _span(b"\x04" * 16, b"\x05" * 8, **{"user.id": "x" * 300})
    request = ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(scope_spans=[ScopeSpans(spans=[good, no_trace, long_user])])
    ])  # fmt: skip
    mapped = events_from_request(decode_request(request.SerializeToString(), "otlp_proto"))
    assert [t.span_id for t in mapped.traces] == ["02" * 8]
    assert mapped.rejected_spans == 2
    reasons = " | ".join(r.reason for r in mapped.rejected)
    assert "trace_id" in reasons and "user_id" in reasons
    assert "04" * 16 in mapped.rejected[1].where


@pytest.mark.parametrize(
    ("body", "encoding", "words"),
    [
        (b"\xff\xff\xff", "otlp_proto", "not OTLP protobuf"),
        (b'{"resourceSpans": []}', "otlp_proto", "looks like JSON"),
        (b"{nope", "otlp_json", "not JSON"),
        (b'{"resourceSpans": [{"scopeSpans": 5}]}', "otlp_json", "not OTLP/JSON"),
        (b"[1, 2]", "otlp_json", "resourceSpans"),
    ],
)
def test_a_body_that_is_not_otlp_is_refused_with_what_is_wrong(body, encoding, words):
    with pytest.raises(WireError) as raised:
        decode_request(body, encoding)
    assert raised.value.reason == "bad_otlp" and words in raised.value.detail


def test_too_many_spans_in_one_request_are_refused():
    spans = [_span(b"\x01" * 16, i.to_bytes(8, "big")) for i in range(1, MAX_SPANS + 2)]
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    with pytest.raises(WireError) as raised:
        decode_request(request.SerializeToString(), "otlp_proto")
    assert raised.value.reason == "too_many_spans"


def test_the_readme_mapping_table_names_every_attribute_the_code_reads():
    from pathlib import Path

    from thumbline.schemas.otlp_mapping import KEPT, TRACE_FIELDS

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    table = readme.split("<!-- otlp-mapping:", 1)[1].split("\n\n", 1)[0]
    rows = {
        field.strip(): line.split("|")[2]
        for line in table.splitlines()
        if line.startswith("| `")
        for field in line.split("|")[1].split(",")
    }
    missing = [
        f"{field}: {name}"
        for field, names in TRACE_FIELDS.items()
        for name in names
        if f"`{name}`" not in rows.get(f"`{field}`", "")
    ] + [
        f"attributes: {name}"
        for names in KEPT.values()
        for name in names
        if f"`{name}`" not in rows["`attributes`"]
    ]
    assert missing == []


def test_in_otlp_json_a_span_with_an_id_that_does_not_decode_is_refused_alone():
    def span(trace_id: str, span_id: str) -> dict:
        return {"traceId": trace_id, "spanId": span_id, "name": "s", "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": str(1_700_000_000 * 10**9),
                "attributes": [{"key": "n", "value": {"intValue": "7"}},
                               {"key": "l", "value": {"arrayValue": {"values": [
                                   {"stringValue": "a"}, {"doubleValue": "NaN"}]}}}]}  # fmt: skip

    body = orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        span("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"),
        span("not hex, not base64", "eee19b7ec3c1b175"),
    ]}]}]})  # fmt: skip
    mapped = events_from_request(decode_request(body, "otlp_json"))
    assert [t.span_id for t in mapped.traces] == ["eee19b7ec3c1b174"]
    assert mapped.traces[0].attributes["otel.span.kind"] == "server"
    assert mapped.rejected_spans == 1 and "trace_id" in mapped.rejected[0].reason


def test_protobuf_and_json_of_the_same_spans_map_to_the_same_events(chat):
    _, _, spans = chat
    now = datetime.now(UTC)
    proto = events_from_request(decode_request(otlp_proto(spans), "otlp_proto"), received_at=now)
    json = events_from_request(decode_request(otlp_json(spans), "otlp_json"), received_at=now)
    assert [e.to_json() for e in json.events] == [e.to_json() for e in proto.events]
    assert len(proto.traces) == 2 and len(proto.feedback) == 1
