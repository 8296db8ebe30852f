"""The SDK against the real embedded broker: events land, batched, on their trace's partition."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import unique
from tests.integration.conftest import consume
from thumbline.broker import EmbeddedBroker
from thumbline.kafka import ensure_topics
from thumbline.producers import (
    DeliveryFailed,
    FeedbackProducer,
    InvalidEvent,
    SyncFeedbackProducer,
    TopicMissing,
)
from thumbline.schemas import FeedbackEvent, Topics, TraceEvent, partition_for


def prefix_of(topics: Topics) -> str:
    return topics.feedback.name.removesuffix("feedback")


async def test_feedback_and_traces_round_trip_batched_on_their_trace_partition(broker, topics):
    sent: list[FeedbackEvent | TraceEvent] = []
    async with FeedbackProducer(
        bootstrap_servers=broker.bootstrap, topic_prefix=prefix_of(topics), linger_ms=20
    ) as fb:
        futures = []
        for i in range(300):
            trace = TraceEvent.parse({"trace_id": f"tr-{i}", "project": "shop", "model": "m1"})
            feedback = FeedbackEvent.parse(
                {
                    "trace_id": f"tr-{i}",
                    "kind": "rating",
                    "value": 1 + i % 5,
                    "user_id": f"u{i % 7}",
                }
            )
            futures += [fb.send_nowait(trace), fb.send_nowait(feedback)]
            sent += [trace, feedback]
        deliveries = await asyncio.gather(*futures)

    messages = await consume(
        broker.bootstrap, [topics.feedback.name, topics.traces.name], events=600
    )
    received = [item for _, _, batch in messages for item in batch]
    assert len(received) == 600
    assert len(messages) < 100, "the SDK sends batches, not one message per event"
    for _, partition, batch in messages:
        assert {partition_for(e["trace_id"], 4) for e in batch} == {partition}
    feedback_in = sorted(
        (FeedbackEvent.parse(e) for t, _, b in messages if t == topics.feedback.name for e in b),
        key=lambda e: e.trace_id,
    )
    feedback_out = sorted(
        (e for e in sent if isinstance(e, FeedbackEvent)), key=lambda e: e.trace_id
    )
    assert [e.model_dump(exclude={"received_at"}) for e in feedback_in] == [
        e.model_dump(exclude={"received_at"}) for e in feedback_out
    ]
    assert all(e.received_at is not None for e in feedback_in)
    assert len({(d.topic, d.partition, d.offset, d.index) for d in deliveries}) == 600


async def test_sync_producer_delivers_for_non_async_apps(broker, topics):
    def app_code() -> tuple[str, str]:
        with SyncFeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=prefix_of(topics)
        ) as fb:
            trace_id = fb.trace(project="support", model="m2", capability="answer")
            delivery = fb.thumb_down(trace_id, comment="wrong city", user_id="u_42")
            return trace_id, delivery.event_id

    trace_id, event_id = await asyncio.to_thread(app_code)
    messages = await consume(broker.bootstrap, [topics.feedback.name, topics.traces.name], events=2)
    by_topic = {t: b for t, _, b in messages}
    assert by_topic[topics.traces.name][0]["trace_id"] == trace_id
    fb = by_topic[topics.feedback.name][0]
    assert (fb["event_id"], fb["label"], fb["comment"]) == (event_id, "bad", "wrong city")


async def test_invalid_events_are_refused_and_nothing_is_published(broker, topics):
    async with FeedbackProducer(
        bootstrap_servers=broker.bootstrap, topic_prefix=prefix_of(topics)
    ) as fb:
        with pytest.raises(InvalidEvent, match="value: 6 is outside the range"):
            await fb.rating("t1", 6)
        with pytest.raises(InvalidEvent, match="trace_id"):
            await fb.feedback("", label="bad")
        await fb.thumb_up("marker")  # proves the topic is readable
    messages = await consume(broker.bootstrap, [topics.feedback.name], events=2, timeout=3)
    assert [e["trace_id"] for _, _, b in messages for e in b] == ["marker"]


async def test_missing_topics_are_reported_not_auto_created(broker):
    prefix = f"{unique('missing')}."
    with pytest.raises(TopicMissing, match="does not exist"):
        async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix):
            pass
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        assert not [t for t in await admin.list_topics() if t.startswith(prefix)]
    finally:
        await admin.close()


async def test_a_broker_outage_surfaces_as_a_retriable_delivery_failure(tmp_path):
    errors: list[DeliveryFailed] = []
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as doomed:
        registry = Topics.build("outage.", 2)
        await ensure_topics(doomed.bootstrap, registry.all())
        fb = FeedbackProducer(
            bootstrap_servers=doomed.bootstrap,
            topic_prefix="outage.",
            request_timeout_ms=2000,
            on_error=lambda event, exc: errors.append(exc),
        )
        await fb.start()
        await fb.thumb_up("before")  # acknowledged while the broker lives
        doomed.stop()
        with pytest.raises(DeliveryFailed) as info:
            await asyncio.wait_for(fb.thumb_up("after"), timeout=60)
        assert info.value.retriable
        assert len(errors) == 1
        await asyncio.wait_for(fb.stop(), timeout=30)
