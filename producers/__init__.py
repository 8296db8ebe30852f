"""The Python producer SDK: feedback and trace events to Kafka, or over HTTP to the gateway."""

from thumbline.producers.api import Delivery, new_span_id, new_trace_id
from thumbline.producers.errors import DeliveryFailed, InvalidEvent, ProducerClosed, TopicMissing
from thumbline.producers.http import GatewayProducer
from thumbline.producers.kafka import FeedbackProducer
from thumbline.producers.sync import SyncFeedbackProducer

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
