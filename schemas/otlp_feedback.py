"""What feedback an OpenTelemetry span carries: evaluations, and end-user feedback attributes.

- A ``gen_ai.evaluation.result`` span event (the GenAI conventions' evaluation)
  is feedback about the span it sits on, from an evaluator.
- Attributes in the style of the ``attributes`` payload (``user_feedback``,
  ``user_feedback_rating``, ...), on a span or a span event, are end-user
  feedback about that span, read as :func:`thumbline.schemas.shapes.attributes` reads them.

Event ids are derived from the span and the event, so a replay stores nothing twice.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from thumbline.schemas._base import MAX_COMMENT_LEN, MAX_NAME_LEN
from thumbline.schemas.otlp_mapping import TRACE_FIELDS, SpanView, text_of, time_of
from thumbline.schemas.shapes import attributes as attribute_feedback
from thumbline.schemas.shapes import derived_id

EVALUATION_EVENT = "gen_ai.evaluation.result"
#: Attribute names of end-user feedback on a span (the ``attributes`` shape's).
FEEDBACK_ATTRIBUTES = ("user_feedback", "user_feedback_rating", "user_feedback_comment",
                       "user_feedback_category")  # fmt: skip


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
        when = time_of(event.time_unix_nano) or time_of(span.end_time_unix_nano)
        if event.name == EVALUATION_EVENT:
            out.append((where, _evaluation(view, attrs, when, common, index)))
        elif any(name in attrs for name in FEEDBACK_ATTRIBUTES):
            out.extend((where, f) for f in _attribute_feedback(view, attrs, when, common))
    if any(name in view.attrs for name in FEEDBACK_ATTRIBUTES):
        prefixes = ("user_feedback", "feedback_", "annotation_")
        attrs = {k: v for k, v in view.attrs.items() if k.startswith(prefixes)}
        when = time_of(span.end_time_unix_nano) or time_of(span.start_time_unix_nano)
        out.extend((view.where, f) for f in _attribute_feedback(view, attrs, when, common))
    return out


def _common(view: SpanView) -> dict[str, Any]:
    common: dict[str, Any] = {"trace_id": view.trace_id, "span_id": view.span_id or None}
    project = view.project if view.project is not None else view.get("service.name")
    if project is not None:
        common["project"] = text_of(project)
    for name in ("user_id", "session_id", "conversation_id"):
        got = view.get(*TRACE_FIELDS[name])
        if got is not None:
            common[name] = text_of(got)
    return {k: v for k, v in common.items() if v is not None}


def _evaluation(
    view: SpanView, attrs: dict[str, Any], when: datetime | None, common: dict[str, Any],
    index: int,
) -> dict[str, Any]:  # fmt: skip
    """A ``gen_ai.evaluation.result`` event: feedback from an evaluator about this span."""
    name = attrs.get("gen_ai.evaluation.name")
    name = text_of(name)[:MAX_NAME_LEN] if name not in (None, "") else "evaluation"
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
        fields["label"] = text_of(label)
        fields.setdefault("kind", "label")
    if explanation not in (None, ""):
        fields["comment"] = text_of(explanation)[:MAX_COMMENT_LEN]
    if "kind" not in fields:
        fields.update(kind="text", value=fields.get("comment") or name)
    if attrs.get("gen_ai.response.id"):
        fields["metadata"]["gen_ai.response.id"] = text_of(attrs["gen_ai.response.id"])
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
