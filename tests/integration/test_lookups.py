"""The join's questions to ClickHouse, answered from rows the sink wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import unique
from thumbline.schemas import FeedbackEvent, TraceEvent
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.lookups import load_orphans, lookup_traces
from thumbline.stream_jobs.sink import ClickHouseSink


def test_a_trace_stored_as_spans_comes_back_merged(store, store_settings):
    db = store_settings.clickhouse_database
    tid = unique("trace")
    sink = ClickHouseSink(store, db)
    sink.add_traces(
        [
            TraceEvent.parse(
                {
                    "trace_id": tid,
                    "span_id": "root",
                    "project": "shop",
                    "model": "m-big",
                    "latency_ms": 900,
                }
            ),
            TraceEvent.parse(
                {
                    "trace_id": tid,
                    "span_id": "child",
                    "parent_span_id": "root",
                    "project": "shop",
                    "cost_usd": 0.25,
                    "status": "error",
                }
            ),
        ]
    )
    sink.flush()
    found = lookup_traces(store, db, [("shop", tid), ("shop", unique("absent"))])
    assert list(found) == [("shop", tid)]
    attrs = found[("shop", tid)]
    assert (attrs.project, attrs.model, attrs.latency_ms, attrs.cost, attrs.status) == (
        "shop",
        "m-big",
        900,
        0.25,
        "error",
    )


def test_orphans_come_back_as_feedback_a_late_trace_corrects(store, store_settings):
    db = store_settings.clickhouse_database
    tid = unique("orphan")
    received = datetime.now(UTC)
    clock = [received.timestamp()]
    state = JoinState(grace_seconds=1, clock=lambda: clock[0])
    state.add_feedback(
        [
            FeedbackEvent.parse(
                {
                    "trace_id": tid,
                    "event_id": f"{tid}-e",
                    "project": "shop",
                    "kind": "rating",
                    "value": 2,
                    "comment": "meh",
                    "metadata": {"a": 1},
                    "received_at": received,
                }
            ),
            FeedbackEvent.parse(  # a string value is stored as bare text, not as JSON
                {
                    "trace_id": tid,
                    "event_id": f"{tid}-t",
                    "project": "shop",
                    "kind": "thumb",
                    "value": "down",
                    "annotator": "evaluator",
                    "received_at": received,
                }
            ),  # fmt: skip
        ]
    )
    clock[0] += 2
    sink = ClickHouseSink(store, db)
    sink.add_feedback(state.expire())
    sink.flush()

    restarted = JoinState()
    restarted.add_orphans(load_orphans(store, db, received - timedelta(minutes=1)))
    rows = restarted.add_traces([TraceEvent.parse({"trace_id": tid, "project": "shop"})])
    row, thumb = sorted(rows, key=lambda r: r.event_id)
    assert (row.event_id, row.join_status, row.project) == (f"{tid}-e", "corrected", "shop")
    assert (row.label, row.score, row.comment, row.metadata) == ("bad", 0.25, "meh", {"a": 1})
    assert (thumb.event_id, thumb.join_status, thumb.value) == (f"{tid}-t", "corrected", "down")
    assert (row.annotator, thumb.annotator) == ("end_user", "evaluator")  # who gave it is kept


def test_a_trace_is_found_only_in_its_own_project(store, store_settings):
    db = store_settings.clickhouse_database
    tid = unique("shared")
    sink = ClickHouseSink(store, db)
    sink.add_traces([TraceEvent.parse({"trace_id": tid, "project": "b", "model": "b-model"})])
    sink.flush()
    assert lookup_traces(store, db, [("a", tid)]) == {}
    assert lookup_traces(store, db, [("b", tid)])[("b", tid)].model == "b-model"


def test_orphans_on_a_session_and_votes_come_back_with_their_target_and_clients_id(
    store, store_settings
):
    db, session = store_settings.clickhouse_database, unique("session")
    received = datetime.now(UTC)
    clock = [received.timestamp()]
    state = JoinState(grace_seconds=1, clock=lambda: clock[0])
    sent = FeedbackEvent.parse(
        {"target": "session", "session_id": session, "conversation_id": unique("c"),
         "project": "shop", "label": "bad", "received_at": received, "user_id": "ann",
         "event_id": unique("click")}
    )  # fmt: skip
    vote = sent.model_copy(update={"event_id": unique("vote"), "client_event_id": sent.event_id})
    state.add_feedback([vote])
    clock[0] += 2
    sink = ClickHouseSink(store, db)
    sink.add_feedback(state.expire())
    sink.flush()

    [back] = [
        o for o in load_orphans(store, db, received - timedelta(minutes=1))
        if o.event_id == vote.event_id
    ]  # fmt: skip
    assert (back.join_key, back.target, back.trace_id) == (f"session {session}", "session", None)
    assert back.client_event_id == sent.event_id
