"""What an OpenTelemetry span means to thumbline: the mapping table, in code.

Follows the OpenTelemetry GenAI semantic conventions (``gen_ai.*``, with their
older names), and the OpenInference and OpenLLMetry (Traceloop) equivalents.
The README's "OpenTelemetry" section has the same table; a test keeps the two
in step. The first name found wins: span attributes before resource attributes.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from thumbline.schemas._base import MAX_COMMENT_LEN, MAX_NAME_LEN
from thumbline.schemas.errors import InvalidEvent
from thumbline.schemas.shapes import attributes as attribute_feedback
from thumbline.schemas.shapes import derived_id

#: TraceEvent field: the attributes that give it, in order (span, then resource).
TRACE_FIELDS: dict[str, tuple[str, ...]] = {
    "project": ("service.name",),
    "environment": ("deployment.environment.name", "deployment.environment"),
    "model": ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name",
              "llm.response.model", "llm.request.model"),
    "capability": ("thumbline.capability",),
    "step": ("thumbline.step",),
    "user_id": ("user.id", "enduser.id", "langfuse.user.id",
                "traceloop.association.properties.user_id"),
    "session_id": ("session.id", "langfuse.session.id",
                   "traceloop.association.properties.session_id"),
    "conversation_id": ("gen_ai.conversation.id",),
    "input_tokens": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens",
                     "llm.token_count.prompt", "llm.usage.prompt_tokens"),
    "output_tokens": ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
                      "llm.token_count.completion", "llm.usage.completion_tokens"),
    "total_tokens": ("llm.token_count.total", "llm.usage.total_tokens"),
    "error": ("error.type",),
}  # fmt: skip

#: Kept in the trace's ``attributes`` under their own names (the first found).
KEPT: dict[str, tuple[str, ...]] = {
    "gen_ai.provider.name": ("gen_ai.provider.name", "gen_ai.system", "llm.provider",
                             "llm.system"),
    "gen_ai.operation.name": ("gen_ai.operation.name", "openinference.span.kind"),
    "gen_ai.response.finish_reasons": ("gen_ai.response.finish_reasons",),
    "gen_ai.response.id": ("gen_ai.response.id",),
    "gen_ai.agent.name": ("gen_ai.agent.name",),
    "service.name": ("service.name",),
}  # fmt: skip

#: Where the question and the answer are, newest convention first.
INPUT_MESSAGES = ("gen_ai.input.messages",)
OUTPUT_MESSAGES = ("gen_ai.output.messages",)
INPUT_TEXT = ("input.value", "gen_ai.prompt")
OUTPUT_TEXT = ("output.value", "gen_ai.completion")
#: Indexed message attributes: OpenInference's and OpenLLMetry's.
INPUT_INDEXED = (("llm.input_messages.", ".message.role", ".message.content"),
                 ("gen_ai.prompt.", ".role", ".content"))  # fmt: skip
OUTPUT_INDEXED = (("llm.output_messages.", ".message.role", ".message.content"),
                  ("gen_ai.completion.", ".role", ".content"))  # fmt: skip
#: Span events of the older conventions that carry a message.
INPUT_EVENTS = ("gen_ai.user.message", "gen_ai.content.prompt")
OUTPUT_EVENTS = ("gen_ai.choice", "gen_ai.content.completion")

EVALUATION_EVENT = "gen_ai.evaluation.result"
#: Attribute names of end-user feedback on a span (the ``attributes`` shape's).
FEEDBACK_ATTRIBUTES = ("user_feedback", "user_feedback_rating", "user_feedback_comment",
                       "user_feedback_category")  # fmt: skip

STATUS = {0: "unset", 1: "ok", 2: "error"}
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def value_of(any_value: Any) -> Any:
    """An OTLP AnyValue as plain Python (bytes as base64 text, NaN and infinities as None)."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(any_value.bytes_value).decode()
    if kind == "double_value":
        number = any_value.double_value
        return number if math.isfinite(number) else None  # JSON has no NaN
    return getattr(any_value, kind)


@dataclass(slots=True)
class PlainEvent:
    """A span event: its name, time and attributes as plain values."""

    name: str
    time_unix_nano: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class PlainSpan:
    """A span as the mapping reads it, from protobuf or straight from OTLP/JSON: ids in
    lower-case hex ("" when absent or not decodable), attributes as plain values."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    events: list[PlainEvent]


@dataclass(slots=True)
class PlainResource:
    """A resource's attributes and its spans, each with its scope's name."""

    attributes: dict[str, Any]
    spans: list[tuple[str, PlainSpan]]


class SpanView:
    """One span with its attributes and its resource's, as plain values (``resource``:
    converted once per resource, shared by its spans)."""

    __slots__ = ("attrs", "project", "resource", "scope", "span", "span_id", "trace_id")

    def __init__(
        self, span: PlainSpan, resource: dict[str, Any], scope: str, project: str | None
    ) -> None:
        self.span, self.resource, self.scope, self.project = span, resource, scope, project
        self.attrs = span.attributes
        self.trace_id = span.trace_id
        self.span_id = span.span_id

    @property
    def where(self) -> str:
        return f"span {self.span_id or '(none)'} of trace {self.trace_id or '(none)'}"

    def get(self, *names: str, resource: bool = True) -> Any:
        attrs = self.attrs
        for name in names:
            got = attrs.get(name)
            if got is not None and got != "":
                return got
        if resource:
            attrs = self.resource
            for name in names:
                got = attrs.get(name)
                if got is not None and got != "":
                    return got
        return None


def _time(nanos: int) -> datetime | None:
    return datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _int(value: Any) -> Any:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value  # anything else: the TraceEvent check names it


def trace_of(view: SpanView, *, capture_content: bool = True) -> dict[str, Any]:
    """The TraceEvent fields of one span."""
    span = view.span
    fields: dict[str, Any] = {
        "trace_id": view.trace_id or None,
        "span_id": view.span_id or None,
        "parent_span_id": span.parent_span_id or None,
        "name": span.name[:MAX_NAME_LEN] or None,
        "start_time": _time(span.start_time_unix_nano),
        "end_time": _time(span.end_time_unix_nano),
        "status": STATUS.get(span.status_code, "unset"),
    }
    for name, sources in TRACE_FIELDS.items():
        got = view.get(*sources)
        if got is not None:
            fields[name] = _int(got) if name.endswith("_tokens") else _text(got)
    if view.project is not None:
        fields["project"] = view.project
    if "capability" not in fields and not span.parent_span_id:
        fields["capability"] = span.name[:MAX_NAME_LEN] or None  # the root span names it
    if span.status_code == 2 and span.status_message:
        fields["error"] = span.status_message[:MAX_COMMENT_LEN]
    elif fields.get("error") and span.status_code != 2:
        fields.pop("error")  # error.type on a span that did not fail: not an error
    kept: dict[str, Any] = {"otel.span.kind": KINDS.get(span.kind, "unspecified")}
    if view.scope:
        kept["otel.scope.name"] = view.scope
    for name, sources in KEPT.items():
        got = view.get(*sources)
        if got is not None:
            kept[name] = got
    fields["attributes"] = kept
    if capture_content:
        question, answer = _question(view), _answer(view)
        if question is not None:
            fields["input"] = question
        if answer is not None:
            fields["output"] = answer
    return {k: v for k, v in fields.items() if v is not None}


# The question and the answer ---------------------------------------------------------


def _question(view: SpanView) -> str | None:
    messages = _messages(view.get(*INPUT_MESSAGES, resource=False))
    if messages:
        users = [m for m in messages if m.get("role") == "user"] or messages
        return _message_text(users[-1])
    indexed = _indexed(view, INPUT_INDEXED)
    if indexed:
        users = [m for m in indexed if m.get("role") == "user"] or indexed
        return _message_text(users[-1])
    for event in view.span.events:
        if event.name in INPUT_EVENTS:
            got = _event_text(event)
            if got is not None:
                return got
    got = view.get(*INPUT_TEXT, resource=False)
    return _text(got) if got is not None else None


def _answer(view: SpanView) -> str | None:
    messages = _messages(view.get(*OUTPUT_MESSAGES, resource=False))
    if messages:
        return "\n".join(t for m in messages if (t := _message_text(m))) or None
    indexed = _indexed(view, OUTPUT_INDEXED)
    if indexed:
        return _message_text(indexed[0])
    for event in view.span.events:
        if event.name in OUTPUT_EVENTS:
            got = _event_text(event)
            if got is not None:
                return got
    got = view.get(*OUTPUT_TEXT, resource=False)
    return _text(got) if got is not None else None


def _messages(value: Any) -> list[dict[str, Any]]:
    """``gen_ai.input.messages`` / ``output.messages``: JSON text or structured."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return [{"role": "user", "content": value}]
    if isinstance(value, dict):
        value = [value]
    return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []


def _message_text(message: dict[str, Any]) -> str | None:
    """The text of a message: its text parts (``parts``), or its ``content``."""
    parts = message.get("parts")
    if isinstance(parts, list):
        texts = [
            str(p.get("content"))
            for p in parts
            if isinstance(p, dict) and p.get("type", "text") == "text" and p.get("content")
        ]
        if texts:
            return "\n".join(texts)
    content = message.get("content")
    if isinstance(content, list):  # OpenAI-style content parts
        texts = [str(p.get("text")) for p in content if isinstance(p, dict) and p.get("text")]
        return "\n".join(texts) or None
    if content is None and isinstance(message.get("message"), dict):
        return _message_text(message["message"])
    return _text(content) if content not in (None, "") else None


def _indexed(view: SpanView, patterns: tuple[tuple[str, str, str], ...]) -> list[dict[str, Any]]:
    for prefix, role, content in patterns:
        found: dict[int, dict[str, Any]] = {}
        for key in view.attrs:
            if not key.startswith(prefix):
                continue
            head, _, rest = key[len(prefix) :].partition(".")
            if not head.isdigit():
                continue
            suffix = "." + rest
            if suffix == role:
                found.setdefault(int(head), {})["role"] = view.attrs[key]
            elif suffix == content:
                found.setdefault(int(head), {})["content"] = view.attrs[key]
        if found:
            return [found[i] for i in sorted(found)]
    return []


def _event_text(event: Any) -> str | None:
    attrs = event.attributes
    for name in ("content", "gen_ai.prompt", "gen_ai.completion", "message",
                 "gen_ai.event.content"):  # fmt: skip
        value = attrs.get(name)
        if isinstance(value, dict):
            return _message_text(value)
        if isinstance(value, str) and value:
            if value.startswith(("{", "[")):
                messages = _messages(value)
                if messages:
                    return _message_text(messages[-1])
            return value
    return None


# Feedback ----------------------------------------------------------------------------


def feedback_of(view: SpanView) -> list[tuple[str, dict[str, Any]]]:
    """FeedbackEvent fields the span carries, each with where it came from.

    Raises:
        InvalidEvent: the span's own feedback attributes do not make feedback.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    span = view.span
    common = _common(view)
    for index, event in enumerate(span.events):
        where = f"event {index} ({event.name}) of {view.where}"
        attrs = event.attributes
        when = _time(event.time_unix_nano) or _time(span.end_time_unix_nano)
        if event.name == EVALUATION_EVENT:
            out.append((where, _evaluation(view, attrs, when, common, index)))
        elif any(name in attrs for name in FEEDBACK_ATTRIBUTES):
            out.extend((where, f) for f in _attribute_feedback(view, attrs, when, common))
    if any(name in view.attrs for name in FEEDBACK_ATTRIBUTES):
        prefixes = ("user_feedback", "feedback_", "annotation_")
        attrs = {k: v for k, v in view.attrs.items() if k.startswith(prefixes)}
        when = _time(span.end_time_unix_nano) or _time(span.start_time_unix_nano)
        out.extend((view.where, f) for f in _attribute_feedback(view, attrs, when, common))
    return out


def _common(view: SpanView) -> dict[str, Any]:
    common: dict[str, Any] = {"trace_id": view.trace_id, "span_id": view.span_id or None}
    project = view.project if view.project is not None else view.get("service.name")
    if project is not None:
        common["project"] = _text(project)
    for name in ("user_id", "session_id", "conversation_id"):
        got = view.get(*TRACE_FIELDS[name])
        if got is not None:
            common[name] = _text(got)
    return {k: v for k, v in common.items() if v is not None}


def _evaluation(
    view: SpanView, attrs: dict[str, Any], when: datetime | None, common: dict[str, Any],
    index: int,
) -> dict[str, Any]:  # fmt: skip
    """A ``gen_ai.evaluation.result`` event: feedback from an evaluator about this span."""
    name = attrs.get("gen_ai.evaluation.name")
    name = _text(name)[:MAX_NAME_LEN] if name not in (None, "") else "evaluation"
    value = attrs.get("gen_ai.evaluation.score.value")
    label = attrs.get("gen_ai.evaluation.score.label")
    explanation = attrs.get("gen_ai.evaluation.explanation")
    stamp = view.span.events[index].time_unix_nano
    fields: dict[str, Any] = {
        **common,
        "event_id": derived_id("otel", view.trace_id, view.span_id, name, str(stamp or index)),
        "name": name,
        "annotator": "evaluator",
        "metadata": {"otel.event": EVALUATION_EVENT},
    }
    if when is not None:
        fields["ts"] = when
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 0.0 <= value <= 1.0:
            fields.update(kind="score", value=float(value))
        else:  # a scale we do not know: kept, not normalised
            fields["metadata"]["score_value"] = value
            fields["kind"] = "label"
            if label in (None, ""):
                label = f"{value:g}"
    if label not in (None, ""):
        fields["label"] = _text(label)
        fields.setdefault("kind", "label")
    if explanation not in (None, ""):
        fields["comment"] = _text(explanation)[:MAX_COMMENT_LEN]
    if "kind" not in fields:
        fields.update(kind="text", value=fields.get("comment") or name)
    if attrs.get("gen_ai.response.id"):
        fields["metadata"]["gen_ai.response.id"] = _text(attrs["gen_ai.response.id"])
    return fields


def _attribute_feedback(
    view: SpanView, attrs: dict[str, Any], when: datetime | None, common: dict[str, Any]
) -> list[dict[str, Any]]:
    payload = {"trace_id": view.trace_id, "span_id": view.span_id, "attributes": attrs}
    out = []
    for fields in attribute_feedback(payload):
        fields = {**common, **fields}
        if "ts" not in fields and when is not None:
            fields["ts"] = when  # the same on every replay, unlike the time of reading
        out.append(fields)
    return out


__all__ = [
    "TRACE_FIELDS", "InvalidEvent", "PlainEvent", "PlainResource", "PlainSpan", "SpanView",
    "feedback_of", "trace_of", "value_of",
]  # fmt: skip
