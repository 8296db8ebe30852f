"""input_group: the consumer group in which key_by_trace's stages share the input partitions.

Each stage (:mod:`thumbline.stream_jobs.key_by_trace`) reads with a consumer of
this group; Kafka's group assignment gives each stage a share of the input
partitions. Here: that consumer, where a partition a stage is given starts, and
what a commit raises when the group moved the partitions meanwhile.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)

logger = logging.getLogger(__name__)

#: What a commit raises when the group moved the partitions meanwhile (aiokafka wraps the
#: broker's three in CommitFailedError; IllegalStateError: no longer assigned here).
REBALANCED = (
    CommitFailedError,
    IllegalGenerationError,
    RebalanceInProgressError,
    UnknownMemberIdError,
    IllegalStateError,
)

#: The group's timeouts (ms): a stage that stops heartbeating loses its partitions after
#: SESSION_MS; the embedded broker holds a group's first join for about half of it.
SESSION_MS = 6_000
HEARTBEAT_MS = 2_000


def input_consumer(
    *, bootstrap: str, group: str, fetch_max_wait_ms: int, kafka_kwargs: dict[str, Any]
) -> AIOKafkaConsumer:
    """A consumer in ``group`` that commits only when told to, and reads a partition
    nobody committed from its beginning."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        fetch_max_wait_ms=fetch_max_wait_ms,
        session_timeout_ms=SESSION_MS,
        rebalance_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        **kafka_kwargs,
    )


async def start_offsets(
    consumer: Any, tps: list[TopicPartition], *, take_over_from: str | None, bootstrap: str,
    kafka_kwargs: dict[str, Any],
) -> dict[TopicPartition, int]:  # fmt: skip
    """Where each newly assigned partition starts: the group's commit, else where the
    join's group ``take_over_from`` left it (``consumer`` is sought there), else its
    beginning. Asked of the broker, not of the consumer's position: aiokafka may have
    fetched from it already."""
    starts: dict[TopicPartition, int] = {}
    for tp in tps:
        committed = await consumer.committed(tp)
        if committed is not None:
            starts[tp] = committed
    missing = [tp for tp in tps if tp not in starts]
    if missing and take_over_from is not None:
        taken = await _take_over(take_over_from, missing, bootstrap, kafka_kwargs)
        for tp, offset in taken.items():
            consumer.seek(tp, offset)
        starts.update(taken)
        if taken:
            logger.info("key_by_trace starts where the join left %d input partitions",
                        len(taken))  # fmt: skip
    missing = [tp for tp in tps if tp not in starts]
    if missing:
        starts.update(await consumer.beginning_offsets(missing))
    return starts


async def _take_over(
    group: str, tps: list[TopicPartition], bootstrap: str, kafka_kwargs: dict[str, Any]
) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_kwargs)
    await admin.start()
    try:
        theirs = await admin.list_consumer_group_offsets(group, partitions=tps)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in theirs.items() if tp in tps and meta.offset >= 0}
