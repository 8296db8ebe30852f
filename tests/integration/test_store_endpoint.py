"""The embedded store as a ClickHouse HTTP endpoint: production's code path on one machine.

A process whose ``THUMBLINE_CLICKHOUSE_URL`` is ``http://thumbline:<password>@<owner>``
reaches the chDB owner through clickhouse-connect's HTTP client, exactly as it
reaches a ClickHouse server: queries in Native, inserts, commands, ping, errors
with their codes, thumbline's migrations and the sink's inserts. curl and
Grafana's plugin (``?query=... FORMAT JSON``, ``default_format``) read it too.
"""

from __future__ import annotations

import base64
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import clickhouse_connect
import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.conftest import unique
from tests.integration.conftest import run, start_up, stop, worker_env
from tests.integration.test_crash import expected, final_counts, settle
from thumbline.producers import FeedbackProducer
from thumbline.producers.loadgen import LoadSpec, run_load
from thumbline.settings import Settings, load_settings
from thumbline.sqlclient import run_sql
from thumbline.sqlserver import SqlServer
from thumbline.store import apply_migrations, open_client
from thumbline.stream_jobs.sink import JSON_SETTINGS

WRITER_PASSWORD, READER_PASSWORD = "w-pass-7f3a-51c0e8d2", "r-pass-91c2-a6b3f407"


@dataclass(frozen=True)
class Owner:
    server: SqlServer
    settings: Settings  # the owner's

    @property
    def address(self) -> tuple[str, int]:
        parts = urllib.parse.urlsplit(self.server.url)
        return parts.hostname or "", parts.port or 0

    def url(self, user: str = "thumbline", password: str = WRITER_PASSWORD) -> str:
        host, port = self.address
        return f"http://{user}:{password}@{host}:{port}"

    def worker_settings(self, tmp_path) -> Settings:
        """A second process's settings: production's, pointed at the owner."""
        return load_settings(
            data_dir=tmp_path, clickhouse_url=self.url(),
            clickhouse_database=self.settings.clickhouse_database,
        )  # fmt: skip


def serve(store, store_url: str, data_dir, database: str) -> SqlServer:
    settings = load_settings(
        data_dir=data_dir, clickhouse_url=store_url,
        clickhouse_database=database, sql_writer_password=WRITER_PASSWORD,
        sql_reader_password=READER_PASSWORD,
    )  # fmt: skip
    return SqlServer(settings, writer=store)


@pytest.fixture(scope="module")
def owner(store, store_settings, tmp_path_factory) -> Iterator[Owner]:
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("owner"), clickhouse_url=store_settings.store_url,
        clickhouse_database=store_settings.clickhouse_database,
        sql_writer_password=WRITER_PASSWORD, sql_reader_password=READER_PASSWORD,
    )  # fmt: skip
    server = SqlServer(settings, writer=store).start()
    yield Owner(server, settings)
    server.stop()


@pytest.fixture
def client(owner):
    host, port = owner.address
    c = clickhouse_connect.get_client(
        host=host, port=port, username="thumbline", password=WRITER_PASSWORD,
        database=owner.settings.clickhouse_database,
    )  # fmt: skip
    yield c
    c.close()


def test_clickhouse_connect_connects_and_queries_in_native(client):
    assert client.server_version.startswith("26.")
    result = client.query(
        "SELECT 1 AS one, 'a' AS letter, toDateTime('2026-01-02 03:04:05', 'UTC') AS t"
    )
    assert result.column_names == ("one", "letter", "t")
    # clickhouse-connect gives a UTC server's DateTime naive, as from a ClickHouse server
    expected = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).replace(tzinfo=None)
    assert result.result_rows == [(1, "a", expected)]
    assert client.ping() is True


def test_inserted_rows_read_back_and_commands_run(client):
    table = unique("rows")
    client.command(f"CREATE TABLE {table} (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
    client.insert(table, [[i, f"n{i}"] for i in range(1000)], column_names=["id", "name"])
    client.insert(table, [[1000, "last"]], column_names=["id", "name"], column_oriented=False)
    assert client.query(f"SELECT count(), max(id) FROM {table}").result_rows == [(1001, 1000)]
    assert client.command(f"SELECT name FROM {table} WHERE id = {{i:UInt32}}",
                          parameters={"i": 7}) == "n7"  # fmt: skip
    client.command(f"DROP TABLE {table}")


def test_a_store_error_raises_databaseerror_with_its_code(client):
    with pytest.raises(DatabaseError) as caught:
        client.query("SELECT * FROM no_such_table")
    assert "code: 60" in str(caught.value)
    assert "UNKNOWN_TABLE" in str(caught.value)


def test_query_parameters_bind_on_the_server(client):
    rows = client.query(
        "SELECT {s:String} AS s, {a:Array(String)} AS a",
        parameters={"s": "tab\there 'quoted'", "a": ["x", "y"]},
    ).result_rows
    assert rows == [("tab\there 'quoted'", ["x", "y"])]


def test_parameters_too_long_for_the_url_come_as_a_form_and_bind_the_same(client):
    # the join's trace lookups send thousands of ids: past 4 KB of URL clickhouse-connect
    # sends the query and its parameters as multipart/form-data
    ids = [f"trace-{n:05d}-{'x' * 20}" for n in range(2_000)]
    rows = client.query(
        "SELECT length({ids:Array(String)}) AS n, {s:String} AS s",
        parameters={"ids": ids, "s": "tab\there 'quoted'"},
    ).result_rows
    assert rows == [(2_000, "tab\there 'quoted'")]


def test_thumbline_migrations_run_through_the_endpoint_on_a_fresh_database(
    store, store_settings, tmp_path_factory
):
    database = unique("fresh")
    data_dir = tmp_path_factory.mktemp("fresh")
    store.command(f"CREATE DATABASE {database}")  # the owner serves an existing database
    server = serve(store, store_settings.store_url, data_dir, database).start()
    try:
        host, port = (
            urllib.parse.urlsplit(server.url).hostname,
            urllib.parse.urlsplit(server.url).port,
        )
        worker = load_settings(
            data_dir=data_dir, clickhouse_database=database,
            clickhouse_url=f"http://thumbline:{WRITER_PASSWORD}@{host}:{port}",
        )  # fmt: skip
        client = open_client(worker)
        try:
            applied = apply_migrations(client, database)
            assert applied and all(m.applied for m in applied)
            assert not any(m.applied for m in apply_migrations(client, database))  # idempotent
        finally:
            client.close()
    finally:
        server.stop()
        store.command(f"DROP DATABASE IF EXISTS {database}")


def test_the_sinks_json_inserts_run_unchanged(owner, tmp_path):
    worker = owner.worker_settings(tmp_path)
    db = worker.clickhouse_database
    client = open_client(worker)
    try:
        key = unique("dl")
        row = {"topic": "t", "partition": 0, "offset": 1, "batch_index": -1, "reason": "test",
               "error": "", "raw": {"x": 1}, "key": key, "at": datetime.now(UTC).isoformat(),
               "a_field_the_table_lacks": 1}  # fmt: skip
        client.raw_insert(
            f"{db}.dead_letters", insert_block=orjson.dumps(row), settings=JSON_SETTINGS,
            fmt="JSONEachRow",
        )  # fmt: skip
        rows = client.query(
            f"SELECT reason, raw FROM {db}.dead_letters WHERE key = {{k:String}}",  # noqa: S608
            parameters={"k": key},
        ).result_rows
        assert rows == [("test", '{"x":1}')]
    finally:
        client.close()


def test_the_sql_sandbox_runs_through_the_endpoint(owner, tmp_path):
    worker = owner.worker_settings(tmp_path)
    out = orjson.loads(run_sql(worker, "SELECT count() AS n FROM feedback", fmt="JSON"))
    assert out["data"][0]["n"] >= 0


def test_the_reader_runs_the_sandbox_and_nothing_else(owner):
    host, port = owner.address
    reader = clickhouse_connect.get_client(
        host=host, port=port, username="thumbline_reader", password=READER_PASSWORD
    )
    try:
        db = owner.settings.clickhouse_database
        assert reader.query(f"SELECT count() FROM {db}.feedback").result_rows[0][0] >= 0
        with pytest.raises(DatabaseError) as caught:
            reader.command(f"TRUNCATE TABLE {db}.feedback")
        assert "code: 497" in str(caught.value)
    finally:
        reader.close()


def _get(owner: Owner, params: dict[str, str], user: str = "thumbline_reader") -> tuple[str, str]:
    password = READER_PASSWORD if user == "thumbline_reader" else WRITER_PASSWORD
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 (loopback)
        f"{owner.server.url}/?{urllib.parse.urlencode(params)}",
        headers={"Authorization": f"Basic {auth}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.headers.get("Content-Type", ""), response.read().decode()


def test_curl_and_grafana_read_json_by_get(owner):
    content_type, body = _get(owner, {"query": "SELECT 1 AS x FORMAT JSON"})
    assert content_type.startswith("application/json")
    assert orjson.loads(body)["data"] == [{"x": 1}]
    db = owner.settings.clickhouse_database
    _, body = _get(
        owner,
        {
            "query": f"SELECT count() AS n FROM {db}.feedback",
            "default_format": "JSONEachRow",
        },  # fmt: skip
    )
    assert list(orjson.loads(body)) == ["n"]


def test_ping_answers_ok_without_a_password(owner):
    with urllib.request.urlopen(f"{owner.server.url}/ping", timeout=10) as response:  # noqa: S310
        assert response.read() == b"Ok.\n"


async def test_a_second_process_runs_production_code_against_thumbline_ups_store(
    broker, clean_env, tmp_path, thumbline_bin
):
    env = await worker_env(broker, clean_env, tmp_path, "endpoint")
    up = start_up(thumbline_bin, env, tmp_path / "data")
    try:
        url = run(thumbline_bin, env, "store", "url")
        assert url.returncode == 0, url.stderr
        password = urllib.parse.urlsplit(url.stdout.strip()).password
        assert password and password == up.info.store_writer_password
        second = {
            **clean_env, "THUMBLINE_CLICKHOUSE_URL": url.stdout.strip(),
            "THUMBLINE_DATA_DIR": str(tmp_path / "second"),
        }  # fmt: skip
        migrate = run(thumbline_bin, second, "migrate")  # the store is a server to it
        assert migrate.returncode == 0, migrate.stderr
        counted = run(thumbline_bin, second, "sql", "SELECT count() AS n FROM thumbline.feedback")
        assert counted.returncode == 0, counted.stderr
        assert "0" in counted.stdout
        for said in (migrate, counted):
            assert password not in said.stdout + said.stderr
    finally:
        stop(up)


def test_the_reader_lists_databases_tables_and_columns_as_grafana_and_dbeaver_do(owner):
    db = owner.settings.clickhouse_database
    _, body = _get(owner, {"query": "SELECT name FROM system.databases FORMAT JSONEachRow"})
    assert db in [orjson.loads(line)["name"] for line in body.splitlines()]
    _, body = _get(
        owner, {"query": "SELECT name FROM system.tables WHERE database = {d:String}",
                "param_d": db},
    )  # fmt: skip
    assert "feedback" in body.split("\n")
    _, body = _get(
        owner, {"query": "SELECT name, type FROM system.columns WHERE database = {d:String} "
                "AND table = 'feedback' FORMAT JSONEachRow", "param_d": db},
    )  # fmt: skip
    assert "event_id" in body


def test_the_reader_still_cannot_read_the_rest_of_system(owner):
    for table in ("users", "processes", "query_log", "disks"):
        with pytest.raises(urllib.error.HTTPError) as caught:
            _get(owner, {"query": f"SELECT * FROM system.{table}"})
        with caught.value as answer:
            assert answer.code == 403 and answer.headers["X-ClickHouse-Exception-Code"] == "497"


@pytest.mark.parametrize("compression", ["lz4", "zstd", "gzip", False])
def test_a_large_compressed_insert_arrives_whole(owner, compression):
    """clickhouse-connect compresses an insert block by block: every block is read."""
    host, port = owner.address
    client = clickhouse_connect.get_client(
        host=host, port=port, username="thumbline", password=WRITER_PASSWORD,
        database=owner.settings.clickhouse_database, compress=compression,
    )  # fmt: skip
    table = unique("big")
    try:
        client.command(f"CREATE TABLE {table} (id UInt64, s String) ENGINE = MergeTree ORDER BY id")
        rows = 200_000
        client.insert(
            table, [list(range(rows)), [f"value {i:>40}" for i in range(rows)]],  # ~10 MB
            column_names=["id", "s"], column_oriented=True,
        )  # fmt: skip
        assert client.query(f"SELECT count(), sum(id) FROM {table}").result_rows == [
            (rows, rows * (rows - 1) // 2)
        ]
        client.command(f"DROP TABLE {table}")
    finally:
        client.close()


async def test_a_whole_pipeline_writes_through_the_endpoint_of_another_thumbline_up(
    broker, clean_env, tmp_path, thumbline_bin
):
    """The stream (join, sink, rates, lookups), migrations and keys of a second `thumbline
    up` whose store is the first one's endpoint: every row lands, as with a server."""
    owner_env = await worker_env(broker, clean_env, tmp_path / "owner", "owner")
    owner = start_up(thumbline_bin, owner_env, tmp_path / "owner" / "data")
    try:
        url = run(thumbline_bin, owner_env, "store", "url").stdout.strip()
        env = await worker_env(
            broker, clean_env, tmp_path / "worker", "viaendpoint",
            THUMBLINE_CLICKHOUSE_URL=url, THUMBLINE_STREAM_WORKERS="1",
        )  # fmt: skip
        worker = start_up(thumbline_bin, env, tmp_path / "worker" / "data")
        try:
            spec = LoadSpec(rate=1000, duration=None, count=2000, early_share=0.15, seed=3)
            async with FeedbackProducer(
                bootstrap_servers=broker.bootstrap, topic_prefix=env["THUMBLINE_TOPIC_PREFIX"]
            ) as fb:
                report = await run_load(fb, spec)
            want = expected(report)
            # read back through the owner's own `thumbline sql`: the rows are in its store
            assert await settle(lambda: final_counts(thumbline_bin, owner_env), want, 90) == want
            assert not (tmp_path / "worker" / "data" / "chdb").exists()  # no store of its own
        finally:
            stop(worker)
    finally:
        stop(owner)
