"""Retention from settings and forgetting a user, on real chDB.

Each test migrates a database of its own on the session's store; the CLI test
has a data dir of its own (nothing else opens it while the commands run).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import unique
from tests.integration.conftest import run, start_up, stop, worker_env
from thumbline.errors import ConfigError
from thumbline.forget import Forget
from thumbline.inbox import InboxFilter, inbox_sql
from thumbline.queries import trace_spans_sql
from thumbline.settings import load_settings
from thumbline.store import apply_migrations, apply_retention, migrate_store

NOW = datetime.now(UTC)
FEEDBACK = ["event_id", "trace_id", "project", "user_id", "label", "comment", "ts",
            "received_at", "join_status", "version"]  # fmt: skip
TRACES = ["trace_id", "span_id", "project", "user_id", "input", "output", "received_at", "version"]


@pytest.fixture
def db(store) -> Iterator[str]:
    name = unique("keep")
    apply_migrations(store, name)
    yield name
    store.command(f"DROP DATABASE IF EXISTS {name}")


def ttl_of(store, db: str, table: str) -> str:
    """The table's TTL clause as the store shows it; '' without one."""
    engine = store.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": db, "t": table},
    ).result_rows[0][0]
    return engine.split(" TTL ", 1)[1].split(" SETTINGS ")[0] if " TTL " in engine else ""


def keep(**days: int) -> dict[str, int]:
    return {"feedback": 0, "traces": 0, "dead_letters": 0, "feedback_rates": 0, **days}


class TestRetention:
    def test_each_tables_ttl_follows_its_setting_and_goes_when_the_setting_does(self, store, db):
        changed = apply_retention(store, db, keep(feedback=30, traces=7, dead_letters=14,
                                                  feedback_rates=400))  # fmt: skip
        assert len(changed) == 4
        assert ttl_of(store, db, "feedback") == "ts + toIntervalDay(30)"
        assert ttl_of(store, db, "traces") == "received_at + toIntervalDay(7)"
        assert ttl_of(store, db, "dead_letters") == "at + toIntervalDay(14)"
        assert ttl_of(store, db, "feedback_rates") == "window_start + toIntervalDay(400)"
        changed = apply_retention(store, db, keep(feedback=90))
        assert ttl_of(store, db, "feedback") == "ts + toIntervalDay(90)"
        assert ttl_of(store, db, "traces") == ""  # 0: kept forever again
        assert "feedback: ts + toIntervalDay(30) -> ts + toIntervalDay(90)" in changed

    def test_a_second_start_with_the_same_settings_alters_nothing(self, store, db):
        assert apply_retention(store, db, keep(feedback=30))
        mutations_before = store.query(
            "SELECT count() FROM system.mutations WHERE database = {db:String}",
            parameters={"db": db},
        ).result_rows
        assert apply_retention(store, db, keep(feedback=30)) == []
        assert apply_retention(store, db, keep(feedback=30)) == []
        assert (
            store.query(
                "SELECT count() FROM system.mutations WHERE database = {db:String}",
                parameters={"db": db},
            ).result_rows
            == mutations_before
        )

    def test_rows_older_than_the_retention_go_at_the_next_merge_not_at_start(self, store, db):
        old, new = NOW - timedelta(days=40), NOW - timedelta(days=1)
        store.insert(f"{db}.feedback", [
            ["e-old", "t", "p", "u", "bad", "", old, old, "joined", 1],
            ["e-new", "t", "p", "u", "bad", "", new, new, "joined", 1],
        ], column_names=FEEDBACK)  # fmt: skip
        store.insert(f"{db}.traces", [
            ["t-old", "", "p", "u", "", "", old, 1], ["t-new", "", "p", "u", "", "", new, 1],
        ], column_names=TRACES)  # fmt: skip
        apply_retention(store, db, keep(feedback=30, traces=30))
        # not materialized at start: the rows stored before are there until a merge
        assert store.query(f"SELECT count() FROM {db}.feedback").result_rows == [(2,)]
        for table in ("feedback", "traces"):
            store.command(f"OPTIMIZE TABLE {db}.{table} FINAL")
        assert store.query(f"SELECT event_id FROM {db}.feedback").result_rows == [("e-new",)]
        assert store.query(f"SELECT trace_id FROM {db}.traces").result_rows == [("t-new",)]

    def test_every_start_applies_the_retention_settings(self, store, tmp_path):
        name = unique("start")
        settings = load_settings(data_dir=tmp_path, clickhouse_database=name,
                                 retention_traces_days=3)  # fmt: skip
        try:
            migrate_store(store, settings)
            assert ttl_of(store, name, "traces") == "received_at + toIntervalDay(3)"
            assert ttl_of(store, name, "feedback") == ""
        finally:
            store.command(f"DROP DATABASE IF EXISTS {name}")


def stored_users(store, db: str) -> None:
    """u1 and u2 in project shop, u1 in project other; an alert quoting both users'
    comments; a dead letter naming u1."""
    pending = [["f1", "t1", "shop", "u1", "bad", "u1 says it lied", NOW, NOW, "pending", 0]]
    store.insert(f"{db}.feedback", pending, column_names=FEEDBACK)  # a version before the join's
    rows = [
        ["f1", "t1", "shop", "u1", "bad", "u1 says it lied", NOW, NOW, "joined", 1],
        ["f2", "t2", "shop", "u2", "bad", "u2 is unhappy", NOW, NOW, "joined", 1],
        ["f3", "t3", "other", "u1", "good", "", NOW, NOW, "joined", 1],
    ]
    store.insert(f"{db}.feedback", rows, column_names=FEEDBACK)
    store.insert(f"{db}.traces", [
        ["t1", "", "shop", "u1", "my address is 1 Main St", "noted", NOW, 1],
        ["t1", "s1", "shop", "u1", "", "", NOW, 1],
        ["t2", "", "shop", "u2", "hello", "hi", NOW, 1],
        ["t3", "", "other", "u1", "q", "a", NOW, 1],
    ], column_names=TRACES)  # fmt: skip
    store.insert(f"{db}.alerts", [["a1", "firing", "shop", ["t1", "t2"],
                                   ["u1 says it lied", "u2 is unhappy"], NOW, 1]],
                 column_names=["alert_id", "state", "project", "sample_trace_ids",
                               "sample_comments", "at", "version"])  # fmt: skip
    store.insert(f"{db}.dead_letters", [
        ["topic", 0, 1, -1, "bad", "", '{"user_id": "u1", "project": "shop", "x": 1}', "", NOW],
        ["topic", 0, 2, -1, "bad", "", '{"user_id": "u2", "project": "shop"}', "", NOW],
    ], column_names=["topic", "partition", "offset", "batch_index", "reason", "error", "raw",
                     "key", "at"])  # fmt: skip


def inbox_users(store, db: str, project: str) -> list[str]:
    q = inbox_sql(db, InboxFilter(project=project, since=timedelta(days=1), limit=100))
    rows = store.query(q.text, parameters=q.parameters).named_results()
    return sorted(r["user_id"] for r in rows)


class TestForget:
    def test_a_users_feedback_and_traces_are_gone_from_every_read_and_others_stay(self, store,
                                                                                  db):  # fmt: skip
        stored_users(store, db)
        job = Forget(store, database=db, user_id="u1", project="shop")
        assert {f.table: f.rows for f in job.count()} == {
            "feedback": 1, "traces": 2, "dead_letters": 1, "alerts": 1,
        }  # fmt: skip
        assert {f.table: f.rows for f in job.run()}["feedback"] == 1
        assert inbox_users(store, db, "shop") == ["u2"]  # the inbox
        assert store.query(trace_spans_sql(db, "t1")).result_rows == []  # the trace page
        assert store.query(trace_spans_sql(db, "t2")).result_rows != []
        assert store.query(  # SQL, every version (the pending one too), every view
            f"SELECT count() FROM {db}.feedback WHERE user_id = 'u1' AND project = 'shop'"
        ).result_rows == [(0,)]
        assert store.query(f"SELECT count() FROM {db}.feedback_latest WHERE user_id = 'u1' "
                           "AND project = 'shop'").result_rows == [(0,)]  # fmt: skip
        assert store.query(f"SELECT sample_comments FROM {db}.alerts").result_rows == [
            (["u2 is unhappy"],)
        ]
        assert store.query(f"SELECT offset FROM {db}.dead_letters").result_rows == [(2,)]
        # another project's rows of the same user id are another project's to forget
        assert inbox_users(store, db, "other") == ["u1"]
        assert store.query(trace_spans_sql(db, "t3")).result_rows != []

    def test_without_a_project_every_project_forgets_the_user(self, store, db):
        stored_users(store, db)
        Forget(store, database=db, user_id="u1").run()
        assert store.query(
            f"SELECT DISTINCT user_id FROM {db}.feedback UNION DISTINCT "  # noqa: S608
            f"SELECT DISTINCT user_id FROM {db}.traces"
        ).result_rows == [("u2",)]
        assert [f.rows for f in Forget(store, database=db, user_id="u1").count()] == [0, 0, 0, 0]

    @pytest.mark.parametrize("user_id", ["u2' OR user_id != '", "u%", "' OR 1 = 1 --", "u\\"])
    def test_an_id_made_to_match_others_matches_only_itself(self, store, db, user_id):
        stored_users(store, db)
        found = Forget(store, database=db, user_id=user_id).run()
        assert [f.rows for f in found] == [0, 0, 0, 0]
        assert store.query(f"SELECT count() FROM {db}.feedback FINAL").result_rows == [(3,)]
        assert store.query(f"SELECT count() FROM {db}.traces FINAL").result_rows == [(4,)]

    @pytest.mark.parametrize("user_id", ["", "   ", "u" * 257])
    def test_an_empty_or_overlong_user_id_is_refused_before_the_store_is_asked(self, user_id):
        with pytest.raises(ConfigError, match="--user"):
            Forget(None, database="x", user_id=user_id)  # type: ignore[arg-type]


def test_thumbline_forget_asks_then_deletes_and_says_what_per_table(thumbline_bin, clean_env,
                                                                    tmp_path):  # fmt: skip
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data")}
    assert run(thumbline_bin, env, "migrate").returncode == 0
    insert = run(thumbline_bin, env, "sql", "--write",
                 "INSERT INTO thumbline.feedback (event_id, project, user_id, ts, received_at, "
                 "version) " + " UNION ALL ".join(
                     f"SELECT 'e{i}', 'shop', 'u{i % 2}', now64(3), now64(3), 1" for i in range(6)
                 ))  # fmt: skip
    assert insert.returncode == 0, insert.stderr
    refused = subprocess.run([thumbline_bin, "forget", "--user", "u1"], env=env, input="n\n",
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 1
    assert re.search(r"^feedback +3 ", refused.stderr, re.M), refused.stderr
    assert "nothing deleted" in refused.stderr
    done = run(thumbline_bin, env, "forget", "--user", "u1", "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted 3 from feedback" in done.stdout
    assert "deleted 0 from traces" in done.stdout
    left = run(thumbline_bin, env, "sql", "SELECT user_id, count() AS n FROM thumbline.feedback "
               "GROUP BY user_id", "--format", "csv")  # fmt: skip
    assert left.returncode == 0, left.stderr
    assert "u1" not in left.stdout and "u0" in left.stdout
    again = run(thumbline_bin, env, "forget", "--user", "u1", "--yes")
    assert "nothing stored about user 'u1'" in again.stdout


def test_thumbline_forget_on_an_embedded_store_another_process_holds_says_to_stop_it(
    thumbline_bin, clean_env, store, store_settings
):
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(store_settings.data_dir),
           "THUMBLINE_CLICKHOUSE_DATABASE": store_settings.clickhouse_database}  # fmt: skip
    held = run(thumbline_bin, env, "forget", "--user", "u1", "--yes")
    assert held.returncode == 1
    assert "stop it, run forget, and start it again" in held.stderr, held.stderr


async def test_thumbline_forget_while_thumbline_up_runs_says_to_stop_it_and_deletes_nothing(
    broker, thumbline_bin, clean_env, tmp_path
):
    env = await worker_env(broker, clean_env, tmp_path, "forget")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:
        held = run(thumbline_bin, env, "forget", "--user", "u1", "--yes")
        assert held.returncode == 1
        assert "`thumbline up` holds the embedded store: stop it" in held.stderr, held.stderr
    finally:
        stop(up)


def test_a_user_with_many_long_comments_is_forgotten_in_queries_the_store_accepts(store, db):
    """Their comments are looked for in the alerts in chunks: all of them in one query
    would pass ClickHouse's max_query_size (256 KiB) long before the events' limits."""
    long = [f"{i:03d} " + "x" * 9_000 for i in range(40)]  # 360 KB of comments
    store.insert(f"{db}.feedback", [
        [f"e{i}", "t", "shop", "u1", "bad", text, NOW, NOW, "joined", 1]
        for i, text in enumerate(long)
    ], column_names=FEEDBACK)  # fmt: skip
    store.insert(f"{db}.alerts", [["a1", "firing", "shop", ["t"], [long[0], long[39], "kept"],
                                   NOW, 1]], column_names=["alert_id", "state", "project",
                 "sample_trace_ids", "sample_comments", "at", "version"])  # fmt: skip
    found = {f.table: f.rows for f in Forget(store, database=db, user_id="u1").run()}
    assert found["feedback"] == 40 and found["alerts"] == 1
    assert store.query(f"SELECT sample_comments FROM {db}.alerts").result_rows == [(["kept"],)]


def test_thumbline_migrate_applies_a_changed_retention_once_and_says_so(thumbline_bin, clean_env,
                                                                        tmp_path):  # fmt: skip
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
           "THUMBLINE_RETENTION_FEEDBACK_DAYS": "30"}  # fmt: skip
    first = run(thumbline_bin, env, "migrate")
    assert first.returncode == 0, first.stderr
    assert "retention of feedback: kept forever -> ts + toIntervalDay(30)" in first.stdout
    second = run(thumbline_bin, env, "migrate")
    assert second.returncode == 0, second.stderr
    assert "retention" not in second.stdout
    env["THUMBLINE_RETENTION_FEEDBACK_DAYS"] = "0"
    third = run(thumbline_bin, env, "migrate")
    assert "retention of feedback: ts + toIntervalDay(30) -> kept forever" in third.stdout


DEAD = ["topic", "partition", "offset", "batch_index", "reason", "error", "raw", "key", "at"]


def test_forgetting_a_user_deletes_the_dead_letters_they_sent_not_those_quoting_their_id(store, db):
    """A user id is chosen by the user's application, often by the user: "en", "admin" or
    "shop" is also a value of other fields. Only a dead letter whose user_id is theirs goes;
    one whose comment, locale or project happens to read the same stays."""
    store.insert(f"{db}.dead_letters", [
        ["topic", 0, 1, -1, "bad", "", '{"user_id": "en", "project": "shop"}', "", NOW],
        ["topic", 0, 2, -1, "bad", "", '{"user_id":"en","project":"shop"}', "", NOW],
        ["topic", 0, 3, -1, "bad", "", '{"user_id": "u2", "locale": "en"}', "", NOW],
        ["topic", 0, 4, -1, "bad", "", '{"user_id": "u3", "comment": "en", "p": "shop"}', "",
         NOW],
        ["topic", 0, 5, -1, "bad", "", '{"user_id": "en", "project": "other"}', "", NOW],
    ], column_names=DEAD)  # fmt: skip
    found = {
        f.table: f.rows for f in Forget(store, database=db, user_id="en", project="shop").run()
    }
    assert found["dead_letters"] == 2
    kept = store.query(f"SELECT offset FROM {db}.dead_letters ORDER BY offset").result_rows
    assert kept == [(3,), (4,), (5,)]
    for user_id in (".*", 'u2", "locale', "u\\d", "' OR 1 = 1 OR '"):  # patterns, quotes
        Forget(store, database=db, user_id=user_id).run()
    assert store.query(f"SELECT count() FROM {db}.dead_letters").result_rows == [(3,)]
