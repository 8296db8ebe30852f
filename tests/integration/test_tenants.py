"""Tenant isolation, tried as an attacker would: one project's keys against another's data.

`thumbline up` with keys for projects a and b. Project a's ingest key sends
b's trace id, b's event ids, a retraction of b's feedback and feedback on b's
trace; b's data must not change, and a's read key must see nothing of b, not
even b's dimensions through the join.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import unique
from tests.integration.conftest import run, start_up, stop, worker_env
from tests.integration.test_gateway import get, post


@pytest.fixture(scope="module")
async def two_projects(broker, thumbline_bin, clean_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tenants")
    env = await worker_env(broker, clean_env, tmp, "tenants")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")

    def create(scope: str, project: str) -> str:
        result = run(thumbline_bin, env, "keys", "create", "--scope", scope, "--project", project)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    keys = {f"{s}_{p}": create(s, p) for s in ("ingest", "read") for p in ("a", "b")}
    yield up, keys
    stop(up)


async def until(check, tries: int = 60):
    """Poll ``check`` (an async callable) until it returns something truthy."""
    for _ in range(tries):
        if found := await check():
            return found
        await asyncio.sleep(0.5)
    raise AssertionError("not within 30 s")


async def test_one_projects_ingest_key_cannot_touch_or_read_anothers_data(two_projects):
    up, k = two_projects
    base = up.info.gateway_url
    trace_id, event_id = unique("b-trace"), unique("b-event")
    b_trace = {"trace_id": trace_id, "model": "b-model", "environment": "b-env",
               "capability": "b-cap", "user_id": "b-user"}  # fmt: skip
    b_feedback = {"trace_id": trace_id, "event_id": event_id, "label": "bad", "comment": "b says"}
    assert (await post(f"{base}/v1/traces", b_trace, k["ingest_b"]))[0] == 202
    assert (await post(f"{base}/v1/feedback", b_feedback, k["ingest_b"]))[0] == 202

    async def b_row():
        status, rows = await get(f"{base}/v1/feedback", k["read_b"], trace_id=trace_id)
        assert status == 200
        return rows

    [before] = await until(b_row)
    assert (before["project"], before["model"], before["label"]) == ("b", "b-model", "bad")

    # Project a's ingest key: b's trace id, b's event id, a retraction of it, feedback on it.
    a_on_b = unique("a-on-b")
    attacks = [
        ("/v1/traces", {"trace_id": trace_id, "model": "evil-model", "environment": "evil"}),
        ("/v1/feedback", {**b_feedback, "label": "good", "comment": "a overwrote"}),
        ("/v1/feedback", {"trace_id": trace_id, "event_id": event_id, "retracted": True}),
        ("/v1/feedback", {"trace_id": trace_id, "event_id": a_on_b, "label": "bad"}),
    ]
    for path, body in attacks:
        assert (await post(f"{base}{path}", body, k["ingest_a"]))[0] == 202

    async def a_rows():
        status, rows = await get(f"{base}/v1/feedback", k["read_a"], trace_id=trace_id)
        assert status == 200
        return any(r["event_id"] == a_on_b for r in rows) and rows

    seen_by_a = await until(a_rows)
    assert {r["project"] for r in seen_by_a} == {"a"}
    assert not {"b-model", "b-env", "b-cap", "b-user"} & {
        r[f] for r in seen_by_a for f in ("model", "environment", "capability", "user_id")
    }  # nothing of b's trace leaks into a's rows through the join
    status, trace = await get(f"{base}/v1/traces/{trace_id}", k["read_a"])
    assert status == 200 and {s["project"] for s in trace["spans"]} == {"a"}
    assert {s["model"] for s in trace["spans"]} == {"evil-model"}
    assert {f["project"] for f in trace["feedback"]} == {"a"}

    # b's data is exactly as b sent it: its trace, its feedback, still joined.
    status, trace = await get(f"{base}/v1/traces/{trace_id}", k["read_b"])
    assert status == 200 and [(s["project"], s["model"]) for s in trace["spans"]] == [
        ("b", "b-model")
    ]
    [after] = await b_row()
    assert (after["event_id"], after["project"], after["label"], after["comment"]) == (
        event_id, "b", "bad", "b says",
    )  # fmt: skip
    assert (after["model"], after["environment"], after["capability"]) == (
        "b-model", "b-env", "b-cap",
    )  # fmt: skip
    assert (await get(f"{base}/v1/feedback", k["read_a"], project="b"))[0] == 403
    assert (await get(f"{base}/v1/feedback", k["read_b"], project="a"))[0] == 403


async def test_feedback_on_another_projects_conversation_inherits_and_shows_nothing_of_it(
    two_projects,
):
    """Project a's key rates a conversation id that project b uses: a's row takes none of
    b's dimensions, and each project's read of the conversation shows only its own rows."""
    up, k = two_projects
    base = up.info.gateway_url
    conversation = unique("shared-conv")
    b_trace = {"trace_id": unique("b-conv-trace"), "conversation_id": conversation,
               "model": "b-model", "capability": "b-cap", "user_id": "b-user"}  # fmt: skip
    assert (await post(f"{base}/v1/traces", b_trace, k["ingest_b"]))[0] == 202
    b_said = {"conversation_id": conversation, "label": "good", "comment": "b says"}
    assert (await post(f"{base}/v1/feedback", b_said, k["ingest_b"]))[0] == 202
    a_said = {"conversation_id": conversation, "label": "bad", "comment": "a says"}
    assert (await post(f"{base}/v1/feedback", a_said, k["ingest_a"]))[0] == 202

    async def joined_b():
        status, view = await get(f"{base}/v1/conversations/{conversation}", k["read_b"])
        return status == 200 and [f for f in view["feedback"] if f["model"]] and view

    b_view = await until(joined_b)
    assert {s["project"] for s in b_view["spans"]} == {"b"}
    assert [(f["project"], f["model"], f["comment"]) for f in b_view["feedback"]] == [
        ("b", "b-model", "b says")
    ]

    async def a_view():
        status, view = await get(f"{base}/v1/conversations/{conversation}", k["read_a"])
        return status == 200 and view["feedback"] and view

    view = await until(a_view)
    assert view["spans"] == []  # b's trace is not a's
    assert [(f["project"], f["comment"]) for f in view["feedback"]] == [("a", "a says")]
    assert not {"b-model", "b-cap", "b-user"} & {
        view["feedback"][0][f] for f in ("model", "capability", "user_id")
    }
