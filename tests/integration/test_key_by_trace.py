"""key_by_trace on the real broker and chDB: one-event messages of a foreign partitioner,
and an upgrade from a join that read the input topics itself.
"""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from tests.conftest import unique
from tests.integration.test_join import eventually
from thumbline.kafka import ensure_topics
from thumbline.schemas import Topics
from thumbline.settings import load_settings
from thumbline.stream_jobs.app import StreamApp
from thumbline.stream_jobs.faust_app import FETCH_MAX_WAIT_MS

PARTITIONS = 4


def crc32(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS  # librdkafka's default partitioner


async def send_one_by_one(bootstrap: str, topics: Topics, ids: list[str]) -> None:
    """A trace and a thumb for each id, one JSON object per message, as kcat or Go sends."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        now = datetime.now(UTC).isoformat()
        sends = []
        for trace_id in ids:
            trace = {"trace_id": trace_id, "span_id": "s", "model": "m1", "project": "p",
                     "start_time": now}  # fmt: skip
            thumb = {"event_id": f"e-{trace_id}", "trace_id": trace_id, "kind": "thumb",
                     "value": "down", "project": "p", "ts": now}  # fmt: skip
            for topic, event in ((topics.traces.name, trace), (topics.feedback.name, thumb)):
                sends.append(
                    await producer.send(
                        topic, orjson.dumps(event), key=trace_id.encode(), partition=crc32(trace_id)
                    )
                )
        for sent in sends:
            await sent
    finally:
        await producer.stop()


def joined(query, prefix: str) -> int:
    return query(
        f"SELECT count() FROM {{db}}.feedback FINAL WHERE join_status = 'joined' "
        f"AND model = 'm1' AND startsWith(trace_id, '{prefix}')"
    )[0][0]


async def test_one_event_messages_are_read_in_batches_and_joined_where_their_trace_is(
    broker, store, store_settings, query
):
    prefix = f"{unique('kbt')}."
    settings = load_settings(
        data_dir=store_settings.data_dir, clickhouse_database=store_settings.clickhouse_database,
        topic_prefix=prefix, partitions=PARTITIONS, sink_max_seconds=0.2,
    )  # fmt: skip
    topics = Topics.build(prefix, PARTITIONS)
    await ensure_topics(broker.bootstrap, topics.all())
    ids = [f"{prefix}t{i}" for i in range(2_000)]
    await send_one_by_one(broker.bootstrap, topics, ids)
    app = StreamApp(settings, broker.bootstrap)
    await app.start()
    try:
        await eventually(lambda: joined(query, prefix) == len(ids), timeout=60)
        assert app.router is not None and app.job is not None
        # 4,000 input messages crossed the join in far fewer keyed messages
        assert app.router.counts["messages"] == 2 * len(ids)
        assert app.job.counts["messages"] < len(ids) / 4
        assert app.job.counts[f"in:{topics.feedback.name}"] == len(ids)
        assert "forwarded" not in app.job.counts  # every event came on its trace's partition
        # Faust's consumer fetches with our short wait, not its fixed 1,500 ms (freshness)
        assert app._app is not None
        faust_consumer = app._app.consumer._thread._consumer  # type: ignore[attr-defined]
        assert faust_consumer._fetcher._fetch_max_wait_ms == FETCH_MAX_WAIT_MS == 100
    finally:
        await app.stop()
    dead = f"SELECT count() FROM {{db}}.dead_letters WHERE startsWith(topic, '{prefix}')"
    assert query(dead) == [(0,)]

    # started again with nothing new to read, the stage is caught up: the rates go on
    app, restarted = StreamApp(settings, broker.bootstrap), time.time()
    await app.start()
    try:
        await eventually(lambda: app.rates and (app.rates.watermark or 0) > restarted, timeout=30)
        assert app.router is not None and app.router.counts["messages"] == 0
    finally:
        await app.stop()


async def test_turned_on_it_starts_where_the_join_left_the_input(
    broker, store, store_settings, query
):
    prefix = f"{unique('kbt')}."
    topics = Topics.build(prefix, PARTITIONS)
    await ensure_topics(broker.bootstrap, topics.all())

    def settings(on: bool):
        return load_settings(
            data_dir=store_settings.data_dir,
            clickhouse_database=store_settings.clickhouse_database, topic_prefix=prefix,
            partitions=PARTITIONS, sink_max_seconds=0.2, key_by_trace=on,
        )  # fmt: skip

    before = [f"{prefix}a{i}" for i in range(300)]
    await send_one_by_one(broker.bootstrap, topics, before)
    app = StreamApp(settings(False), broker.bootstrap)
    await app.start()
    try:
        assert app.router is None
        await eventually(lambda: joined(query, prefix) == len(before), timeout=60)
    finally:
        await app.stop()  # commits what it stored

    after = [f"{prefix}b{i}" for i in range(100)]
    await send_one_by_one(broker.bootstrap, topics, after)
    app = StreamApp(settings(True), broker.bootstrap)
    await app.start()
    try:
        await eventually(lambda: joined(query, prefix) == len(before) + len(after), timeout=60)
        assert app.router is not None
        assert app.router.counts["messages"] == 2 * len(after)  # nothing read twice
    finally:
        await app.stop()
