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


def time_of(nanos: int) -> datetime | None:
    return datetime.fromtimestamp(nanos / 1e9, UTC) if nanos else None


def text_of(value: Any) -> str:
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
        "start_time": time_of(span.start_time_unix_nano),
        "end_time": time_of(span.end_time_unix_nano),
        "status": STATUS.get(span.status_code, "unset"),
    }
    for name, sources in TRACE_FIELDS.items():
        got = view.get(*sources)
        if got is not None:
            fields[name] = _int(got) if name.endswith("_tokens") else text_of(got)
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
        return _messagetext_of(users[-1])
    indexed = _indexed(view, INPUT_INDEXED)
    if indexed:
        users = [m for m in indexed if m.get("role") == "user"] or indexed
        return _messagetext_of(users[-1])
    for event in view.span.events:
        if event.name in INPUT_EVENTS:
            got = _eventtext_of(event)
            if got is not None:
                return got
    got = view.get(*INPUT_TEXT, resource=False)
    return text_of(got) if got is not None else None


def _answer(view: SpanView) -> str | None:
    messages = _messages(view.get(*OUTPUT_MESSAGES, resource=False))
    if messages:
        return "\n".join(t for m in messages if (t := _messagetext_of(m))) or None
    indexed = _indexed(view, OUTPUT_INDEXED)
    if indexed:
        return _messagetext_of(indexed[0])
    for event in view.span.events:
        if event.name in OUTPUT_EVENTS:
            got = _eventtext_of(event)
            if got is not None:
                return got
    got = view.get(*OUTPUT_TEXT, resource=False)
    return text_of(got) if got is not None else None


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


def _messagetext_of(message: dict[str, Any]) -> str | None:
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
        return _messagetext_of(message["message"])
    return text_of(content) if content not in (None, "") else None


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


def _eventtext_of(event: Any) -> str | None:
    attrs = event.attributes
    for name in ("content", "gen_ai.prompt", "gen_ai.completion", "message",
                 "gen_ai.event.content"):  # fmt: skip
        value = attrs.get(name)
        if isinstance(value, dict):
            return _messagetext_of(value)
        if isinstance(value, str) and value:
            if value.startswith(("{", "[")):
                messages = _messages(value)
                if messages:
                    return _messagetext_of(messages[-1])
            return value
    return None


__all__ = [
    "TRACE_FIELDS", "PlainEvent", "PlainResource", "PlainSpan", "SpanView", "time_of",
    "text_of", "trace_of", "value_of",
]  # fmt: skip
