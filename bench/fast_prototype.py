"""A prototype of issue 13's fast decoder, kept for bench/validate.py: not wired, not shipped.

Measured at about pydantic's own speed (bench/validate.py, BENCHMARKS.md): the
Python work per event (checks, derive, building the model) costs as much as
pydantic-core's whole validation, so the stream keeps pydantic. What follows is
the design as it was meant to ship in schemas/.

The stream's fast decoder: JSON arrays of events straight to the pydantic models.

The join validates every input event; pydantic does it in some 7 us a feedback
event. Here msgspec decodes the array into structs whose types and bounds are
the models' own (lengths, strict numbers, enums, unknown fields refused),
the model's checks and derivations run as the same functions the models call
(:func:`~thumbline.schemas.feedback.derive`, :func:`~thumbline.schemas.trace.derive_trace`,
:func:`~thumbline.schemas._base.check_nested`...), and the events are built with
:meth:`Contract.trusted`.

The guarantee: :func:`decode_feedback` and :func:`decode_traces` return events
equal to what ``TypeAdapter(list[Model]).validate_json`` returns for the same
bytes (same ``model_dump()``, same JSON), or None, which means "not sure: ask
pydantic". They answer None for anything uncommon rather than reproduce it:
strings pydantic would strip, kind aliases, times not in RFC 3339 with an
offset, a missing ``event_id`` or ``ts`` (pydantic would generate them), JSON
pydantic reads more loosely (``1.0`` for a version), and any invalid event.
Checked on the load generator's arrays only (bench/validate.py compares
model_dump() and JSON); the hypothesis test was not written once the
measurement said not to ship it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from thumbline.schemas._base import (
    MAX_ATTRIBUTES_BYTES,
    MAX_COMMENT_LEN,
    MAX_CORRECTION_LEN,
    MAX_ID_LEN,
    MAX_LABEL_LEN,
    MAX_METADATA_BYTES,
    MAX_NAME_LEN,
    MAX_TAG_LEN,
    MAX_TAGS,
    check_nested,
)
from thumbline.schemas.feedback import (
    Annotator,
    FeedbackEvent,
    FeedbackKind,
    Source,
    check_range,
    check_value,
    derive,
    normal_label,
)
from thumbline.schemas.trace import TraceEvent, TraceStatus, derive_trace

# Bounds msgspec checks in C. What pydantic would strip (str_strip_whitespace) and the
# Id pattern (no whitespace) are checked after decoding, cheaper in Python than with
# msgspec's regex patterns: a string str.strip() would change is refused (Python's
# whitespace includes the Unicode White_Space pydantic-core strips), and an Id with
# a space or a character outside str.isprintable() (which every other whitespace is).
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LEN)]
_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LABEL_LEN)]
_Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG_LEN)]
_Value = Annotated[str, msgspec.Meta(max_length=MAX_CORRECTION_LEN)]
_Comment = Annotated[str, msgspec.Meta(max_length=MAX_COMMENT_LEN)]
_Correction = Annotated[str, msgspec.Meta(max_length=MAX_CORRECTION_LEN)]
_Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
_Count = Annotated[int, msgspec.Meta(ge=0)]

# RFC 3339 with an offset, the form every producer of ours sends; pydantic reads
# more (no offset, a space, unix seconds...), and those go to pydantic. Decoded as
# text: msgspec's own datetimes round a fraction of more than 6 digits where
# pydantic truncates it.
_RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"(?:Z|[+-][0-9]{2}:[0-9]{2})\Z"
)
_Time = Annotated[str, msgspec.Meta(pattern=_RFC3339)]


def _settle(text: str) -> datetime:
    """RFC 3339 text as pydantic and settle_times leave it (ValueError, OverflowError).

    A zero offset stays as it is (``datetime.UTC`` here, pydantic's ``TzInfo(0)``
    there: equal datetimes, serialised alike); another is converted to UTC.
    """
    when = datetime.fromisoformat(text)
    if text[-1] != "Z" and when.utcoffset():
        return when.astimezone(UTC)
    return when


class _FeedbackWire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """FeedbackEvent's fields in its order and bounds; event_id and ts required."""

    schema_version: Literal[1] = 1
    event_id: _Id
    trace_id: _Id
    span_id: _Id | None = None
    name: _Name | None = None
    kind: FeedbackKind | None = None
    value: bool | float | _Value | None = None
    range: tuple[float, float] | None = None
    label: _Label | None = None
    score: _Unit | None = None
    comment: _Comment | None = None
    correction: _Correction | None = None
    category: _Name | None = None
    tags: Annotated[tuple[_Tag, ...], msgspec.Meta(max_length=MAX_TAGS)] = ()
    source: Source | None = None
    annotator: Annotator = Annotator.END_USER
    retracted: bool = False
    user_id: _Id | None = None
    session_id: _Id | None = None
    conversation_id: _Id | None = None
    project: _Name = "default"
    environment: _Name | None = None
    capability: _Name | None = None
    step: _Name | None = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    ts: _Time
    received_at: _Time | None = None


class _TraceWire(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """TraceEvent's fields in its order and bounds."""

    schema_version: Literal[1] = 1
    trace_id: _Id
    span_id: _Id | None = None
    parent_span_id: _Id | None = None
    name: _Name | None = None
    project: _Name = "default"
    environment: _Name = "default"
    model: _Name | None = None
    capability: _Name | None = None
    step: _Name | None = None
    user_id: _Id | None = None
    session_id: _Id | None = None
    conversation_id: _Id | None = None
    start_time: _Time | None = None
    end_time: _Time | None = None
    latency_ms: _NonNegative | None = None
    input_tokens: _Count | None = None
    output_tokens: _Count | None = None
    total_tokens: _Count | None = None
    cost_usd: _NonNegative | None = None
    status: TraceStatus = TraceStatus.UNSET
    error: _Comment | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)
    received_at: _Time | None = None


_FEEDBACK = msgspec.json.Decoder(list[_FeedbackWire])
_TRACES = msgspec.json.Decoder(list[_TraceWire])
_asdict = msgspec.structs.asdict
_INF = float("inf")


def decode_feedback(body: bytes) -> list[FeedbackEvent] | None:
    """The FeedbackEvents of a JSON array, as pydantic would give them; None: ask pydantic."""
    try:
        return [_feedback(wire) for wire in _FEEDBACK.decode(body)]
    except (msgspec.DecodeError, ValueError, TypeError, OverflowError):
        return None


def decode_traces(body: bytes) -> list[TraceEvent] | None:
    """The TraceEvents of a JSON array, as pydantic would give them; None: ask pydantic."""
    try:
        return [_trace(wire) for wire in _TRACES.decode(body)]
    except (msgspec.DecodeError, ValueError, TypeError, OverflowError):
        return None


def _feedback(wire: _FeedbackWire) -> FeedbackEvent:
    # What FeedbackEvent's validators do, in their order (ValueError: refused).
    for text in (wire.event_id, wire.trace_id, wire.span_id, wire.user_id, wire.session_id,
                 wire.conversation_id):  # fmt: skip
        if text is not None and (" " in text or not text.isprintable()):
            raise ValueError("not an Id")
    value = wire.value
    for text in (wire.name, value if type(value) is str else None, wire.label, wire.comment,
                 wire.correction, wire.category, *wire.tags, wire.project, wire.environment,
                 wire.capability, wire.step):  # fmt: skip
        if text is not None and text.strip() is not text:
            raise ValueError("would be stripped")
    if wire.label is not None:
        wire.label = normal_label(wire.label)
    check_range(wire.range)
    check_value(wire.value)
    if wire.metadata:
        check_nested(wire.metadata, "metadata", MAX_METADATA_BYTES)
    fields = _asdict(wire)
    fields["ts"] = _settle(wire.ts)
    if wire.received_at is not None:
        fields["received_at"] = _settle(wire.received_at)
    fields.update(derive(wire))
    return FeedbackEvent.trusted(fields)


def _trace(wire: _TraceWire) -> TraceEvent:
    for text in (wire.trace_id, wire.span_id, wire.parent_span_id, wire.user_id,
                 wire.session_id, wire.conversation_id):  # fmt: skip
        if text is not None and (" " in text or not text.isprintable()):
            raise ValueError("not an Id")
    for text in (wire.name, wire.project, wire.environment, wire.model, wire.capability,
                 wire.step, wire.error):  # fmt: skip
        if text is not None and text.strip() is not text:
            raise ValueError("would be stripped")
    if wire.cost_usd == _INF:
        raise ValueError("cost_usd: not finite")  # allow_inf_nan=False
    if wire.attributes:
        check_nested(wire.attributes, "attributes", MAX_ATTRIBUTES_BYTES)
    fields = _asdict(wire)
    if wire.start_time is not None:
        fields["start_time"] = _settle(wire.start_time)
    if wire.end_time is not None:
        fields["end_time"] = _settle(wire.end_time)
    if wire.received_at is not None:
        fields["received_at"] = _settle(wire.received_at)
    fields.update(derive_trace(fields))
    return TraceEvent.trusted(fields)
