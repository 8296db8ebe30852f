"""read_enriched: what a message of ``feedback.enriched`` holds, read without trusting it.

The join writes two kinds of message there: arrays of enriched rows (keyed by
the join partition they come from) and **watermark markers**, per partition a
JSON object ``{"watermarks": {join partition: ms}, "durable": offset}`` (see
:mod:`thumbline.stream_jobs.rates_job`). Any Kafka client can write to the topic
too, so a message may be neither: larger than the join writes
(:data:`MAX_MESSAGE_BYTES`, :data:`MAX_ROWS_PER_MESSAGE`), not JSON, or a
malformed marker. :func:`read_message` tells them apart and makes a dead letter
of what cannot be read; rows are checked one by one where they count
(:func:`~thumbline.stream_jobs.rate_contributions.contribution`), and
:func:`rejected_letters` makes the dead letters of those refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from thumbline.schemas import DeadLetter
from thumbline.stream_jobs.decode_input import dead_letter
from thumbline.stream_jobs.rate_contributions import Rejected
from thumbline.stream_jobs.sink import ARRAY_MAX_ROWS

logger = logging.getLogger(__name__)

#: The largest enriched message read: the join's producer sends at most 4 MiB.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: The most rows in one enriched message: the join writes arrays of ARRAY_MAX_ROWS.
MAX_ROWS_PER_MESSAGE = ARRAY_MAX_ROWS

#: (enriched partition, join partition) -> the join's watermark there, in seconds
Watermarks = dict[tuple[int, int], float]


@dataclass(frozen=True, slots=True)
class Read:
    """One enriched message: its rows (unchecked; ``whole``: one object, not an array),
    or a marker (its watermarks and durable offset), or a dead letter."""

    rows: list[Any] | None = None
    whole: bool = False
    watermarks: Watermarks | None = None
    durable: int = -1
    dead: DeadLetter | None = None


def read_message(message: Any) -> Read:
    """Read a Kafka message of ``feedback.enriched`` (its ``value``, ``key``, ``topic``,
    ``partition`` and ``offset``) into rows, a marker or a dead letter."""
    raw = message.value
    if raw is not None and len(raw) > MAX_MESSAGE_BYTES:
        return Read(dead=dead_letter(message, -1, "oversize", (
            f"{len(raw)} bytes; the join writes at most {MAX_MESSAGE_BYTES}: only "
            "thumbline's join writes this topic, send feedback to its input topic"
        ), raw))  # fmt: skip
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Read(dead=dead_letter(message, -1, "bad_json", str(exc), raw or b""))
    if isinstance(value, dict) and ("watermarks" in value or "watermark" in value):
        marker = read_marker(message.partition, value)
        if marker is None:
            return Read(dead=dead_letter(message, -1, "invalid_marker", (
                'a marker is {"watermarks": {join partition: ms}, "durable": offset}'
            ), raw))  # fmt: skip
        return Read(watermarks=marker[0], durable=marker[1])
    rows = value if isinstance(value, list) else [value]
    if len(rows) > MAX_ROWS_PER_MESSAGE:
        return Read(dead=dead_letter(message, -1, "oversize", (
            f"{len(rows)} rows; the join writes at most {MAX_ROWS_PER_MESSAGE} a message"
        ), raw))  # fmt: skip
    return Read(rows=rows, whole=not isinstance(value, list))


def read_marker(partition: int, marker: dict[str, Any]) -> tuple[Watermarks, int] | None:
    """A marker's watermarks and durable offset, read whole (None if any of it is
    malformed: then none of it counts)."""
    try:
        durable = int(marker.get("durable", -1))
        # {"watermark": ms}: a join of an earlier version, on its own partition
        found = marker.get("watermarks") or {str(partition): marker["watermark"]}
        read = {(partition, int(source)): float(ms) / 1000 for source, ms in found.items()}
    except (TypeError, ValueError, AttributeError, OverflowError):
        logger.warning("skipped a malformed watermark marker on partition %d", partition)
        return None
    return read, durable


def rejected_letters(
    message: Any, rows: list[Any], rejected: list[Rejected], whole: bool
) -> list[DeadLetter]:
    """The dead letters of the rows of ``message`` that the rates refused, each with its
    place in the array (-1 when the message was one object) and its own bytes."""
    return [
        dead_letter(message, -1 if whole else r.index, r.reason, r.error,
                    orjson.dumps(rows[r.index]))
        for r in rejected
    ]  # fmt: skip


def source_of(key: bytes | None, partition: int) -> int:
    """The join partition an enriched message comes from (its key); without one, an
    earlier version's message, from the join partition of the same number."""
    try:
        return int(key) if key else partition
    except ValueError:
        return partition
