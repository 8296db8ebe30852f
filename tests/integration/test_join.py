"""The join on the real broker and chDB: every arrival order, duplicates, poison, any partitioner.

One stream app runs in this process for the module (it shares the session's
chDB store), with a 3 s grace and a 6 s retention so that orphans and
retention can be seen quickly. Each test uses its own trace ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.exceptions import OperationalError

from tests.conftest import unique
from tests.integration.conftest import consume
from thumbline.kafka import ensure_topics
from thumbline.producers import FeedbackProducer
from thumbline.producers.loadgen import LoadSpec, run_load
from thumbline.schemas import Topics, partition_for, rates_partition
from thumbline.settings import load_settings
from thumbline.stream_jobs.app import StreamApp

GRACE = 3.0
RETENTION = 6.0


@pytest.fixture(scope="module")
async def stream(broker, store, store_settings) -> AsyncIterator[StreamApp]:
    prefix = f"{unique('join')}."
    settings = load_settings(
        data_dir=store_settings.data_dir,
        clickhouse_database=store_settings.clickhouse_database,
        topic_prefix=prefix,
        partitions=4,
        join_grace_seconds=GRACE,
        join_retention_seconds=RETENTION,
        sink_max_seconds=0.2,
    )
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    app = StreamApp(settings, broker.bootstrap)
    await app.start()
    yield app
    await app.stop()
    await app.stop()  # safe twice


@pytest.fixture(scope="module")
async def sdk(broker, stream) -> AsyncIterator[FeedbackProducer]:
    async with FeedbackProducer(
        bootstrap_servers=broker.bootstrap, topic_prefix=stream.settings.topic_prefix, linger_ms=1,
        project="shop",
    ) as producer:  # fmt: skip
        yield producer


@pytest.fixture(scope="module")
async def raw(broker) -> AsyncIterator[AIOKafkaProducer]:
    """A plain Kafka client, as another language's producer would be."""
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def eventually(check: Callable[[], object], timeout: float = 30.0) -> object:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check.__doc__ or check}")
        await asyncio.sleep(0.2)


async def dead_letters(query, columns: str, where: str, at_least: int) -> list[tuple]:
    """The dead letters ``where`` says, in offset order, once there are ``at_least`` of them."""
    sql = (
        f"SELECT {columns} FROM {{db}}.dead_letters FINAL WHERE {where} "
        "ORDER BY offset, batch_index"
    )
    rows = await eventually(lambda: (found := query(sql)) and len(found) >= at_least and found)
    return rows


def row_of(query, event_id: str) -> Callable[[], tuple | None]:
    def check() -> tuple | None:
        rows = query(
            "SELECT join_status, project, model, label, comment, user_id, version "
            f"FROM {{db}}.feedback FINAL WHERE event_id = '{event_id}'"
        )
        return rows[0] if rows else None

    return check


async def test_feedback_after_its_trace_is_enriched_at_once(sdk, query):
    trace_id = await sdk.trace(project="shop", model="m1", user_id="u1")
    await sdk.thumb_down(trace_id, comment="wrong", event_id=(eid := unique("e")))
    status, project, model, label, comment, user, _ = await eventually(row_of(query, eid))
    assert (status, project, model, label, comment, user) == (
        "joined",
        "shop",
        "m1",
        "bad",
        "wrong",
        "u1",
    )


async def test_feedback_before_its_trace_waits_for_it(sdk, query):
    trace_id = unique("t")
    await sdk.rating(trace_id, 5, event_id=(eid := unique("e")))
    await asyncio.sleep(1.0)
    held = row_of(query, eid)()  # held: no row yet, or a pending one; not an orphan
    assert held is None or held[0] == "pending"
    await sdk.trace(trace_id=trace_id, project="shop", model="m2")
    status, project, model, label, *_ = await eventually(row_of(query, eid))
    assert (status, project, model, label) == ("joined", "shop", "m2", "good")


async def test_an_orphan_is_corrected_when_its_trace_turns_up(sdk, query):
    trace_id = unique("t")
    await sdk.thumb_up(trace_id, event_id=(eid := unique("e")))
    orphan = await eventually(lambda: (r := row_of(query, eid)()) and r[0] == "orphan" and r)
    assert orphan[1:3] == ("shop", "")
    await sdk.trace(trace_id=trace_id, project="shop", model="m3")
    corrected = await eventually(lambda: (r := row_of(query, eid)()) and r[0] == "corrected" and r)
    assert corrected[2] == "m3" and corrected[6] > orphan[6]
    assert query(f"SELECT count() FROM {{db}}.feedback FINAL WHERE event_id = '{eid}'") == [(1,)]


async def test_feedback_older_than_the_retention_finds_its_trace_in_clickhouse(sdk, stream, query):
    trace_id = await sdk.trace(project="archive", model="m-old")
    await eventually(lambda: query(f"SELECT 1 FROM {{db}}.traces WHERE trace_id = '{trace_id}'"))
    await eventually(lambda: trace_id not in stream.job.state.traces, timeout=RETENTION + 10)
    await sdk.thumb_down(trace_id, event_id=(eid := unique("e")), project="archive")
    status, project, model, *_ = await eventually(row_of(query, eid))
    assert (status, project, model) == ("joined", "archive", "m-old")


async def test_a_trace_sent_as_several_spans_merges(sdk, query):
    trace_id = unique("t")
    await sdk.span(
        trace_id,
        span_id="child",
        parent_span_id="root",
        model="m-small",
        cost_usd=0.25,
    )
    await sdk.span(trace_id, span_id="root", project="shop", model="m-big", latency_ms=900)
    await sdk.rating(trace_id, 1, event_id=(eid := unique("e")))
    await eventually(row_of(query, eid))
    assert query(
        "SELECT project, model, latency_ms, cost_usd "
        f"FROM {{db}}.feedback FINAL WHERE event_id = '{eid}'"
    ) == [("shop", "m-big", 900.0, 0.25)]


async def test_the_same_event_delivered_three_times_is_one_row(sdk, raw, stream, query):
    trace_id = await sdk.trace(project="shop")
    event = orjson.dumps(
        {
            "trace_id": trace_id,
            "event_id": (eid := unique("e")),
            "project": "shop",
            "label": "bad",
            "received_at": datetime.now(UTC).isoformat(),
        }
    )
    for partition in range(3):  # three copies, on three partitions
        await raw.send_and_wait(stream.topics.feedback.name, event, partition=partition)
    await eventually(row_of(query, eid))
    await asyncio.sleep(1.0)
    assert query(f"SELECT count() FROM {{db}}.feedback FINAL WHERE event_id = '{eid}'") == [(1,)]


async def test_a_changed_mind_replaces_and_a_retraction_removes(sdk, query):
    trace_id = await sdk.trace(project="shop")
    eid = unique("e")
    await sdk.thumb_down(trace_id, event_id=eid)
    await eventually(lambda: (r := row_of(query, eid)()) and r[3] == "bad")
    await sdk.thumb_up(trace_id, event_id=eid)
    await eventually(lambda: (r := row_of(query, eid)()) and r[3] == "good")
    await sdk.feedback(trace_id, event_id=eid, retracted=True)
    await eventually(
        lambda: not query(f"SELECT 1 FROM {{db}}.feedback_latest WHERE event_id = '{eid}'")
    )


async def test_events_on_the_wrong_partition_are_still_joined(sdk, raw, stream, query):
    trace_id = unique("t")
    home = partition_for(trace_id, 4)
    wrong = (home + 1) % 4
    await raw.send_and_wait(
        stream.topics.traces.name,
        orjson.dumps({"trace_id": trace_id, "project": "elsewhere"}),
        partition=wrong,
    )
    await raw.send_and_wait(
        stream.topics.feedback.name,
        orjson.dumps(
            [
                {
                    "trace_id": trace_id,
                    "event_id": (eid := unique("e")),
                    "label": "bad",
                    "project": "elsewhere",
                }
            ]
        ),  # fmt: skip
        partition=(home + 2) % 4,
    )
    status, project, *_ = await eventually(row_of(query, eid))
    assert (status, project) == ("joined", "elsewhere")


async def test_poison_and_invalid_input_is_dead_lettered_and_the_stream_goes_on(
    sdk, raw, stream, query
):
    topic = stream.topics.feedback.name
    trace_id = await sdk.trace(project="shop")
    good = [{"trace_id": trace_id, "event_id": unique("good"), "label": "good"} for _ in range(5)]
    poison = [
        b"{not json",
        b'"just a string"',
        b"\xff\xfe\x00",
        orjson.dumps([good[0], {"trace_id": trace_id, "kind": "rating", "value": 11}, 42, good[1]]),
        orjson.dumps(good[2:]),
    ]
    offsets = []
    for value in poison:
        meta = await raw.send_and_wait(topic, value, partition=0)
        offsets.append(meta.offset)
    ids = ", ".join(f"'{g['event_id']}'" for g in good)
    await eventually(
        lambda: (
            query(f"SELECT count() FROM {{db}}.feedback FINAL WHERE event_id IN ({ids})") == [(5,)]
        )
    )
    letters = await dead_letters(query, "offset, batch_index, reason", f"topic = '{topic}'", 5)
    assert letters == [
        (offsets[0], -1, "bad_json"),
        (offsets[1], -1, "not_an_object"),
        (offsets[2], -1, "bad_json"),
        (offsets[3], 1, "invalid_event"),
        (offsets[3], 2, "invalid_event"),
    ]
    error, raw_text = query(
        f"SELECT error, raw FROM {{db}}.dead_letters FINAL WHERE topic = '{topic}' "
        f"AND offset = {offsets[3]} AND batch_index = 1"
    )[0]
    assert "value: 11 is outside the range [1, 5]" in error and '"value":11' in raw_text
    published = await consume(stream.bootstrap, [stream.topics.dlq.name], events=5)
    assert sorted(
        (e["offset"], e["batch_index"])
        for _, _, batch in published
        for e in batch
        if e["topic"] == topic
    ) == [(o, i) for o, i, _ in letters]


async def test_enriched_feedback_is_published_for_the_rates(sdk, stream, query):
    trace_id = await sdk.trace(project="shop", model="m9")
    await sdk.thumb_down(trace_id, event_id=(eid := unique("e")))
    await eventually(row_of(query, eid))
    published = await consume(
        stream.bootstrap, [stream.topics.enriched.name], events=1000, timeout=3
    )
    mine = [(p, e) for _, p, batch in published for e in batch if e.get("event_id") == eid]
    markers = [(p, e) for _, p, batch in published for e in batch if "watermarks" in e]
    # for the rates: every enriched partition hears from every join partition
    assert all(set(m) == {"watermarks", "durable"} for _, m in markers)
    heard = {(p, int(source)) for p, m in markers for source in m["watermarks"]}
    everything = range(stream.topics.enriched.partitions)
    assert heard == {(p, source) for p in everything for source in everything}
    assert [(e["project"], e["model"], e["join_status"]) for _, e in mine] == [
        ("shop", "m9", "joined")
    ]
    assert [p for p, _ in mine] == [rates_partition("shop", stream.topics.enriched.partitions)]


async def test_a_clickhouse_outage_pauses_the_stream_and_loses_nothing(
    stream, broker, store, store_settings, query
):
    """The store refuses every insert for 3 s in the middle of a run (injected at the client)."""
    real = stream.job.sink._client
    down = asyncio.Event()

    class Outage:
        def __getattr__(self, name):
            return getattr(real, name)

        def raw_insert(self, *args, **kwargs):
            if down.is_set():
                raise OperationalError("injected outage: Connection refused")
            return real.raw_insert(*args, **kwargs)

    stream.job.sink._client = Outage()
    failures_before = stream.job.counts["flush_failures"]
    spec = LoadSpec(rate=1000, duration=None, count=4000, early_share=0.1, seed=5,
                    run_id=unique("outage"))  # fmt: skip
    try:
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=stream.settings.topic_prefix
        ) as fb:
            load = asyncio.create_task(run_load(fb, spec))
            await asyncio.sleep(1.0)
            down.set()
            await asyncio.sleep(3.0)
            down.clear()
            report = await load
    finally:
        stream.job.sink._client = real
    like = f"startsWith(trace_id, 'lg-{spec.run_id}-')"
    await eventually(lambda: query(
        f"SELECT count(), uniqExact(event_id) FROM {{db}}.feedback FINAL WHERE {like}"
    ) == [(report.feedback, report.feedback)], timeout=60)  # fmt: skip
    # the last write may still be retrying its traces after its feedback went in
    await eventually(lambda: query(
        f"SELECT count() FROM {{db}}.traces FINAL WHERE {like}"
    ) == [(report.traces,)], timeout=60)  # fmt: skip
    assert stream.job.counts["flush_failures"] > failures_before


async def test_event_times_far_from_their_reception_are_dead_lettered(raw, stream, query):
    topic, trace_id, now = stream.topics.feedback.name, unique("t"), datetime.now(UTC)
    events = [
        {"trace_id": trace_id, "event_id": unique("ok"), "label": "bad", "ts": now.isoformat()},
        {"trace_id": trace_id, "label": "bad", "ts": "2300-01-01T00:00:00Z"},
        {"trace_id": trace_id, "label": "bad", "ts": "1900-01-01T00:00:00Z"},
        {"trace_id": trace_id, "label": "bad", "received_at": "2300-01-01T00:00:00Z",
         "ts": "2300-01-01T00:00:00Z"},  # a forged reception time is bounded by Kafka's
    ]  # fmt: skip
    meta = await raw.send_and_wait(topic, orjson.dumps(events), partition=0)
    await eventually(row_of(query, events[0]["event_id"]))
    where = f"topic = '{topic}' AND offset = {meta.offset}"
    letters = await dead_letters(query, "batch_index, reason, error", where, 3)
    assert [(i, reason) for i, reason, _ in letters] == [
        (1, "ts_out_of_range"), (2, "ts_out_of_range"), (3, "ts_out_of_range"),
    ]  # fmt: skip
    assert letters[0][2].startswith("ts: is 99,")
    assert "received_at: is" in letters[2][2]
