"""Thumbline's contracts: one frozen pydantic model per topic, the topic registry,
the wire format and the ClickHouse migrations. Imports nothing else from the project.
"""

from thumbline.schemas._base import TimeBounds
from thumbline.schemas.errors import InvalidEvent, ThumblineError, WireError
from thumbline.schemas.feedback import (
    Annotator,
    FeedbackEvent,
    FeedbackKind,
    Label,
    Source,
    Target,
    target_key,
)
from thumbline.schemas.records import (
    Alert,
    AlertState,
    DeadLetter,
    EnrichedFeedback,
    JoinStatus,
    RateWindow,
)
from thumbline.schemas.topics import Topic, Topics, partition_for, rates_partition
from thumbline.schemas.trace import TraceEvent, TraceStatus
from thumbline.schemas.wire import decode_message, encode_batch, encode_event

__all__ = [
    "Alert",
    "AlertState",
    "Annotator",
    "DeadLetter",
    "EnrichedFeedback",
    "FeedbackEvent",
    "FeedbackKind",
    "InvalidEvent",
    "JoinStatus",
    "Label",
    "RateWindow",
    "Source",
    "Target",
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
    "rates_partition",
    "target_key",
]
