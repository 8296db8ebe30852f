"""The wire format: UTF-8 JSON, one event or a batch of events per Kafka message.

A message value is either one JSON object (one event: what any hand-written
producer in any language sends) or a JSON array of objects (a batch: what
thumbline's own producers send, because the stream's cost is per Kafka message,
not per event). Keys are optional; partitioning is re-done by ``trace_id``
downstream, so producers may partition and batch however they like.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from thumbline.schemas._base import Contract
from thumbline.schemas.errors import WireError

#: Largest message value accepted (Kafka's default ``message.max.bytes`` is 1 MiB).
MAX_MESSAGE_BYTES = 1_000_000
#: Most events in one batch message.
MAX_BATCH_EVENTS = 1_000


def decode_message(raw: bytes | None, *, max_bytes: int = MAX_MESSAGE_BYTES) -> list[Any]:
    """Split one message value into its events, still unvalidated.

    Items of a batch are returned as they are, objects or not: validate each one
    on its own so that one bad item dead-letters alone.

    Raises:
        WireError: the whole message is unusable (``oversize``, ``bad_json``,
            ``not_an_object``, ``empty_batch``, ``batch_too_large``).
    """
    if raw is None:
        raise WireError("bad_json", "the message has no value (a tombstone?)")
    if len(raw) > max_bytes:
        raise WireError("oversize", f"the message is {len(raw)} bytes; at most {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WireError("bad_json", f"not UTF-8 JSON: {exc}") from None
    if isinstance(data, dict):
        return [data]
    if isinstance(data, list):
        if not data:
            raise WireError("empty_batch", "the message is an empty JSON array")
        if len(data) > MAX_BATCH_EVENTS:
            raise WireError(
                "batch_too_large", f"{len(data)} events in one message; at most {MAX_BATCH_EVENTS}"
            )
        return data
    raise WireError(
        "not_an_object", f"expected a JSON object or an array of objects, got {type(data).__name__}"
    )


def encode_event(event: Contract) -> bytes:
    """One event as a JSON object."""
    return event.to_json()


def encode_batch(events: Sequence[Contract]) -> bytes:
    """Several events as one JSON array message."""
    return orjson.dumps([e.model_dump(mode="json", exclude_none=True) for e in events])


def encode_dicts(events: Sequence[dict[str, Any]]) -> bytes:
    """Already-dumped events as one JSON array message (the producers' fast path)."""
    return orjson.dumps(list(events))
