"""The Python producer SDK: feedback and trace events to Kafka, or over HTTP to the gateway."""

from producers.api import Delivery, new_span_id, new_trace_id
from producers.errors import DeliveryFailed, InvalidEvent, ProducerClosed, TopicMissing
from producers.http import GatewayProducer
from producers.kafka import FeedbackProducer
from producers.sync import SyncFeedbackProducer

__all__ = [
    "Delivery",
    "DeliveryFailed",
    "FeedbackProducer",
    "GatewayProducer",
    "InvalidEvent",
    "ProducerClosed",
    "SyncFeedbackProducer",
    "TopicMissing",
    "new_span_id",
    "new_trace_id",
]
