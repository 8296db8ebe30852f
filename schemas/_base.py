"""Shared pieces of the event contracts: limits, the frozen base model, readable errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from thumbline.schemas.errors import _MISSING, InvalidEvent

# Limits. They bound what one event may cost the pipeline and the store; the
# README's "Event JSON" section documents them.
MAX_ID_LEN = 256
MAX_NAME_LEN = 128
MAX_LABEL_LEN = 64
MAX_COMMENT_LEN = 10_000
MAX_CORRECTION_LEN = 32_768
MAX_TAGS = 32
MAX_TAG_LEN = 128
MAX_METADATA_BYTES = 16_384
MAX_ATTRIBUTES_BYTES = 32_768
MAX_OBJECT_DEPTH = 5
MAX_ARRAY_DEPTH = 2
#: A trace's ``input`` and ``output`` (the question and the answer), in characters
#: (Unicode code points). Longer text is not refused: it is cut to this length,
#: marker included (see :func:`truncate_content`).
MAX_CONTENT_CHARS = 16_000
#: How a cut text ends; ``length`` is the length of the text as sent.
CONTENT_MARKER = "… [truncated by thumbline: {length:,} characters]"


class Contract(BaseModel):
    """Base of every topic model: frozen, unknown fields refused, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate ``data`` (a dict) into the model.

        Raises:
            InvalidEvent: one readable line per offending field.
        """
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_event(cls.__name__, exc) from None

    @classmethod
    def trusted(cls, fields: dict[str, Any]) -> Self:
        """Build from values that are already valid, with every field given; no checks.

        For the stream's hot path: eight times cheaper than ``model_construct``,
        which also fills defaults. Never use it on input from outside.
        """
        instance = cls.__new__(cls)
        object.__setattr__(instance, "__dict__", fields)
        object.__setattr__(instance, "__pydantic_fields_set__", set(fields))
        object.__setattr__(instance, "__pydantic_extra__", None)
        object.__setattr__(instance, "__pydantic_private__", None)
        return instance

    def to_json(self) -> bytes:
        """The event as UTF-8 JSON, as it travels on the wire."""
        return orjson.dumps(self.model_dump(mode="json", exclude_none=True))


# Cross-field checks raise "field: message" so the error can still name a field.
_FIELD_IN_MESSAGE = re.compile(r"^([a-z_]+): (.+)$", re.S)


def invalid_event(model: str, exc: ValidationError) -> InvalidEvent:
    problems: list[tuple[str, Any, str]] = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "(event)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            message = "is required"
            value = _MISSING
        elif err["type"] == "extra_forbidden":
            message = "is not a field of this event"
            value = _MISSING
        elif err["type"] == "string_pattern_mismatch":
            message = "must be non-empty and contain no whitespace"
            value = err.get("input", _MISSING)
        else:
            value = err.get("input", _MISSING)
            named = _FIELD_IN_MESSAGE.match(message) if field == "(event)" else None
            if named:
                field, message = named.group(1), named.group(2)
            if field == "(event)" or isinstance(value, dict):
                value = _MISSING
        problems.append((field, value, message))
    return InvalidEvent(model, problems)


def utc_now() -> datetime:
    return datetime.now(UTC)


#: Event-time fields of each contract that must lie near the time the event was received.
EVENT_TIMES = {"FeedbackEvent": ("ts",), "TraceEvent": ("start_time", "end_time")}


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """How far an event's time may lie from the time it was received.

    An event time more than ``max_future`` seconds ahead of its reception, or
    more than ``max_age`` seconds before it, is refused: at the gateway with a
    422 naming the field, in the stream as a dead letter ``ts_out_of_range``.
    Every open rate window, spike track and store row it would make is then
    within that span of now.
    """

    max_age: float = 7 * 86400.0
    max_future: float = 3600.0

    def check(self, event: Any, received: datetime, *, fields: tuple[str, ...] = ()) -> None:
        """Raise :class:`InvalidEvent` naming the first time field out of range.

        ``received``: when the ingest point received the event (the gateway's
        clock, or the Kafka message's timestamp for the stream). ``fields``:
        the time fields to check (default: the contract's event times).
        """
        model = type(event).__name__
        for name in fields or EVENT_TIMES.get(model, ()):
            value = getattr(event, name)
            if value is None:
                continue
            ahead = (value - received).total_seconds()
            if ahead > self.max_future:
                raise InvalidEvent(model, [(name, value.isoformat(),
                    f"is {_span(ahead)} ahead of the time it was received "
                    f"({received.isoformat(timespec='seconds')}); at most {_span(self.max_future)} "
                    "is allowed (check the sender's clock)")])  # fmt: skip
            if -ahead > self.max_age:
                raise InvalidEvent(model, [(name, value.isoformat(),
                    f"is {_span(-ahead)} older than the time it was received "
                    f"({received.isoformat(timespec='seconds')}); at most {_span(self.max_age)} "
                    "is allowed (THUMBLINE_INGEST_MAX_AGE_SECONDS)")])  # fmt: skip


def _span(seconds: float) -> str:
    units = (("d", 86400), ("h", 3600), ("min", 60))
    unit, size = next(((u, n) for u, n in units if seconds >= n), ("s", 1))
    value = seconds / size
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def truncate_content(text: str, limit: int = MAX_CONTENT_CHARS) -> str:
    """``text``, or, when longer than ``limit`` characters, its start and the marker.

    The result is at most ``limit`` characters, the marker included, so a cut
    text is kept as it is when validated again (the stream validates events
    that the gateway or a forward validated already). Characters are code
    points: a cut never splits one (it may split a cluster such as an emoji
    with a skin tone).
    """
    if len(text) <= limit:
        return text
    marker = CONTENT_MARKER.format(length=len(text))
    return text[: max(limit - len(marker), 0)] + marker


def require_aware(value: datetime | None, field: str) -> datetime | None:
    """Refuse naive datetimes (their zone is a guess) and normalise to UTC."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(_naive_message(field))
    return value.astimezone(UTC)


def settle_times(event: Any, names: tuple[str, ...]) -> None:
    """Check and normalise the datetimes of a just-validated event, in place.

    One call from the model's own validator instead of one field validator per
    datetime: each validator is a call from pydantic-core back into Python, and
    on the stream's hot path those calls cost more than the parsing. Errors name
    the field ("ts: ..."), as field validators would.
    """
    for name in names:
        value = getattr(event, name)
        if value is None:
            continue
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(f"{name}: " + _naive_message(name))
        if offset:
            try:
                object.__setattr__(event, name, value.astimezone(UTC))
            except OverflowError:  # year 1 or 9999 with an offset: no such time in UTC
                raise ValueError(f"{name}: {value.isoformat()} has no UTC time") from None


def _naive_message(field: str) -> str:
    return f"{field} needs a timezone: send ISO 8601 with an offset, e.g. 2026-11-23T10:00:00Z"


def check_nested(value: dict[str, Any], field: str, max_bytes: int) -> dict[str, Any]:
    """Bound a free-form JSON object: nesting depth and encoded size."""
    _check_depth(value, field, objects=0, arrays=0)
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:
        raise ValueError(f"{field} must be plain JSON: {exc}") from None
    if size > max_bytes:
        raise ValueError(f"{field} is {size} bytes of JSON; at most {max_bytes} are allowed")
    return value


def _check_depth(value: Any, field: str, *, objects: int, arrays: int) -> None:
    if isinstance(value, dict):
        objects += 1
        if objects > MAX_OBJECT_DEPTH:
            raise ValueError(f"{field} nests objects deeper than {MAX_OBJECT_DEPTH} levels")
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{field} keys must be strings")
            _check_depth(item, field, objects=objects, arrays=arrays)
    elif isinstance(value, list):
        arrays += 1
        if arrays > MAX_ARRAY_DEPTH:
            raise ValueError(f"{field} nests arrays deeper than {MAX_ARRAY_DEPTH} levels")
        for item in value:
            _check_depth(item, field, objects=objects, arrays=arrays)
