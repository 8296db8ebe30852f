"""The question and the answer, end to end: the SDK and the gateway, the real broker, chDB.

A stream app and a gateway run in this process for each capture setting, on the
session's broker and store (with fresh topics), so no `thumbline up` is started.
A trace's ``input`` and ``output`` go through Kafka and the join into the
``traces`` table, and come back from ``GET /v1/traces/{id}`` (per span) and
``GET /v1/feedback`` (per feedback row, from its trace). With
``THUMBLINE_CAPTURE_CONTENT=false`` none of it is stored, and the gateway does
not even publish it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import unique
from tests.integration.conftest import consume
from thumbline.kafka import ensure_topics
from thumbline.keys import create_key, revoke_key
from thumbline.metrics import Metrics
from thumbline.producers import FeedbackProducer
from thumbline.schemas import Topics
from thumbline.schemas._base import MAX_CONTENT_CHARS
from thumbline.server.gateway import GatewayProcess
from thumbline.settings import Settings, load_settings
from thumbline.stream_jobs.app import StreamApp

QUESTION = "What is the capital of France?"
ANSWER = "Lyon."


@dataclass
class Pipeline:
    settings: Settings
    url: str
    key: str
    sdk: FeedbackProducer

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with aiohttp.ClientSession() as http, http.get(
            self.url + path, params=params, headers=headers
        ) as r:  # fmt: skip
            return r.status, await r.json()

    async def post(self, path: str, body: Any) -> int:
        headers = {"Authorization": f"Bearer {self.key}"}
        async with aiohttp.ClientSession() as http, http.post(
            self.url + path, data=orjson.dumps(body), headers=headers
        ) as r:  # fmt: skip
            assert r.status == 202, await r.text()
            return r.status

    async def inbox_row(self, trace_id: str) -> dict[str, Any]:
        """The trace's feedback row in ``GET /v1/feedback`` once it is joined and the trace
        is stored: the traces and the feedback reach the store through separate sinks, so a
        joined row can be read before its trace's question and answer are."""

        async def joined() -> dict[str, Any] | None:
            status, body = await self.get(f"/v1/traces/{trace_id}")
            if status != 200 or not body["spans"]:
                return None
            _, rows = await self.get("/v1/feedback", trace_id=trace_id)
            return next((r for r in rows if r["join_status"] == "joined"), None)

        return await eventually(joined)


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check.__doc__ or check}")
        await asyncio.sleep(0.2)


async def running(broker, store_settings, *, capture: bool) -> AsyncIterator[Pipeline]:
    prefix = f"{unique('content')}."
    settings = load_settings(
        data_dir=store_settings.data_dir, clickhouse_database=store_settings.clickhouse_database,
        topic_prefix=prefix, partitions=4, sink_max_seconds=0.2, gateway_port=0,
        capture_content=capture,
    )  # fmt: skip
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    # An admin key: it ingests and reads every project, whatever keys the session made.
    key = await asyncio.to_thread(create_key, settings, scope="admin", project="")
    app = StreamApp(settings, broker.bootstrap)
    gateway = GatewayProcess(settings, broker.bootstrap, Metrics(CollectorRegistry()))
    try:
        await app.start()
        await gateway.start()
        async with FeedbackProducer(
            bootstrap_servers=broker.bootstrap, topic_prefix=prefix, linger_ms=1, project="shop"
        ) as sdk:  # fmt: skip
            yield Pipeline(settings, gateway.url, key, sdk)
    finally:
        await gateway.stop()
        await app.stop()
        await asyncio.to_thread(revoke_key, settings, key)


@pytest.fixture(scope="module")
async def captured(broker, store, store_settings) -> AsyncIterator[Pipeline]:
    async for pipeline in running(broker, store_settings, capture=True):
        yield pipeline


@pytest.fixture(scope="module")
async def uncaptured(broker, store, store_settings) -> AsyncIterator[Pipeline]:
    async for pipeline in running(broker, store_settings, capture=False):
        yield pipeline


def stored(query, trace_id: str) -> list[tuple[str, str, str]]:
    return query(
        "SELECT span_id, input, output FROM {db}.traces FINAL "  # noqa: S608
        f"WHERE trace_id = '{trace_id}' ORDER BY span_id"
    )


async def test_a_trace_sent_through_the_sdk_keeps_its_question_and_answer(captured, query):
    trace_id = await captured.sdk.trace(model="m1", input=QUESTION, output=ANSWER)
    await captured.sdk.thumb_down(trace_id, comment="Paris, not Lyon")
    row = await captured.inbox_row(trace_id)
    assert (row["input"], row["output"], row["comment"]) == (QUESTION, ANSWER, "Paris, not Lyon")
    assert stored(query, trace_id) == [("", QUESTION, ANSWER)]
    status, body = await captured.get(f"/v1/traces/{trace_id}")
    assert status == 200
    assert [(s["input"], s["output"]) for s in body["spans"]] == [(QUESTION, ANSWER)]
    assert (body["feedback"][0]["input"], body["feedback"][0]["output"]) == (QUESTION, ANSWER)


async def test_spans_sent_through_the_gateway_give_the_inbox_the_first_question_and_last_answer(
    captured, query
):
    trace_id, t0 = unique("gw"), datetime.now(UTC) - timedelta(seconds=10)
    at = [(t0 + timedelta(seconds=i)).isoformat() for i in range(3)]
    await captured.post("/v1/traces", [  # the root says neither: its spans do
        {"trace_id": trace_id, "span_id": "root", "name": "chat", "start_time": at[0]},
        {"trace_id": trace_id, "span_id": "s1", "parent_span_id": "root", "start_time": at[1],
         "input": QUESTION, "output": "a first draft"},
        {"trace_id": trace_id, "span_id": "s2", "parent_span_id": "root", "start_time": at[2],
         "input": "Rewrite it shorter.", "output": ANSWER},
    ])  # fmt: skip
    await captured.post("/v1/feedback", {"trace_id": trace_id, "label": "bad"})
    row = await captured.inbox_row(trace_id)
    assert (row["input"], row["output"]) == (QUESTION, ANSWER)
    _, body = await captured.get(f"/v1/traces/{trace_id}")
    assert [(s["span_id"], s["input"], s["output"]) for s in body["spans"]] == [
        ("root", "", ""), ("s1", QUESTION, "a first draft"), ("s2", "Rewrite it shorter.", ANSWER),
    ]  # fmt: skip


async def test_a_too_long_answer_is_stored_cut_with_the_marker_from_either_producer(
    captured, query
):
    long = "é" * 52_113  # two bytes each in UTF-8: the limit counts characters
    from_sdk = await captured.sdk.trace(output=long)
    from_http = unique("long")
    await captured.post("/v1/traces", {"trace_id": from_http, "input": QUESTION, "output": long})
    await captured.post("/v1/feedback", {"trace_id": from_http, "label": "bad"})
    marker = "… [truncated by thumbline: 52,113 characters]"
    expected = "é" * (MAX_CONTENT_CHARS - len(marker)) + marker
    for trace_id in (from_sdk, from_http):

        async def found(trace_id: str = trace_id) -> list[tuple[str, str, str]]:
            return stored(query, trace_id)

        [(_, _, output)] = await eventually(found)
        assert output == expected and len(output) == MAX_CONTENT_CHARS
    row = await captured.inbox_row(from_http)
    assert row["output"] == expected


async def test_with_capture_off_nothing_of_the_question_or_the_answer_is_stored(
    uncaptured, broker, query
):
    from_sdk = await uncaptured.sdk.trace(model="m1", input=QUESTION, output=ANSWER)
    await uncaptured.sdk.thumb_down(from_sdk)
    from_http = unique("off")
    await uncaptured.post("/v1/traces", {"trace_id": from_http, "input": QUESTION,
                                         "output": ANSWER, "model": "m2"})  # fmt: skip
    await uncaptured.post("/v1/feedback", {"trace_id": from_http, "label": "bad"})
    for trace_id, model in ((from_sdk, "m1"), (from_http, "m2")):
        row = await uncaptured.inbox_row(trace_id)
        assert (row["model"], row["input"], row["output"]) == (model, "", "")  # joined, empty
        assert stored(query, trace_id) == [("", "", "")]
        _, body = await uncaptured.get(f"/v1/traces/{trace_id}")
        assert [(s["input"], s["output"]) for s in body["spans"]] == [("", "")]
    # The gateway never published them; the SDK's raw Kafka message still had them (the
    # stream is what keeps them out of the store for every producer).
    topic = Topics.build(uncaptured.settings.topic_prefix, 4).traces.name
    messages = await consume(broker.bootstrap, [topic], events=2)
    sent = {e["trace_id"]: e for _, _, events in messages for e in events}
    assert "input" not in sent[from_http] and "output" not in sent[from_http]
    assert sent[from_sdk]["input"] == QUESTION
