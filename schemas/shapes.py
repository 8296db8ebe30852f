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
derived from the span and the measurement's name, so sending it again replaces
the earlier value, and a client's retry cannot make a second row. Where each
call is a new piece of feedback (TruLayer, Axiom), a client ``event_id`` (or
``id``) is kept, and one is generated when absent (a retry then needs the
client's id to stay single).

The table of every mapping is in the README ("Payloads of hosted products").
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson

from thumbline.schemas.errors import InvalidEvent

#: Namespace of the event ids derived from (product, span, measurement).
_IDS = uuid.UUID("6f1d6c1e-8a4e-4c41-9a55-2f0f0e6f1b7a")

Fields = dict[str, Any]


def derived_id(product: str, *parts: str) -> str:
    """The same measurement on the same span always gets the same event id."""
    return uuid.uuid5(_IDS, "\x1f".join((product, *parts))).hex


def _problem(shape: str, field: str, value: Any, message: str) -> InvalidEvent:
    return InvalidEvent(f"{shape} feedback", [(field, value, message)])


def _object(shape: str, payload: Any, field: str = "(body)") -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise _problem(shape, field, payload, "must be a JSON object")
    return payload


def _first(data: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` present (snake_case and camelCase spellings)."""
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _required_id(shape: str, data: dict[str, Any], *names: str) -> str:
    value = _first(data, *names)
    if value is None:
        raise _problem(shape, names[0], None, "is required: the id of the trace it is about")
    if not isinstance(value, str | int):
        raise _problem(shape, names[0], value, "must be a string id")
    return str(value)


def _people(data: dict[str, Any]) -> Fields:
    """user, session and conversation ids, in either spelling."""
    out: Fields = {}
    for field, names in (
        ("user_id", ("user_id", "userId")),
        ("session_id", ("session_id", "sessionId")),
        ("conversation_id", ("conversation_id", "conversationId")),
    ):
        value = _first(data, *names)
        if value is not None:
            out[field] = str(value)
    return out


def _split_metadata(metadata: Any, shape: str, field: str = "metadata") -> tuple[Fields, Fields]:
    """(ids lifted to their own fields, the rest of the metadata)."""
    if metadata is None:
        return {}, {}
    metadata = _object(shape, metadata, field)
    people = _people(metadata)
    rest = {
        k: v
        for k, v in metadata.items()
        if k not in ("user_id", "userId", "session_id", "sessionId", "conversation_id",
                     "conversationId")
    }  # fmt: skip
    return people, rest


def _group(
    product: str, target: str, common: Fields, events: list[Fields], comment: Any, hint: str
) -> list[Fields]:
    """Give every event the common fields and the primary one the comment.

    A comment alone becomes a ``text`` event (with an id derived from ``target``);
    nothing at all is refused with ``hint``.
    """
    if not events and comment is None:
        raise _nothing(product, hint)
    if not events:
        events = [{"event_id": derived_id(product, target, "comment"), "kind": "text"}]
    if comment is not None:
        events[0]["comment"] = _text(comment)
    return [{**common, **e} for e in events]


def _nothing(shape: str, hint: str) -> InvalidEvent:
    return _problem(shape, "(body)", None, f"carries no feedback: {hint}")


# TruLayer --------------------------------------------------------------------


def trulayer(payload: Any) -> list[Fields]:
    """``{trace_id, label: good|bad|edit|custom, comment, user_id}``.

    ``label = "edit"`` is TruLayer's inline edit: the edited text comes as the
    comment, and becomes the correction too.
    """
    data = _object("trulayer", payload)
    label = data.get("label")
    if label is None and data.get("comment") is None:
        raise _nothing("trulayer", "send a label (good, bad, edit or custom) or a comment")
    people, metadata = _split_metadata(data.get("metadata"), "trulayer")
    event: Fields = {
        "trace_id": _required_id("trulayer", data, "trace_id", "traceId"),
        **people,
        **_people(data),
        "metadata": metadata,
    }
    for field, names in (("event_id", ("event_id", "id")), ("span_id", ("span_id", "spanId"))):
        value = _first(data, *names)
        if value is not None:
            event[field] = str(value)
    if data.get("ts") is not None:
        event["ts"] = data["ts"]
    comment = data.get("comment")
    if label is None:
        return [{**event, "kind": "text", "comment": _text(comment)}]
    if not isinstance(label, str):
        raise _problem("trulayer", "label", label, "must be a string: good, bad, edit or custom")
    event["label"] = label
    if label.lower() == "edit" and comment is not None:
        event.update(kind="correction", correction=_text(comment))
    else:
        event["kind"] = "label"
    if comment is not None:
        event["comment"] = _text(comment)
    return [event]


# Braintrust ------------------------------------------------------------------


def braintrust(payload: Any) -> list[Fields]:
    """``log_feedback``: ``{id, scores: {name: 0..1}, expected, comment, metadata}``.

    ``id`` is the span the feedback is about. Thumbline joins on the trace: it
    is ``trace_id`` or ``root_span_id`` when the client sends one, else ``id``
    itself (return the root span's id to the client, as Braintrust's examples
    do). One ``score`` event per score name (0..1, as Braintrust requires); a
    score set to null withdraws it.
    ``expected`` becomes a correction.
    """
    data = _object("braintrust", payload)
    span = _required_id("braintrust", data, "id", "span_id")
    root = _first(data, "trace_id", "root_span_id")
    trace_id = str(root) if root is not None else span
    people, metadata = _split_metadata(data.get("metadata"), "braintrust")
    common: Fields = {"trace_id": trace_id, **people, "metadata": metadata}
    if span != trace_id:
        common["span_id"] = span
    scores = data.get("scores") or {}
    scores = _object("braintrust", scores, "scores")
    events: list[Fields] = []
    for name, value in scores.items():
        event: Fields = {"event_id": derived_id("braintrust", span, "score", name), "name": name}
        if value is None:
            event.update(kind="label", retracted=True)
        else:
            event.update(kind="score", value=value, range=(0.0, 1.0))  # as Braintrust checks
        events.append(event)
    if data.get("expected") is not None:
        events.append({
            "event_id": derived_id("braintrust", span, "expected"),
            "kind": "correction", "correction": _text(data["expected"]), "name": "expected",
        })  # fmt: skip
    hint = "send scores, expected or a comment"
    return _group("braintrust", span, common, events, data.get("comment"), hint)


# HoneyHive -------------------------------------------------------------------

_HONEYHIVE_KNOWN = ("rating", "score", "comment", "ground_truth", "actions", "user_id", "userId")


def honeyhive(payload: Any) -> list[Fields]:
    """The ``feedback`` object of ``enrich_session`` / ``enrich_span``.

    ``{session_id, event_id (the span, for enrich_span), feedback: {rating,
    score, comment, ground_truth, actions: {copied, regenerated}, ...}}``. A
    HoneyHive session is a trace: ``session_id`` (or ``trace_id``) is the trace
    id. ``rating`` true/false is a thumb, a number is a 1-5 rating; ``score``
    a number (0..1 a score, above 1 a 1-5 rating); ``ground_truth`` a
    correction; each action that is true an implicit signal named after it.
    Any other field of the feedback object is kept in metadata (HoneyHive's
    limits: 5 levels of objects, 2 of arrays).
    """
    data = _object("honeyhive", payload)
    trace_id = _required_id("honeyhive", data, "session_id", "trace_id", "sessionId")
    span = _first(data, "event_id", "span_id", "eventId")
    feedback = _object("honeyhive", data.get("feedback"), "feedback")
    target = str(span) if span is not None else trace_id
    extra = {k: v for k, v in feedback.items() if k not in _HONEYHIVE_KNOWN}
    common: Fields = {"trace_id": trace_id, **_people(data), **_people(feedback), "metadata": extra}
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
            event.update(kind="rating" if value > 1 else "score", value=value)
        else:
            raise _problem("honeyhive", f"feedback.{name}", value, "must be true/false or a number")
        events.append(event)
    if feedback.get("ground_truth") is not None:
        events.append({
            "event_id": derived_id("honeyhive", target, "ground_truth"), "kind": "correction",
            "correction": _text(feedback["ground_truth"]), "name": "ground_truth",
        })  # fmt: skip
    actions = feedback.get("actions") or {}
    actions = _object("honeyhive", actions, "feedback.actions")
    for name, happened in actions.items():
        if happened is True:
            events.append({
                "event_id": derived_id("honeyhive", target, "action", name),
                "kind": "signal", "name": name,
            })  # fmt: skip
        elif happened not in (False, None):
            raise _problem("honeyhive", f"feedback.actions.{name}", happened, "must be true/false")
    hint = "send rating, score, comment, ground_truth or actions"
    return _group("honeyhive", target, common, events, feedback.get("comment"), hint)


# Axiom -----------------------------------------------------------------------


def axiom(payload: Any) -> list[Fields]:
    """``{links: {traceId, spanId, capability, step, conversationId, userId},
    feedback: {kind, name, value, message, metadata}}`` as ``sendFeedback`` sends it.

    Kinds map one to one (``number`` is a score, ``enum`` a category); a thumb
    is ``up``/``down`` or 1/-1; ``message`` is the comment.
    """
    data = _object("axiom", payload)
    links = _object("axiom", data.get("links"), "links")
    feedback = _object("axiom", data.get("feedback"), "feedback")
    kind = feedback.get("kind") or feedback.get("type")
    if not isinstance(kind, str):
        raise _problem("axiom", "feedback.kind", kind,
                       "is required: thumb, number, bool, text, enum or signal")  # fmt: skip
    people, metadata = _split_metadata(feedback.get("metadata"), "axiom", "feedback.metadata")
    event: Fields = {
        "trace_id": _required_id("axiom", links, "traceId", "trace_id"),
        "kind": kind,
        **people,
        **_people(links),
        "metadata": metadata,
    }
    for field, names in (
        ("span_id", ("spanId", "span_id")),
        ("capability", ("capability",)),
        ("step", ("step",)),
        ("event_id", ("id", "event_id")),
    ):
        value = _first(links, *names) if field != "event_id" else _first(data, *names)
        if value is not None:
            event[field] = str(value)
    for field in ("name", "value", "range"):
        if feedback.get(field) is not None:
            event[field] = feedback[field]
    if feedback.get("message") is not None:
        event["comment"] = _text(feedback["message"])
    return [event]


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
    data = _object("attributes", payload)
    attrs = data.get("attributes")
    attrs = _object("attributes", attrs, "attributes") if attrs is not None else data
    trace_id = _required_id("attributes", data, "trace_id", "traceId")
    span = _first(data, "span_id", "spanId")
    target = str(span) if span is not None else trace_id
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _problem("attributes", "tags", tags, "must be a list of strings")
    common: Fields = {"trace_id": trace_id, **_people(data), **_people(attrs), "tags": tags}
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
            events[0]["category"] = _text(category)
        else:
            events.append({
                "event_id": derived_id("attributes", target, "user_feedback_category"),
                "kind": "category", "value": _text(category), "name": "user_feedback_category",
            })  # fmt: skip
    hint = f"send one of {', '.join(_ATTRIBUTES[:4])} or a tag"
    comment = attrs.get("user_feedback_comment")
    return _group("attributes", target, {**common, "metadata": metadata}, events, comment, hint)


#: The shapes the gateway accepts, by name.
SHAPES: dict[str, Callable[[Any], list[Fields]]] = {
    "trulayer": trulayer,
    "braintrust": braintrust,
    "honeyhive": honeyhive,
    "axiom": axiom,
    "attributes": attributes,
}


def to_events(shape: str, payload: Any) -> list[Fields]:
    """FeedbackEvent fields for one payload in ``shape`` (a key of :data:`SHAPES`).

    Raises:
        KeyError: an unknown shape.
        InvalidEvent: the payload does not have the shape (names the product's field).
    """
    return SHAPES[shape](payload)
