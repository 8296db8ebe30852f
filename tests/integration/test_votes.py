"""One vote per person through `thumbline up` (THUMBLINE_ONE_VOTE_PER_USER=true).

A person's feedback of one name on one trace is one row, the latest click; two
people are two rows; events without a user id stay one row each. The rate
windows count what the rows say: one bad for a person who went from up to down.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.conftest import unique
from tests.integration.conftest import run, sql_rows, start_up, stop, worker_env
from tests.integration.test_gateway import get, post
from tests.integration.test_tenants import until
from thumbline.producers import FeedbackProducer
from thumbline.schemas import FeedbackEvent

WINDOW = 2


@pytest.fixture(scope="module")
async def up(broker, thumbline_bin, clean_env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("votes")
    env = await worker_env(
        broker, clean_env, tmp, "votes",
        THUMBLINE_ONE_VOTE_PER_USER="true", THUMBLINE_RATE_WINDOW_SECONDS=str(WINDOW),
        THUMBLINE_RATE_SLIDING_SECONDS=str(3 * WINDOW), THUMBLINE_RATE_LATENESS_SECONDS="1",
        # longer than any wait here: what joins did not wait for the grace to end
        THUMBLINE_JOIN_GRACE_SECONDS="120", THUMBLINE_JOIN_PENDING_ROW_SECONDS="0",
    )  # fmt: skip
    running = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    yield running
    stop(running)


async def until_rows(thumbline_bin, env, sql: str, want, tries: int = 90) -> list[dict]:
    """Poll ``sql`` until ``want(rows)`` holds (the stream is asynchronous); the last rows."""
    rows: list[dict] = []
    for _ in range(tries):
        rows = await asyncio.to_thread(sql_rows, thumbline_bin, env, sql)
        if want(rows):
            return rows
        await asyncio.sleep(0.5)
    return rows


def window_start(now: float) -> float:
    """A moment early in the next rate window, so a test's clicks share one window."""
    return (now // WINDOW + 1) * WINDOW + 0.2


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat()


async def test_a_persons_up_then_down_is_one_bad_row_and_one_bad_in_the_rate_window(
    up, broker, thumbline_bin
):
    env, prefix = up.env, up.env["THUMBLINE_TOPIC_PREFIX"]
    project, trace_id = unique("votes"), unique("vt")
    at = window_start(time.time())
    async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
        await fb.trace(trace_id=trace_id, project=project, model="m-votes")
    # Raw Kafka, one message: the later click (down) first, the earlier (up) after it,
    # so neither arrival order nor received_at can make the up win.
    clicks = [
        {"trace_id": trace_id, "project": project, "user_id": "ann", "kind": "thumb",
         "value": value, "ts": iso(when), "event_id": unique(f"ann-{value}")}
        for value, when in (("down", at + 0.5), ("up", at))
    ]  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(f"{prefix}feedback", orjson.dumps(clicks))
    finally:
        await producer.stop()

    sql = (
        "SELECT label, user_id, client_event_id, join_status FROM thumbline.feedback FINAL "
        f"WHERE project = '{project}' AND join_status != 'pending'"
    )
    rows = await until_rows(thumbline_bin, env, sql, lambda r: len(r) >= 1)
    await asyncio.sleep(1)  # a second row, were there one, would be written by now
    rows = await asyncio.to_thread(sql_rows, thumbline_bin, env, sql)
    assert [(r["label"], r["user_id"], r["join_status"]) for r in rows] == [
        ("bad", "ann", "joined")
    ]
    assert rows[0]["client_event_id"] == clicks[0]["event_id"]

    rates = (
        "SELECT sum(good) AS good, sum(bad) AS bad FROM thumbline.feedback_rates FINAL "
        f"WHERE project = '{project}' AND window_seconds = {WINDOW} AND model = '*'"
    )
    counted = await until_rows(thumbline_bin, env, rates, lambda r: r and r[0]["bad"])
    assert (counted[0]["good"], counted[0]["bad"]) == (0, 1)


async def test_two_people_are_two_rows_and_events_without_a_user_are_one_row_each(
    up, thumbline_bin
):
    env, project, trace_id = up.env, unique("votes2"), unique("vt2")
    base = up.info.gateway_url
    assert (await post(f"{base}/v1/traces", {"trace_id": trace_id}))[0] == 202
    events = [
        {"trace_id": trace_id, "project": project, "user_id": "ann", "kind": "thumb",
         "value": "up"},
        {"trace_id": trace_id, "project": project, "user_id": "bob", "kind": "thumb",
         "value": "down"},
        {"trace_id": trace_id, "project": project, "kind": "thumb", "value": "up"},
        {"trace_id": trace_id, "project": project, "kind": "thumb", "value": "up"},
    ]  # fmt: skip
    for event in events:
        assert (await post(f"{base}/v1/feedback", event))[0] == 202
    sql = (
        "SELECT user_id, label FROM thumbline.feedback FINAL "
        f"WHERE trace_id = '{trace_id}' ORDER BY user_id, label"
    )
    rows = await until_rows(thumbline_bin, env, sql, lambda r: len(r) >= 4)
    assert [(r["user_id"], r["label"]) for r in rows] == [
        ("", "good"), ("", "good"), ("ann", "good"), ("bob", "bad"),
    ]  # fmt: skip


async def test_feedback_on_a_session_takes_its_latest_traces_dimensions_before_or_after_them(
    up, broker, thumbline_bin
):
    env, prefix = up.env, up.env["THUMBLINE_TOPIC_PREFIX"]
    project, session = unique("sess"), unique("s")
    at = window_start(time.time())
    early = {"project": project, "session_id": session, "event_id": unique("early"),
             "kind": "thumb", "value": "down", "ts": iso(at)}  # fmt: skip
    late = {**early, "event_id": unique("late"), "ts": iso(at + 0.3)}
    pending = f"SELECT join_status FROM thumbline.feedback FINAL WHERE project = '{project}'"
    async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
        await fb.send(FeedbackEvent.parse(early))  # before any trace of the session
        waiting = await until_rows(thumbline_bin, env, pending, lambda r: len(r) == 1)
        assert [r["join_status"] for r in waiting] == ["pending"]
        await fb.trace(trace_id=unique("old"), project=project, session_id=session,
                       model="m-old", capability="c-old", start_time=iso(at - 60))  # fmt: skip
        await fb.trace(trace_id=unique("new"), project=project, session_id=session,
                       model="m-new", capability="c-new", environment="prod",
                       user_id="u-sess", start_time=iso(at - 1))  # fmt: skip
        await asyncio.sleep(1)  # the traces stored: the late feedback finds them there
        await fb.send(FeedbackEvent.parse(late))
    sql = (
        "SELECT event_id, trace_id, target, session_id, model, capability, environment, "
        f"user_id, join_status FROM thumbline.feedback FINAL WHERE project = '{project}' "
        "ORDER BY event_id"
    )
    rows = await until_rows(
        thumbline_bin, env, sql,
        lambda r: len(r) == 2 and all(x["join_status"] == "joined" for x in r),
        tries=20,  # well within the grace: joined by a look in the store, not by the grace
    )  # fmt: skip
    assert {r["event_id"] for r in rows} == {early["event_id"], late["event_id"]}
    for row in rows:
        assert (row["trace_id"], row["target"], row["session_id"]) == ("", "session", session)
        assert (row["model"], row["capability"], row["environment"], row["user_id"]) == (
            "m-new", "c-new", "prod", "u-sess",
        )  # fmt: skip
    rates = (
        "SELECT model, sum(bad) AS bad FROM thumbline.feedback_rates FINAL "
        f"WHERE project = '{project}' AND window_seconds = {WINDOW} AND capability = '*' "
        "GROUP BY model"
    )
    counted = await until_rows(thumbline_bin, env, rates, lambda r: r and r[0]["bad"] == 2)
    assert [(r["model"], r["bad"]) for r in counted] == [("m-new", 2)]


async def test_the_conversation_view_lists_its_traces_and_feedback_on_them_and_on_it(
    up, thumbline_bin
):
    base, conversation = up.info.gateway_url, unique("conv")
    first, second = unique("ct1"), unique("ct2")
    for trace_id in (first, second):
        trace = {"trace_id": trace_id, "conversation_id": conversation, "model": "m-conv"}
        assert (await post(f"{base}/v1/traces", trace))[0] == 202
    on_trace = {"trace_id": first, "label": "bad", "event_id": unique("on-trace")}
    on_whole = {"conversation_id": conversation, "label": "good", "event_id": unique("on-conv")}
    for body in (on_trace, on_whole):
        assert (await post(f"{base}/v1/feedback", body))[0] == 202

    async def view():
        status, body = await get(f"{base}/v1/conversations/{conversation}")
        joined = status == 200 and [f for f in body["feedback"] if f["join_status"] == "joined"]
        return joined and len(joined) == 2 and body

    body = await until(view)
    assert {s["trace_id"] for s in body["spans"]} == {first, second}
    by_id = {f["event_id"]: f for f in body["feedback"]}
    assert by_id[on_trace["event_id"]]["trace_id"] == first
    assert by_id[on_whole["event_id"]]["trace_id"] == ""
    assert by_id[on_whole["event_id"]]["conversation_id"] == conversation
    assert by_id[on_whole["event_id"]]["target"] == "conversation"
    assert by_id[on_whole["event_id"]]["model"] == "m-conv"  # its latest trace's
    status, _ = await get(f"{base}/v1/conversations/{unique('none')}")
    assert status == 404

    shown = await asyncio.to_thread(
        run, thumbline_bin, {**up.env, "COLUMNS": "200"}, "trace", "--conversation", conversation
    )
    assert shown.returncode == 0, shown.stderr
    assert f"trace {first}" in shown.stdout and f"trace {second}" in shown.stdout
    feedback = shown.stdout[shown.stdout.index("feedback") :]
    assert first in feedback and "(conversation)" in feedback
    unknown = await asyncio.to_thread(run, thumbline_bin, up.env, "trace", "--conversation", "x")
    assert unknown.returncode == 1 and "nothing is stored for conversation x" in unknown.stderr


async def test_a_retraction_by_the_same_person_of_the_same_name_withdraws_the_vote(
    up, thumbline_bin
):
    env, base, trace_id = up.env, up.info.gateway_url, unique("vr")
    assert (await post(f"{base}/v1/traces", {"trace_id": trace_id}))[0] == 202
    vote = {"trace_id": trace_id, "user_id": "ann", "kind": "thumb", "value": "down"}
    kept = {"trace_id": trace_id, "user_id": "bob", "kind": "thumb", "value": "down"}
    for body in (vote, kept):
        assert (await post(f"{base}/v1/feedback", body))[0] == 202
    sql = f"SELECT user_id FROM thumbline.feedback FINAL WHERE trace_id = '{trace_id}'"
    await until_rows(thumbline_bin, env, sql, lambda r: len(r) == 2)
    retraction = {"trace_id": trace_id, "user_id": "ann", "name": "thumb", "retracted": True}
    assert (await post(f"{base}/v1/feedback", retraction))[0] == 202
    rows = await until_rows(thumbline_bin, env, sql, lambda r: len(r) == 1)
    assert [r["user_id"] for r in rows] == ["bob"]


async def test_send_feedback_from_the_command_line_rates_a_whole_conversation(up, thumbline_bin):
    conversation = unique("cli-conv")
    missing = await asyncio.to_thread(run, thumbline_bin, up.env, "send", "feedback", "--thumb",
                                      "down")  # fmt: skip
    assert missing.returncode == 2 and "--conversation-id" in missing.stderr
    sent = await asyncio.to_thread(
        run, thumbline_bin, up.env, "send", "feedback", "--conversation-id", conversation,
        "--thumb", "down",
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    sql = (
        "SELECT trace_id, target, label FROM thumbline.feedback FINAL "
        f"WHERE conversation_id = '{conversation}'"
    )
    rows = await until_rows(thumbline_bin, up.env, sql, lambda r: len(r) == 1)
    assert [(r["trace_id"], r["target"], r["label"]) for r in rows] == [("", "conversation", "bad")]


async def test_a_score_configs_flag_makes_one_vote_per_person_for_its_name_only(
    broker, clean_env, thumbline_bin, tmp_path
):
    project, trace_id = unique("cfg"), unique("ct")
    scores = tmp_path / "scores.toml"
    scores.write_text(
        f'[[score]]\nproject = "{project}"\nname = "helpful"\nkind = "thumb"\n'
        "one_vote_per_user = true\n"
    )
    env = await worker_env(broker, clean_env, tmp_path, "votecfg",
                           THUMBLINE_SCORE_CONFIGS=str(scores))  # fmt: skip
    running = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:
        at = time.time()
        prefix = env["THUMBLINE_TOPIC_PREFIX"]
        async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
            await fb.trace(trace_id=trace_id, project=project)
            for name in ("helpful", "other"):
                for value, when in (("up", at), ("down", at + 0.5)):
                    await fb.feedback(trace_id, project=project, user_id="ann", name=name,
                                      kind="thumb", value=value, ts=iso(when))  # fmt: skip
        sql = (
            "SELECT name, label FROM thumbline.feedback FINAL "
            f"WHERE project = '{project}' AND join_status = 'joined' ORDER BY name, label"
        )
        rows = await until_rows(thumbline_bin, env, sql, lambda r: len(r) >= 3)
        assert [(r["name"], r["label"]) for r in rows] == [
            ("helpful", "bad"), ("other", "bad"), ("other", "good"),
        ]  # fmt: skip
    finally:
        stop(running)
