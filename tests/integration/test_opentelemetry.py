"""OpenTelemetry in, on a running `thumbline up`: the SDK's OTLP/HTTP exporter and the
Collector's Kafka messages, then feedback joined to those traces with the question and answer.

Every payload is made by the real OpenTelemetry SDK and encoded by the exporters'
own encoder (tests/otel.py): the bytes an instrumented application or a Collector sends.
"""

from __future__ import annotations

import asyncio
import gzip
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from tests.conftest import unique
from tests.integration.conftest import Up, run, sql_rows, start_up, stop, until, worker_env
from tests.otel import ANSWER, QUESTION, otlp_json, otlp_proto, provider, traced_chat

PROJECT = "support-bot"  # the service.name of tests/otel.py's spans, and the key's project


@pytest.fixture(scope="module")
async def otel(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[dict]:
    """Two `thumbline up`: one reads the Collector's topic as otlp_proto, the other as
    otlp_json; the first has an ingest key for project support-bot (and a read key, and an
    ingest key for an evaluator's feedback)."""
    ups: list[Up] = []
    out: dict[str, Any] = {}
    try:
        for encoding in ("otlp_proto", "otlp_json"):
            tmp = tmp_path_factory.mktemp(encoding)
            topic = unique(f"otlp-{encoding}")
            env = await worker_env(broker, clean_env, tmp, "otel", THUMBLINE_OTLP_TOPIC=topic,
                                   THUMBLINE_OTLP_ENCODING=encoding)  # fmt: skip
            up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
            ups.append(up)
            out[encoding] = {"up": up, "topic": topic, "env": env}
        for scope, *more in (("ingest",), ("read",), ("ingest", "--annotator", "evaluator")):
            made = run(thumbline_bin, ups[0].env, "keys", "create", "--scope", scope,
                       "--project", PROJECT, *more)  # fmt: skip
            assert made.returncode == 0, made.stderr
            out["judge_key" if more else f"{scope}_key"] = made.stdout.strip()
        out["key"] = out["ingest_key"]
        yield out
    finally:
        for up in ups:
            stop(up)


async def feedback_for(up: Up, trace_id: str, keys: dict | None = None) -> dict:
    """Post a thumbs-down on ``trace_id`` and return its inbox row once it is joined
    (``keys``: the ingest and read keys, where keys exist)."""
    base = up.info.gateway_url
    headers = {"X-API-Key": keys["ingest_key"]} if keys else {}
    reader = {"X-API-Key": keys["read_key"]} if keys else {}
    event = {"trace_id": trace_id, "kind": "thumb", "value": "down", "comment": "wrong plan",
             "project": PROJECT}  # fmt: skip
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{base}/v1/feedback", json=event) as r:
            assert r.status == 202, await r.text()

    async def joined() -> dict | None:
        rows = await asyncio.to_thread(
            sql_rows, _bin(up), up.env,
            f"SELECT event_id FROM thumbline.feedback FINAL WHERE trace_id = '{trace_id}' "
            "AND join_status = 'joined'",
        )  # fmt: skip
        if not rows:
            return None
        async with (
            aiohttp.ClientSession(headers=reader) as http,
            http.get(
                f"{base}/v1/feedback",
                params={"trace_id": trace_id, "label": "bad", "annotator": "end_user"},
            ) as r,
        ):
            body = await r.json()
        return body[0] if body else None

    row = await until(joined)
    assert row, f"no joined feedback for {trace_id}"
    return row


def _bin(up: Up) -> str:
    return up.proc.args[0]  # type: ignore[index]


def assert_joined_with_the_trace(row: dict, *, user: str = "user-1") -> None:
    assert (row["project"], row["environment"]) == (PROJECT, "production")
    assert row["model"] == "gpt-4o-mini-2024-07-18"
    assert row["capability"] == "answer-question"
    assert (row["user_id"], row["session_id"]) == (user, f"session-of-{user}")
    assert (row["input"], row["output"]) == (QUESTION, ANSWER)


async def test_the_sdk_exporter_configured_by_environment_variables_just_works(otel, monkeypatch):
    up = otel["otlp_proto"]["up"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                       f"{up.info.gateway_url}/otlp/v1/traces")  # fmt: skip
    # spans that carry a judge's evaluations come with a key made for evaluator feedback (an
    # end users' key has them refused: tests/integration/test_annotators.py)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={otel['judge_key']}")
    exporter = OTLPSpanExporter()  # reads the variables, as in any instrumented app
    results: list[SpanExportResult] = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span):
            results.append(self.span_exporter.export((span,)))

    tracer_provider, _ = provider()
    tracer_provider.add_span_processor(Recording(exporter))
    evaluation = {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.2,
                  "gen_ai.evaluation.explanation": "about monthly plans"}  # fmt: skip
    trace_id, span_id = await asyncio.to_thread(
        traced_chat, tracer_provider, user="u-sdk", session="session-of-u-sdk",
        evaluation=evaluation,
    )  # fmt: skip
    assert results == [SpanExportResult.SUCCESS] * 2

    row = await feedback_for(up, trace_id, otel)
    assert_joined_with_the_trace(row, user="u-sdk")

    # the evaluation event is feedback from an evaluator, about the chat span
    async def evaluated() -> list[dict]:
        return await asyncio.to_thread(
            sql_rows, _bin(up), up.env,
            "SELECT span_id, name, score, comment, annotator, model FROM thumbline.feedback "
            f"FINAL WHERE trace_id = '{trace_id}' AND annotator = 'evaluator'",
        )  # fmt: skip

    (evaluator,) = await until(evaluated)
    assert evaluator["span_id"] == span_id and evaluator["name"] == "relevance"
    assert evaluator["score"] == 0.2 and evaluator["comment"] == "about monthly plans"
    assert evaluator["model"] == "gpt-4o-mini-2024-07-18"

    # and `thumbline inbox` shows the user's feedback with the question and the answer
    shown = run(_bin(up), up.env, "inbox", "--json", "--label", "bad", "--user-id", "u-sdk",
                "--annotator", "end_user")  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    (listed,) = [orjson.loads(line) for line in shown.stdout.splitlines() if line.strip()]
    assert (listed["input"], listed["output"]) == (QUESTION, ANSWER)


async def post_otlp(url: str, body: bytes, media: str, **headers: str) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": media, **headers}) as r,
    ):
        return r.status, await r.read()


async def test_otlp_json_gzipped_is_taken_and_a_bad_span_is_refused_alone(otel):
    up = otel["otlp_proto"]["up"]
    url, key = f"{up.info.gateway_url}/otlp/v1/traces", otel["key"]
    tracer_provider, exporter = provider()
    trace_id, _ = traced_chat(tracer_provider, user="u-json", session="session-of-u-json")
    traced_chat(tracer_provider, user="u" * 300)  # a user id over its bound: refused
    body = gzip.compress(otlp_json(exporter.get_finished_spans()))
    status, answer = await post_otlp(url, body, "application/json", **{
        "Content-Encoding": "gzip", "X-API-Key": key,
    })  # fmt: skip
    assert status == 200
    partial = orjson.loads(answer)["partialSuccess"]
    assert partial["rejectedSpans"] == "1"  # OTLP/JSON writes 64-bit integers as strings
    assert "user_id" in partial["errorMessage"]

    row = await feedback_for(up, trace_id, otel)
    assert_joined_with_the_trace(row, user="u-json")


async def test_a_body_that_is_not_otlp_gets_a_status_in_the_request_encoding(otel):
    up = otel["otlp_proto"]["up"]
    url, key = f"{up.info.gateway_url}/otlp/v1/traces", otel["key"]
    status, answer = await post_otlp(url, b"\x0a\xff\xff", "application/x-protobuf",
                                     **{"X-API-Key": key})  # fmt: skip
    assert status == 400
    assert b"not OTLP protobuf" in answer and answer[:1] == b"\x08"  # Status.code, then message
    status, answer = await post_otlp(url, otlp_proto([]), "application/x-protobuf")
    assert status == 401 and b"API key" in answer  # keys exist: no key, no entry
    status, answer = await post_otlp(url, b"{}", "text/plain", **{"X-API-Key": key})
    assert status == 415 and b"application/x-protobuf" in answer
    status, answer = await post_otlp(url, gzip.compress(b"{" * 100_000)[:50],
                                     "application/json", **{"Content-Encoding": "gzip",
                                                            "X-API-Key": key})  # fmt: skip
    assert status == 400 and b"gzip" in answer
    bomb = gzip.compress(b"\0" * (6 * 1024 * 1024))  # a few KB that inflate past the limit
    status, answer = await post_otlp(url, bomb, "application/x-protobuf",
                                     **{"Content-Encoding": "gzip", "X-API-Key": key})  # fmt: skip
    assert status == 413 and b"inflates" in answer
    # nothing refused in a good request: an empty ExportTraceServiceResponse
    tracer_provider, exporter = provider()
    traced_chat(tracer_provider, user="u-ok", session="session-of-u-ok")
    status, answer = await post_otlp(url, otlp_proto(exporter.get_finished_spans()),
                                     "application/x-protobuf", **{"X-API-Key": key})  # fmt: skip
    assert status == 200
    assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")


@pytest.mark.parametrize("encoding", ["otlp_proto", "otlp_json"])
async def test_the_collectors_kafka_messages_are_read_whatever_their_key(otel, broker, encoding):
    """Several traces per message, keyed arbitrarily, as the Kafka exporter writes them;
    a message that is not OTLP is a dead letter and the messages around it are kept."""
    up, topic = otel[encoding]["up"], otel[encoding]["topic"]
    tracer_provider, exporter = provider()
    users = [f"u-{encoding}-{i}" for i in range(6)]
    traces = [traced_chat(tracer_provider, user=u, session=f"session-of-{u}")[0] for u in users]
    traced_chat(tracer_provider, user="u" * 300)  # its root span is refused, alone
    spans = exporter.get_finished_spans()
    encode = otlp_proto if encoding == "otlp_proto" else otlp_json
    messages = [encode(spans[:6]), b"this is not an export request", encode(spans[6:])]
    assert len(spans) == 14  # the last message: three traces and the bad one
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for message in messages:
            await producer.send_and_wait(topic, message, key=os.urandom(8))
    finally:
        await producer.stop()

    keys = otel if encoding == "otlp_proto" else None  # the first `thumbline up` has keys
    rows = [await feedback_for(up, trace_id, keys) for trace_id in traces]
    for user, row in zip(users, rows, strict=True):
        assert_joined_with_the_trace(row, user=user)

    async def dead() -> list[dict]:
        return await asyncio.to_thread(
            sql_rows, _bin(up), up.env,
            f"SELECT reason, error FROM thumbline.dead_letters WHERE topic = '{topic}'",
        )  # fmt: skip

    async def both() -> list[dict] | None:
        found = await dead()
        return found if len(found) >= 2 else None

    letters = sorted(await until(both) or [], key=lambda d: d["reason"])
    assert [d["reason"] for d in letters] == ["bad_otlp", "invalid_event"]
    words = "not OTLP protobuf" if encoding == "otlp_proto" else "not OTLP/JSON"
    assert words in letters[0]["error"] and "user_id" in letters[1]["error"]
