"""key_by_trace re-keys input events by trace id; the join decodes them as if it read them there.

Broker-free: records are plain objects, the join's decoder runs on the keyed
messages the stage makes, and the result is compared with the decoder reading
the input messages themselves.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    IllegalStateError,
    KafkaConnectionError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from thumbline.outages import KAFKA, Waits
from thumbline.schemas import TimeBounds, Topics, partition_for
from thumbline.schemas.wire import MAX_BATCH_EVENTS
from thumbline.stream_jobs.decode_input import Batch, DecodeInput
from thumbline.stream_jobs.key_by_trace import KeyByTrace
from thumbline.stream_jobs.keyed_messages import route

TOPICS = Topics.build("t.", 8)
NOW_MS = int(time.time() * 1000)
RECENT = datetime.now(UTC).isoformat()


def record(topic: str, partition: int, offset: int, value: bytes | None, key: bytes | None = None):
    return SimpleNamespace(
        topic=topic, partition=partition, offset=offset, value=value, key=key,
        timestamp=NOW_MS - 1000 + offset,
    )  # fmt: skip


def feedback(trace_id: str, n: int = 0, **extra) -> dict:
    return {"event_id": f"e-{trace_id}-{n}", "trace_id": trace_id, "kind": "thumb",
            "value": "down", "ts": RECENT, **extra}  # fmt: skip


def trace(trace_id: str) -> dict:
    return {"trace_id": trace_id, "span_id": "s1", "model": "m", "start_time": RECENT}  # fmt: skip


def crc32_partition(key: str) -> int:
    return zlib.crc32(key.encode()) % 8  # librdkafka's consistent partitioner


def decoded(topic_of_message, batch: Batch) -> tuple[list, list, dict]:
    events = sorted(
        [("traces", e.trace_id, e.to_json()) for e in batch.traces]
        + [("feedback", e.trace_id, e.to_json()) for items, _ in batch.feedback for e in items]
    )  # fmt: skip
    dead = sorted((d.topic, d.partition, d.offset, d.batch_index, d.reason) for d in batch.dead)
    forward = {p: {k: len(v) for k, v in g.items()} for p, g in batch.forward.items()}
    return events, dead, forward


def through_stage(records) -> tuple[list, list, dict]:
    """Route the records, then decode every keyed message at its partition."""
    batch = Batch()
    decoder = DecodeInput(TOPICS, TimeBounds(), defaultdict(int))
    for partition, values in route(TOPICS, records).items():
        for offset, value in enumerate(values):
            message = SimpleNamespace(
                topic=TOPICS.keyed.name, partition=partition, offset=offset, value=value,
                key=None, timestamp=time.time(),
            )  # fmt: skip
            decoder.decode(message, None, batch)
    return decoded(None, batch)


def directly(records) -> tuple[list, list, dict]:
    """What the join makes of the same records when it reads the input topics."""
    batch, forwarded = Batch(), Batch()
    decoder = DecodeInput(TOPICS, TimeBounds(), defaultdict(int))
    for r in records:
        message = SimpleNamespace(**{**vars(r), "timestamp": r.timestamp / 1000})
        decoder.decode(message, None, batch)
    for partition, groups in batch.forward.items():  # the forwarded events, decoded there
        value = orjson.dumps(
            {k: [orjson.loads(e) for e in v] for k, v in groups.items()}
        )  # fmt: skip
        message = SimpleNamespace(
            topic=TOPICS.keyed.name, partition=partition, offset=0, value=value, key=None,
            timestamp=time.time(),
        )  # fmt: skip
        decoder.decode(message, None, forwarded)
    events, dead, _ = decoded(None, batch)
    more, more_dead, _ = decoded(None, forwarded)
    return sorted(events + more), sorted(dead + more_dead), {}


def test_single_event_messages_land_on_their_traces_partition_with_where_they_came_from():
    ids = [f"trace-{i}" for i in range(40)]
    records = [
        record(TOPICS.feedback.name, crc32_partition(t), i, orjson.dumps(feedback(t)), t.encode())
        for i, t in enumerate(ids)
    ]
    out = route(TOPICS, records)
    assert sum(len(v) for v in out.values()) == len({partition_for(t, 8) for t in ids})
    for partition, values in out.items():
        (value,) = values
        body = orjson.loads(value)
        assert {f["trace_id"] for f in body["feedback"]} <= {
            t for t in ids if partition_for(t, 8) == partition
        }
        for (p, offset, ms, key, index, count), event in zip(
            body["feedback_from"], body["feedback"], strict=True
        ):
            assert (p, ms, key, index, count) == (
                crc32_partition(event["trace_id"]), NOW_MS - 1000 + offset, event["trace_id"], 0, 1
            )  # fmt: skip
    # and the join makes of them exactly what it makes of the messages themselves
    assert through_stage(records) == directly(records)


def test_a_mixed_array_keeps_each_events_position_for_its_dead_letter():
    items = [
        feedback("a"),
        {"trace_id": "b", "kind": "nonsense"},
        feedback("c"),
        7,
        feedback("a", 1),
    ]
    records = [record(TOPICS.feedback.name, 3, 42, orjson.dumps(items))]
    events, dead, _ = through_stage(records)
    assert dead == [
        (TOPICS.feedback.name, 3, 42, 1, "invalid_event"),
        (TOPICS.feedback.name, 3, 42, 3, "invalid_event"),
    ]
    assert [e[1] for e in events] == ["a", "a", "c"]
    assert (events, dead) == directly(records)[:2]


def test_unusable_messages_are_dead_letters_naming_the_input_message():
    records = [
        record(TOPICS.traces.name, 5, 1, b"{not json"),
        record(TOPICS.traces.name, 5, 2, b"[]"),
        record(TOPICS.traces.name, 6, 3, b'"a string"'),
        record(TOPICS.feedback.name, 6, 4, None),
        record(TOPICS.feedback.name, 1, 5, orjson.dumps([feedback("x")] * (MAX_BATCH_EVENTS + 1))),
    ]
    _, dead, _ = through_stage(records)
    assert dead == sorted([
        (TOPICS.traces.name, 5, 1, -1, "bad_json"),
        (TOPICS.traces.name, 5, 2, -1, "empty_batch"),
        (TOPICS.traces.name, 6, 3, -1, "not_an_object"),
        (TOPICS.feedback.name, 6, 4, -1, "bad_json"),
        (TOPICS.feedback.name, 1, 5, -1, "batch_too_large"),
    ])  # fmt: skip
    assert dead == directly(records)[1]


def test_event_times_are_bounded_by_the_input_messages_time_not_the_keyed_ones():
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    records = [
        record(TOPICS.feedback.name, 0, 1, orjson.dumps(feedback("t1", ts=old))),
        record(TOPICS.feedback.name, 0, 2, orjson.dumps(feedback("t2", received_at=old))),
        record(TOPICS.feedback.name, 0, 3, orjson.dumps(feedback("t3"))),
    ]
    events, dead, _ = through_stage(records)
    assert [d[2:] for d in dead] == [(1, 0, "ts_out_of_range"), (2, 0, "ts_out_of_range")]
    (only,) = events
    stamped = orjson.loads(only[2])["received_at"]  # the input message's time, not now
    assert datetime.fromisoformat(stamped) == datetime.fromtimestamp((NOW_MS - 997) / 1000, UTC)
    assert (events, dead) == directly(records)[:2]


def test_a_large_batch_is_split_under_the_message_limits():
    many = [feedback("same-trace", n, comment="x" * 1_000) for n in range(3 * MAX_BATCH_EVENTS)]
    records = [
        record(TOPICS.feedback.name, 0, i, orjson.dumps(many[i : i + 500]))
        for i in range(0, len(many), 500)
    ]
    (values,) = route(TOPICS, records).values()
    assert len(values) > 3
    assert all(len(v) < 1_000_000 for v in values)
    events, dead, _ = through_stage(records)
    assert len(events) == len(many) and not dead


def test_keyed_messages_that_do_not_describe_their_events_are_dead_letters():
    decoder, batch = DecodeInput(TOPICS, TimeBounds(), defaultdict(int)), Batch()
    value = orjson.dumps(
        {"feedback": [feedback("a")], "traces": [], "feedback_from": [[0, 1, NOW_MS, None, 0, 2]],
         "traces_from": [], "dead": []}
    )  # fmt: skip
    message = SimpleNamespace(
        topic=TOPICS.keyed.name, partition=partition_for("a", 8), offset=9, value=value,
        key=None, timestamp=time.time(),
    )  # fmt: skip
    decoder.decode(message, None, batch)
    assert not batch.feedback
    assert [(d.topic, d.offset, d.reason) for d in batch.dead] == [
        (TOPICS.keyed.name, 9, "bad_keyed")
    ]


def keyed_marker(value: bytes, partition: int = 4) -> SimpleNamespace:
    return SimpleNamespace(
        topic=TOPICS.keyed.name, partition=partition, offset=0, value=value, key=None,
        timestamp=time.time(),
    )  # fmt: skip


def test_routed_markers_reach_the_watermark():
    seen = []
    decoder = DecodeInput(
        TOPICS, TimeBounds(), defaultdict(int), routed=lambda p, body: seen.append((p, body))
    )
    batch = Batch()
    new = b'{"routed_inputs":{"t.feedback:3":1795000000000},"inputs":16}'
    decoder.decode(keyed_marker(new), None, batch)
    decoder.decode(keyed_marker(b'{"routed":1795000000000}', 5), None, batch)  # the old form
    assert seen == [
        (4, {"routed_inputs": {"t.feedback:3": 1_795_000_000_000}, "inputs": 16}),
        (5, {"routed": 1_795_000_000_000}),
    ]
    assert not batch.dead


def test_a_routed_marker_the_watermark_refuses_is_a_dead_letter():
    def refuse(partition: int, body: dict) -> None:
        raise ValueError("a routed marker needs 1 to 10000 inputs")

    decoder, batch = DecodeInput(TOPICS, TimeBounds(), defaultdict(int), routed=refuse), Batch()
    decoder.decode(keyed_marker(b'{"routed_inputs":{"t.feedback:3":1}}'), None, batch)
    assert [(d.topic, d.reason) for d in batch.dead] == [(TOPICS.keyed.name, "bad_keyed")]


# Any mix of input: the stage changes nothing of what the join makes of it ------------

items = st.one_of(
    st.sampled_from([f"t{i}" for i in range(12)]).map(feedback),
    st.sampled_from([f"t{i}" for i in range(12)]).map(trace),
    st.just({"trace_id": 5, "kind": "thumb"}),
    st.just("not an object"),
    st.just({"event_id": "x", "kind": "thumb", "value": "up"}),  # no trace_id
)
values = st.one_of(
    items.map(orjson.dumps),
    st.lists(items, min_size=1, max_size=6).map(orjson.dumps),
    st.lists(items, min_size=1, max_size=6).map(  # spaced out, as a hand-written sender may
        lambda events: b" [ " + b" ,\n ".join(orjson.dumps(e) for e in events) + b" ]\n"
    ),
    st.sampled_from([b"", b"[", b"[]", b"null", b"3"]),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 7), values), min_size=1, max_size=20))
def test_any_input_decodes_the_same_through_the_stage_as_read_directly(messages):
    records = [
        record(TOPICS.feedback.name if is_feedback else TOPICS.traces.name, p, i, v)
        for i, (is_feedback, p, v) in enumerate(messages)
    ]
    assert through_stage(records) == directly(records)


@pytest.mark.parametrize("n", [1, 3])
def test_routing_is_deterministic(n):
    records = [
        record(TOPICS.feedback.name, 0, i, orjson.dumps(feedback(f"r{i}"))) for i in range(n)
    ]
    assert route(TOPICS, records) == route(TOPICS, records)


# The stage's loop, with a fake consumer and producer ------------------------------


class FakeConsumer:
    """Answers getmany from a script: an exception to raise, or records to return."""

    def __init__(self, script: list, *, commit_errors: list | None = None) -> None:
        self.script = script
        self.commits_made: list[dict] = []
        self.commit_errors = commit_errors or []
        self.lookup_errors: list[BaseException] = []
        self.highs: dict[TopicPartition, int] = {}
        self.commits: dict[TopicPartition, int] = {}  # the group's, before this stage's
        self.fetched_to: dict[TopicPartition, int] = {}  # the consumer's position

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        await asyncio.sleep(0)
        if not self.script:
            await asyncio.sleep(3600)
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    async def commit(self, offsets: dict) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.commits_made.append(dict(offsets))

    async def committed(self, tp) -> int | None:
        if self.lookup_errors:  # the broker's answer to where the group left it
            raise self.lookup_errors.pop(0)
        return self.commits.get(tp)

    async def beginning_offsets(self, tps) -> dict:
        return {tp: 0 for tp in tps}

    async def position(self, tp) -> int:
        return self.fetched_to.get(tp, 0)

    def highwater(self, tp) -> int | None:
        return self.highs.get(tp)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    async def send(self, topic, value, key=None, partition=None, timestamp_ms=None):
        self.sent.append((topic, value, partition))
        done = asyncio.get_running_loop().create_future()
        done.set_result(SimpleNamespace(topic=topic, partition=partition, offset=0))
        return done


async def test_a_broker_that_does_not_answer_a_fetch_is_waited_out():
    tp = TopicPartition(TOPICS.feedback.name, 2)
    records = [record(TOPICS.feedback.name, 2, 7, orjson.dumps(feedback("w1")))]
    consumer = FakeConsumer([KafkaConnectionError("broker away"), {tp: records}])
    waits = Waits(first_delay=0.01, max_delay=0.01)
    stage = KeyByTrace(
        topics=TOPICS, bootstrap="127.0.0.1:1", group="g", producer=FakeProducer(), waits=waits,
        consumer=consumer,
    )  # fmt: skip
    task = asyncio.create_task(stage._run())
    for _ in range(200):
        if consumer.commits_made:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert stage.failure is None  # not fatal
    assert consumer.commits_made == [{tp: 8}]  # routed after the broker came back, then committed
    assert [(t, p) for t, _, p in stage.producer.sent] == [
        (TOPICS.keyed.name, partition_for("w1", 8))
    ]
    assert not waits.waiting(KAFKA)


def stage_with(consumer: FakeConsumer) -> KeyByTrace:
    return KeyByTrace(
        topics=TOPICS, bootstrap="127.0.0.1:1", group="g", producer=FakeProducer(),
        waits=Waits(first_delay=0.01, max_delay=0.01), consumer=consumer,
    )  # fmt: skip


async def until(check, seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true")


@pytest.mark.parametrize(
    "refusal",
    [
        CommitFailedError("the group rebalanced"),
        IllegalGenerationError(),
        RebalanceInProgressError(),
        UnknownMemberIdError(),
        IllegalStateError("Partition TopicPartition(topic='t.feedback', partition=2) ..."),
    ],
)
async def test_a_commit_refused_because_the_group_rebalanced_does_not_end_the_stage(refusal):
    tp = TopicPartition(TOPICS.feedback.name, 2)
    first = [record(TOPICS.feedback.name, 2, 7, orjson.dumps(feedback("r1")))]
    second = [record(TOPICS.feedback.name, 2, 8, orjson.dumps(feedback("r2")))]
    consumer = FakeConsumer([{tp: first}, {tp: second}], commit_errors=[refusal])
    stage = stage_with(consumer)
    await stage.assigned({tp})
    task = asyncio.create_task(stage._run())
    try:
        await until(lambda: consumer.commits_made or task.done())
    finally:
        task.cancel()
    assert stage.failure is None  # the partition's next holder replays the first batch
    assert consumer.commits_made == [{tp: 9}]
    assert len(stage.producer.sent) == 2  # both batches were published


async def test_partitions_move_only_once_the_batch_under_way_is_published_and_committed():
    tp = TopicPartition(TOPICS.traces.name, 1)
    records = [record(TOPICS.traces.name, 1, 3, orjson.dumps(trace("x")))]
    consumer = FakeConsumer([{tp: records}])
    stage = stage_with(consumer)
    acked = asyncio.Event()

    async def send(topic, value, key=None, partition=None, timestamp_ms=None):
        await acked.wait()  # Kafka takes its time
        return await FakeProducer.send(stage.producer, topic, value, partition=partition)

    stage.producer.send = send  # type: ignore[method-assign]
    await stage.assigned({tp})
    task = asyncio.create_task(stage._run())
    try:
        await until(lambda: stage._routing.locked())  # the batch is under way
        revoking = asyncio.create_task(stage.revoked({tp}))
        await asyncio.sleep(0.05)
        assert not revoking.done()  # the group waits for it
        acked.set()
        await revoking
        assert consumer.commits_made == [{tp: 4}]  # committed while still this stage's
        assert stage._done == {}
    finally:
        task.cancel()


async def test_records_fetched_before_the_take_over_seek_are_not_routed():
    """aiokafka may fetch a newly assigned partition from its reset position while the
    listener still looks up where the join left it, and seeks there."""
    tp = TopicPartition(TOPICS.feedback.name, 0)
    early = [record(TOPICS.feedback.name, 0, o, orjson.dumps(feedback(f"old{o}"))) for o in (0, 1)]
    late = [record(TOPICS.feedback.name, 0, 300, orjson.dumps(feedback("new")))]
    consumer = FakeConsumer([{tp: early}, {tp: late}])
    consumer.commits = {tp: 300}  # where it starts
    stage = stage_with(consumer)
    await stage.assigned({tp})
    task = asyncio.create_task(stage._run())
    try:
        await until(lambda: consumer.commits_made)
    finally:
        task.cancel()
    assert consumer.commits_made == [{tp: 301}]
    assert stage.counts["messages"] == 1
    (sent,) = stage.producer.sent
    assert b"new" in sent[1] and b"old" not in sent[1]


async def test_records_fetched_before_the_listener_ran_are_routed():
    """aiokafka fetches a newly assigned partition, and getmany may return its records,
    before the listener learns where it starts: those records are not skipped."""
    tp = TopicPartition(TOPICS.feedback.name, 0)
    early = [record(TOPICS.feedback.name, 0, o, orjson.dumps(feedback(f"e{o}"))) for o in (0, 1)]
    consumer = FakeConsumer([{tp: early}])
    consumer.fetched_to = {tp: 2}  # the consumer's position is past them already
    stage = stage_with(consumer)
    await stage.assigned({tp})  # no commit anywhere: from the beginning
    task = asyncio.create_task(stage._run())
    try:
        await until(lambda: consumer.commits_made)
    finally:
        task.cancel()
    assert consumer.commits_made == [{tp: 2}] and stage.counts["messages"] == 2


async def test_a_broker_that_does_not_say_where_assigned_partitions_start_is_waited_out():
    tp = TopicPartition(TOPICS.traces.name, 6)
    consumer = FakeConsumer([])
    consumer.lookup_errors = [KafkaConnectionError("broker away")]
    consumer.commits = {tp: 12}
    stage = stage_with(consumer)
    await stage.assigned({tp})
    assert stage.failure is None and stage.held == {tp}
    assert stage._done[tp] == (12, 0)
    assert not stage.waits.waiting(KAFKA)


async def test_an_error_waiting_cannot_cure_while_partitions_are_assigned_ends_the_worker():
    tp = TopicPartition(TOPICS.traces.name, 6)
    consumer = FakeConsumer([])
    consumer.lookup_errors = [ValueError("a bug")]
    stage = stage_with(consumer)
    with pytest.raises(ValueError):  # aiokafka only logs what a listener raises
        await stage.assigned({tp})
    assert isinstance(stage.failure, ValueError)  # the app's failure watch ends the worker


async def test_the_marker_claims_only_the_input_partitions_the_stage_holds():
    held = [TopicPartition(TOPICS.feedback.name, 0), TopicPartition(TOPICS.traces.name, 5)]
    consumer = FakeConsumer([])
    consumer.commits = {held[0]: 40, held[1]: 7}
    consumer.highs = {held[0]: 40, held[1]: 9}  # caught up; two messages behind
    stage = stage_with(consumer)
    await stage.assigned(set(held))
    stage._done[held[1]] = (7, NOW_MS - 5_000)  # the last one routed there: 5 s old
    now = time.time()
    assert stage.claims(now) == {held[0]: now, held[1]: (NOW_MS - 5_000) / 1000}
    await stage._mark()
    markers = [orjson.loads(value) for _, value, _ in stage.producer.sent]
    assert len(markers) == TOPICS.keyed.partitions
    assert {p for _, _, p in stage.producer.sent} == set(range(TOPICS.keyed.partitions))
    (body,) = {orjson.dumps(m) for m in markers}
    assert orjson.loads(body)["routed_inputs"] == {
        f"{TOPICS.feedback.name}:0": int(now * 1000),
        f"{TOPICS.traces.name}:5": NOW_MS - 5_000,
    }
    assert orjson.loads(body)["inputs"] == 16  # feedback and traces, 8 partitions each

    await stage.revoked(set(held))  # a rebalance: nothing is claimed until assigned again
    assert stage.claims(now) == {}


async def test_a_partition_just_assigned_is_not_claimed_before_its_end_is_known():
    tp = TopicPartition(TOPICS.feedback.name, 3)
    stage = stage_with(FakeConsumer([]))
    await stage.assigned({tp})
    assert stage.claims(time.time()) == {}  # no fetch yet: how far it is behind is unknown
    await stage._mark()
    assert stage.producer.sent == []  # nothing to claim: no marker


def test_a_keyed_message_is_counted_once_when_its_last_event_sends_it_down_the_careful_path():
    old = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    records = [
        record(TOPICS.feedback.name, 0, 1, orjson.dumps(feedback("c1"))),
        record(TOPICS.traces.name, 0, 2, orjson.dumps({**trace("c1"), "start_time": old})),
    ]
    counts: defaultdict[str, int] = defaultdict(int)
    decoder, batch = DecodeInput(TOPICS, TimeBounds(), counts), Batch()
    (values,) = route(TOPICS, records).values()
    (value,) = values
    message = SimpleNamespace(
        topic=TOPICS.keyed.name, partition=partition_for("c1", 8), offset=0, value=value,
        key=None, timestamp=time.time(),
    )  # fmt: skip
    decoder.decode(message, None, batch)
    assert counts[f"in:{TOPICS.feedback.name}"] == 1
    assert counts[f"in:{TOPICS.traces.name}"] == 1
    assert [d.reason for d in batch.dead] == ["ts_out_of_range"]


def test_the_collectors_otlp_messages_reach_each_traces_partition_and_a_bad_one_is_a_dead_letter():
    from tests.otel import otlp_proto, provider, traced_chat
    from thumbline.stream_jobs.read_otlp import ReadOtlp

    tracer_provider, exporter = provider()
    ids = [traced_chat(tracer_provider, user=f"u{i}")[0] for i in range(5)]
    bad, _ = traced_chat(tracer_provider, user="u" * 300)  # its root span's user is too long
    spans = exporter.get_finished_spans()
    otlp = ReadOtlp("otlp_spans", capture_content=False)
    records = [
        record("otlp_spans", 0, 0, otlp_proto(spans[:4]), b"any key"),
        record("otlp_spans", 0, 1, b"\xff not otlp"),
        record("otlp_spans", 1, 0, otlp_proto(spans[4:])),
    ]
    counts: dict[str, int] = defaultdict(int)
    batch = Batch()
    decoder = DecodeInput(TOPICS, TimeBounds(), defaultdict(int))
    for partition, values in route(TOPICS, records, counts=counts, otlp=otlp).items():
        for offset, value in enumerate(values):
            body = orjson.loads(value)
            assert {t["trace_id"] for t in body["traces"]} <= {
                t for t in [*ids, bad] if partition_for(t, 8) == partition
            }
            decoder.decode(SimpleNamespace(topic=TOPICS.keyed.name, partition=partition,
                                           offset=offset, value=value, key=None,
                                           timestamp=time.time()), None, batch)  # fmt: skip
    assert sorted({t.trace_id for t in batch.traces}) == sorted([*ids, bad])
    assert len(batch.traces) == 11 and counts[f"out:{TOPICS.keyed.name}"] == 12
    # stamped with the Kafka message's time: the same received_at on every replay
    first = next(t for t in batch.traces if t.trace_id == ids[0])
    assert first.received_at == datetime.fromtimestamp((NOW_MS - 1000) / 1000, UTC)
    letter, invalid = sorted(batch.dead, key=lambda d: d.partition)
    assert (letter.topic, letter.partition, letter.offset, letter.reason) == (
        "otlp_spans", 0, 1, "bad_otlp",
    )  # fmt: skip
    assert letter.raw.startswith("base64:")
    # the join validates the span once and names the Collector's message, not `traces`
    assert (invalid.topic, invalid.partition, invalid.offset, invalid.reason) == (
        "otlp_spans", 1, 0, "invalid_event",
    )  # fmt: skip
    assert "user_id" in invalid.error and bad in invalid.raw
