"""Kafka for the stream: topic administration, and sends that wait out an outage.

Every topic is created explicitly before any worker starts: a broker that
auto-creates topics picks its own partition count (Tansu: 4), which breaks the
co-partitioning the join relies on.

The stream's own output goes through :func:`deliver`, which retries what Kafka
did not acknowledge for as long as it takes (:mod:`thumbline.outages`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from thumbline.errors import TopicsMismatch
from thumbline.outages import KAFKA, Waits, transient
from thumbline.schemas.topics import Topic

logger = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str,
    topics: tuple[Topic, ...],
    *,
    replication_factor: int = 1,
    kafka_kwargs: dict[str, Any] | None = None,
    check_partitions: bool = True,
) -> list[str]:
    """Create the topics that are missing; check the partitions of those that exist
    (not with ``check_partitions=False``: a topic another product writes).

    Returns:
        The names of the topics created by this call.

    Raises:
        TopicsMismatch: a topic exists with another partition count.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(kafka_kwargs or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        created: list[str] = []
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t.name, t.partitions, replication_factor) for t in missing]
                )
                created = [t.name for t in missing]
            except TopicAlreadyExistsError:  # another process won the race
                pass
        present = [t for t in topics if t.name in existing]
        if present and check_partitions:
            await _check_partitions(admin, present)
        if created:
            logger.info("created topics %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def _check_partitions(admin: AIOKafkaAdminClient, topics: list[Topic]) -> None:
    described = await admin.describe_topics([t.name for t in topics])
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    wrong = [
        f"{t.name} has {counts[t.name]} partitions, thumbline needs {t.partitions}"
        for t in topics
        if t.name in counts and counts[t.name] != t.partitions
    ]
    if wrong:
        raise TopicsMismatch(
            "topics exist with the wrong partition count: "
            + "; ".join(wrong)
            + ". Set THUMBLINE_PARTITIONS to match, or use another THUMBLINE_TOPIC_PREFIX."
        )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for :func:`deliver`: a topic, the value, and a key or a partition;
    its timestamp (ms) if not the time of sending."""

    topic: str
    value: bytes
    key: bytes | None = None
    partition: int | None = None
    timestamp_ms: int | None = None


async def deliver(
    producer: AIOKafkaProducer, messages: Sequence[Outgoing], *, waits: Waits, operation: str
) -> list[Any]:
    """Send ``messages``; return once Kafka has acknowledged every one of them, with the
    record metadata (topic, partition, offset) of each, in order.

    A message that fails with a transient error (a request timed out, a
    leader moved, no broker answers, the client's buffer stayed full) is sent
    again after a back-off, for as long as it takes; the others are not sent
    again, but for those sent after a failed one with the same key or
    partition, so that the last copy of each key's messages comes in order.
    Kafka may hold a message whose acknowledgement was lost, so a
    re-sent one can land twice: every reader of thumbline's topics counts a
    message's events by their identity, so a second copy changes nothing.
    The metadata returned is that of the copy acknowledged last.

    Raises:
        KafkaError: an error waiting cannot cure (a message too large, the
            producer closed): a bug, or the process is stopping.
        WaitAborted: the process is stopping while Kafka does not answer.
    """
    results: list[Any] = [None] * len(messages)
    pending = list(enumerate(messages))
    while pending:
        sent: list[tuple[int, Outgoing]] = []
        acks: list[asyncio.Future[Any]] = []
        unsent: list[tuple[int, Outgoing]] = []
        error: BaseException | None = None
        for position, (index, message) in enumerate(pending):
            try:
                acks.append(
                    await producer.send(
                        message.topic,
                        message.value,
                        key=message.key,
                        partition=message.partition,
                        timestamp_ms=message.timestamp_ms,
                    )  # fmt: skip
                )
            except Exception as exc:
                if not transient(exc):
                    raise
                error, unsent = exc, pending[position:]
                break
            sent.append((index, message))
        failed: list[tuple[int, Outgoing]] = []
        behind: set[tuple[str, bytes | None, int | None]] = set()  # a message of it failed
        for (index, message), result in zip(
            sent, await asyncio.gather(*acks, return_exceptions=True), strict=True
        ):
            stream = (message.topic, message.key, message.partition)
            if isinstance(result, BaseException):
                if not transient(result):
                    raise result
                error = error or result
                behind.add(stream)
            else:
                results[index] = result
            if stream in behind:  # later ones again too: their last copies come in order
                failed.append((index, message))
        pending = failed + unsent
        if error is not None:
            await waits.wait(KAFKA, operation, error)
    waits.succeeded(KAFKA, operation)
    return results
