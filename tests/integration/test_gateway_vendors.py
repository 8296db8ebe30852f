"""Hosted products' own URLs and bytes through `thumbline up`: a change of base URL and key.

Each test sends a trace first (with its model and capability), then the product's
payload exactly as its SDK or REST API sends it, with a thumbline ingest key in
the product's ``Authorization: Bearer`` header, and reads the stored rows back.

Sources of the bytes:

- Axiom: ``axiomhq/ai`` ``packages/ai/src/feedback.ts`` at
  cee4eb0fc2ea6e7aa780f4623f41dbb76eaf180e: one flat JSON object per
  ``sendFeedback``, ``POST {url}/v1/datasets/{dataset}/ingest`` (``{edgeUrl}/v1/ingest/
  {dataset}`` on an edge URL, ``packages/ai/src/util/feedback.ts``), success
  read as ``response.ok``; ``category`` from the same file at 0f2f4f8cef0b.
- Braintrust: ``braintrustdata/braintrust-openapi`` ``openapi/spec.json`` at
  b561b12dd30b9862a48e391e86b33e96043cdc0a: ``POST /v1/project_logs/{project_id}/
  feedback`` ``{"feedback": [...]}`` answered ``{"status": "success"}``; ``POST
  /v1/project_logs/{project_id}/insert`` ``{"events": [...]}`` answered ``{"row_ids":
  [...]}``; the child span of seed 003 ("Collect multiple scores").
- HoneyHive: seed 002 (``enrich_session(feedback={...})``).
- The attributes product: seed 001 ("update the trace with a PATCH request").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import unique
from tests.integration.conftest import Up, run, sql_rows, start_up, stop, worker_env


async def send(method: str, url: str, body: bytes | Any, key: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, data=data, headers=headers) as r,
    ):
        return r.status, await r.json()


async def rows_when(
    up: Up, bin_: str, query: str, ready: Callable[[list[dict]], bool]
) -> list[dict]:
    """Poll ``query`` until ``ready(rows)`` (the stream is asynchronous), at most 30 s."""
    rows: list[dict] = []
    for _ in range(60):
        rows = await asyncio.to_thread(sql_rows, bin_, up.env, query)
        if ready(rows):
            return rows
        await asyncio.sleep(0.5)
    return rows


async def rows_for(up: Up, bin_: str, query: str, want: int) -> list[dict]:
    return await rows_when(up, bin_, query, lambda rows: len(rows) >= want)


def alice_changed_her_mind(rows: list[dict]) -> bool:
    return any(r["user_id"] == "alice" and r["score"] == 0.0 for r in rows) and len(rows) >= 2


@pytest.fixture(scope="module")
async def shop(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[tuple[Up, str]]:
    """One `thumbline up` and an ingest key of project shop."""
    tmp = tmp_path_factory.mktemp("vendors")
    env = await worker_env(broker, clean_env, tmp, "vendors",
                           THUMBLINE_GATEWAY_CORS_ORIGINS="https://app.example")  # fmt: skip
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    try:
        made = run(thumbline_bin, env, "keys", "create", "--scope", "ingest", "--project", "shop")
        assert made.returncode == 0, made.stderr
        yield up, made.stdout.strip()
    finally:
        stop(up)


async def a_trace(up: Up, key: str, trace_id: str, span_id: str | None = None) -> None:
    trace = {"trace_id": trace_id, "model": "gpt-4o", "capability": "support-agent"}
    if span_id is not None:
        trace["span_id"] = span_id
    status, body = await send("POST", f"{up.info.gateway_url}/v1/traces", trace, key)
    assert status == 202, body


COLUMNS = (
    "event_id, kind, name, label, score, category, comment, annotator, project, model, "
    "capability, user_id, span_id, join_status, toString(metadata) AS metadata"
)


async def test_the_axiom_sdk_posts_to_its_dataset_ingest_path(shop, thumbline_bin):
    up, key = shop
    t = unique("ax").replace("-", "")
    await a_trace(up, key, t)
    # Feedback.number({name: 'star-rating', value: 1}): one star
    star = (
        b'{"schemaUrl":"https://axiom.co/ai/schemas/0.0.2","id":"' + f"{t}-1".encode()
        + b'","name":"star-rating","value":1,"kind":"number","links":{"trace_id":"'
        + t.encode() + b'","capability":"support-agent","userId":"user-123"},'
        b'"event":"feedback"}'
    )  # fmt: skip
    # the SDK before 0a72aad: Feedback.thumbDown({name, message, category})
    thumb = (
        b'{"schemaUrl":"https://axiom.co/ai/schemas/0.0.2","id":"' + f"{t}-2".encode()
        + b'","name":"response-quality","value":-1,"message":"made up a city",'
        b'"category":"hallucination","kind":"thumb","links":{"trace_id":"' + t.encode()
        + b'","capability":"support-agent"},"event":"feedback"}'
    )  # fmt: skip
    base = up.info.gateway_url
    status, body = await send("POST", f"{base}/v1/datasets/ai-feedback/ingest", star, key)
    assert 200 <= status < 300, body  # the SDK reads response.ok
    status, body = await send("POST", f"{base}/v1/ingest/ai-feedback", thumb, key)  # edge URL
    assert 200 <= status < 300, body

    query = (
        f"SELECT {COLUMNS} FROM thumbline.feedback FINAL WHERE trace_id = '{t}' ORDER BY event_id"
    )
    star_row, thumb_row = await rows_for(up, thumbline_bin, query, 2)
    assert (star_row["kind"], star_row["label"], star_row["score"]) == ("rating", "bad", 0.0)
    assert (thumb_row["label"], thumb_row["category"], thumb_row["comment"]) == (
        "bad", "hallucination", "made up a city",
    )  # fmt: skip
    for row in (star_row, thumb_row):
        assert (row["annotator"], row["project"], row["model"], row["capability"]) == (
            "end_user", "shop", "gpt-4o", "support-agent",
        )  # fmt: skip
        assert orjson.loads(row["metadata"])["axiom_dataset"] == "ai-feedback"
    assert star_row["user_id"] == "user-123"


async def test_a_refused_axiom_event_is_not_ok_for_the_sdk(shop):
    up, key = shop
    status, body = await send(
        "POST", f"{up.info.gateway_url}/v1/datasets/ai-feedback/ingest",
        {"id": "x", "name": "n", "kind": "thumb", "value": 1, "event": "feedback"}, key,
    )  # fmt: skip
    assert status == 422 and "links" in body["results"][0]["error"]


async def test_braintrust_rest_feedback_keeps_one_score_per_rater(shop, thumbline_bin):
    up, key = shop
    t = unique("bt")
    await a_trace(up, key, t)
    url = f"{up.info.gateway_url}/v1/project_logs/proj-1/feedback"

    def item(score: float, rater: str) -> dict[str, Any]:
        return {"id": t, "scores": {"correctness": score}, "comment": f"from {rater}",
                "metadata": {"user_id": rater}, "source": "external"}  # fmt: skip

    status, body = await send("POST", url, {"feedback": [item(1, "alice"), item(0, "bob")]}, key)
    assert (status, body["status"]) == (202, "success")
    status, body = await send("POST", url, {"feedback": [item(0, "alice")]}, key)  # changes mind
    assert (status, body["status"]) == (202, "success")
    status, body = await send("POST", url, {"feedbacks": []}, key)
    assert status == 422 and "feedback: is required" in body["error"]

    query = (
        f"SELECT {COLUMNS} FROM thumbline.feedback FINAL WHERE trace_id = '{t}' ORDER BY user_id"
    )
    rows = await rows_when(up, thumbline_bin, query, alice_changed_her_mind)
    assert [(r["user_id"], r["label"], r["score"], r["comment"]) for r in rows] == [
        ("alice", "bad", 0.0, "from alice"),
        ("bob", "bad", 0.0, "from bob"),
    ]
    assert {(r["annotator"], r["project"], r["model"], r["join_status"]) for r in rows} == {
        ("end_user", "shop", "gpt-4o", "joined")
    }
    assert {orjson.loads(r["metadata"])["braintrust_project"] for r in rows} == {"proj-1"}


async def test_braintrust_child_spans_of_user_feedback_score_the_request_span(shop, thumbline_bin):
    up, key = shop
    root = unique("root")
    await a_trace(up, key, root, "req-span")
    url = f"{up.info.gateway_url}/v1/project_logs/proj-1/insert"

    def child(span: str, rater: str, score: float) -> dict[str, Any]:
        return {"id": f"row-{span}", "span_id": span, "root_span_id": root,
                "span_parents": ["req-span"], "scores": {"correctness": score},
                "comment": "wrong city", "metadata": {"user_id": rater},
                "span_attributes": {"name": "user_feedback", "type": "task"}}  # fmt: skip

    events = [child("fb-1", "alice", 1), child("fb-2", "bob", 0)]
    status, body = await send("POST", url, {"events": events}, key)
    assert status == 202 and body["row_ids"] == ["row-fb-1", "row-fb-2"]
    status, body = await send("POST", url, {"events": [child("fb-3", "alice", 0)]}, key)
    assert status == 202

    query = (
        f"SELECT {COLUMNS} FROM thumbline.feedback FINAL WHERE trace_id = '{root}' ORDER BY user_id"
    )
    rows = await rows_when(up, thumbline_bin, query, alice_changed_her_mind)
    assert [(r["user_id"], r["span_id"], r["label"], r["score"]) for r in rows] == [
        ("alice", "req-span", "bad", 0.0),  # alice's second vote replaced her first
        ("bob", "req-span", "bad", 0.0),
    ]
    assert {(r["annotator"], r["model"], r["capability"]) for r in rows} == {
        ("end_user", "gpt-4o", "support-agent")
    }


async def test_honeyhive_one_star_is_bad(shop, thumbline_bin):
    up, key = shop
    t = unique("hh")
    await a_trace(up, key, t)
    body = {"session_id": t, "feedback": {"rating": 1, "comment": "useless"}}
    status, answer = await send("POST", f"{up.info.gateway_url}/v1/feedback/honeyhive", body, key)
    assert status == 202, answer
    query = f"SELECT {COLUMNS} FROM thumbline.feedback FINAL WHERE trace_id = '{t}'"
    [row] = await rows_for(up, thumbline_bin, query, 1)
    assert (row["kind"], row["label"], row["score"], row["annotator"], row["model"]) == (
        "rating", "bad", 0.0, "end_user", "gpt-4o",
    )  # fmt: skip


async def test_a_patch_of_a_trace_with_seed_001_attributes_is_feedback_on_it(shop, thumbline_bin):
    up, key = shop
    t = unique("patch")
    await a_trace(up, key, t)
    attributes = {
        "user_feedback": "negative", "user_feedback_rating": 2,
        "user_feedback_comment": "Response was off", "user_feedback_category": "incorrect",
        "user_feedback_timestamp": "2026-11-26T04:00:00Z", "feedback_reason": "hallucination",
        "annotation_status": "empty",
    }  # fmt: skip
    base = up.info.gateway_url
    body = {"attributes": attributes, "tags": ["thumbs-down"]}
    status, answer = await send("PATCH", f"{base}/v1/traces/{t}", body, key)
    assert status == 202, answer
    span = {"attributes": {"user_feedback": "positive"}}
    status, answer = await send("PATCH", f"{base}/v1/traces/{t}/spans/s-2", span, key)
    assert status == 202, answer

    query = f"SELECT {COLUMNS} FROM thumbline.feedback FINAL WHERE trace_id = '{t}' ORDER BY name"
    rows = await rows_for(up, thumbline_bin, query, 3)
    got = [(r["name"], r["span_id"], r["label"], r["category"]) for r in rows]
    assert sorted(got) == [
        ("user_feedback", "", "bad", "incorrect"),
        ("user_feedback", "s-2", "good", ""),
        ("user_feedback_rating", "", "bad", ""),
    ]
    assert {(r["annotator"], r["project"], r["model"]) for r in rows} == {
        ("end_user", "shop", "gpt-4o")
    }


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/datasets/ai-feedback/ingest"),  # the Axiom SDK runs in the browser
    ("PATCH", "/v1/traces/t-1"),
])  # fmt: skip
async def test_a_browser_may_send_the_products_requests_with_its_bearer_header(shop, method, path):
    up, _ = shop
    headers = {"Origin": "https://app.example", "Access-Control-Request-Method": method,
               "Access-Control-Request-Headers": "authorization,content-type"}  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.options(f"{up.info.gateway_url}{path}", headers=headers) as r,
    ):
        assert r.status == 200
        assert method in r.headers["Access-Control-Allow-Methods"]
        assert "authorization" in r.headers["Access-Control-Allow-Headers"].lower()
