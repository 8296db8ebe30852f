"""FeedbackProducer batching, with aiokafka replaced by an in-memory stand-in (no broker)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from thumbline.producers import (
    DeliveryFailed,
    FeedbackProducer,
    InvalidEvent,
    ProducerClosed,
    TopicMissing,
)
from thumbline.schemas import FeedbackEvent, partition_for


class FakeKafka:
    """Records sends; acknowledges them, or fails them with ``fail``."""

    def __init__(self, partitions: dict[str, int], fail: Exception | None = None):
        self.sent: list[tuple[str, int, list[dict]]] = []
        self.fail = fail
        self.stopped = 0
        self.offsets: dict[tuple[str, int], int] = {}
        cluster = SimpleNamespace(
            partitions_for_topic=lambda name: (
                set(range(partitions[name])) if name in partitions else None
            )
        )

        async def fetch_all_metadata():
            return cluster

        self.client = SimpleNamespace(fetch_all_metadata=fetch_all_metadata)

    async def start(self):
        pass

    async def stop(self):
        self.stopped += 1

    async def send(self, topic, value, partition):
        self.sent.append((topic, partition, orjson.loads(value)))
        ack = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            ack.set_exception(self.fail)
        else:
            offset = self.offsets.get((topic, partition), 0)
            self.offsets[(topic, partition)] = offset + 1
            ack.set_result(SimpleNamespace(partition=partition, offset=offset))
        return ack


TOPICS = {"thumbline.feedback": 8, "thumbline.traces": 8}


async def producer(fake: FakeKafka, **kwargs) -> FeedbackProducer:
    p = FeedbackProducer(bootstrap_servers="unused:9092", **kwargs)
    p._producer = fake  # the one seam: everything above aiokafka is real
    await p.start()
    return p


def feedback(trace_id: str, **fields) -> FeedbackEvent:
    return FeedbackEvent.parse({"trace_id": trace_id, "label": "good", **fields})


async def test_events_are_batched_per_partition_of_their_trace_id():
    fake = FakeKafka(TOPICS)
    p = await producer(fake, linger_ms=50)
    futures = [p.send_nowait(feedback(f"trace-{i}")) for i in range(200)]
    await p.flush()
    deliveries = [f.result() for f in futures]
    assert len(fake.sent) <= 8  # one message per partition, not one per event
    for topic, partition, events in fake.sent:
        assert topic == "thumbline.feedback"
        assert {partition_for(e["trace_id"], 8) for e in events} == {partition}
    assert sorted(e["trace_id"] for _, _, batch in fake.sent for e in batch) == sorted(
        f"trace-{i}" for i in range(200)
    )
    first = fake.sent[0][2]
    assert [(d.index, d.trace_id) for d in deliveries if d.partition == fake.sent[0][1]] == [
        (i, e["trace_id"]) for i, e in enumerate(first)
    ]


async def test_full_batches_are_sent_without_waiting_for_linger():
    fake = FakeKafka(TOPICS)
    p = await producer(fake, linger_ms=60_000, max_batch_events=10)
    futures = [p.send_nowait(feedback("same-trace")) for _ in range(25)]
    await asyncio.wait_for(asyncio.gather(*futures[:20]), timeout=2)
    assert [len(batch) for _, _, batch in fake.sent] == [10, 10]
    await p.stop()
    assert [len(batch) for _, _, batch in fake.sent] == [10, 10, 5]


async def test_batches_respect_the_byte_limit():
    fake = FakeKafka(TOPICS)
    p = await producer(fake, max_batch_bytes=4096)
    for _ in range(20):
        p.send_nowait(feedback("t", comment="x" * 900))
    await p.flush()
    assert all(len(orjson.dumps(batch)) <= 4096 for _, _, batch in fake.sent)
    assert sum(len(b) for _, _, b in fake.sent) == 20


async def test_received_at_is_stamped():
    fake = FakeKafka(TOPICS)
    p = await producer(fake)
    await p.send(feedback("t"))
    assert fake.sent[0][2][0]["received_at"]


@pytest.mark.parametrize(
    ("error", "retriable"), [(KafkaTimeoutError(), True), (MessageSizeTooLargeError(), False)]
)
async def test_a_failed_delivery_fails_every_event_of_the_batch_and_calls_on_error(
    error, retriable
):
    seen = []
    fake = FakeKafka(TOPICS, fail=error)
    p = await producer(fake, on_error=lambda event, exc: seen.append((event.trace_id, exc)))
    futures = [p.send_nowait(feedback("t")) for _ in range(3)]
    await p.flush()
    for future in futures:
        with pytest.raises(DeliveryFailed) as info:
            future.result()
        assert info.value.retriable is retriable
    assert [trace for trace, _ in seen] == ["t", "t", "t"]


async def test_an_event_larger_than_a_batch_is_refused_before_sending():
    fake = FakeKafka(TOPICS)
    p = await producer(fake, max_batch_bytes=2048)
    with pytest.raises(InvalidEvent, match="larger than 2048 bytes"):
        p.send_nowait(feedback("t", comment="x" * 5000))
    assert fake.sent == []


async def test_invalid_feedback_is_never_sent():
    fake = FakeKafka(TOPICS)
    p = await producer(fake)
    with pytest.raises(InvalidEvent, match="outside the range"):
        await p.rating("t", 11)
    await p.flush()
    assert fake.sent == []


async def test_missing_topics_are_reported_instead_of_auto_created():
    fake = FakeKafka({"thumbline.traces": 8})
    with pytest.raises(TopicMissing, match="thumbline.feedback does not exist"):
        await producer(fake)


async def test_stop_is_safe_twice_and_sending_after_stop_is_refused():
    fake = FakeKafka(TOPICS)
    p = await producer(fake)
    await p.stop()
    await p.stop()
    assert fake.stopped == 1
    with pytest.raises(ProducerClosed):
        p.send_nowait(feedback("t"))


async def test_helpers_build_each_kind():
    fake = FakeKafka(TOPICS)
    p = await producer(fake)
    await p.thumb_up("t")
    await p.thumb_down("t", comment="no")
    await p.rating("t", 4)
    await p.score("t", 0.2, name="relevance")
    await p.boolean("t", True)
    await p.text("t", "nice")
    await p.category("t", "hallucination")
    await p.signal("t", "copied")
    await p.correction("t", "Paris")
    trace_id = await p.trace(project="p", model="m")
    span_id = await p.span(trace_id, name="retrieve")
    sent = [e for _, _, batch in fake.sent for e in batch]
    labels = [e.get("label") for e in sent if "kind" in e]
    assert labels == ["good", "bad", "good", "bad", "good", "neutral", "bad", "neutral", "edit"]
    assert len(trace_id) == 32 and len(span_id) == 16
    assert {e.get("span_id") for e in sent if "project" in e} == {None, span_id}


async def test_send_many_returns_a_delivery_per_event_in_order():
    fake = FakeKafka(TOPICS)
    p = await producer(fake, max_batch_events=50)
    events = [feedback(f"trace-{i % 3}", event_id=f"e{i}") for i in range(400)]
    deliveries = await p.send_many(events)
    assert [d.event_id for d in deliveries] == [f"e{i}" for i in range(400)]
    for d in deliveries:
        topic, partition, batch = next(
            m
            for m in fake.sent
            if m[1] == d.partition and fake.sent.index(m) == _message_number(fake, d)
        )
        assert batch[d.index]["event_id"] == d.event_id


def _message_number(fake: FakeKafka, delivery) -> int:
    """The position in fake.sent of the message that got ``delivery.offset`` on its partition."""
    same_partition = [i for i, m in enumerate(fake.sent) if m[1] == delivery.partition]
    return same_partition[delivery.offset]


async def test_send_many_raises_when_a_batch_is_not_acknowledged():
    fake = FakeKafka(TOPICS, fail=KafkaTimeoutError())
    p = await producer(fake)
    with pytest.raises(DeliveryFailed) as info:
        await p.send_many([feedback("a"), feedback("b")])
    assert info.value.retriable


class HangingKafka(FakeKafka):
    """Takes each batch and acknowledges it only when told (a broker that hangs)."""

    def __init__(self, partitions: dict[str, int]):
        super().__init__(partitions)
        self.pending: list[asyncio.Future] = []

    async def send(self, topic, value, partition):
        self.sent.append((topic, partition, orjson.loads(value)))
        ack = asyncio.get_running_loop().create_future()
        self.pending.append(ack)
        return ack


async def test_a_caller_that_stops_waiting_does_not_cancel_the_batch_it_shares():
    fake = HangingKafka(TOPICS)
    p = await producer(fake, linger_ms=20)
    patient = asyncio.create_task(p.send_many([feedback("t", event_id="e2")]))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):  # as the gateway bounds its wait for the ack
            await p.send_many([feedback("t", event_id="e1")])  # queued first, same batch
    assert len(fake.sent) == 1 and [e["event_id"] for e in fake.sent[0][2]] == ["e1", "e2"]
    fake.pending[0].set_result(SimpleNamespace(partition=fake.sent[0][1], offset=7))
    deliveries = await patient  # the batch still lands, for the caller who waited
    assert [(d.event_id, d.offset) for d in deliveries] == [("e2", 7)]
    await p.stop()


async def test_trace_and_span_send_the_question_and_the_answer_cut_at_the_limit():
    fake = FakeKafka(TOPICS)
    p = await producer(fake)
    trace_id = await p.trace(input="Capital of France?", output="Paris.")
    await p.span(trace_id, input="q" * 20_000, output="a")
    sent = [e for _, _, batch in fake.sent for e in batch]
    assert (sent[0]["input"], sent[0]["output"]) == ("Capital of France?", "Paris.")
    assert len(sent[1]["input"]) == 16_000
    assert sent[1]["input"].endswith("… [truncated by thumbline: 20,000 characters]")
