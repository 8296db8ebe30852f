"""FeedbackProducer: the async Python SDK, publishing straight to Kafka with aiokafka.

Events are validated against :mod:`thumbline.schemas` before anything is sent (an
invalid event raises :class:`InvalidEvent` and is never published), stamped
with ``received_at``, and grouped into batch messages (JSON arrays) per
partition of their ``trace_id`` under thumbline's partitioner. A batch is sent
when it is full or after ``linger_ms``; aiokafka then compresses and writes it
with ``acks=all``. Each event's future resolves when Kafka acknowledged the
message that carries it, or fails with :class:`DeliveryFailed`: nothing is
dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from thumbline.producers.api import Delivery, Event, EventHelpers, spawn
from thumbline.producers.errors import DeliveryFailed, InvalidEvent, ProducerClosed, TopicMissing
from thumbline.schemas import FeedbackEvent, partition_for
from thumbline.schemas.topics import DEFAULT_PREFIX, Topics
from thumbline.schemas.wire import MAX_BATCH_EVENTS

logger = logging.getLogger(__name__)


_ALWAYS_RETRIABLE = (KafkaTimeoutError, KafkaConnectionError, OSError)
ErrorCallback = Callable[[Event, DeliveryFailed], None]


@dataclass(slots=True)
class _Batch:
    """Events bound for one partition, sent as one JSON-array message."""

    topic: str
    partition: int
    ack: asyncio.Future[int]  # the message's offset, once Kafka acknowledged it
    events: list[Event] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    waiters: list[tuple[int, asyncio.Future[Delivery]]] = field(default_factory=list)
    size: int = 2
    timer: asyncio.TimerHandle | None = None

    def delivery(self, index: int, offset: int) -> Delivery:
        event = self.events[index]
        return Delivery(
            event_id=getattr(event, "event_id", event.span_id),
            trace_id=event.trace_id or "",
            topic=self.topic,
            partition=self.partition,
            offset=offset,
            index=index,
        )


class FeedbackProducer(EventHelpers):
    """Publishes feedback and trace events to Kafka, batched per partition.

    Use ``async with FeedbackProducer(bootstrap_servers=...) as fb:``, or call
    ``start()`` and ``stop()`` (safe to call twice). The topics must exist
    (``thumbline up`` creates them); the producer never lets the broker
    auto-create one with the wrong partition count.

    Args:
        bootstrap_servers: ``host:port[,host:port]``.
        topic_prefix: prefix of the topic names (default ``thumbline.``).
        linger_ms: how long a batch waits for more events before it is sent.
        max_batch_events: events per batch message (at most 1,000).
        max_batch_bytes: encoded bytes per batch message.
        compression: ``lz4``, ``zstd``, ``gzip``, ``snappy`` or None.
        on_error: called with the event and the error of every failed delivery,
            in addition to the failed future (for fire-and-forget callers).
        request_timeout_ms: how long to wait for an acknowledgement.
        project: the project of every event the helpers build without one
            (absent: ``default``); part of each event's identity.
        **kafka_kwargs: passed to ``AIOKafkaProducer`` (SASL, TLS...).
    """

    def __init__(
        self,
        *,
        bootstrap_servers: str,
        project: str | None = None,
        topic_prefix: str = DEFAULT_PREFIX,
        linger_ms: float = 5.0,
        max_batch_events: int = 500,
        max_batch_bytes: int = 512 * 1024,
        compression: str | None = "lz4",
        on_error: ErrorCallback | None = None,
        request_timeout_ms: int = 30_000,
        **kafka_kwargs: Any,
    ) -> None:
        if not 1 <= max_batch_events <= MAX_BATCH_EVENTS:
            raise ValueError(f"max_batch_events must be 1..{MAX_BATCH_EVENTS}")
        self.project = project
        self._topics = Topics.build(topic_prefix)
        self._linger = linger_ms / 1000.0
        self._max_events = max_batch_events
        self._max_bytes = max_batch_bytes
        self._on_error = on_error
        self._kafka_config: dict[str, Any] = dict(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            compression_type=compression,
            linger_ms=2,
            max_request_size=max(1_048_576, max_batch_bytes * 2),
            request_timeout_ms=request_timeout_ms,
            **kafka_kwargs,
        )
        # Built in start(): aiokafka binds to the running loop when it is created.
        self._producer: Any = None
        self._partitions: dict[str, int] = {}
        self._batches: dict[tuple[str, int], _Batch] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._state = "new"

    # Lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Connect, and learn the partition counts of the topics.

        Raises:
            TopicMissing: a topic does not exist; run ``thumbline up`` first.
            DeliveryFailed: the broker cannot be reached (retriable).
        """
        if self._state != "new":
            return
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self._kafka_config)
        try:
            await self._producer.start()
            cluster = await self._producer.client.fetch_all_metadata()
        except KafkaError as exc:
            await self._producer.stop()
            self._state = "stopped"
            raise DeliveryFailed(f"cannot reach Kafka: {exc}", retriable=True) from exc
        for topic in (self._topics.feedback, self._topics.traces):
            parts = cluster.partitions_for_topic(topic.name)
            if not parts:
                await self._producer.stop()
                self._state = "stopped"
                raise TopicMissing(
                    f"topic {topic.name} does not exist: start `thumbline up` (or run "
                    "`thumbline topics create`) before producing"
                )
            self._partitions[topic.name] = len(parts)
        self._state = "running"

    async def stop(self) -> None:
        """Send what is buffered, wait for its acknowledgements, and disconnect.

        Safe to call twice. Events still pending fail with ProducerClosed only if
        the broker is gone; otherwise they are delivered before stop returns.
        """
        if self._state != "running":
            self._state = "stopped"
            return
        self._state = "stopping"
        try:
            await self.flush()
        finally:
            await self._producer.stop()
            self._state = "stopped"

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._state == "running"

    async def __aenter__(self) -> FeedbackProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # Sending ---------------------------------------------------------------

    def _enqueue(self, event: Event) -> tuple[_Batch, int]:
        """Add an event to the batch of its partition; return the batch and its index there."""
        if self._state not in ("running", "stopping"):
            raise ProducerClosed("the producer is not started (call start() or use async with)")
        # pydantic-core serialises straight to JSON bytes; received_at is spliced in
        # rather than set with model_copy, which costs more than the serialisation.
        encoded = type(event).__pydantic_serializer__.to_json(event, exclude_none=True)
        if event.received_at is None:
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            encoded = b'%s,"received_at":"%s"}' % (encoded[:-1], stamp.encode())
        if len(encoded) + 2 > self._max_bytes:
            raise InvalidEvent(
                type(event).__name__,
                [("(event)", len(encoded), f"is larger than {self._max_bytes} bytes encoded")],
            )
        topic = self._topics.feedback if isinstance(event, FeedbackEvent) else self._topics.traces
        key = (topic.name, partition_for(event.join_key, self._partitions[topic.name]))
        batch = self._batches.get(key)
        if batch is not None and batch.size + len(encoded) + 1 > self._max_bytes:
            self._send_batch(key)
            batch = None
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = self._batches[key] = _Batch(key[0], key[1], loop.create_future())
            batch.timer = loop.call_later(self._linger, self._send_batch, key)
        batch.events.append(event)
        batch.encoded.append(encoded)
        batch.size += len(encoded) + 1
        index = len(batch.events) - 1
        if len(batch.events) >= self._max_events:
            self._send_batch(key)
        return batch, index

    def send_nowait(self, event: Event) -> asyncio.Future[Delivery]:
        """Queue an already-built event; the future resolves on acknowledgement.

        Raises:
            ProducerClosed: the producer is not running.
            InvalidEvent: the event is larger than a batch message may be.
        """
        batch, index = self._enqueue(event)
        future: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()
        batch.waiters.append((index, future))
        return future

    async def send(self, event: Event) -> Delivery:
        """Send an event and wait until Kafka acknowledged it.

        Raises:
            InvalidEvent, ProducerClosed: nothing was sent.
            DeliveryFailed: Kafka did not acknowledge it; see ``retriable``.
        """
        return await self.send_nowait(event)

    async def send_many(self, events: Iterable[Event]) -> list[Delivery]:
        """Send many events and wait until Kafka acknowledged all of them.

        The fast path for bulk producers: one future per batch message, not per
        event. Events are checked as they are queued; an invalid one raises
        InvalidEvent and the events before it are still sent.

        Cancelling the wait (e.g. ``async with asyncio.timeout(s)``, to bound it
        as a whole: ``request_timeout_ms`` bounds the request, not the time a
        batch queues behind the one in flight) does not cancel the sending: the
        events are still sent and may land later.

        Raises:
            DeliveryFailed: some batch was not acknowledged. Others may have been;
                sending all the events again is safe (the store keeps one row
                per ``event_id``).
        """
        placed = [self._enqueue(event) for event in events]
        acks = list({id(batch): batch.ack for batch, _ in placed}.values())
        # asyncio.wait, not gather: a batch's future is shared with the other callers
        # whose events are in it, and gather would cancel it for all of them when this
        # caller is cancelled (a timeout, a client that went away).
        await asyncio.wait(acks)
        for ack in acks:
            error = ack.exception()
            if error is not None:
                raise error
        return [batch.delivery(index, batch.ack.result()) for batch, index in placed]

    async def flush(self) -> None:
        """Send every buffered batch now and wait for all acknowledgements."""
        for key in list(self._batches):
            self._send_batch(key)
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    def _send_batch(self, key: tuple[str, int]) -> None:
        batch = self._batches.pop(key, None)
        if batch is None:
            return
        if batch.timer is not None:
            batch.timer.cancel()
        spawn(self._inflight, self._deliver(batch))

    async def _deliver(self, batch: _Batch) -> None:
        value = b"[" + b",".join(batch.encoded) + b"]"
        try:
            ack = await self._producer.send(batch.topic, value, partition=batch.partition)
            meta = await ack
        except (KafkaError, asyncio.CancelledError, OSError) as exc:
            # aiokafka marks a timeout as not retriable, but for us it is: the batch
            # may or may not be written, and resending the same event_ids is safe.
            retriable = isinstance(exc, _ALWAYS_RETRIABLE) or bool(getattr(exc, "retriable", True))
            error = DeliveryFailed(
                f"Kafka did not acknowledge {len(batch.events)} events on "
                f"{batch.topic}[{batch.partition}]: {exc!r}",
                retriable=retriable,
            )
            batch.ack.set_exception(error)
            batch.ack.exception()  # retrieved: callers learn of it through their futures
            for _, future in batch.waiters:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # fire-and-forget callers hear of it via on_error
            if self._on_error is not None:
                for event in batch.events:
                    self._on_error(event, error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        batch.ack.set_result(meta.offset)
        for index, future in batch.waiters:
            if not future.done():
                future.set_result(batch.delivery(index, meta.offset))
