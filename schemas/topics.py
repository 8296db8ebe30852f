"""The topic registry: every topic thumbline reads or writes, in one place.

All topics carry UTF-8 JSON (see :mod:`schemas.wire`). The topics the join
reads (``feedback`` and ``traces``) and the join's output are co-partitioned:
same partition count, and every event lives on the partition of its
``trace_id`` under :func:`partition_for`, thumbline's one partitioner.
Producers in other languages may partition differently; the stream's first
stage validates each event and re-keys it to that partition before the join.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.partitioner import murmur2

from schemas._base import Contract
from schemas.feedback import FeedbackEvent
from schemas.records import Alert, DeadLetter, EnrichedFeedback, KeyedBatch, RateWindow
from schemas.trace import TraceEvent

DEFAULT_PREFIX = "thumbline."
DEFAULT_PARTITIONS = 8


_HASHES: dict[str, int] = {}
_HASHES_MAX = 200_000


def partition_for(trace_id: str, partitions: int) -> int:
    """The partition of ``trace_id``: murmur2, as Kafka's Java client and aiokafka hash keys.

    aiokafka's murmur2 is pure Python (about 4 us a key) and the join asks for
    the same trace id three times (its trace, its feedback, the enriched row),
    so recent hashes are kept.
    """
    hashed = _HASHES.get(trace_id)
    if hashed is None:
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.clear()
        hashed = _HASHES[trace_id] = murmur2(trace_id.encode()) & 0x7FFFFFFF
    return hashed % partitions


@dataclass(frozen=True, slots=True)
class Topic:
    """One topic: its full name, partition count, key and the model of its values."""

    name: str
    partitions: int
    key: str | None
    model: type[Contract]
    description: str


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one deployment, named with its prefix."""

    feedback: Topic
    traces: Topic
    keyed: Topic
    enriched: Topic
    rates: Topic
    alerts: Topic
    dlq: Topic

    @classmethod
    def build(cls, prefix: str = DEFAULT_PREFIX, partitions: int = DEFAULT_PARTITIONS) -> Topics:
        """Name every topic with ``prefix``; the join's topics get ``partitions`` each."""
        return cls(
            feedback=Topic(
                f"{prefix}feedback",
                partitions,
                "trace_id",
                FeedbackEvent,
                "Feedback events from producers: one JSON object or an array per message.",
            ),
            traces=Topic(
                f"{prefix}traces",
                partitions,
                "trace_id",
                TraceEvent,
                "Trace and span events from producers: one JSON object or an array per message.",
            ),
            keyed=Topic(
                f"{prefix}keyed",
                partitions,
                "trace_id",
                KeyedBatch,
                "Internal: events the join moved to the partition of their trace_id.",
            ),
            enriched=Topic(
                f"{prefix}feedback.enriched",
                partitions,
                "trace_id",
                EnrichedFeedback,
                "Feedback joined with its trace; feeds the feedback table and the rates.",
            ),
            rates=Topic(
                f"{prefix}rates",
                max(1, partitions // 2),
                "project",
                RateWindow,
                "Bad-feedback rate windows per project, environment, model and capability.",
            ),
            alerts=Topic(
                f"{prefix}alerts",
                1,
                "alert_id",
                Alert,
                "Spike alerts, firing and resolved.",
            ),
            dlq=Topic(
                f"{prefix}dlq",
                1,
                None,
                DeadLetter,
                "Inputs that could not be processed, with the raw bytes and the reason.",
            ),
        )

    def all(self) -> tuple[Topic, ...]:
        return (
            self.feedback,
            self.traces,
            self.keyed,
            self.enriched,
            self.rates,
            self.alerts,
            self.dlq,
        )
