"""The HTTP gateway on the real broker and chDB: what a 202 means, shapes, keys.

`thumbline up` runs the gateway beside the stream; requests go over real HTTP
and the rows are read back from ClickHouse.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import unique
from tests.integration.conftest import (
    Up,
    consume,
    run,
    sql_rows,
    start_up,
    stop,
    worker_env,
)  # fmt: skip
from thumbline.broker import EmbeddedBroker, free_port
from thumbline.kafka import ensure_topics
from thumbline.producers import DeliveryFailed, FeedbackProducer, GatewayProducer, InvalidEvent
from thumbline.schemas import Topics


async def post(url: str, body: Any, key: str | None = None) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body.encode() if isinstance(body, str) else orjson.dumps(body)
    async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


async def get(url: str, key: str | None = None, **params: Any) -> tuple[int, Any]:
    headers = {"X-API-Key": key} if key else {}
    async with aiohttp.ClientSession() as http, http.get(url, params=params, headers=headers) as r:
        return r.status, await r.json()


async def rows_for(thumbline_bin: str, env: dict[str, str], query: str, want: int) -> list[dict]:
    """Poll ``query`` until it returns ``want`` rows (the stream is asynchronous)."""
    for _ in range(60):
        rows = await asyncio.to_thread(sql_rows, thumbline_bin, env, query)
        if len(rows) >= want:
            return rows
        await asyncio.sleep(0.5)
    return rows


@pytest.fixture(scope="module")
async def gateway(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[Up]:
    """One `thumbline up` with no API key yet: auth is off on loopback."""
    tmp = tmp_path_factory.mktemp("gateway")
    env = await worker_env(broker, clean_env, tmp, "gw")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    assert up.info.gateway_url, "thumbline up serves the gateway by default"
    yield up
    stop(up)


async def test_a_batch_gets_a_result_per_item_and_a_retry_makes_no_second_row(
    gateway, thumbline_bin
):
    base, run_id = gateway.info.gateway_url, unique("b")
    status, body, _ = await post(f"{base}/v1/traces", {
        "trace_id": f"{run_id}-t", "project": "shop", "model": "m1", "user_id": "u1",
    })  # fmt: skip
    assert status == 202 and body["accepted"] == 1
    batch = [
        {"event_id": f"{run_id}-1", "trace_id": f"{run_id}-t", "label": "bad", "comment": "wrong",
         "project": "shop"},
        {"event_id": f"{run_id}-2", "trace_id": f"{run_id}-t", "lable": "good"},
        {"event_id": f"{run_id}-3", "trace_id": f"{run_id}-t", "kind": "signal", "name": "copied",
         "source": "explicit", "received_at": "2020-01-01T00:00:00Z", "project": "shop",
         "annotator": "evaluator", "client_event_id": "forged", "score_config_version": 99},
    ]  # fmt: skip
    status, body, _ = await post(f"{base}/v1/feedback", batch)
    assert status == 207 and (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert body["results"][1]["error"] == "lable: is not a field of this event"
    again, _, _ = await post(f"{base}/v1/feedback", [batch[0], batch[2]])  # the client retries
    assert again == 202

    query = (
        "SELECT event_id, label, source, annotator, project, model, user_id, join_status, "
        "client_event_id, score_config_version, "
        "toYear(received_at) AS year FROM thumbline.feedback FINAL "
        f"WHERE trace_id = '{run_id}-t' ORDER BY event_id"
    )
    rows = await rows_for(thumbline_bin, gateway.env, query, 2)
    assert [(r["event_id"], r["label"], r["source"], r["annotator"]) for r in rows] == [
        (f"{run_id}-1", "bad", "explicit", "end_user"),
        # the server derives source (implicit); with no key yet (loopback only), the body
        # says who gave it (an end users' key could not: tests/integration/test_annotators.py)
        (f"{run_id}-3", "neutral", "implicit", "evaluator"),
    ]
    assert all(r["year"] >= 2026 for r in rows)  # the server stamps received_at
    # and the join alone says which vote and which score config a row is
    assert {(r["client_event_id"], r["score_config_version"]) for r in rows} == {("", 0)}
    assert {(r["project"], r["model"], r["user_id"], r["join_status"]) for r in rows} == {
        ("shop", "m1", "u1", "joined")
    }
    count = f"SELECT count() AS n FROM thumbline.feedback FINAL WHERE trace_id = '{run_id}-t'"
    assert sql_rows(thumbline_bin, gateway.env, count) == [{"n": 2}]


async def test_every_hosted_product_shape_arrives_as_the_right_rows(gateway, thumbline_bin):
    base, t = gateway.info.gateway_url, unique("shape")
    # No key: hosted payloads carry no project, so these events and the trace are in "default".
    status, _, _ = await post(f"{base}/v1/traces", {"trace_id": t, "model": "m2"})
    assert status == 202
    payloads = {
        "trulayer": {"trace_id": t, "label": "edit", "comment": "Paris", "user_id": "u1"},
        "braintrust": {"id": t, "scores": {"correctness": 0}, "comment": "wrong city"},
        "honeyhive": {"session_id": t, "feedback": {"rating": True, "actions": {"copied": True}}},
        "axiom": {"links": {"traceId": t, "capability": "support"},
                  "feedback": {"kind": "enum", "name": "issue", "value": "hallucination"}},
        "attributes": {"trace_id": t, "attributes": {"user_feedback": "negative",
                                                     "user_feedback_rating": 2}},
    }  # fmt: skip
    for shape, payload in payloads.items():
        status, body, _ = await post(f"{base}/v1/feedback/{shape}", payload)
        assert status == 202, (shape, body)
    status, body, _ = await post(f"{base}/v1/feedback/zendesk", {})
    assert status == 404 and "braintrust" in body["error"]

    query = (
        "SELECT kind, name, label, score, comment, correction, model FROM thumbline.feedback "
        f"FINAL WHERE trace_id = '{t}' ORDER BY kind, name"
    )
    rows = await rows_for(thumbline_bin, gateway.env, query, 7)
    got = {(r["kind"], r["name"], r["label"]) for r in rows}
    assert got == {
        ("correction", "correction", "edit"),  # trulayer inline edit
        ("score", "correctness", "bad"),  # braintrust
        ("thumb", "rating", "good"), ("signal", "copied", "neutral"),  # honeyhive
        ("category", "issue", "bad"),  # axiom
        ("thumb", "user_feedback", "bad"), ("rating", "user_feedback_rating", "bad"),  # attributes
    }  # fmt: skip
    assert {r["model"] for r in rows} == {"m2"}  # joined with the trace


async def test_the_inbox_and_a_trace_read_back_over_http(gateway, thumbline_bin):
    base, t = gateway.info.gateway_url, unique("read")
    await post(f"{base}/v1/traces", {"trace_id": t, "project": "shop", "model": "m3"})
    await post(f"{base}/v1/feedback", [
        {"trace_id": t, "label": "bad", "comment": "wrong", "user_id": "u9", "project": "shop"},
        {"trace_id": t, "label": "good", "user_id": "u9", "project": "shop"},
    ])  # fmt: skip
    query = f"SELECT event_id FROM thumbline.feedback FINAL WHERE trace_id = '{t}'"
    assert len(await rows_for(thumbline_bin, gateway.env, query, 2)) == 2

    async with FeedbackProducer(bootstrap_servers=gateway.env["THUMBLINE_KAFKA_BOOTSTRAP"],
                                topic_prefix=gateway.env["THUMBLINE_TOPIC_PREFIX"],
                                project="shop") as kafka:  # fmt: skip
        # an LLM judge's verdict, from a producer trusted with the broker
        await kafka.feedback(t, label="bad", comment="unsupported", annotator="evaluator")
    assert len(await rows_for(thumbline_bin, gateway.env, query, 3)) == 3

    status, rows = await get(f"{base}/v1/feedback", trace_id=t, label="bad", has_comment="true",
                             annotator="end_user")  # fmt: skip
    assert status == 200 and [(r["label"], r["comment"], r["model"]) for r in rows] == [
        ("bad", "wrong", "m3")
    ]
    status, rows = await get(f"{base}/v1/feedback", trace_id=t, annotator="evaluator")
    assert [(r["comment"], r["annotator"]) for r in rows] == [("unsupported", "evaluator")]
    assert (await get(f"{base}/v1/feedback", annotator="judge"))[0] == 422
    status, trace = await get(f"{base}/v1/traces/{t}")
    assert status == 200 and len(trace["feedback"]) == 3 and trace["spans"][0]["model"] == "m3"
    assert (await get(f"{base}/v1/traces/{unique('none')}"))[0] == 404
    assert (await get(f"{base}/v1/feedback", since="7 parsecs"))[0] == 422
    assert (await get(f"{base}/v1/feedback", trace_id=t, status="joined"))[1][0]["model"] == "m3"
    assert await get(f"{base}/v1/feedback", trace_id=t, status="pending") == (200, [])
    assert (await get(f"{base}/v1/feedback", status="waiting"))[0] == 422
    sql = f"SELECT toUInt8(count()) AS n FROM thumbline.feedback FINAL WHERE trace_id = '{t}'"
    assert (await post(f"{base}/v1/sql", sql))[:2] == (200, [{"n": 3}])
    status, refused = (await post(f"{base}/v1/sql", "DROP TABLE thumbline.feedback"))[:2]
    assert status == 400 and refused["reason"] == "statement"
    assert "Drop statements are not allowed" in refused["error"]
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as r:
        text = await r.text()
    assert r.status == 200
    assert 'thumbline_gateway_events_total{kind="feedback",outcome="accepted"}' in text
    assert 'thumbline_gateway_requests_total{route="/v1/feedback",status="200"}' in text


async def test_keys_ingest_only_their_project_and_a_revoked_key_stops_at_once(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = await worker_env(broker, clean_env, tmp_path, "keys", THUMBLINE_GATEWAY_RATE_LIMIT="200",
                           THUMBLINE_GATEWAY_MAX_BODY_BYTES="65536")  # fmt: skip
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:
        url = f"{up.info.gateway_url}/v1/feedback"
        event = {"trace_id": unique("k"), "label": "good"}

        def create(*args: str) -> str:
            result = run(thumbline_bin, env, "keys", "create", *args)
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        assert (await post(url, event))[0] == 202  # no key exists yet: open on loopback
        ingest_a = create("--scope", "ingest", "--project", "a")
        read_a = create("--scope", "read", "--project", "a")
        admin = create("--scope", "admin")
        assert (await post(url, event))[0] == 401  # from the first key on, one is needed
        assert (await post(url, event, "tl_0123456789abcdef_not-a-real-secret-at-all"))[0] == 401
        assert (await post(url, event, ingest_a))[0] == 202
        status, body, _ = await post(url, {**event, "project": "b"}, ingest_a)
        assert status == 422 and "only to project 'a'" in body["results"][0]["error"]
        status, body, _ = await post(url, event, read_a)
        assert status == 403 and "scope is read" in body["error"]
        assert (await post(url, {**event, "project": "b"}, admin))[0] == 202

        feed = f"{up.info.gateway_url}/v1/feedback"
        assert (await get(feed, ingest_a))[0] == 403  # an ingest key reads nothing
        assert (await get(f"{up.info.gateway_url}/v1/traces/x", ingest_a))[0] == 403
        for _ in range(40):  # orphans (no trace was sent) are written after the grace
            status, rows = await get(feed, read_a)
            if rows:
                break
            await asyncio.sleep(0.5)
        assert status == 200 and rows and {r["project"] for r in rows} == {"a"}
        assert (await get(feed, read_a, project="b"))[0] == 403
        for _ in range(40):  # b's orphan may be written a tick after a's
            projects = {r["project"] for r in (await get(feed, admin, limit=1000))[1]}
            if projects >= {"a", "b"}:
                break
            await asyncio.sleep(0.5)
        assert projects >= {"a", "b"}
        sql = f"{up.info.gateway_url}/v1/sql"
        assert (await post(sql, "SELECT 1", read_a))[0] == 403  # SQL sees every project: admin
        assert (await post(sql, "SELECT 1 AS one", admin))[:2] == (200, [{"one": 1}])

        burst = [{"trace_id": unique("k"), "label": "good"} for _ in range(200)]
        assert (await post(url, burst, admin))[0] == 202  # a second's worth for this key
        status, body, headers = await post(url, burst, admin)
        assert status == 429 and int(headers["Retry-After"]) >= 1 and "200" in body["error"]
        status, body, _ = await post(url, [{"trace_id": "t", "comment": "x" * 70_000}], ingest_a)
        assert status == 413 and "65536 bytes" in body["error"]
        # A hosted product's payload is many events: each one counts, and one payload
        # carries at most 100 (Braintrust's scores, HoneyHive's actions...)
        shaped = f"{up.info.gateway_url}/v1/feedback/braintrust"

        def scores(n: int) -> dict:
            return {"id": unique("bt"), "scores": {f"s{i}": 0.5 for i in range(n)}}

        status, body, _ = await post(shaped, [scores(101)], ingest_a)
        assert status == 422 and "at most 100" in body["results"][0]["error"]
        status, body, headers = await post(shaped, [scores(100) for _ in range(3)], ingest_a)
        assert status == 429 and int(headers["Retry-After"]) >= 1  # 300 events, not 3

        key_id = ingest_a.split("_")[1]
        assert run(thumbline_bin, env, "keys", "revoke", key_id).returncode == 0
        assert (await post(url, event, ingest_a))[0] == 401  # at once, no cache to wait out
        listed = run(thumbline_bin, env, "keys", "list").stdout
        assert key_id in listed and ingest_a not in listed  # the secret is never shown again
    finally:
        stop(up)


async def test_admin_keys_take_no_project_and_an_old_one_with_a_project_keeps_to_it(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = await worker_env(broker, clean_env, tmp_path, "oldadmin")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:
        refused = run(thumbline_bin, env, "keys", "create", "--scope", "admin", "--project", "a")
        assert refused.returncode == 2 and "admin key covers every project" in refused.stderr
        assert "--scope read --project a" in refused.stderr
        # an admin key bound to project a, as versions before this one created them
        secret = "an-old-admin-key-secret-of-project-a"
        made = run(thumbline_bin, env, "sql", "--write",
            "INSERT INTO thumbline.api_keys (key_id, secret_sha256, scope, project, name, "
            f"created_at, version) SELECT '00000000000000aa', lower(hex(SHA256('{secret}'))), "
            "'admin', 'a', 'old', now64(3), 1")  # fmt: skip
        assert made.returncode == 0, made.stderr
        old_admin = f"tl_00000000000000aa_{secret}"
        listed = run(thumbline_bin, env, "keys", "list")
        assert "00000000000000aa" in listed.stdout

        status, body, _ = await post(f"{up.info.gateway_url}/v1/sql", "SELECT 1", old_admin)
        assert status == 403 and "bound to project 'a'" in body["error"]
        assert "keys create --scope admin" in body["error"]
        feed = f"{up.info.gateway_url}/v1/feedback"
        assert (await get(feed, old_admin, project="b"))[0] == 403
        assert (await get(feed, old_admin))[0] == 200
        event = {"trace_id": unique("k"), "label": "good", "project": "b"}
        status, body, _ = await post(feed, event, old_admin)
        assert status == 422 and "only to project 'a'" in body["results"][0]["error"]
    finally:
        await asyncio.to_thread(stop, up)


async def test_a_202_means_kafka_has_it_and_a_503_is_safe_to_retry(
    thumbline_bin, clean_env, tmp_path
):
    """Stop the broker: 503 with Retry-After, never 202. Restart it: the retry lands once."""
    port, gateway_port = free_port(), free_port()
    first = EmbeddedBroker(port=port, log_path=tmp_path / "broker1.log").start()
    await ensure_topics(first.bootstrap, Topics.build("thumbline.", 4).all())
    env = {
        **clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
        "THUMBLINE_KAFKA_BOOTSTRAP": first.bootstrap, "THUMBLINE_PARTITIONS": "4",
        "THUMBLINE_GATEWAY_PORT": str(gateway_port), "THUMBLINE_GATEWAY_ACK_TIMEOUT_SECONDS": "3",
        "THUMBLINE_JOIN_GRACE_SECONDS": "1", "THUMBLINE_SINK_MAX_SECONDS": "0.2",
    }  # fmt: skip
    gateway = subprocess.Popen(  # noqa: ASYNC220 (starting it does not block)
        [thumbline_bin, "gateway"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    brokers, worker = [first], None
    try:
        base = f"http://127.0.0.1:{gateway_port}"
        assert await ready(base, gateway), "the gateway did not start"
        url, t = f"{base}/v1/feedback", unique("durable")
        assert (await post(url, {"trace_id": t, "label": "good"}))[0] == 202
        await asyncio.to_thread(first.stop)

        event = {"event_id": f"{t}-during", "trace_id": t, "label": "bad"}
        status, body, headers = await post(url, event)
        assert status == 503 and body["retriable"] is True and headers["Retry-After"] == "5"

        brokers.append(EmbeddedBroker(port=port, log_path=tmp_path / "broker2.log").start())
        await ensure_topics(brokers[1].bootstrap, Topics.build("thumbline.", 4).all())
        for _ in range(60):  # the client retries as told, until a 202
            status, _, _ = await post(url, event)
            if status == 202:
                break
            await asyncio.sleep(1)
        assert status == 202
        messages = await consume(brokers[1].bootstrap, ["thumbline.feedback"], events=1)
        # The 503'd attempt may land too once the broker is back: the store keeps one row.
        assert {e["event_id"] for _, _, events in messages for e in events} == {f"{t}-during"}

        # Into the store: a worker on the restarted broker (the gateway frees the chDB path).
        gateway.terminate()
        gateway.wait(30)
        worker = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
        query = f"SELECT event_id, label FROM thumbline.feedback FINAL WHERE trace_id = '{t}'"
        assert await rows_for(thumbline_bin, env, query, 1) == [
            {"event_id": f"{t}-during", "label": "bad"}
        ]
    finally:
        if gateway.poll() is None:
            gateway.kill()
        gateway.wait()
        if gateway.stderr:
            gateway.stderr.close()
        if worker is not None:
            stop(worker)
        for b in brokers:
            await asyncio.to_thread(b.stop)


async def ready(base: str, proc: subprocess.Popen[str]) -> bool:
    for _ in range(150):
        if proc.poll() is not None:
            raise AssertionError(
                f"thumbline gateway exited: {proc.stderr.read() if proc.stderr else ''}"
            )
        try:
            async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return True
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    return False


async def test_the_python_sdk_over_http_has_the_kafka_transports_api(gateway, thumbline_bin):
    t = unique("sdk")
    async with GatewayProducer(url=gateway.info.gateway_url, project="shop") as fb:
        assert await fb.trace(trace_id=t, model="m4") == t
        down = await fb.thumb_down(t, comment="wrong", user_id="u1")
        assert down.trace_id == t and down.topic == "/v1/feedback"
        await fb.send_many([fb._feedback(t, kind="signal", name="copied"),
                            fb._feedback(t, kind="rating", value=5)])  # fmt: skip
        with pytest.raises(InvalidEvent, match="lable"):
            await fb.feedback(t, lable="bad")  # checked before anything is sent
    query = (
        "SELECT kind, label, model FROM thumbline.feedback FINAL "
        f"WHERE trace_id = '{t}' ORDER BY kind"
    )
    rows = await rows_for(thumbline_bin, gateway.env, query, 3)
    assert rows == [
        {"kind": "rating", "label": "good", "model": "m4"},
        {"kind": "signal", "label": "neutral", "model": "m4"},
        {"kind": "thumb", "label": "bad", "model": "m4"},
    ]


async def test_the_sdk_gives_up_with_a_retriable_error_when_the_gateway_is_gone():
    async with GatewayProducer(url=f"http://127.0.0.1:{free_port()}", retries=1) as fb:
        with pytest.raises(DeliveryFailed) as failed:
            await fb.thumb_up("t1")
    assert failed.value.retriable


def test_beyond_loopback_without_a_key_the_gateway_refuses_to_start(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = {
        **clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
        "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap, "THUMBLINE_GATEWAY_HOST": "0.0.0.0",  # noqa: S104
    }  # fmt: skip
    result = subprocess.run(  # the test fails by timeout if it starts anyway
        [thumbline_bin, "gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "no API key" in result.stderr and "thumbline keys create" in result.stderr


def test_store_credentials_never_appear_in_what_the_gateway_says(
    broker, thumbline_bin, clean_env, tmp_path
):
    secret = "s3cret-Pa55word"
    env = {
        **clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
        "THUMBLINE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "THUMBLINE_CLICKHOUSE_URL": f"http://thumbline:{secret}@127.0.0.1:{free_port()}",
    }  # fmt: skip
    result = subprocess.run(
        [thumbline_bin, "gateway"], env=env, capture_output=True, text=True, timeout=90
    )
    assert result.returncode != 0 and result.stderr.strip()
    assert secret not in result.stdout + result.stderr


async def test_event_times_far_from_the_servers_clock_are_refused_naming_the_field(gateway):
    base, now = gateway.info.gateway_url, datetime.now(UTC)
    trace_id = unique("when")
    batch = [
        {"trace_id": trace_id, "label": "bad", "ts": "2300-01-01T00:00:00Z"},
        {"trace_id": trace_id, "label": "bad", "ts": "0001-01-01T00:00:00Z"},
        {"trace_id": trace_id, "label": "bad", "ts": (now - timedelta(days=8)).isoformat()},
        {"trace_id": trace_id, "label": "bad", "ts": (now - timedelta(days=6)).isoformat()},
        {"trace_id": trace_id, "label": "bad", "ts": (now + timedelta(minutes=30)).isoformat()},
        {"trace_id": trace_id, "label": "bad", "retracted": "yes"},
    ]
    status, body, _ = await post(f"{base}/v1/feedback", batch)
    assert status == 207 and (body["accepted"], body["rejected"]) == (2, 4)
    errors = [r["error"] for r in body["results"]]
    assert errors[0].startswith("ts: is 99,") and "ahead of the time it was received" in errors[0]
    assert errors[1].startswith("ts: is ") and "older than the time it was received" in errors[1]
    assert errors[2].startswith("ts: is 8 d older") and errors[3:5] == [None, None]
    assert errors[5].startswith("retracted: Input should be a valid boolean")
    status, body, _ = await post(f"{base}/v1/traces", [
        {"trace_id": trace_id, "start_time": "9999-12-31T00:00:00Z"},
        {"trace_id": trace_id, "span_id": "s", "end_time": now.isoformat()},
    ])  # fmt: skip
    assert status == 207 and body["results"][0]["error"].startswith("start_time: is ")
