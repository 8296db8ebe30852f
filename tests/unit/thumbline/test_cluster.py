"""The migrations rewritten for a ClickHouse cluster, read back by ClickHouse's own parser.

Every generated statement goes through chDB's ``formatQuery`` (ClickHouse's parser,
in memory: nothing is executed), so a statement that ClickHouse could not parse
fails here; the assertions then read the parser's normalised text.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from thumbline.cluster import (
    REPLICA_NAME,
    REPLICA_PATH,
    ClusterDDL,
    ClusterUnsupported,
    sharding_key,
)
from thumbline.errors import ConfigError, StoreError
from thumbline.forget import Forget
from thumbline.schemas import migrations
from thumbline.settings import load_settings
from thumbline.store import REKEYED, apply_migrations, apply_retention

DB = "thumbline"


#: ClickHouse's parser in a process of its own: chDB opens one path per process, and in a
#: whole run the integration tests' session store already holds this one's.
PARSER = """
import json, sys
import chdb
connection = chdb.connect(":memory:")  # held: its cursor dies with it
for line in sys.stdin:
    cursor = connection.cursor()
    literal = json.loads(line).replace("\\\\", "\\\\\\\\").replace("'", "\\\\'")
    try:
        cursor.execute(f"SELECT formatQuery('{literal}')")
        answer = {"text": str(cursor.fetchone()[0])}
    except Exception as exc:
        answer = {"error": str(exc)}
    print(json.dumps(answer), flush=True)
"""


@pytest.fixture(scope="module", autouse=True)
def parser() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARSER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )  # fmt: skip
    _PARSERS.append(proc)
    try:
        yield proc
    finally:
        _PARSERS.remove(proc)
        with proc:  # closes both pipes (an open one is a ResourceWarning at exit)
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(30)


_PARSERS: list[subprocess.Popen[str]] = []


@functools.cache
def parsed(statement: str) -> str:
    """ClickHouse's formatting of ``statement`` on one line (a syntax error raises)."""
    proc = _PARSERS[-1]
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(statement) + "\n")
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return re.sub(r"\s+", " ", answer["text"])


def every_rewrite(cluster: str = "prod") -> list[tuple[int, str, list[str]]]:
    """(version, one-node statement, cluster statements) of every migration, in order."""
    ddl = ClusterDDL(cluster, DB)
    out = []
    for migration in migrations.load():
        for statement in migration.statements(DB):
            out.append((migration.version, statement, ddl.rewrite(statement)))
        for table, key in REKEYED.get(migration.version, ()):
            out.append((migration.version, f"-- rekey {table}", ddl.rekeyed(table, key)))
    return out


ALL = [(v, s, o) for v, s, outs in every_rewrite() for o in outs]


def replayed() -> ClusterDDL:
    """The rewriting after every migration, as the runner leaves it."""
    ddl = ClusterDDL("prod", DB)
    for migration in migrations.load():
        for statement in migration.statements(DB):
            ddl.rewrite(statement)
        for table, key in REKEYED.get(migration.version, ()):
            ddl.rekeyed(table, key)
    return ddl


@pytest.mark.parametrize(("version", "source", "statement"), ALL)
def test_every_statement_of_every_migration_parses_and_runs_on_the_cluster(
    version, source, statement
):
    text = parsed(statement)
    if text.startswith("INSERT"):
        return
    # ON CLUSTER right after the object's name (ClickHouse's grammar puts it there)
    assert re.match(
        r"^(CREATE (OR REPLACE )?(TABLE|VIEW|MATERIALIZED VIEW)( IF NOT EXISTS)? \S+ "
        r"|ALTER TABLE \S+ |DROP TABLE( IF EXISTS)? \S+ |EXCHANGE TABLES \S+ AND \S+ )"
        r"ON CLUSTER prod\b",
        text,
    ), text


def one_node_tables() -> dict[str, tuple[str, str, str, str]]:
    """Every MergeTree table the migrations create: name -> (engine, args, `` PARTITION BY
    ...`` or '', ORDER BY)."""
    found = {}
    for migration in migrations.load():
        for statement in migration.statements(DB):
            text = parsed(statement)
            m = re.match(r"CREATE TABLE (?:IF NOT EXISTS )?thumbline\.(\w+) ", text)
            engine = re.search(
                r"ENGINE = (\w+MergeTree)(?:\(([^()]*)\))?( PARTITION BY .+?)? ORDER BY (.+?)"
                r"( SETTINGS|$)",
                text,
            )
            if m and engine:
                found[m.group(1)] = (
                    engine.group(1), engine.group(2) or "", engine.group(3) or "", engine.group(4)
                )  # fmt: skip
    return found


def test_every_mergetree_table_is_a_replicated_local_table_with_its_engine_arguments():
    tables = one_node_tables()
    assert {"feedback", "traces", "feedback_rates", "alerts", "dead_letters"} <= set(tables)
    created = {}
    for _, _, statement in ALL:
        text = parsed(statement)
        m = re.match(r"CREATE TABLE IF NOT EXISTS thumbline\.(\w+)_local ON CLUSTER prod ", text)
        if m:
            created[m.group(1)] = text
    assert set(created) == set(tables)
    for table, (engine, args, partition_by, order_by) in tables.items():
        replicated_args = ", ".join(filter(None, [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'", args]))
        assert (
            f"ENGINE = Replicated{engine}({replicated_args}){partition_by} ORDER BY {order_by}"
            in (created[table])
        ), created[table]
        assert "non_replicated_deduplication_window" not in created[table]


def test_the_keeper_path_is_clickhouses_default_with_uuid_so_an_exchanged_table_keeps_its_own():
    assert REPLICA_PATH == "/clickhouse/tables/{uuid}/{shard}"
    assert REPLICA_NAME == "{replica}"


def distributed() -> dict[str, str]:
    """The newest Distributed definition of each table."""
    found = {}
    for _, _, statement in ALL:
        text = parsed(statement)
        m = re.match(r"CREATE (?:OR REPLACE )?TABLE (?:IF NOT EXISTS )?thumbline\.(\w+) ", text)
        if m and "ENGINE = Distributed" in text:
            found[m.group(1)] = text
    return found


def test_each_table_reads_and_writes_through_a_distributed_table_of_its_name():
    tables = distributed()
    for table in ("feedback", "traces", "feedback_rates", "alerts", "dead_letters", "api_keys"):
        assert re.search(
            rf"AS thumbline\.{table}_local ENGINE = Distributed\('prod', 'thumbline', "
            rf"'{table}_local', cityHash64\(",
            tables[table],
        ), tables[table]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("feedback", "cityHash64(project, event_id)"),  # its sort key: every version together
        ("traces", "cityHash64(project, trace_id)"),  # every span of a trace on one shard
        ("feedback_rates", "cityHash64(project, environment, model, capability, "
         "window_seconds, window_start)"),
        ("dead_letters", "cityHash64(topic, partition, offset, batch_index)"),
    ],
)  # fmt: skip
def test_the_sharding_key_keeps_every_version_of_a_row_on_one_shard(table, key):
    assert distributed()[table].endswith(f"'{table}_local', {key})")


def test_after_a_rekeying_migration_the_distributed_table_shards_by_the_new_key():
    """Migration 0005 swaps feedback_local for one keyed (project, event_id): the
    Distributed table is made again with that key, and the __rekeyed pair is dropped."""
    ddl = ClusterDDL("prod", DB)
    for migration in migrations.load():
        if migration.version > 5:
            break
        for statement in migration.statements(DB):
            ddl.rewrite(statement)
    out = [parsed(s) for s in ddl.rekeyed("feedback", "project, event_id")]
    assert out[0].startswith("CREATE OR REPLACE TABLE thumbline.feedback ON CLUSTER prod")
    assert out[0].endswith("'feedback_local', cityHash64(project, event_id))")
    assert "DROP TABLE IF EXISTS thumbline.feedback__rekeyed ON CLUSTER prod SYNC" in out
    assert "DROP TABLE IF EXISTS thumbline.feedback__rekeyed_local ON CLUSTER prod SYNC" in out


def test_views_are_made_on_every_host_over_the_distributed_tables():
    views = [parsed(s) for _, _, s in ALL if re.match(r"CREATE (OR REPLACE )?VIEW", s)]
    assert views
    for text in views:
        assert "_local" not in text


def test_a_column_change_reaches_the_local_and_the_distributed_table_an_index_only_the_local():
    ddl = replayed()
    both = ddl.rewrite(
        "ALTER TABLE thumbline.feedback ADD COLUMN IF NOT EXISTS x String COMMENT 'a, b', "
        "ADD INDEX IF NOT EXISTS ix_x x TYPE bloom_filter(0.01) GRANULARITY 4"
    )
    assert [parsed(s) for s in both] == [
        "ALTER TABLE thumbline.feedback_local ON CLUSTER prod (ADD COLUMN IF NOT EXISTS `x` "
        "String COMMENT 'a, b'), (ADD INDEX IF NOT EXISTS ix_x x TYPE bloom_filter(0.01) "
        "GRANULARITY 4)",
        "ALTER TABLE thumbline.feedback ON CLUSTER prod (ADD COLUMN IF NOT EXISTS `x` String "
        "COMMENT 'a, b')",
    ]


def test_a_future_migration_that_rebuilds_feedback_by_month_is_rewritten_by_the_same_rules():
    """What a migration 0013 might hold: a partitioned rebuild, a backfill, a materialized
    view of daily counts, an OPTIMIZE. None of it names a table the rules list."""
    ddl = replayed()
    future = [
        "CREATE TABLE IF NOT EXISTS thumbline.feedback__monthly (project LowCardinality(String), "
        "event_id String, ts DateTime64(3, 'UTC'), label LowCardinality(String), version UInt64, "
        "retracted UInt8) ENGINE = ReplacingMergeTree(version, retracted) "
        "PARTITION BY toYYYYMM(ts) ORDER BY (project, toStartOfDay(ts), event_id) "
        "SETTINGS non_replicated_deduplication_window = 1000",
        "INSERT INTO thumbline.feedback__monthly SELECT project, event_id, ts, label, version, "
        "retracted FROM thumbline.feedback FINAL",
        "CREATE TABLE IF NOT EXISTS thumbline.daily (project LowCardinality(String), "
        "day Date, bad AggregateFunction(countIf, UInt8)) ENGINE = AggregatingMergeTree "
        "ORDER BY (project, day)",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS thumbline.daily_mv TO thumbline.daily AS "
        "SELECT project, toDate(ts) AS day, countIfState(label = 'bad') AS bad "
        "FROM thumbline.feedback__monthly GROUP BY project, day",
        "OPTIMIZE TABLE thumbline.feedback__monthly FINAL",
    ]
    out = [parsed(s) for statement in future for s in ddl.rewrite(statement)]
    assert (
        "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', "
        "version, retracted) PARTITION BY toYYYYMM(ts) ORDER BY (project, toStartOfDay(ts), "
        "event_id) SETTINGS replicated_deduplication_window = 1000"
    ) in out[0]
    assert out[1].endswith(
        "'feedback__monthly_local', cityHash64(project, toStartOfDay(ts), event_id))"
    )
    assert out[2].startswith("INSERT INTO thumbline.feedback__monthly SELECT")  # Distributed
    assert (
        "ReplicatedAggregatingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')"
        in (out[3])
    )
    # the view fires on each host's inserts into its shard, into that shard's table
    assert out[5].startswith(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS thumbline.daily_mv ON CLUSTER prod "
        "TO thumbline.daily_local"
    )
    assert "FROM thumbline.feedback__monthly_local" in out[5]
    assert out[6] == "OPTIMIZE TABLE thumbline.feedback__monthly_local ON CLUSTER prod FINAL"


#: 0014's tables: their partition keys, and whether the retention drops whole parts
MONTHLY_0014 = {
    "traces": ("toYYYYMM(received_at)", True),
    "dead_letters": ("toYYYYMM(at)", True),
    "feedback_rates": ("toYYYYMM(window_start)", True),
    "alerts": ("toYYYYMM(at)", False),  # no retention setting counts alerts
}


def test_0014_rebuilds_four_tables_by_month_as_replicated_local_tables_under_distributed():
    out = [parsed(s) for version, _, s in ALL if version == 14]
    for table, (partition_key, whole_parts) in MONTHLY_0014.items():
        (local,) = [s for s in out if s.startswith(
            f"CREATE TABLE IF NOT EXISTS thumbline.{table}__rekeyed_local ON CLUSTER prod "
        )]  # fmt: skip
        assert f"ENGINE = ReplicatedReplacingMergeTree('{REPLICA_PATH}', " in local
        assert f" PARTITION BY {partition_key} ORDER BY " in local
        assert "SETTINGS replicated_deduplication_window = 1000" in local
        assert ("ttl_only_drop_parts = 1" in local) is whole_parts, local
        # after the swap, the Distributed table shards by the same sort key as before
        (remade,) = [s for s in out if s.startswith(f"CREATE OR REPLACE TABLE thumbline.{table} ")]
        assert remade.endswith(f"'{table}_local', {sharding_key(table, dict(REKEYED[14])[table])})")
    # the feedback's setting goes to every host's shard table, not to the Distributed one
    (alter,) = [s for s in out if s.startswith("ALTER TABLE thumbline.feedback_local ON CLUSTER")]
    assert "MODIFY SETTING ttl_only_drop_parts = 1" in alter
    assert not [s for s in out if s.startswith("ALTER TABLE thumbline.feedback ON")]


def test_on_a_cluster_0014_swaps_each_tables_empty_local_table_for_its_monthly_one():
    client = Recorder()
    apply_migrations(client, DB, cluster="prod")  # type: ignore[arg-type]
    for table in MONTHLY_0014:
        assert (
            f"EXCHANGE TABLES thumbline.{table}_local AND thumbline.{table}__rekeyed_local "
            "ON CLUSTER 'prod'"
        ) in client.commands
        assert f"DROP TABLE IF EXISTS thumbline.{table}__rekeyed_local ON CLUSTER 'prod' SYNC" in (
            client.commands
        )


def test_a_rebuild_by_create_as_and_rename_swaps_the_local_tables_and_remakes_the_distributed():
    """Another way a migration may rebuild a table: CREATE ... AS with a new engine
    clause, a copy, then RENAME old away and new into place."""
    ddl = replayed()
    steps = [
        "CREATE TABLE IF NOT EXISTS thumbline.traces__new AS thumbline.traces "
        "ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(received_at) "
        "ORDER BY (project, trace_id, span_id)",
        "RENAME TABLE thumbline.traces TO thumbline.traces__old, "
        "thumbline.traces__new TO thumbline.traces",
    ]
    out = [parsed(s) for step in steps for s in ddl.rewrite(step)]
    assert out[0].startswith(
        "CREATE TABLE IF NOT EXISTS thumbline.traces__new_local ON CLUSTER prod "
        "AS thumbline.traces_local ENGINE = ReplicatedReplacingMergeTree("
    )
    assert out[2] == (
        "RENAME TABLE thumbline.traces_local TO thumbline.traces__old_local, "
        "thumbline.traces__new_local TO thumbline.traces_local ON CLUSTER prod"
    )
    assert "DROP TABLE IF EXISTS thumbline.traces__new ON CLUSTER prod SYNC" in out
    assert "DROP TABLE IF EXISTS thumbline.traces ON CLUSTER prod SYNC" not in out
    remade = [o for o in out if o.startswith("CREATE OR REPLACE TABLE thumbline.traces ")]
    assert remade and remade[0].endswith(
        "Distributed('prod', 'thumbline', 'traces_local', cityHash64(project, trace_id))"
    )
    assert set(ddl.sharded) >= {"traces", "traces__old"} and "traces__new" not in ddl.sharded


@pytest.mark.parametrize(
    "statement",
    [
        "RENAME DATABASE thumbline TO other",
        "RENAME TABLE thumbline.feedback TO thumbline.old, thumbline.some_view TO thumbline.v",
        "CREATE MATERIALIZED VIEW thumbline.mv ENGINE = SummingMergeTree ORDER BY a "
        "AS SELECT 1 AS a FROM thumbline.feedback",
        "CREATE TABLE thumbline.copy AS thumbline.feedback",
        "SYSTEM STOP MERGES thumbline.feedback",
        "CREATE TABLE IF NOT EXISTS other.t (a String) ENGINE = MergeTree ORDER BY a",
    ],
)
def test_a_form_the_rewriting_does_not_know_fails_here_not_on_a_cluster(statement):
    with pytest.raises(ClusterUnsupported):
        replayed().rewrite(statement)


@pytest.mark.parametrize("name", ["prod' SETTINGS x = 1 --", "a b", "", "x" * 101, "1c"])
def test_a_cluster_name_that_is_not_an_identifier_is_refused(name):
    with pytest.raises(StoreError, match="THUMBLINE_CLICKHOUSE_CLUSTER"):
        ClusterDDL(name, DB)


class Recorder:
    """A store client that records what it is sent and answers the migration runner's
    questions: nothing applied yet, ``sorting_key`` and ``count()`` as given."""

    def __init__(self, *, sorting_key: str = "event_id", rows: int = 0) -> None:
        self.commands: list[str] = []
        self.inserts: list[tuple[str, dict[str, Any] | None]] = []
        self.sorting_key, self.rows = sorting_key, rows

    def command(self, sql: str, **_: Any) -> None:
        self.commands.append(sql)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        class Result:
            result_rows: list[tuple[Any, ...]] = []

        result = Result()
        if "sorting_key" in sql:
            result.result_rows = [(self.sorting_key,)]
        elif "count()" in sql or "uniqExact" in sql:
            result.result_rows = [(self.rows,)]
        return result

    def insert(self, table: str, rows: Any, column_names: Any, settings: Any = None) -> None:
        self.inserts.append((table, settings))


def test_without_a_cluster_the_runner_sends_each_migration_as_written():
    client = Recorder(sorting_key="x")
    apply_migrations(client, DB)  # type: ignore[arg-type]
    written = [s for m in migrations.load() for s in m.statements(DB)]
    sent = [c for c in client.commands if "schema_migrations" not in c and "DATABASE" not in c]
    assert [c for c in sent if c in written] == written
    assert not any("ON CLUSTER" in c or "Replicated" in c for c in client.commands)


def test_on_a_cluster_every_statement_runs_on_the_cluster_and_each_migration_is_one_row():
    client = Recorder()
    apply_migrations(client, DB, cluster="prod")  # type: ignore[arg-type]
    assert client.commands[0] == "CREATE DATABASE IF NOT EXISTS thumbline ON CLUSTER 'prod'"
    assert (
        "ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/all', '{shard}-{replica}')"
        in (client.commands[1])
    )
    assert all("ON CLUSTER 'prod'" in c for c in client.commands), [
        c for c in client.commands if "ON CLUSTER" not in c
    ]
    # two hosts migrating at once insert the same token: one row
    tokens = [s["insert_deduplication_token"] for _, s in client.inserts if s]
    assert len(tokens) == len(migrations.load()) == len(set(tokens))
    assert (
        "EXCHANGE TABLES thumbline.feedback_local AND thumbline.feedback__rekeyed_local "
        "ON CLUSTER 'prod'"
    ) in client.commands


def test_on_a_cluster_a_table_with_rows_is_not_rekeyed():
    with pytest.raises(StoreError, match="holds 5 rows"):
        apply_migrations(Recorder(rows=5), DB, cluster="prod")  # type: ignore[arg-type]


def test_a_cluster_needs_a_clickhouse_server_not_the_embedded_store(tmp_path):
    with pytest.raises(ConfigError, match="THUMBLINE_CLICKHOUSE_URL=http"):
        load_settings(data_dir=tmp_path, clickhouse_cluster="prod")
    settings = load_settings(clickhouse_url="http://ch:8123", clickhouse_cluster="prod")
    assert settings.clickhouse_cluster == "prod"


def test_a_cluster_setting_that_is_no_name_is_refused_before_any_sql_is_made():
    with pytest.raises(ConfigError, match="THUMBLINE_CLICKHOUSE_CLUSTER"):
        load_settings(clickhouse_url="http://ch:8123", clickhouse_cluster="prod' --")


class TtlRecorder(Recorder):
    """The store of a cluster host: system.tables shows the local tables, without a TTL."""

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        result = super().query(sql, parameters)
        if "engine_full" in sql:
            assert parameters is not None and parameters["t"].endswith("_local")
            result.result_rows = [("ReplicatedReplacingMergeTree(...) ORDER BY x",)]
        return result


def test_on_a_cluster_the_retention_is_the_local_tables_ttl_on_every_host():
    client = TtlRecorder()
    days = {"feedback": 30, "traces": 0, "dead_letters": 0, "feedback_rates": 0}
    assert apply_retention(client, DB, days, cluster="prod") == [  # type: ignore[arg-type]
        "feedback: kept forever -> ts + toIntervalDay(30)"
    ]
    assert [parsed(c) for c in client.commands] == [
        "ALTER TABLE thumbline.feedback_local ON CLUSTER prod (MODIFY TTL ts + toIntervalDay(30))"
    ]


def test_on_a_cluster_forgetting_deletes_from_the_local_tables_on_every_host():
    client = Recorder()
    Forget(client, database=DB, user_id="u'1", project="shop", cluster="prod").run()  # type: ignore[arg-type]
    statements = [parsed(c) for c in client.commands]
    assert statements == [
        "DELETE FROM thumbline.dead_letters_local ON CLUSTER prod WHERE match(raw, "
        "'\"user\\\\x{5f}id\"\\\\s*:\\\\s*\\\\x{22}u\\\\x{27}1\\\\x{22}') AND match(raw, "
        "'\"project\"\\\\s*:\\\\s*\\\\x{22}shop\\\\x{22}')",
        "DELETE FROM thumbline.traces_local ON CLUSTER prod WHERE (user_id = 'u\\'1') AND "
        "(project = 'shop')",
        "DELETE FROM thumbline.feedback_local ON CLUSTER prod WHERE (user_id = 'u\\'1') AND "
        "(project = 'shop')",
    ]


def test_the_sql_sandbox_reads_and_writes_a_clusters_distributed_tables_not_a_shards():
    from thumbline.sandbox import Sandbox

    class Functions:
        def query(self, sql: str, **_: Any) -> Any:
            class Result:
                result_rows: list[tuple[Any, ...]] = []

            return Result()

    rows = [
        ("database", "thumbline", "", ""),
        ("table", "feedback", "Distributed", ""),
        ("table", "feedback_local", "ReplicatedReplacingMergeTree", ""),
        ("table", "schema_migrations", "ReplicatedReplacingMergeTree", ""),
    ]
    sandbox = Sandbox(load_settings(clickhouse_url="http://ch:8123", clickhouse_cluster="prod"))
    catalog = sandbox._build(Functions(), rows)  # type: ignore[arg-type]
    assert "feedback" in catalog.readable
    assert catalog.writable == {"feedback"}
