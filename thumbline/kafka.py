"""Topic administration: create the registry's topics with their partition counts.

Every topic is created explicitly before any worker starts: a broker that
auto-creates topics picks its own partition count (Tansu: 4), which breaks the
co-partitioning the join relies on.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from schemas.topics import Topic
from thumbline.errors import TopicsMismatch

logger = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str,
    topics: tuple[Topic, ...],
    *,
    replication_factor: int = 1,
    kafka_kwargs: dict[str, Any] | None = None,
) -> list[str]:
    """Create the topics that are missing; check the partitions of those that exist.

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
        if present:
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
