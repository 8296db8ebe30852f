"""What the hosted products' shapes share: finding their fields and deriving event ids.

Each helper raises :class:`~thumbline.schemas.errors.InvalidEvent` naming the
product's own field, so a refusal says what to change in the payload as sent.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from thumbline.schemas.errors import InvalidEvent

#: Namespace of the event ids derived from (product, span, measurement).
_IDS = uuid.UUID("6f1d6c1e-8a4e-4c41-9a55-2f0f0e6f1b7a")

Fields = dict[str, Any]


def derived_id(product: str, *parts: str) -> str:
    """The same measurement on the same span always gets the same event id."""
    return uuid.uuid5(_IDS, "\x1f".join((product, *parts))).hex


def problem(shape: str, field: str, value: Any, message: str) -> InvalidEvent:
    return InvalidEvent(f"{shape} feedback", [(field, value, message)])


def json_object(shape: str, payload: Any, field: str = "(body)") -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise problem(shape, field, payload, "must be a JSON object")
    return payload


def first(data: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` present (snake_case and camelCase spellings)."""
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


def text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def required_id(shape: str, data: dict[str, Any], *names: str) -> str:
    value = first(data, *names)
    if value is None:
        raise problem(shape, names[0], None, "is required: the id of the trace it is about")
    if not isinstance(value, str | int):
        raise problem(shape, names[0], value, "must be a string id")
    return str(value)


def person_ids(data: dict[str, Any]) -> Fields:
    """user, session and conversation ids, in either spelling."""
    out: Fields = {}
    for field, names in (
        ("user_id", ("user_id", "userId")),
        ("session_id", ("session_id", "sessionId")),
        ("conversation_id", ("conversation_id", "conversationId")),
    ):
        value = first(data, *names)
        if value is not None:
            out[field] = str(value)
    return out


def split_metadata(metadata: Any, shape: str, field: str = "metadata") -> tuple[Fields, Fields]:
    """(ids lifted to their own fields, the rest of the metadata)."""
    if metadata is None:
        return {}, {}
    metadata = json_object(shape, metadata, field)
    people = person_ids(metadata)
    rest = {
        k: v
        for k, v in metadata.items()
        if k not in ("user_id", "userId", "session_id", "sessionId", "conversation_id",
                     "conversationId")
    }  # fmt: skip
    return people, rest


def group(
    product: str, target: str, common: Fields, events: list[Fields], comment: Any, hint: str
) -> list[Fields]:
    """Give every event the common fields and the primary one the comment.

    A comment alone becomes a ``text`` event (with an id derived from ``target``);
    nothing at all is refused with ``hint``.
    """
    if not events and comment is None:
        raise nothing(product, hint)
    if not events:
        events = [{"event_id": derived_id(product, target, "comment"), "kind": "text"}]
    if comment is not None:
        events[0]["comment"] = text(comment)
    return [{**common, **e} for e in events]


def nothing(shape: str, hint: str) -> InvalidEvent:
    return problem(shape, "(body)", None, f"carries no feedback: {hint}")


def stars_or_score(value: Any) -> str:
    """``rating`` for a JSON integer 1..5 (stars: 1 is one star), else ``score`` (0..1).

    For products that send a number without its range (HoneyHive's ``score``,
    Axiom's ``number``): a score outside 0..1 then keeps no normalised score and
    is neutral, for a score config to give it a meaning.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return "rating"
    return "score"
