"""The ClickHouse sink on real chDB: batched JSON rows, idempotent re-sends, every column typed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.conftest import unique
from thumbline.schemas import DeadLetter, FeedbackEvent, TraceEvent
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.sink import ClickHouseSink

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def enriched_rows(prefix: str, n: int):
    state = JoinState()
    traces = [
        TraceEvent.parse(
            {
                "trace_id": f"{prefix}-{i}",
                "project": "shop",
                "model": "m1",
                "start_time": T0,
                "end_time": T0 + timedelta(seconds=1),
                "attributes": {"temperature": 0.2},
            }
        )
        for i in range(n)
    ]
    state.add_traces(traces)
    feedback = [
        FeedbackEvent.parse(
            {
                "trace_id": f"{prefix}-{i}",
                "event_id": f"{prefix}-e{i}",
                "project": "shop",
                "kind": "rating",
                "value": 1 + i % 5,
                "tags": ["x"],
                "metadata": {"k": [1, 2]},
                "received_at": T0,
            }
        )
        for i in range(n)
    ]
    return traces, state.add_feedback(feedback)


def count(store, db, table, where):
    return store.query(f"SELECT count() FROM {db}.{table} FINAL WHERE {where}").result_rows[0][0]


def test_rows_land_in_their_tables_and_a_resend_changes_nothing(store, store_settings):
    db = store_settings.clickhouse_database
    prefix = unique("sink")
    traces, rows = enriched_rows(prefix, 1000)
    sink = ClickHouseSink(store, db)
    for _ in range(2):  # the second round is a re-delivery after a crash
        sink.add_traces(traces)
        sink.add_feedback(rows)
        sink.add_dead_letters(
            [
                DeadLetter.parse(
                    {
                        "topic": prefix,
                        "partition": 0,
                        "offset": 7,
                        "reason": "bad_json",
                        "error": "not JSON",
                        "raw": "{oops",
                        "at": T0,
                    }
                )
            ]
        )
        assert sink.flush() == 2001
    like = f"startsWith(trace_id, '{prefix}')"
    assert count(store, db, "feedback", like) == 1000
    assert count(store, db, "traces", like) == 1000
    assert count(store, db, "dead_letters", f"topic = '{prefix}'") == 1
    label, score, project, value, tags, meta, latency = store.query(
        f"SELECT label, score, project, value, tags, JSONExtractString(metadata, 'k'), latency_ms "
        f"FROM {db}.feedback FINAL WHERE event_id = '{prefix}-e4'"
    ).result_rows[0]
    assert (label, score, project, value, tags, meta, latency) == (
        "good",
        1.0,
        "shop",
        "5.0",
        ["x"],
        "[1,2]",
        1000.0,
    )


def test_nothing_is_due_until_size_or_age(store, store_settings):
    now = [0.0]
    sink = ClickHouseSink(
        store, store_settings.clickhouse_database, max_rows=3, max_age=1.0, clock=lambda: now[0]
    )
    assert not sink.due()
    traces, _ = enriched_rows(unique("due"), 2)
    sink.add_traces(traces)
    assert not sink.due()
    now[0] = 1.5
    assert sink.due()
    sink.add_traces(traces[:1])
    assert sink.due() and sink.pending == 3
    assert sink.flush() == 3 and not sink.due()


def naive(values):
    """Times as UTC without a zone: how clickhouse-connect returns some of them."""
    return tuple(
        v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) and v.tzinfo else v
        for v in values
    )


def test_every_column_of_a_trace_and_a_thumb_lands_as_typed(store, store_settings):
    db = store_settings.clickhouse_database
    prefix = unique("typed")
    trace = TraceEvent.parse(
        {
            "trace_id": prefix,
            "span_id": "s1",
            "parent_span_id": "s0",
            "name": "generate",
            "project": "shop",
            "model": "m1",
            "start_time": T0,
            "end_time": T0 + timedelta(milliseconds=1500),
            "input_tokens": 10,
            "output_tokens": 5,
            "cost_usd": 0.25,
            "status": "error",
            "error": "timeout",
            "attributes": {"temperature": 0.2},
            "received_at": T0,
        }
    )
    state = JoinState()
    state.add_traces([trace])
    thumb = FeedbackEvent.parse(
        {"trace_id": prefix, "event_id": f"{prefix}-e", "value": "up", "kind": "thumb",
         "project": "shop", "comment": "ok", "received_at": T0, "ts": T0}
    )  # fmt: skip
    sink = ClickHouseSink(store, db)
    sink.add_traces([trace])
    sink.add_feedback(state.add_feedback([thumb]))
    assert sink.flush() == 2
    got = store.query(
        f"SELECT span_id, parent_span_id, name, project, environment, model, start_time, "
        f"end_time, latency_ms, total_tokens, cost_usd, status, error, attributes, received_at, "
        f"version FROM {db}.traces FINAL WHERE trace_id = '{prefix}'"
    ).result_rows[0]
    assert naive(got) == naive((
        "s1", "s0", "generate", "shop", "default", "m1", T0, T0 + timedelta(milliseconds=1500),
        1500.0, 15, 0.25, "error", "timeout", '{"temperature":0.2}', T0,
        int(T0.timestamp() * 1_000_000),
    ))  # fmt: skip
    row = store.query(
        f"SELECT value, score, label, kind, source, comment, correction, span_id, project, "
        f"model, trace_status, latency_ms, cost_usd, ts, received_at, join_status, retracted "
        f"FROM {db}.feedback FINAL WHERE event_id = '{prefix}-e'"
    ).result_rows[0]
    assert naive(row) == naive((
        "up", 1.0, "good", "thumb", "explicit", "ok", "", "", "shop", "m1", "error", 1500.0,
        0.25, T0, T0, "joined", 0,
    ))  # fmt: skip
