"""`thumbline topics create`: what a deployment's migrate step runs before any worker.

Kafka's auto-creation is off in the compose file (and should be in production),
so every topic a worker reads or the OpenTelemetry Collector writes must exist,
with its partition count, before they start.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import unique
from tests.integration.conftest import run
from thumbline.schemas import Topics


async def partitions(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if not t["error_code"]}


async def test_topics_create_makes_every_topic_of_the_workers_and_the_collectors(
    broker, thumbline_bin, clean_env, tmp_path
):
    prefix = f"{unique('create')}."
    env = {
        **clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
        "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap, "THUMBLINE_TOPIC_PREFIX": prefix,
        "THUMBLINE_PARTITIONS": "6", "THUMBLINE_OTLP_TOPIC": f"{prefix}otlp_spans",
    }  # fmt: skip
    created = await asyncio.to_thread(run, thumbline_bin, env, "topics", "create")
    assert created.returncode == 0, created.stderr
    ours = [t.name for t in Topics.build(prefix, 6).all()]
    found = await partitions(broker.bootstrap, [*ours, f"{prefix}otlp_spans"])
    assert set(found) == {*ours, f"{prefix}otlp_spans"}
    assert found[f"{prefix}feedback"] == 6 and found[f"{prefix}otlp_spans"] == 6
    again = await asyncio.to_thread(run, thumbline_bin, env, "topics", "create")
    assert again.returncode == 0 and "none needed" in again.stdout  # safe to run each upgrade
