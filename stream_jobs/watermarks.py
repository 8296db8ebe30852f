"""Watermarks: how far a join worker's input is stored, told to the rates in markers.

Enriched rows go to the partition of ``feedback.enriched`` of their project
(where the rates of that project are counted, by one worker), so every
partition of the join feeds every partition of the rates. Each second a join
worker sends to every partition of ``feedback.enriched`` one marker,
``{"watermarks": {"<join partition>": ms, ...}, "durable": offset}``, for the
join partitions it holds:

- ``watermarks``: per join partition, every input message of it (``feedback``,
  ``traces``, ``keyed``; behind :mod:`thumbline.stream_jobs.key_by_trace`, ``keyed`` and
  its ``routed`` markers) older than this is flushed: its events are stored, or
  waiting for their trace (those come later, as late rows), and published
  before this marker. An input that has caught up with its partition's end
  holds nothing back (the watermark is the clock), so a quiet partition does
  not stall the rates. Behind key_by_trace (any number of stages in one
  consumer group, each holding a share of the input partitions), the
  ``routed`` markers of ``keyed`` count only once every input partition has
  been claimed by some stage (:mod:`thumbline.stream_jobs.routed_marks`).
- ``durable``: every enriched row this worker published on this enriched
  partition up to this offset is in ClickHouse.

Enriched messages carry their join partition as their Kafka key. The rates job
(:mod:`thumbline.stream_jobs.rates_job`) completes a window when the lowest
watermark over every join partition, on every enriched partition it holds, has
passed it, and once the rows it counted are at or below the durable offset
their join partition's worker announced there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer

from thumbline.outages import transient
from thumbline.schemas import Topics
from thumbline.stream_jobs.routed_marks import RoutedMarks

logger = logging.getLogger(__name__)

#: Seconds between two markers of a partition.
MARK_EVERY = 1.0


def _consume(done: asyncio.Future[Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.debug("a watermark marker was not acknowledged: %s", done.exception())


class Settled(Protocol):
    """What the join holds of an input message: is every event it emitted flushed?"""

    event: Any
    settled: bool


class Watermarks:
    """One join worker's progress per partition, and the markers that announce it."""

    def __init__(self, topics: Topics, producer: AIOKafkaProducer, *, routed: bool = False) -> None:
        self.topics = topics
        self.producer = producer
        #: the input topics the join reads (``keyed`` alone behind key_by_trace)
        self.inputs = (
            (topics.keyed.name,) if routed
            else (topics.feedback.name, topics.traces.name, topics.keyed.name)
        )  # fmt: skip
        self.is_routed = routed
        self._routed = RoutedMarks()  # keyed partition -> key_by_trace's progress
        #: the consumer's high watermark of an input partition (None: not fetched yet)
        self.highwater: Callable[[str, int], int | None] = lambda topic, partition: None
        self._last: dict[tuple[str, int], tuple[int, float]] = {}  # offset, timestamp handled
        self._published: dict[int, int] = {}  # enriched partition -> highest offset sent
        self._durable: dict[int, int] = {}  # enriched partition -> highest offset stored
        self._marked_at = 0.0  # when the last markers were sent

    def handled(self, message: Any) -> None:
        """An input message reached the join."""
        self._last[(message.topic, message.partition)] = (
            message.offset, message.timestamp or time.time()
        )  # fmt: skip

    def routed(self, partition: int, marker: Mapping[str, Any]) -> None:
        """A ``routed`` marker of key_by_trace on ``partition`` of ``keyed``, decoded
        (raises ValueError: not a marker; see :mod:`thumbline.stream_jobs.routed_marks`)."""
        self._routed.add(partition, marker)

    def published(self, sent: Iterable[Any]) -> None:
        """Enriched rows Kafka acknowledged (their record metadata)."""
        for meta in sent:
            self._published[meta.partition] = max(
                self._published.get(meta.partition, -1), meta.offset
            )

    def published_so_far(self) -> dict[int, int]:
        """What a flush starting now will store, once it succeeds (see :meth:`stored`)."""
        return dict(self._published)

    def stored(self, published: Mapping[int, int]) -> None:
        for partition, offset in published.items():
            self._durable[partition] = max(self._durable.get(partition, -1), offset)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions another worker holds now: it announces them."""
        lost = set(partitions)
        for key in [k for k in self._last if k[1] in lost]:
            del self._last[key]
        self._routed.forget(lost)

    async def send(
        self, owned: Iterable[int], order: Mapping[Any, deque[Any]], now: float | None = None
    ) -> None:
        """Send the watermarks of the ``owned`` partitions (once a second) to every partition
        of ``feedback.enriched``: one marker per enriched partition, with this worker's
        durable offset there."""
        now = time.time() if now is None else now
        if now - self._marked_at < MARK_EVERY:
            return
        marks = {}
        for partition in sorted(owned):
            watermark = self.of(partition, order, now)
            if watermark is not None:
                marks[str(partition)] = int(watermark * 1000)
        if not marks:
            return
        self._marked_at = now
        for enriched in range(self.topics.enriched.partitions):
            marker = orjson.dumps({"watermarks": marks, "durable": self._durable.get(enriched, -1)})
            try:
                sent = await self.producer.send(
                    self.topics.enriched.name, marker, partition=enriched
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 (a marker is sent again each second)
                if not transient(exc):
                    raise
                logger.debug("a watermark marker was not sent: %s", exc)
                return
            # Not waited for: the rows a marker certifies were acknowledged before it was
            # made, and a lost one is made again a second later.
            sent.add_done_callback(_consume)

    def of(self, partition: int, order: Mapping[Any, deque[Any]], now: float) -> float | None:
        """How far the input of ``partition`` is settled, in message time.

        Per input topic of the partition: the timestamp of the first message not
        yet flushed (``order`` holds the join's received messages per input
        partition, oldest first, each :class:`Settled`), or, all flushed, now if
        the consumer has caught up with the partition's high watermark, else the
        last message's timestamp. The lowest over the topics; None while a
        topic's position is unknown.
        """
        marks = []
        if self.is_routed:  # nothing older than key_by_trace's progress is still on its way
            routed = self._routed.of(partition)  # None: an input partition nobody reported
            if routed is None:
                return None
            marks.append(routed)
        for topic in self.inputs:
            first: Settled | None = None
            for held in reversed(order.get((topic, partition), ())):  # unflushed: the newest
                if held.settled:
                    break
                first = held
            if first is not None:
                marks.append((first.event.message.timestamp or now) - 0.001)
                continue
            last, high = self._last.get((topic, partition)), self.highwater(topic, partition)
            if high is None:
                return None
            if (last is None and high == 0) or (last is not None and last[0] + 1 >= high):
                marks.append(now)  # caught up
            elif last is not None:
                marks.append(last[1])  # behind: everything received is settled
            else:
                return None  # behind, and nothing of it handled yet
        return min(marks)
