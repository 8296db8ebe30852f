"""Errors of the producer SDK."""

from __future__ import annotations

from thumbline.schemas.errors import InvalidEvent, ThumblineError

__all__ = ["DeliveryFailed", "InvalidEvent", "ProducerClosed", "TopicMissing"]


class DeliveryFailed(ThumblineError):
    """Kafka did not acknowledge an event. ``retriable`` says whether a retry may help.

    The event may or may not have been written; sending it again with the same
    ``event_id`` is safe, since the store keeps one row per ``event_id``.
    """

    retriable = True

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable  # type: ignore[misc]  # per instance: Kafka decides


class ProducerClosed(ThumblineError):
    """The producer is not started, or already stopped."""


class TopicMissing(ThumblineError):
    """A topic the producer writes does not exist on the broker."""
