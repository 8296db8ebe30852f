"""Thumbline's contracts: one frozen pydantic model per topic, the topic registry,
the wire format and the ClickHouse migrations. Imports nothing else from the project.
"""

from schemas._base import TimeBounds
from schemas.errors import InvalidEvent, ThumblineError, WireError
from schemas.feedback import FeedbackEvent, FeedbackKind, Label, Source
from schemas.records import (
    Alert,
    AlertState,
    DeadLetter,
    EnrichedFeedback,
    JoinStatus,
    RateWindow,
)
from schemas.topics import Topic, Topics, partition_for
from schemas.trace import TraceEvent, TraceStatus
from schemas.wire import decode_message, encode_batch, encode_event

__all__ = [
    "Alert",
    "AlertState",
    "DeadLetter",
    "EnrichedFeedback",
    "FeedbackEvent",
    "FeedbackKind",
    "InvalidEvent",
    "JoinStatus",
    "Label",
    "RateWindow",
    "Source",
    "ThumblineError",
    "TimeBounds",
    "Topic",
    "Topics",
    "TraceEvent",
    "TraceStatus",
    "WireError",
    "decode_message",
    "encode_batch",
    "encode_event",
    "partition_for",
]
