"""Feedback payloads of hosted products, mapped to :class:`FeedbackEvent` fields.

Teams move to thumbline from hosted products; accepting their payloads makes
the move a change of URL. :func:`to_events` takes one decoded JSON object in a
product's shape and returns the field dicts of the FeedbackEvents it stands
for (one payload can carry several measurements: Braintrust's ``scores``,
HoneyHive's ``actions``). The caller validates each dict as a FeedbackEvent, so
values are checked exactly as for thumbline's own shape; problems with the
product's shape itself raise :class:`~thumbline.schemas.errors.InvalidEvent` naming the
product's field.

Which event carries what: the first measurement of a payload is its *primary*
event; it carries the comment. Every event of a payload carries its user,
session and metadata. A payload with a comment but no measurement becomes one
``text`` event.

Event ids: where the product treats a second send as an update of the same
span (Braintrust, HoneyHive, span attributes), each measurement gets an id
derived from the span and the measurement's name (and Braintrust's rater), so
sending it again replaces the earlier value, and a client's retry cannot make a
second row. Where each
call is a new piece of feedback (TruLayer, Axiom), a client ``event_id`` (or
``id``) is kept, and one is generated when absent (a retry then needs the
client's id to stay single).

TruLayer, HoneyHive and span attributes are here; Braintrust in
:mod:`~thumbline.schemas.shapes_braintrust`, Axiom in
:mod:`~thumbline.schemas.shapes_axiom`, the shared helpers in
:mod:`~thumbline.schemas.shapes_common`. The table of every mapping is in
docs/hosted-products.md and the README ("Payloads of hosted products").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from thumbline.schemas.shapes_axiom import axiom
from thumbline.schemas.shapes_braintrust import braintrust
from thumbline.schemas.shapes_common import (
    Fields,
    derived_id,
    first,
    group,
    json_object,
    nothing,
    person_ids,
    problem,
    required_id,
    split_metadata,
    stars_or_score,
    text,
)

__all__ = ["SHAPES", "Fields", "derived_id", "to_events", "trace_update"]

# TruLayer --------------------------------------------------------------------


def trulayer(payload: Any) -> list[Fields]:
    """``{trace_id, label: good|bad|edit|custom, comment, user_id}``.

    ``label = "edit"`` is TruLayer's inline edit: the edited text comes as the
    comment, and becomes the correction too.
    """
    data = json_object("trulayer", payload)
    label = data.get("label")
    if label is None and data.get("comment") is None:
        raise nothing("trulayer", "send a label (good, bad, edit or custom) or a comment")
    people, metadata = split_metadata(data.get("metadata"), "trulayer")
    event: Fields = {
        "trace_id": required_id("trulayer", data, "trace_id", "traceId"),
        **people,
        **person_ids(data),
        "metadata": metadata,
    }
    for field, names in (("event_id", ("event_id", "id")), ("span_id", ("span_id", "spanId"))):
        value = first(data, *names)
        if value is not None:
            event[field] = str(value)
    if data.get("ts") is not None:
        event["ts"] = data["ts"]
    comment = data.get("comment")
    if label is None:
        return [{**event, "kind": "text", "comment": text(comment)}]
    if not isinstance(label, str):
        raise problem("trulayer", "label", label, "must be a string: good, bad, edit or custom")
    event["label"] = label
    if label.lower() == "edit" and comment is not None:
        event.update(kind="correction", correction=text(comment))
    else:
        event["kind"] = "label"
    if comment is not None:
        event["comment"] = text(comment)
    return [event]


# HoneyHive -------------------------------------------------------------------

_HONEYHIVE_KNOWN = ("rating", "score", "comment", "ground_truth", "actions", "user_id", "userId")


def honeyhive(payload: Any) -> list[Fields]:
    """The ``feedback`` object of ``enrich_session`` / ``enrich_span``.

    ``{session_id, event_id (the span, for enrich_span), feedback: {rating,
    score, comment, ground_truth, actions: {copied, regenerated}, ...}}``. A
    HoneyHive session is a trace: ``session_id`` (or ``trace_id``) is the trace
    id. ``rating`` true/false is a thumb; ``rating`` and ``score`` as numbers
    (HoneyHive's "number: star rating") are a 1-5 star rating when a JSON integer
    1..5 (1 is one star: bad), else a 0-1 score (a score config for the name,
    applied by the join, overrides both); ``ground_truth`` a
    correction; each action that is true an implicit signal named after it.
    Any other field of the feedback object is kept in metadata (HoneyHive's
    limits: 5 levels of objects, 2 of arrays).
    """
    data = json_object("honeyhive", payload)
    trace_id = required_id("honeyhive", data, "session_id", "trace_id", "sessionId")
    span = first(data, "event_id", "span_id", "eventId")
    feedback = json_object("honeyhive", data.get("feedback"), "feedback")
    target = str(span) if span is not None else trace_id
    extra = {k: v for k, v in feedback.items() if k not in _HONEYHIVE_KNOWN}
    common: Fields = {
        "trace_id": trace_id,
        **person_ids(data),
        **person_ids(feedback),
        "metadata": extra,
    }
    if span is not None:
        common["span_id"] = str(span)
    events: list[Fields] = []
    for name in ("rating", "score"):
        value = feedback.get(name)
        if value is None:
            continue
        event: Fields = {"event_id": derived_id("honeyhive", target, name), "name": name}
        if isinstance(value, bool):
            event.update(kind="thumb", value="up" if value else "down")
        elif isinstance(value, int | float):
            event.update(kind=stars_or_score(value), value=value)
        else:
            raise problem("honeyhive", f"feedback.{name}", value, "must be true/false or a number")
        events.append(event)
    if feedback.get("ground_truth") is not None:
        events.append({
            "event_id": derived_id("honeyhive", target, "ground_truth"), "kind": "correction",
            "correction": text(feedback["ground_truth"]), "name": "ground_truth",
        })  # fmt: skip
    actions = feedback.get("actions") or {}
    actions = json_object("honeyhive", actions, "feedback.actions")
    for name, happened in actions.items():
        if happened is True:
            events.append({
                "event_id": derived_id("honeyhive", target, "action", name),
                "kind": "signal", "name": name,
            })  # fmt: skip
        elif happened not in (False, None):
            raise problem("honeyhive", f"feedback.actions.{name}", happened, "must be true/false")
    hint = "send rating, score, comment, ground_truth or actions"
    return group("honeyhive", target, common, events, feedback.get("comment"), hint)


# Span attributes -------------------------------------------------------------

_POSITIVE = {"positive", "good", "up", "thumbs-up", "thumbs_up", "helpful"}
_NEGATIVE = {"negative", "bad", "down", "thumbs-down", "thumbs_down", "unhelpful"}
_ATTRIBUTES = (
    "user_feedback", "user_feedback_rating", "user_feedback_comment", "user_feedback_category",
    "user_feedback_timestamp", "feedback_reason", "annotation_status",
)  # fmt: skip


def attributes(payload: Any) -> list[Fields]:
    """Feedback kept as span attributes: ``{trace_id, span_id, attributes: {...}, tags}``.

    ``user_feedback`` positive/negative is a thumb (any other value a custom
    label), ``user_feedback_rating`` a 1-5 rating, ``user_feedback_comment``
    the comment, ``user_feedback_category`` (or else ``feedback_reason``) the
    category, ``user_feedback_timestamp`` the event time; the tags
    ``thumbs-up`` / ``thumbs-down`` stand for ``user_feedback``. Other
    attributes (``annotation_status``, ``feedback_reason`` beside a category...)
    are kept in metadata. The attributes may also sit at the top level.
    """
    data = json_object("attributes", payload)
    attrs = data.get("attributes")
    attrs = json_object("attributes", attrs, "attributes") if attrs is not None else data
    trace_id = required_id("attributes", data, "trace_id", "traceId")
    span = first(data, "span_id", "spanId")
    target = str(span) if span is not None else trace_id
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise problem("attributes", "tags", tags, "must be a list of strings")
    common: Fields = {"trace_id": trace_id, **person_ids(data), **person_ids(attrs), "tags": tags}
    if span is not None:
        common["span_id"] = str(span)
    if attrs.get("user_feedback_timestamp") is not None:
        common["ts"] = attrs["user_feedback_timestamp"]
    metadata = {k: attrs[k] for k in ("annotation_status",) if attrs.get(k) is not None}

    events: list[Fields] = []
    verdict = attrs.get("user_feedback")
    lowered = {t.lower() for t in tags}
    if verdict is None and "thumbs-up" in lowered:
        verdict = "positive"
    elif verdict is None and "thumbs-down" in lowered:
        verdict = "negative"
    if verdict is not None:
        event: Fields = {"event_id": derived_id("attributes", target, "user_feedback"),
                         "name": "user_feedback"}  # fmt: skip
        word = str(verdict).strip().lower()
        if word in _POSITIVE or word in _NEGATIVE:
            event.update(kind="thumb", value="up" if word in _POSITIVE else "down")
        else:
            event.update(kind="label", label=str(verdict))
        events.append(event)
    if attrs.get("user_feedback_rating") is not None:
        events.append({
            "event_id": derived_id("attributes", target, "user_feedback_rating"),
            "kind": "rating", "value": attrs["user_feedback_rating"],
            "name": "user_feedback_rating",
        })  # fmt: skip
    category = attrs.get("user_feedback_category")
    reason = attrs.get("feedback_reason")
    if category is None and reason is not None:
        category, reason = reason, None
    if reason is not None:
        metadata["feedback_reason"] = reason
    if category is not None:
        if events:
            events[0]["category"] = text(category)
        else:
            events.append({
                "event_id": derived_id("attributes", target, "user_feedback_category"),
                "kind": "category", "value": text(category), "name": "user_feedback_category",
            })  # fmt: skip
    hint = f"send one of {', '.join(_ATTRIBUTES[:4])} or a tag"
    comment = attrs.get("user_feedback_comment")
    return group("attributes", target, {**common, "metadata": metadata}, events, comment, hint)


#: The shapes the gateway accepts, by name.
SHAPES: dict[str, Callable[[Any], list[Fields]]] = {
    "trulayer": trulayer,
    "braintrust": braintrust,
    "honeyhive": honeyhive,
    "axiom": axiom,
    "attributes": attributes,
}


def trace_update(trace_id: str, span_id: str | None, payload: Any) -> list[Fields]:
    """An update of a trace's (or span's) feedback attributes, ``PATCH /v1/traces/{trace_id}``.

    ``payload`` is ``{attributes: {...}, tags: [...]}`` (or the attributes at the top
    level, or under ``metadata``), mapped by :func:`attributes`; the ids come from
    the path, and a different ``trace_id`` / ``span_id`` in the body is refused.
    """
    data = dict(json_object("attributes", payload))
    for field, value in (("trace_id", trace_id), ("span_id", span_id)):
        sent = first(data, field, field.replace("_id", "Id"))
        if value is not None and sent is not None and str(sent) != value:
            raise problem("attributes", field, sent, f"differs from the path's {value!r}")
        if value is not None:
            data[field] = value
    if data.get("attributes") is None and isinstance(data.get("metadata"), dict):
        data["attributes"] = data.pop("metadata")
    return attributes(data)


def to_events(shape: str, payload: Any) -> list[Fields]:
    """FeedbackEvent fields for one payload in ``shape`` (a key of :data:`SHAPES`).

    Raises:
        KeyError: an unknown shape.
        InvalidEvent: the payload does not have the shape (names the product's field).
    """
    return SHAPES[shape](payload)
