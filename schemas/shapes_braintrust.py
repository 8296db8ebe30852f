"""Braintrust's feedback: ``log_feedback``, its REST envelope and child spans with scores.

Three ways Braintrust feedback reaches a server, all mapped here:

- ``log_feedback`` / ``logFeedback`` fields (:func:`braintrust`): ``{id, scores,
  expected, comment, metadata, tags, source}`` about the span ``id``.
- The REST envelope of ``POST /v1/project_logs/{project_id}/feedback``
  (:func:`braintrust_feedback_items`): ``{"feedback": [items]}``, each item the
  same fields.
- The multi-rater pattern of Braintrust's docs: a child span named
  ``user_feedback`` whose ``span_parents`` is the request span, carrying
  ``scores``, ``comment`` and ``metadata.user_id``, as
  ``POST /v1/project_logs/{project_id}/insert`` carries it in ``{"events": [...]}``
  (:func:`braintrust_insert`). Each score becomes feedback on the *parent* span.

Raters: the rater (``metadata.user_id`` or ``user_id``) is part of every derived
event id, so two raters of the same span and score are two events, and the same
rater again replaces their own. Without a rater, ``log_feedback`` on the same
span and score replaces the earlier value (Braintrust merges it into the span),
and each child span stays its own event.
"""

from __future__ import annotations

from typing import Any

from thumbline.schemas.shapes_common import (
    Fields,
    derived_id,
    first,
    group,
    json_object,
    person_ids,
    problem,
    required_id,
    split_metadata,
    text,
)

_SHAPE = "braintrust"


def _measurements(target: str, data: dict[str, Any], who: tuple[str, ...]) -> list[Fields]:
    """One ``score`` event per score name (0..1; null withdraws it), ``expected`` a
    correction; ids derived from ``target`` and ``who`` (the rater, or the child span)."""
    scores = json_object(_SHAPE, data.get("scores") or {}, "scores")
    events: list[Fields] = []
    for name, value in scores.items():
        event: Fields = {"event_id": derived_id(_SHAPE, target, "score", name, *who), "name": name}
        if value is None:
            event.update(kind="label", retracted=True)
        else:
            event.update(kind="score", value=value, range=(0.0, 1.0))  # as Braintrust checks
        events.append(event)
    if data.get("expected") is not None:
        events.append({
            "event_id": derived_id(_SHAPE, target, "expected", *who),
            "kind": "correction", "correction": text(data["expected"]), "name": "expected",
        })  # fmt: skip
    return events


def _common(trace_id: str, target: str, data: dict[str, Any]) -> tuple[Fields, str | None]:
    """(fields every event carries, the rater's id or None)."""
    ids, metadata = split_metadata(data.get("metadata"), _SHAPE)
    ids = {**person_ids(data), **ids}
    if data.get("source") is not None:  # Braintrust's audit source: external, app or api
        metadata["braintrust_source"] = data["source"]
    common: Fields = {"trace_id": trace_id, **ids, "metadata": metadata}
    if target != trace_id:
        common["span_id"] = target
    if data.get("tags") is not None:
        common["tags"] = data["tags"]
    return common, ids.get("user_id")


def braintrust(payload: Any) -> list[Fields]:
    """``log_feedback``: ``{id, scores: {name: 0..1}, expected, comment, metadata, tags}``.

    ``id`` is the span the feedback is about. Thumbline joins on the trace: it
    is ``trace_id`` or ``root_span_id`` when the client sends one, else ``id``
    itself (return the root span's id to the client, as Braintrust's examples
    do). One ``score`` event per score name (0..1, as Braintrust requires); a
    score set to null withdraws it. ``expected`` becomes a correction.
    """
    data = json_object(_SHAPE, payload)
    span = required_id(_SHAPE, data, "id", "span_id")
    root = first(data, "trace_id", "root_span_id")
    trace_id = str(root) if root is not None else span
    common, rater = _common(trace_id, span, data)
    who = (rater,) if rater is not None else ()
    events = _measurements(span, data, who)
    hint = "send scores, expected or a comment"
    return group(_SHAPE, "\x1f".join((span, *who)), common, events, data.get("comment"), hint)


def braintrust_insert(payload: Any) -> list[Fields]:
    """One event of ``POST /v1/project_logs/{project_id}/insert`` that carries ``scores``.

    The scores are about the span's parent (``span_parents[0]``; a span without
    parents: the span itself), in the trace ``root_span_id``. The child span's
    own id is kept in ``metadata.braintrust_span``; ``created`` is the time.

    Raises:
        InvalidEvent: a span without scores (thumbline takes traces elsewhere).
    """
    data = json_object(_SHAPE, payload)
    if not data.get("scores"):
        raise problem(
            _SHAPE, "scores", data.get("scores"),
            "is required: this route takes feedback (a span with scores, such as a "
            "user_feedback child span); send traces to /v1/traces or /otlp/v1/traces",
        )  # fmt: skip
    span = required_id(_SHAPE, data, "span_id", "id")
    parents = data.get("span_parents") or []
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise problem(_SHAPE, "span_parents", parents, "must be a list of span ids")
    target = parents[0] if parents else span
    root = first(data, "root_span_id", "trace_id")
    common, rater = _common(str(root) if root is not None else target, target, data)
    if parents:
        common["metadata"]["braintrust_span"] = span
    if data.get("created") is not None:
        common["ts"] = data["created"]
    who = (rater,) if rater is not None else ("span", span)
    events = _measurements(target, data, who)
    if data.get("comment") is not None:
        events[0]["comment"] = text(data["comment"])
    return [{**common, **e} for e in events]


def _envelope(body: Any, field: str, what: str) -> list[Any]:
    data = json_object(_SHAPE, body)
    items = data.get(field)
    if not isinstance(items, list):
        raise problem(_SHAPE, field, items, f"is required: a list of {what}")
    return items


def braintrust_feedback_items(body: Any) -> list[Any]:
    """The items of ``{"feedback": [...]}`` (``FeedbackProjectLogsEventRequest``)."""
    return _envelope(body, "feedback", "feedback items ({id, scores, comment...})")


def braintrust_insert_items(body: Any) -> list[Any]:
    """The events of ``{"events": [...]}`` (``InsertProjectLogsEventRequest``)."""
    return _envelope(body, "events", "project logs events")
