"""Rate windows complete by the stream's progress: a lagging join and a backfill lose nothing.

The stream app runs in this process. Each scenario ends with every written rate
window (base and sliding, per model and per capability) equal to the
deduplicated ``feedback`` rows it covers (``rate_mismatches``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from tests.conftest import unique
from tests.integration.conftest import consume, rate_mismatches
from thumbline.kafka import ensure_topics
from thumbline.metrics import Metrics
from thumbline.schemas import Alert, Topics
from thumbline.settings import load_settings
from thumbline.store import apply_migrations
from thumbline.stream_jobs import key_by_trace
from thumbline.stream_jobs.app import StreamApp
from thumbline.stream_jobs.join_traces import JoinTracesJob
from thumbline.stream_jobs.key_by_trace import KeyByTrace
from thumbline.stream_jobs.rates_store import alert_rows
from thumbline.stream_jobs.sink import ClickHouseSink

Start = Callable[..., Awaitable[StreamApp]]


@pytest.fixture
async def start_app(broker, store_settings) -> AsyncIterator[Start]:
    """Start a stream app on fresh topics (``overrides`` are settings); stopped at the end."""
    apps: list[StreamApp] = []

    async def start(**overrides: Any) -> StreamApp:
        prefix = f"{unique('progress')}."
        settings = load_settings(**{
            "data_dir": store_settings.data_dir,
            "clickhouse_database": store_settings.clickhouse_database, "topic_prefix": prefix,
            "partitions": 4, "join_grace_seconds": 3, "sink_max_seconds": 0.2,
            "rate_window_seconds": 2, "rate_sliding_seconds": "6,20",
            "rate_lateness_seconds": 2, **overrides,
        })  # fmt: skip
        await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
        app = StreamApp(settings, broker.bootstrap, metrics=Metrics(CollectorRegistry()))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


async def send_pairs(broker, app: StreamApp, project: str, times: list[float]) -> None:
    """A trace and its feedback for each time, one event a message, as a plain client sends."""
    rng = random.Random(project)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        sends = []
        for i, at in enumerate(times):
            trace_id = f"{project}-{i}"
            ts = datetime.fromtimestamp(at, UTC).isoformat()
            trace = {"trace_id": trace_id, "project": project, "model": f"m{i % 3}",
                     "capability": f"c{i % 2}"}  # fmt: skip
            label = rng.choice(["good", "bad", "bad", "neutral"])
            feedback = {"trace_id": trace_id, "event_id": f"{trace_id}-f", "project": project,
                        "label": label, "ts": ts}  # fmt: skip
            sends.append(await producer.send(app.topics.traces.name, orjson.dumps(trace)))
            sends.append(await producer.send(app.topics.feedback.name, orjson.dumps(feedback)))
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def until(check: Callable[[], Any], timeout: float) -> Any:
    for _ in range(int(timeout * 2)):
        if got := check():
            return got
        await asyncio.sleep(0.5)
    return check()


@pytest.mark.parametrize(
    "slow", [pytest.param("join", marks=pytest.mark.slow), "key_by_trace"]
)  # the join's case takes most of a minute: .ci/run runs it after the default run
async def test_a_stream_far_behind_its_input_delays_windows_and_drops_nothing(
    slow, start_app, broker, store, store_settings, monkeypatch
):
    if slow == "join":  # reading the input topics itself, 16 messages a batch
        real = JoinTracesJob.handle

        async def slow_join(self: JoinTracesJob, events: Any) -> None:
            await asyncio.sleep(0.25)
            await real(self, events)

        monkeypatch.setattr(JoinTracesJob, "handle", slow_join)
        app = await start_app(stream_batch_size=16, key_by_trace=False)
    else:  # a quick join behind a stage that cannot keep up: its markers hold the windows
        routing = KeyByTrace._route

        async def slow_route(self: KeyByTrace, fetched: Any) -> None:
            await asyncio.sleep(0.25)
            await routing(self, fetched)

        monkeypatch.setattr(KeyByTrace, "_route", slow_route)
        monkeypatch.setattr(key_by_trace, "MAX_RECORDS", 32)
        app = await start_app()
    project, db = unique("lag"), store_settings.clickhouse_database
    began = time.time()
    await send_pairs(broker, app, project, [began + i * 0.01 for i in range(1000)])
    count = f"SELECT count() FROM {db}.feedback FINAL WHERE project = '{project}'"
    assert await until(lambda: store.query(count).result_rows == [(1000,)], timeout=120)
    behind = time.time() - began
    assert behind > 10, f"the join was only {behind:.0f} s behind: not a lag"
    done = began + 10 + 2 + 2  # the last window and the lateness
    assert await until(lambda: (app.rates.watermark or 0) > done + 1, timeout=30)

    def mismatches() -> tuple[int, list[str]]:
        return rate_mismatches(lambda sql: store.query(sql).result_rows, db, window=2,
                               where=f"project = '{project}'")  # fmt: skip

    # feedback that waited for its trace past the grace was an orphan, then corrected:
    # its window is recomputed once the correction is stored
    await until(lambda: not mismatches()[1], timeout=40)
    checked, problems = mismatches()
    assert checked > 30 and problems == [], problems[:5]


async def test_a_backfill_of_last_month_into_a_fresh_store_gives_last_months_windows(
    start_app, broker, store
):
    db = unique("backfill")
    apply_migrations(store, db)
    try:
        app = await start_app(
            clickhouse_database=db, ingest_max_age_seconds=40 * 86400,
            rate_window_seconds=60, rate_sliding_seconds="300",
        )  # fmt: skip
        project, month_ago = unique("backfill"), time.time() - 30 * 86400
        await send_pairs(broker, app, project, [month_ago + i * 2 for i in range(300)])

        def mismatches() -> tuple[int, list[str]]:
            return rate_mismatches(lambda sql: store.query(sql).result_rows, db, window=60,
                                   where=f"project = '{project}'")  # fmt: skip

        settled = await until(lambda: (found := mismatches())[0] > 0 and not found[1], 90)
        checked, problems = mismatches()
        assert settled and problems == [], problems[:5]
        assert checked >= 2 * 10  # ten minutes of last month, per model and per capability
        # rows before the first watermark complete their windows from memory; the rest are
        # late and recomputed from the table: either way the windows are exact (behind
        # key_by_trace the backfill is usually all in before the first watermark)
        assert app.rates.rates.late <= 300
        assert not [a for a in app.rates.alerts if a.window_start.timestamp() < month_ago + 3600]
    finally:
        store.command(f"DROP DATABASE IF EXISTS {db}")


async def test_an_alert_stored_but_not_sent_before_a_crash_is_sent_at_start(
    start_app, broker, store, store_settings
):
    db, alert_id = store_settings.clickhouse_database, unique("alert")
    now = datetime.now(UTC)
    alert = Alert.model_validate({
        "project": "outbox", "environment": "prod", "model": "m", "capability": "*",
        "window_seconds": 60, "window_start": now, "window_end": now, "alert_id": alert_id,
        "rule": "bad-rate-spike", "state": "firing", "bad_rate": 0.5, "baseline_rate": 0.1,
        "bad": 50, "total": 100, "at": now, "version": int(now.timestamp() * 1000),
    })  # fmt: skip
    sink = ClickHouseSink(store, db)  # as the rates job stores it, killed before it sent it
    sink.add_json("alerts", alert_rows([alert], published=False))
    sink.flush()
    app = await start_app()
    sent = await consume(broker.bootstrap, [app.topics.alerts.name], events=1, timeout=20)
    assert [e["alert_id"] for _, _, events in sent for e in events] == [alert_id]
    published = f"SELECT published FROM {db}.alerts FINAL WHERE alert_id = '{alert_id}'"
    assert store.query(published).result_rows == [(1,)]
