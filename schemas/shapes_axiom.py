"""Axiom's feedback: the flat event its AI SDK sends, and the older nested shape.

``axiomhq/ai`` (``packages/ai/src/feedback.ts``) POSTs one flat event per call
to ``/v1/datasets/{dataset}/ingest``: ``{schemaUrl, id, name, kind, value,
message, category, metadata, links: {trace_id, span_id, capability, step,
conversation_id, userId}, event: "feedback"}``. The older nested shape
``{links: {traceId, ...}, feedback: {kind, name, value, message, metadata}}``
is still taken.

Axiom sends no range with a ``number`` ("Similarity score (0-1), star rating
(1-5)" in its docs), so thumbline reads the number as Axiom's docs mean it: a
JSON integer 1..5 is a star rating (1 is one star: bad), any other number a
0-1 score (outside 0..1 it keeps no normalised score and is neutral). A
``range`` in the payload, or a score config for the feedback's name (applied
by the join), overrides this.
"""

from __future__ import annotations

from typing import Any

from thumbline.schemas.shapes_common import (
    Fields,
    first,
    json_object,
    person_ids,
    problem,
    required_id,
    split_metadata,
    stars_or_score,
    text,
)

_SHAPE = "axiom"


def axiom(payload: Any) -> list[Fields]:
    """One Axiom feedback event (flat, as the SDK sends it, or nested) as FeedbackEvent fields.

    Kinds: ``thumb`` (1 / -1, or up / down), ``number`` (see the module),
    ``boolean`` / ``bool``, ``text`` (the SDK's ``Feedback.enum`` sends text too),
    ``enum`` (a category), ``signal``. ``message`` is the comment, ``category``
    the category, ``id`` the event id.
    """
    data = json_object(_SHAPE, payload)
    nested = isinstance(data.get("feedback"), dict)
    feedback, prefix = (data["feedback"], "feedback.") if nested else (data, "")
    links = json_object(_SHAPE, data.get("links"), "links")
    kind = feedback.get("kind") or feedback.get("type")
    if not isinstance(kind, str):
        raise problem(_SHAPE, f"{prefix}kind", kind,
                      "is required: thumb, number, boolean, text, enum or signal")  # fmt: skip
    ids, metadata = split_metadata(feedback.get("metadata"), _SHAPE, f"{prefix}metadata")
    event: Fields = {
        "trace_id": required_id(_SHAPE, links, "trace_id", "traceId"),
        "kind": kind,
        **ids,
        **person_ids(links),
        "metadata": metadata,
    }
    for field, names in (
        ("span_id", ("span_id", "spanId")),
        ("capability", ("capability",)),
        ("step", ("step",)),
    ):
        value = first(links, *names)
        if value is not None:
            event[field] = str(value)
    if first(data, "id", "event_id") is not None:
        event["event_id"] = str(first(data, "id", "event_id"))
    for field in ("name", "value", "range"):
        if feedback.get(field) is not None:
            event[field] = feedback[field]
    if kind == "number" and feedback.get("range") is None:
        event["kind"] = stars_or_score(feedback.get("value"))
    if feedback.get("message") is not None:
        event["comment"] = text(feedback["message"])
    if feedback.get("category") is not None:
        event["category"] = text(feedback["category"])
    return [event]
