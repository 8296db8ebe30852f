"""The Python producer SDK: publish feedback and trace events to thumbline's Kafka topics."""

from producers.errors import DeliveryFailed, InvalidEvent, ProducerClosed, TopicMissing
from producers.kafka import Delivery, FeedbackProducer, new_span_id, new_trace_id
from producers.sync import SyncFeedbackProducer

__all__ = [
    "Delivery",
    "DeliveryFailed",
    "FeedbackProducer",
    "InvalidEvent",
    "ProducerClosed",
    "SyncFeedbackProducer",
    "TopicMissing",
    "new_span_id",
    "new_trace_id",
]
