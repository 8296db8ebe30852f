"""The ClickHouse store on real chDB: migrations, idempotent keys, and SQL for other processes."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, ProgrammingError

from tests.conftest import unique
from thumbline import runfile
from thumbline.errors import SqlRefused, StoreError
from thumbline.schemas import TraceEvent, migrations
from thumbline.settings import load_settings
from thumbline.sqlserver import OwnerClient, SqlServer, run_sql
from thumbline.store import apply_migrations
from thumbline.stream_jobs.lookups import lookup_traces
from thumbline.stream_jobs.sink import ClickHouseSink, SinkUnavailable

FEEDBACK_COLUMNS = ["event_id", "trace_id", "label", "ts", "received_at", "version", "retracted"]


def insert_feedback(store, db, rows):
    store.insert(f"{db}.feedback", rows, column_names=FEEDBACK_COLUMNS)


class TestMigrations:
    def test_applying_twice_is_harmless(self, store, store_settings):
        db = store_settings.clickhouse_database
        again = apply_migrations(store, db)
        assert again and not any(m.applied for m in again)
        assert store.query(f"SELECT count() FROM {db}.schema_migrations FINAL").result_rows == [
            (len(migrations.load()),)
        ]

    def test_every_table_exists_with_its_engine(self, store, store_settings):
        rows = store.query(
            "SELECT name, engine FROM system.tables WHERE database = {db:String} ORDER BY name",
            parameters={"db": store_settings.clickhouse_database},
        ).result_rows
        assert dict(rows) == {
            "alerts": "ReplacingMergeTree",
            "api_keys": "ReplacingMergeTree",
            "bad_rate_by_model_hourly": "View",
            "dead_letters": "ReplacingMergeTree",
            "evaluator_agreement": "View",
            "evaluator_agreement_pairs": "View",
            "feedback": "ReplacingMergeTree",
            "feedback_latest": "View",
            "feedback_rates": "ReplacingMergeTree",
            "implicit_signals_by_model": "View",
            "schema_migrations": "ReplacingMergeTree",
            "score_configs": "ReplacingMergeTree",
            "scores_by_trace": "View",
            "thumbs_by_capability": "View",
            "traces": "ReplacingMergeTree",
            "traces_latest": "View",
            "users_repeated_bad": "View",
            "weekly_quality_review": "View",
        }

    def test_a_fresh_database_is_migrated_from_nothing(self, store):
        db = unique("fresh")
        try:
            applied = apply_migrations(store, db)
            assert [m.applied for m in applied] == [True] * len(migrations.load())
        finally:
            store.command(f"DROP DATABASE IF EXISTS {db}")

    def test_an_edited_migration_is_refused(self, store):
        db = unique("edited")
        try:
            apply_migrations(store, db)
            store.command(
                f"INSERT INTO {db}.schema_migrations VALUES (1, 'initial', 'other', now64(3))"
            )
            store.command(f"OPTIMIZE TABLE {db}.schema_migrations FINAL")
            with pytest.raises(StoreError, match="changed after it was applied"):
                apply_migrations(store, db)
        finally:
            store.command(f"DROP DATABASE IF EXISTS {db}")


def migrate_to(store, db, version):
    """Apply the migrations up to ``version`` by hand: a store of an older thumbline."""
    store.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    for migration in migrations.load():
        if migration.version > version:
            break
        for statement in migration.statements(db):
            store.command(statement)


def sort_key(store, db, table):
    return store.query(
        "SELECT sorting_key FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": db, "t": table},
    ).result_rows


class TestTraceContentMigration:
    """0008: the traces table gets the question and the answer; older rows read as empty."""

    def test_an_older_store_gains_input_and_output_and_keeps_its_rows(self, store):
        db = unique("content")
        try:
            migrate_to(store, db, 7)
            now = datetime.now(UTC)
            columns = ["trace_id", "span_id", "project", "received_at", "version"]
            store.insert(f"{db}.traces", [["t-old", "", "shop", now, 1]], column_names=columns)
            apply_migrations(store, db)
            rows = store.query(f"SELECT trace_id, input, output FROM {db}.traces FINAL")
            assert rows.result_rows == [("t-old", "", "")]
            latest = store.query(f"SELECT input, output FROM {db}.traces_latest").result_rows
            assert latest == [("", "")]  # the view of every column follows
        finally:
            store.command(f"DROP DATABASE IF EXISTS {db}")


class TestProjectIdentityMigration:
    """0005: an old store's feedback and traces move to keys that hold the project."""

    def old_store(self, store):
        db = unique("old")
        migrate_to(store, db, 4)
        now = datetime.now(UTC)
        columns = ["event_id", "trace_id", "project", "label", "join_status", "ts", "received_at",
                   "version", "retracted"]  # fmt: skip
        store.insert(f"{db}.feedback", [
            ["e-orphan", "t-1", "", "bad", "orphan", now, now, 1, 0],
            ["e-shop", "t-2", "shop", "good", "joined", now, now, 1, 0],
            ["e-shop", "t-2", "shop", "bad", "joined", now, now, 2, 0],  # a newer version
        ], column_names=columns)  # fmt: skip
        trace_columns = ["trace_id", "span_id", "project", "received_at", "version"]
        traces = [["t-2", "", "shop", now, 1], ["t-3", "s", "b", now, 1]]
        store.insert(f"{db}.traces", traces, column_names=trace_columns)
        return db

    def test_rows_keep_their_latest_version_and_orphans_go_to_default(self, store):
        db = self.old_store(store)
        try:
            apply_migrations(store, db)
            assert sort_key(store, db, "feedback") == [("project, event_id",)]
            assert sort_key(store, db, "traces") == [("project, trace_id, span_id",)]
            assert sort_key(store, db, "feedback__rekeyed") == []  # the old table is gone
            rows = store.query(
                f"SELECT project, event_id, label FROM {db}.feedback FINAL ORDER BY event_id"
            ).result_rows
            assert rows == [("default", "e-orphan", "bad"), ("shop", "e-shop", "bad")]
            traces = store.query(f"SELECT project, trace_id FROM {db}.traces FINAL ORDER BY 2")
            assert traces.result_rows == [("shop", "t-2"), ("b", "t-3")]
            views = store.query(f"SELECT count() FROM {db}.feedback_latest").result_rows
            assert views == [(2,)]  # views follow the swapped table
        finally:
            store.command(f"DROP DATABASE IF EXISTS {db}")

    @pytest.mark.parametrize("crash", ["half_copied", "swapped_not_dropped"])
    def test_a_crash_at_any_step_is_finished_by_the_next_start(self, store, crash):
        db = self.old_store(store)
        try:
            migrate_to(store, db, 5)  # the new tables exist, nothing recorded yet
            if crash == "half_copied":
                store.command(
                    f"INSERT INTO {db}.feedback__rekeyed (event_id, project, version) "
                    "VALUES ('e-shop', 'shop', 1), ('junk', 'x', 1)"
                )
            else:
                store.command(f"EXCHANGE TABLES {db}.traces AND {db}.traces__rekeyed")
                store.command(
                    f"INSERT INTO {db}.traces SELECT * FROM {db}.traces__rekeyed FINAL"  # noqa: S608
                )
            apply_migrations(store, db)
            assert sort_key(store, db, "feedback") == [("project, event_id",)]
            assert sort_key(store, db, "traces") == [("project, trace_id, span_id",)]
            events = store.query(f"SELECT event_id FROM {db}.feedback FINAL ORDER BY 1")
            assert events.result_rows == [("e-orphan",), ("e-shop",)]
            assert store.query(f"SELECT count() FROM {db}.traces FINAL").result_rows == [(2,)]
            again = apply_migrations(store, db)
            assert not any(m.applied for m in again)
        finally:
            store.command(f"DROP DATABASE IF EXISTS {db}")


class TestAnalyticsViews:
    def test_each_view_answers_from_the_feedback_rows(self, store, store_settings):
        db = store_settings.clickhouse_database
        now = datetime.now(UTC)
        user = unique("user")
        columns = [
            "event_id", "trace_id", "label", "kind", "name", "score", "comment", "user_id",
            "capability", "model", "source", "annotator", "ts", "received_at", "version",
            "retracted",
        ]  # fmt: skip
        rows = [
            [unique("e"), "t1", "bad", "thumb", "q", 0.0, "wrong", user, "cap-v", "m-v",
             "explicit", "end_user", now, now, 1, 0]
            for _ in range(3)
        ] + [[unique("e"), "t1", "good", "thumb", "q", 1.0, "", user, "cap-v", "m-v",
              "explicit", "end_user", now, now, 1, 0],
             [unique("e"), "t1", "neutral", "signal", "copied", None, "", user, "cap-v", "m-v",
              "implicit", "end_user", now, now, 1, 0]]  # fmt: skip
        # an LLM judge's and a check's verdicts on the same user's trace: the user said none
        rows += [[unique("e"), "t1", "bad", "thumb", "judge", 0.0, "unsupported claim", user,
                  "cap-v", "m-v", "explicit", who, now, now, 1, 0]
                 for who in ("evaluator", "evaluator", "code")]  # fmt: skip
        store.insert(f"{db}.feedback", rows, column_names=columns)
        q = lambda sql: store.query(sql.replace("{db}", db)).result_rows  # noqa: E731
        assert q(f"SELECT bad, traces FROM {{db}}.users_repeated_bad WHERE user_id = '{user}'") == [
            (3, 1)
        ]
        assert q("SELECT up, down FROM {db}.thumbs_by_capability WHERE capability = 'cap-v'") == [
            (1, 3)
        ]
        assert q(
            "SELECT raters, mean_score FROM {db}.scores_by_trace "
            "WHERE trace_id = 't1' AND name = 'q'"
        ) == [(4, 0.25)]
        assert q("SELECT feedback, bad FROM {db}.bad_rate_by_model_hourly WHERE model = 'm-v'") == [
            (4, 3)
        ]
        assert q(
            "SELECT signal, events FROM {db}.implicit_signals_by_model WHERE model = 'm-v'"
        ) == [("copied", 1)]
        review = q("SELECT user_id FROM {db}.weekly_quality_review")
        assert (user,) in review and len(review) <= 20


class TestAnnotatorMigration:
    """0009: who gave the feedback; rows stored before it came from end users."""

    def test_old_rows_are_end_user_and_the_latest_view_shows_the_column(self, store):
        db = unique("before_annotator")
        try:
            migrate_to(store, db, 7)
            now = datetime.now(UTC)
            insert_feedback(store, db, [["e-old", "t", "bad", now, now, 1, 0]])
            apply_migrations(store, db)
            store.insert(
                f"{db}.feedback", [["e-judge", "t", "bad", "evaluator", now, now, 1, 0]],
                column_names=["event_id", "trace_id", "label", "annotator", "ts",
                              "received_at", "version", "retracted"],
            )  # fmt: skip
            rows = store.query(
                f"SELECT event_id, annotator FROM {db}.feedback_latest ORDER BY event_id"
            ).result_rows
            assert rows == [("e-judge", "evaluator"), ("e-old", "end_user")]
        finally:
            store.command(f"DROP DATABASE IF EXISTS {db}")


class TestKeyAnnotatorMigration:
    """0011: keys made before it are end users' keys."""

    def test_an_old_key_writes_end_users_feedback(self, store):
        db = unique("before_key_annotator")
        try:
            migrate_to(store, db, 10)
            store.command(
                f"INSERT INTO {db}.api_keys (key_id, secret_sha256, scope, project, name, "
                "created_at, version) VALUES ('00000000000000aa', 'x', 'ingest', 'p', 'old', "
                "now64(3), 1)"
            )
            apply_migrations(store, db)
            rows = store.query(f"SELECT key_id, annotator FROM {db}.api_keys FINAL").result_rows
            assert rows == [("00000000000000aa", "")]
        finally:
            store.command(f"DROP DATABASE IF EXISTS {db}")


class TestIdempotentKeys:
    def test_a_redelivered_event_is_one_row_even_on_another_day(self, store, store_settings):
        db = store_settings.clickhouse_database
        event_id = unique("ev")
        now = datetime.now(UTC)
        insert_feedback(store, db, [[event_id, "t", "bad", now, now, 1, 0]])
        insert_feedback(store, db, [[event_id, "t", "bad", now, now + timedelta(days=1), 1, 0]])
        count = store.query(
            f"SELECT count() FROM {db}.feedback FINAL WHERE event_id = {{e:String}}",
            parameters={"e": event_id},
        ).result_rows
        assert count == [(1,)]

    def test_a_higher_version_replaces_and_a_retraction_removes(self, store, store_settings):
        db = store_settings.clickhouse_database
        event_id = unique("ev")
        now = datetime.now(UTC)
        insert_feedback(store, db, [[event_id, "t", "bad", now, now, 1, 0]])
        insert_feedback(store, db, [[event_id, "t", "good", now, now, 2, 0]])
        query = f"SELECT label FROM {db}.feedback_latest WHERE event_id = {{e:String}}"
        assert store.query(query, parameters={"e": event_id}).result_rows == [("good",)]
        insert_feedback(store, db, [[event_id, "t", "good", now, now, 3, 1]])
        assert store.query(query, parameters={"e": event_id}).result_rows == []


class TestSqlEndpoint:
    @pytest.fixture
    def owner(self, store, store_settings, tmp_path):
        """This process as the store's owner, serving SQL and announced in a run file."""
        server = SqlServer(store_settings, writer=store).start()
        settings = load_settings(
            data_dir=tmp_path,
            clickhouse_url=store_settings.store_url,
            clickhouse_database=store_settings.clickhouse_database,
        )
        runfile.write(
            settings.run_file,
            runfile.RunInfo(
                pid=os.getpid(),
                bootstrap="-",
                embedded_broker=False,
                broker_pid=None,
                store=settings.store_display,
                sql_url=server.url,
                sql_token=server.token,
                started_at="now",
            ),
        )
        yield settings, server
        server.stop()
        server.stop()  # safe twice

    def test_other_processes_query_through_the_owner(self, owner):
        settings, _ = owner
        db = settings.clickhouse_database
        out = run_sql(
            settings,
            f"SELECT count() AS n FROM {db}.traces WHERE trace_id = 'nobody'",
            fmt="JSONEachRow",
        )
        assert int(orjson.loads(out)["n"]) == 0

    def test_writes_need_to_be_asked_for_and_are_inserts_only(self, owner):
        settings, _ = owner
        db = settings.clickhouse_database
        insert = (
            f"INSERT INTO {db}.dead_letters (topic, partition, offset, batch_index, reason, "  # noqa: S608
            "error, raw, key, at) SELECT 'owner', 1, 2, -1, 'test', '', '', '', now64(3)"
        )
        with pytest.raises(SqlRefused) as info:
            run_sql(settings, insert)
        assert info.value.reason == "write"
        run_sql(settings, insert, write=True)
        count = f"SELECT count() AS n FROM {db}.dead_letters WHERE topic = 'owner'"  # noqa: S608
        assert run_sql(settings, count, fmt="CSVWithNames") == b'"n"\n1\n'
        with pytest.raises(SqlRefused) as info:
            run_sql(settings, f"CREATE VIEW {db}.v AS SELECT 1 AS one", write=True)
        assert info.value.reason == "statement"

    def test_clickhouse_errors_keep_their_code(self, owner):
        settings, _ = owner
        with pytest.raises(StoreError) as info:
            run_sql(settings, "SELECT no_such_column")
        assert info.value.code == 47 and "UNKNOWN_IDENTIFIER" in str(info.value)

    def test_a_request_without_the_token_is_refused(self, owner):
        _, server = owner
        request = urllib.request.Request(f"{server.url}/sql", data=b"SELECT 1", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        info.value.close()
        assert info.value.code == 401


class TestOwnerClient:
    """A join helper's way to the embedded store: the sink and the lookups through the owner."""

    @pytest.fixture
    def server(self, store, store_settings):
        server = SqlServer(store_settings, writer=store).start()
        yield server
        server.stop()

    def test_the_sink_writes_and_the_lookups_read_through_the_owner(self, server, store_settings):
        db = store_settings.clickhouse_database
        client = OwnerClient(server.url, server.token)
        sink = ClickHouseSink(client, db)
        trace_id = unique("tr")
        at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
        sink.add_traces(
            [TraceEvent.parse({"trace_id": trace_id, "project": "shop", "received_at": at})]
        )
        assert sink.flush() == 1
        found = lookup_traces(client, db, [("shop", trace_id), ("shop", "nobody")])
        assert found[("shop", trace_id)].project == "shop"
        rows = client.query(
            f"SELECT received_at, version FROM {db}.traces WHERE trace_id = {{t:String}} "
            "AND received_at >= {since:DateTime64(3, 'UTC')}",
            parameters={"t": trace_id, "since": at - timedelta(seconds=1)},
        ).result_rows
        assert [(r[0].replace(tzinfo=UTC), int(r[1])) for r in rows] == [
            (at, int(at.timestamp() * 1_000_000))
        ]  # datetimes come back as datetimes, parameters bound on the server
        client.close()

    def test_only_the_joins_tables_take_inserts_with_the_sinks_settings(
        self, server, store_settings
    ):
        client = OwnerClient(server.url, server.token)
        db = store_settings.clickhouse_database
        with pytest.raises(DatabaseError, match="table must be one of"):
            client.raw_insert(f"{db}.api_keys", insert_block=b"{}")
        for settings in ({"max_execution_time": 0}, {"input_format_skip_unknown_fields": [1]}):
            with pytest.raises(DatabaseError, match="settings must be a JSON object of"):
                client.raw_insert(f"{db}.traces", insert_block=b"{}", settings=settings)
        client.close()

    def test_a_helpers_query_runs_in_the_sandbox(self, server, store_settings):
        client = OwnerClient(server.url, server.token)
        db = store_settings.clickhouse_database
        for query, parameters in (
            ("SELECT file({p:String})", {"p": "/etc/hostname"}),
            ("SELECT * FROM {t:Identifier}", {"t": "system.tables"}),
            ("SELECT name FROM system.tables WHERE database = {d:String}", {"d": db}),
            (f"SELECT count() FROM {db}.traces WHERE trace_id = %(t)s", {"t": "x"}),
        ):
            with pytest.raises(DatabaseError, match="refused"):
                client.query(query, parameters)
        rows = client.query(
            "SELECT count() FROM {t:Identifier} WHERE trace_id = {x:String}",  # noqa: S608
            {"t": "traces", "x": "nobody"},  # the sandbox's current database is thumbline's
        ).result_rows
        assert rows == [(0,)]
        client.close()

    def test_a_gone_owner_is_an_outage_the_sink_retries_and_a_wrong_token_a_bug(
        self, server, store_settings
    ):
        wrong = OwnerClient(server.url, "wrong")
        sink = ClickHouseSink(wrong, store_settings.clickhouse_database)
        sink.add_json("traces", [b'{"trace_id":"x"}'])
        with pytest.raises(ProgrammingError, match="missing or wrong token"):
            sink.flush()  # the same request fails again: waiting cannot cure it
        wrong.close()
        url = server.url
        server.stop()
        sink = ClickHouseSink(OwnerClient(url, server.token), store_settings.clickhouse_database)
        sink.add_json("traces", [b'{"trace_id":"x"}'])
        with pytest.raises(SinkUnavailable, match="did not answer"):
            sink.flush()
        assert sink.pending == 1  # kept for the retry


def test_a_literal_reads_back_as_the_same_string_control_characters_included(store):
    from thumbline.queries import literal

    text = "a'b\\c\x00\x07\n\t\x7f\x1f é 🙂 \\x41"
    assert store.query(f"SELECT {literal(text)}").result_rows == [(text,)]
