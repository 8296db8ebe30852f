"""Feedback waiting for its trace: stored as pending, shown in the inbox, counted by nothing.

Feedback whose trace is unknown (a typo, an exporter that lags or is missing)
is held by the join for the grace. After ``pending_row_seconds`` it is also
written to ``feedback`` with ``join_status = 'pending'`` and the lowest version
of its copy, so its joined or orphan row replaces it: ``feedback FINAL`` holds
one row per event throughout. The inbox shows pending rows; the rates, their
recounts and the analytics views count final rows only.

The readers are tested on rows written straight to the session's chDB store;
the flow with a stream app in this process (grace 30 s, pending rows after
0.5 s, 2-second rate windows reconciled 1 s after they complete).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson
import pytest

from tests.conftest import unique
from tests.integration.conftest import (
    gone,
    rate_mismatches,
    run,
    sql_rows,
    start_up,
    stop,
    worker_env,
)  # fmt: skip
from thumbline.kafka import ensure_topics
from thumbline.producers import FeedbackProducer
from thumbline.queries import INBOX_COLUMNS, InboxFilter, inbox_sql
from thumbline.schemas import EnrichedFeedback, FeedbackEvent, Topics, TraceEvent
from thumbline.settings import load_settings
from thumbline.stream_jobs.app import StreamApp
from thumbline.stream_jobs.bad_feedback_rates import ALL, RateState
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.rates_store import read_windows, restore_rates
from thumbline.stream_jobs.sink import ClickHouseSink

GRACE = 30.0
WINDOW = 2


def event(project: str, trace_id: str, event_id: str, **fields) -> FeedbackEvent:
    now = datetime.now(UTC)
    return FeedbackEvent.parse(
        {"trace_id": trace_id, "event_id": event_id, "project": project, "kind": "thumb",
         "received_at": now, "ts": now, **fields}
    )  # fmt: skip


def store_rows(store, db: str, rows: list[EnrichedFeedback]) -> None:
    sink = ClickHouseSink(store, db)
    sink.add_feedback(rows)
    sink.flush()


def written(project: str) -> tuple[JoinState, list[EnrichedFeedback], list[EnrichedFeedback]]:
    """Rows of ``project`` as the join writes them: two joined, and pending ones (a bad thumb
    with a comment, three bad thumbs of one user, an implicit signal) whose trace is unknown."""
    state = JoinState(grace_seconds=600, pending_row_seconds=0)
    state.add_traces([TraceEvent.parse({"trace_id": f"{project}-known", "project": project,
                                        "model": "m1", "capability": "support"})])  # fmt: skip
    joined = state.add_feedback([
        event(project, f"{project}-known", f"{project}-j1", value="up"),
        event(project, f"{project}-known", f"{project}-j2", value="down"),
    ])  # fmt: skip
    waiting = [
        event(project, f"{project}-typo", f"{project}-p{i}", value="down", comment="wrong",
              user_id=f"{project}-u", capability=f"{project}-cap")
        for i in range(3)
    ]  # fmt: skip
    waiting.append(event(project, f"{project}-typo", f"{project}-s", kind="signal", name="copied"))
    assert state.add_feedback(waiting) == []
    return state, joined, state.announce()


VIEWS = {  # view -> the condition that finds the test project's rows in it
    "weekly_quality_review": "project = '{p}'",
    "users_repeated_bad": "user_id = '{p}-u'",
    "thumbs_by_capability": "capability = '{p}-cap'",
    "scores_by_trace": "trace_id = '{p}-typo'",
    "bad_rate_by_model_hourly": "project = '{p}'",
    "implicit_signals_by_model": "project = '{p}'",
}


def in_views(query, project: str) -> dict[str, int]:
    return {
        view: query(f"SELECT count() FROM {{db}}.{view} WHERE {where.format(p=project)}")[0][0]
        for view, where in VIEWS.items()
    }


def test_the_inbox_shows_pending_rows_and_filters_by_status(store, store_settings, query):
    db, project = store_settings.clickhouse_database, unique("inbox")
    _, joined, pending = written(project)
    store_rows(store, db, joined + pending)

    def inbox(**filters) -> list[tuple[str, str]]:
        sql = inbox_sql(db, InboxFilter(project=project, **filters))
        at = INBOX_COLUMNS.index("event_id"), INBOX_COLUMNS.index("join_status")
        rows = store.query(sql.text, parameters=sql.parameters).result_rows
        return sorted((r[at[0]], r[at[1]]) for r in rows)  # (event_id, join_status)

    everything = inbox()
    assert [status for _, status in everything].count("pending") == 4 and len(everything) == 6
    assert {e for e, _ in inbox(status="pending")} == {f"{project}-{x}" for x in
                                                        ("p0", "p1", "p2", "s")}  # fmt: skip
    assert inbox(status="joined") == [(f"{project}-j1", "joined"), (f"{project}-j2", "joined")]
    with pytest.raises(ValueError, match="joined, orphan, corrected or pending"):
        inbox_sql(db, InboxFilter(status="waiting"))


def test_the_analytics_views_count_final_rows_only(store, store_settings, query):
    db, project = store_settings.clickhouse_database, unique("views")
    state, _, pending = written(project)
    store_rows(store, db, pending)
    assert in_views(query, project) == dict.fromkeys(VIEWS, 0)
    state.clock = lambda: time.time() + 601  # the grace ends: the same events as orphans
    orphans = state.expire()
    store_rows(store, db, orphans)
    assert len(orphans) == 4 and all(n > 0 for n in in_views(query, project).values())


def test_rate_recounts_and_restores_leave_pending_rows_out(store, store_settings, query):
    db, project = store_settings.clickhouse_database, unique("recount")
    state, joined, pending = written(project)
    store_rows(store, db, joined + pending)
    start = joined[0].ts.timestamp() // 60 * 60
    dims = (project, "default", ALL, "support")

    rates = RateState(window=60, sliding=())
    found = read_windows(rates, store, db, [start])[start]
    assert {d for d in found if d[0] == project} == {dims, (project, "default", "m1", ALL)}
    assert (found[dims].good, found[dims].bad) == (1, 1)

    restored = RateState(window=60, sliding=(), history=3600)
    restore_rates(restored, store, db, now=time.time())
    mine = {key for key in restored.seen if key[0] == project}
    # the pending ones come later from the join, as outcomes, and count once then
    assert mine == {(project, f"{project}-j1"), (project, f"{project}-j2")}

    state.clock = lambda: time.time() + 601
    store_rows(store, db, state.expire())
    recounted = read_windows(rates, store, db, [start])[start]
    assert sum(c.bad for d, c in recounted.items() if d[0] == project and d[2] == ALL) == 4


# The flow, with a stream app ---------------------------------------------------------


@pytest.fixture(scope="module")
async def stream(broker, store, store_settings) -> AsyncIterator[StreamApp]:
    prefix = f"{unique('pending')}."
    settings = load_settings(
        data_dir=store_settings.data_dir, clickhouse_database=store_settings.clickhouse_database,
        topic_prefix=prefix, partitions=4, join_grace_seconds=GRACE,
        join_pending_row_seconds=0.5, sink_max_seconds=0.2, rate_window_seconds=WINDOW,
        rate_sliding_seconds="6", rate_lateness_seconds=2, rate_reconcile_seconds=1,
    )  # fmt: skip
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    app = StreamApp(settings, broker.bootstrap)
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def sdk(broker, stream) -> AsyncIterator[FeedbackProducer]:
    async with FeedbackProducer(
        bootstrap_servers=broker.bootstrap, topic_prefix=stream.settings.topic_prefix,
        project=unique("flow"), linger_ms=1,
    ) as producer:  # fmt: skip
        yield producer


class Watch:
    """Reads the rows of a project's events, checking each time that ``feedback FINAL``
    holds at most one row per event and exactly one for every event already stored."""

    def __init__(self, query, project: str) -> None:
        self.query, self.project, self.looks = query, project, 0
        self.stored: set[str] = set()

    def rows(self) -> dict[str, tuple[str, str]]:
        found = self.query(
            "SELECT event_id, join_status, model FROM {db}.feedback FINAL "
            f"WHERE project = '{self.project}'"
        )
        ids = [r[0] for r in found]
        assert len(ids) == len(set(ids)), f"two rows for one event: {sorted(ids)}"
        assert self.stored <= set(ids), f"an event's row went missing: {self.stored - set(ids)}"
        self.stored |= set(ids)
        self.looks += 1
        return {r[0]: (r[1], r[2]) for r in found}

    async def until(self, check: Callable[[dict], bool], what: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while not check(rows := self.rows()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}; rows: {rows}")
            await asyncio.sleep(0.2)
        return rows


def bad_counted(query, project: str) -> int:
    return query(
        f"SELECT sum(bad) FROM {{db}}.feedback_rates FINAL WHERE project = '{project}' "
        f"AND window_seconds = {WINDOW} AND model = '*'"
    )[0][0]


def rates_of(query, db: str, project: str) -> tuple[int, list[str]]:
    return rate_mismatches(query, db, window=WINDOW, where=f"project = '{project}'")


async def test_feedback_for_an_unknown_trace_is_pending_within_seconds_then_joins_its_trace(
    stream, sdk, query, store_settings
):
    db, project = store_settings.clickhouse_database, sdk.project
    watch = Watch(query, project)
    at = datetime.now(UTC)  # one rate window for all
    await sdk.thumb_down(typo := unique("t"), event_id=f"{project}-late", comment="slow", ts=at)
    known = await sdk.trace(model="m-known")
    for i in range(3):
        await sdk.thumb_down(known, event_id=f"{project}-k{i}", ts=at)
    rows = await watch.until(lambda r: r.get(f"{project}-late", ("",))[0] == "pending",
                             "the feedback shows as pending", timeout=10)  # fmt: skip
    assert {e: s for e, (s, _) in rows.items()} == {
        **{f"{project}-k{i}": "joined" for i in range(3)}, f"{project}-late": "pending",
    }  # fmt: skip

    # Its window completes and is reconciled with the table while it waits: the rates
    # count the three joined events, not the pending one.
    start = at.timestamp() // WINDOW * WINDOW

    def reconciled(_: object) -> bool:
        w = stream.rates.rates.windows.get(start)  # type: ignore[union-attr]
        return w is not None and w.complete and w.reconcile_at == math.inf

    await watch.until(reconciled, "the window is reconciled with the table", GRACE - 10)
    assert watch.rows()[f"{project}-late"][0] == "pending"
    checked, problems = rates_of(query, db, project)
    assert checked and problems == [] and bad_counted(query, project) == 3

    await sdk.trace(trace_id=typo, model="m-late")
    await watch.until(lambda r: r[f"{project}-late"] == ("joined", "m-late"), "joined")
    await watch.until(
        lambda _: rates_of(query, db, project)[1] == [] and bad_counted(query, project) == 4,
        "the late row is counted in its window",
    )  # fmt: skip
    assert watch.looks > 10


@pytest.mark.slow  # over half a minute: .ci/run runs it after the default run
async def test_feedback_whose_trace_never_comes_is_pending_then_an_orphan_after_the_grace(
    stream, sdk, query, store_settings
):
    db, project = store_settings.clickhouse_database, sdk.project
    watch = Watch(query, project)
    began = time.monotonic()
    await sdk.thumb_up(unique("t"), event_id=f"{project}-o", comment="typo")
    await watch.until(lambda r: r.get(f"{project}-o", ("",))[0] == "pending", "pending", 10)
    rows = await watch.until(lambda r: r[f"{project}-o"][0] == "orphan", "orphan", GRACE + 20)
    assert time.monotonic() - began >= GRACE and rows[f"{project}-o"] == ("orphan", "")
    assert watch.looks > 20
    await watch.until(
        lambda _: (found := rates_of(query, db, project))[0] > 0 and found[1] == [],
        "the orphan is counted in its window",
    )  # fmt: skip


# As a user sees it: `thumbline up`, `send`, `inbox`, and a kill -9 -------------------


def inbox_rows(thumbline_bin: str, env: dict[str, str], *args: str) -> list[dict]:
    result = run(thumbline_bin, env, "inbox", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]


async def until_cli(read: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    deadline = time.monotonic() + timeout
    while not (got := await asyncio.to_thread(read)):
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.3)
    return got


async def test_send_says_no_trace_is_stored_yet_and_the_inbox_marks_the_feedback_waiting(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = await worker_env(
        broker, clean_env, tmp_path, "pendingcli",
        THUMBLINE_JOIN_GRACE_SECONDS="600", THUMBLINE_JOIN_PENDING_ROW_SECONDS="0.5",
    )  # fmt: skip
    up = start_up(thumbline_bin, env, tmp_path / "data")
    try:
        sent = run(thumbline_bin, env, "send", "feedback", "--trace-id", "t-123",
                   "--label", "bad", "--comment", "wrong refund amount")  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        event_id = orjson.loads(sent.stdout)["event_id"]
        assert (
            "note: no trace t-123 is stored yet: the feedback waits up to 10 min for it, see "
            "`thumbline inbox --status pending`"
        ) in " ".join(sent.stderr.split())

        def shown() -> list[dict]:
            return [r for r in inbox_rows(thumbline_bin, env) if r["event_id"] == event_id]

        [row] = await until_cli(shown, "the inbox shows the feedback", timeout=15)
        assert (row["join_status"], row["trace_id"], row["comment"]) == (
            "pending", "t-123", "wrong refund amount",
        )  # fmt: skip
        assert [r["event_id"] for r in inbox_rows(thumbline_bin, env, "--status", "pending")] == [
            event_id
        ]
        assert inbox_rows(thumbline_bin, env, "--status", "joined") == []
        table = run(thumbline_bin, {**env, "COLUMNS": "200"}, "inbox")
        line = next(ln for ln in table.stdout.splitlines() if "t-123" in ln)
        assert "waiting for trace" in line and "1 waiting for its trace" in table.stderr
        wrong = run(thumbline_bin, env, "inbox", "--status", "waiting")
        assert wrong.returncode == 2 and "--status takes joined, orphan, corrected or pending" in (
            " ".join(wrong.stderr.split())
        )

        # kill -9 while it waits: after the restart it still shows once, then joins its trace
        os.kill(up.proc.pid, signal.SIGKILL)
        assert gone(up.proc.pid, within=30)
        stop(up)
        up = start_up(thumbline_bin, env, tmp_path / "data")
        assert [r["join_status"] for r in shown()] == ["pending"]
        trace = run(thumbline_bin, env, "send", "trace", "--trace-id", "t-123", "--model", "m1")
        assert trace.returncode == 0, trace.stderr

        def joined() -> list[dict]:
            return [r for r in shown() if r["join_status"] == "joined" and r["model"] == "m1"]

        await until_cli(joined, "the feedback joins its trace after the restart", timeout=60)
        count = sql_rows(thumbline_bin, env, "SELECT count() AS n FROM thumbline.feedback FINAL "
                         f"WHERE event_id = '{event_id}'")  # fmt: skip
        assert [int(r["n"]) for r in count] == [1]

        again = run(thumbline_bin, env, "send", "feedback", "--trace-id", "t-123",
                    "--label", "good")  # fmt: skip
        assert again.returncode == 0 and "note" not in again.stderr, again.stderr
    finally:
        stop(up)


async def test_send_without_a_running_thumbline_sends_and_leaves_no_note(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = await worker_env(broker, clean_env, tmp_path, "nonote")  # a broker, no thumbline up
    sent = run(thumbline_bin, env, "send", "feedback", "--trace-id", "t-9", "--label", "bad")
    assert sent.returncode == 0, sent.stderr
    assert orjson.loads(sent.stdout)["trace_id"] == "t-9" and "note" not in sent.stderr
    assert not (tmp_path / "data" / "chdb").exists()  # the store was not opened for a note
