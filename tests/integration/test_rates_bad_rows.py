"""A foreign Kafka client writes malformed rows and markers to ``feedback.enriched`` among
real traffic: the rates stay exact, the stream keeps running, and every bad row is in the
dead-letter table and topic with a reason naming its field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import unique
from tests.integration.conftest import consume, rate_mismatches, until
from thumbline.kafka import ensure_topics
from thumbline.metrics import Metrics
from thumbline.producers import FeedbackProducer
from thumbline.schemas import Topics, rates_partition
from thumbline.settings import load_settings
from thumbline.stream_jobs.app import StreamApp
from thumbline.stream_jobs.read_enriched import MAX_ROWS_PER_MESSAGE

WINDOW = 2


@pytest.fixture(scope="module")
async def stream(broker, store, store_settings) -> AsyncIterator[StreamApp]:
    prefix = f"{unique('badrows')}."
    settings = load_settings(
        data_dir=store_settings.data_dir, clickhouse_database=store_settings.clickhouse_database,
        topic_prefix=prefix, partitions=4, join_grace_seconds=3, sink_max_seconds=0.2,
        rate_window_seconds=WINDOW, rate_sliding_seconds="6", rate_lateness_seconds=3.0,
    )  # fmt: skip
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    app = StreamApp(settings, broker.bootstrap, metrics=Metrics(CollectorRegistry()))
    await app.start()
    yield app
    await app.stop()


def poison(project: str) -> list[tuple[bytes, str]]:
    """What a foreign client writes: (message, the dead-letter reasons it must give)."""
    now = datetime.now(UTC).isoformat()

    def bad(n: int, **fields: object) -> dict:
        base = {"event_id": f"{project}-bad-{n}", "trace_id": "t", "version": 1, "ts": now,
                "label": "bad", "source": "explicit", "project": project, "model": "m"}  # fmt: skip
        return {k: v for k, v in {**base, **fields}.items() if v is not None}

    rows = [bad(1, ts="yesterday"), bad(2, event_id=""), bad(3, version="two"), 7,
            bad(4, trace_id=["t"]), {"ts": now}]  # fmt: skip
    return [
        (orjson.dumps(rows), "invalid_ts invalid_event_id invalid_version invalid_row "
                             "invalid_trace_id invalid_event_id"),
        (b"{not json", "bad_json"),
        (orjson.dumps({"watermarks": {"0": "soon"}, "durable": 1}), "invalid_marker"),
        (orjson.dumps([bad(5)] * (MAX_ROWS_PER_MESSAGE + 1)), "oversize"),
        (orjson.dumps("a row"), "invalid_row"),
    ]  # fmt: skip


def send_foreign(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> None:
    """librdkafka, as any client of the Kafka cluster may write."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "message.max.bytes": 8_000_000})  # fmt: skip
    failed: list[object] = []
    for value in values:
        producer.produce(topic, value, partition=partition,
                         on_delivery=lambda error, _m: error and failed.append(error))  # fmt: skip
    assert producer.flush(30) == 0 and not failed


async def test_malformed_rows_are_dead_lettered_and_the_windows_stay_exact(
    stream, broker, store_settings, query
):
    project = unique("badrows")
    enriched = stream.topics.enriched
    partition = rates_partition(project, enriched.partitions)
    messages = poison(project)
    async with FeedbackProducer(
        bootstrap_servers=broker.bootstrap, topic_prefix=stream.settings.topic_prefix,
        project=project,
    ) as fb:  # fmt: skip
        for n in range(40):  # real traffic before, between and after the poison
            if n in (10, 25):
                await asyncio.to_thread(
                    send_foreign, broker.bootstrap, enriched.name, partition,
                    [value for value, _ in messages],
                )  # fmt: skip
            await fb.trace(trace_id=f"{project}-t{n}", model="m")
            vote = fb.thumb_down if n % 3 == 0 else fb.thumb_up
            await vote(f"{project}-t{n}", event_id=f"{project}-{n}")
            await asyncio.sleep(0.1)

    # each poison message is sent twice: a reason per bad row or message, twice
    want = sorted(r for _, reasons in messages for r in reasons.split() * 2)

    async def dead_lettered() -> list[tuple]:
        rows = query(
            "SELECT reason, batch_index, error FROM {db}.dead_letters FINAL "
            f"WHERE topic = '{enriched.name}' ORDER BY offset, batch_index"
        )
        return rows if sorted(r[0] for r in rows) == want else []

    letters = await until(dead_lettered, timeout=60)
    assert stream._failure is None, f"the stream stopped: {stream._failure!r}"
    assert sorted(r[0] for r in letters) == want
    for reason, index, error in letters:
        field = reason.removeprefix("invalid_")
        if reason not in ("bad_json", "oversize", "invalid_marker"):
            assert error.startswith(f"{field}:"), error
        assert index >= 0 or reason in ("bad_json", "oversize", "invalid_marker", "invalid_row")

    db = store_settings.clickhouse_database
    where = f"project = '{project}'"

    async def exact() -> tuple[int, list[str]] | None:
        stored = query(f"SELECT count() FROM {{db}}.feedback FINAL WHERE {where}")[0][0]
        checked, problems = rate_mismatches(query, db, window=WINDOW, where=where)
        done = stored == 40 and not problems and checked
        return (checked, problems) if done else None

    assert await until(exact, timeout=60), rate_mismatches(query, db, window=WINDOW, where=where)
    on_dlq = await consume(broker.bootstrap, [stream.topics.dlq.name], events=len(want))
    reasons = sorted(e["reason"] for _, _, events in on_dlq for e in events)
    assert reasons == want
    assert stream._failure is None
