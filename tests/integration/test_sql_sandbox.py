"""The SQL sandbox against a real `thumbline up`: an admin key's SQL cannot leave the database.

The attacks are the ones an outside review ran against `POST /v1/sql`: files read
and written with table functions, the `file()` function and INTO OUTFILE, the
loopback endpoint's token read from the run file, the network, settings, KILL,
system tables, views that wrap a table function. Each is refused with a 400
naming the rule, nothing of a canary file outside the store comes back, and no
file appears. What analysts run (FINAL, joins, the README's recipes and views,
EXPLAIN, DESCRIBE) still works, and a slow query neither outlives its time
limit nor delays the inbox.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import sysconfig
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, example, given, seed, settings

from tests.conftest import unique
from tests.integration.conftest import Up, run, start_up, stop, worker_env
from tests.integration.sqlgen import Generated, Places, queries

ROOT = Path(__file__).resolve().parents[2]
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


@dataclass
class Target:
    up: Up
    admin: str
    canary: Path
    secret: str
    outside: Path

    @property
    def sql_url(self) -> str:
        return f"{self.up.info.gateway_url}/v1/sql"


def make_views(data_dir: Path, canary: Path) -> None:
    """Migrate the store and add views that read outside it, before `thumbline up` owns it.

    A subprocess: this test process may already hold the session's chDB path.
    """
    script = textwrap.dedent(f"""
        from thumbline.settings import load_settings
        from thumbline.store import apply_migrations, open_client
        client = open_client(load_settings(data_dir={str(data_dir)!r}))
        apply_migrations(client, "thumbline")
        client.command("CREATE VIEW thumbline.host_file AS "
                       "SELECT * FROM file({str(canary)!r}, 'LineAsString')")
        client.command("CREATE VIEW thumbline.wrapped AS SELECT * FROM thumbline.host_file")
        client.command("CREATE VIEW thumbline.sys_tables AS SELECT name FROM system.tables")
        client.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
async def target(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[Target]:
    tmp = tmp_path_factory.mktemp("sandbox")
    outside = tmp / "outside"
    outside.mkdir()
    secret = f"CANARY-{unique('secret')}"
    canary = outside / "canary.txt"
    canary.write_text(secret + "\n")
    env = await worker_env(broker, clean_env, tmp, "sandbox", THUMBLINE_SQL_MAX_SECONDS="3")
    await asyncio.to_thread(make_views, tmp / "data", canary)
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    try:
        created = run(thumbline_bin, env, "keys", "create", "--scope", "admin")
        assert created.returncode == 0, created.stderr
        yield Target(up, created.stdout.strip(), canary, secret, outside)
    finally:
        stop(up)


async def sql(target: Target, query: str) -> tuple[int, Any, bytes]:
    headers = {"Authorization": f"Bearer {target.admin}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(target.sql_url, data=query.encode(), headers=headers) as response,
    ):
        raw = await response.read()
    return response.status, orjson.loads(raw), raw


def attacks(target: Target) -> dict[str, str]:
    """Each escape the review found or that the sandbox must refuse, by name."""
    canary, data = target.canary, target.up.data_dir
    out = target.outside / "written.txt"
    pth = SITE_PACKAGES / f"{unique('pwned')}.pth"
    return {
        "file table function": f"SELECT * FROM file('{canary}', 'LineAsString')",
        "file function": f"SELECT file('{canary}') AS leak",
        "file function, upper case": f"SELECT FILE('{canary}')",
        "file in a lambda": f"SELECT arrayMap(x -> file(x), ['{canary}'])",
        "file by APPLY": f"SELECT COLUMNS('p') APPLY(file) FROM (SELECT '{canary}' AS p)",
        "into outfile": f"SELECT 'x' INTO OUTFILE '{out}'",
        "into outfile, truncating": f"SELECT 'import os' INTO OUTFILE '{pth}' TRUNCATE "
        "SETTINGS engine_file_truncate_on_insert = 1",
        # EXPLAIN AST shows no INTO OUTFILE after a UNION DISTINCT (the property test found it)
        "into outfile after a union distinct": f"SELECT 1 UNION DISTINCT SELECT 2 INTO OUTFILE "
        f"'{out}' TRUNCATE",
        "insert into function": f"INSERT INTO FUNCTION file('{out}', 'CSV') SELECT 1",
        "url": "SELECT * FROM url('http://127.0.0.1:9/x', 'CSV', 'a String')",
        "executable": "SELECT * FROM executable('id', 'TSV', 'a String')",
        "remote": "SELECT * FROM remote('127.0.0.1', system.one)",
        "s3": "SELECT * FROM s3('http://127.0.0.1:9/b/k', 'CSV')",
        "input": "SELECT * FROM input('a String')",
        "a settings clause": "SELECT 1 SETTINGS max_execution_time = 0",
        "kill": "KILL QUERY WHERE 1",
        "system": "SYSTEM DROP DNS CACHE",
        "two statements": f"SELECT 1; SELECT file('{canary}')",
        "a subquery over a table function": f"SELECT * FROM (SELECT * FROM file('{canary}'))",
        "a view over a table function": "SELECT * FROM thumbline.host_file",
        "a view over that view": "SELECT * FROM thumbline.wrapped",
        "a view over system tables": "SELECT * FROM sys_tables",
        "system.tables": "SELECT name FROM system.tables",
        "information schema": "SELECT * FROM INFORMATION_SCHEMA.TABLES",
        "a file by table name": "SELECT * FROM default.`/etc/passwd`",
        "a file by unqualified name": f"SELECT * FROM `{canary}`",
        "in system.tables": "SELECT 1 WHERE 'feedback' IN system.tables",
        "the run file": f"SELECT file('{data / 'run.json'}')",
        "the environment": "SELECT file('/proc/self/environ')",
        "a dictionary": "SELECT dictGet('d', 'a', toUInt64(1))",
        "another table by name": "SELECT hasColumnInTable('system', 'tables', 'name')",
        "the server's config": "SELECT getServerSetting('path')",
        "a format clause": "SELECT 1 FORMAT TabSeparated",
        "a create": "CREATE TABLE thumbline.x (a UInt8) ENGINE = Memory",
        "a line break in a name": "SELECT 1 AS `a\n  Function plus`",
    }


async def test_every_escape_is_refused_and_nothing_leaves_the_database(target: Target):
    watched = {p: set(p.iterdir()) for p in (target.outside, target.up.data_dir, SITE_PACKAGES)}
    for name, query in attacks(target).items():
        status, body, raw = await sql(target, query)
        assert status == 400, f"{name}: {status} {body}"
        assert body["reason"] and "the SQL sandbox runs one SELECT" in body["error"], name
        assert target.secret.encode() not in raw, name
    assert target.canary.read_text() == target.secret + "\n"
    for path, before in watched.items():
        assert set(path.iterdir()) - before == set(), f"a file appeared in {path}"


async def test_the_refusal_names_the_rule(target: Target):
    reasons = {
        f"SELECT * FROM file('{target.canary}')": "table_function",
        f"SELECT file('{target.canary}')": "function",
        "SELECT * FROM system.tables": "table",
        "SELECT 1 SETTINGS max_threads = 1": "settings",
        "SELECT 1 INTO OUTFILE '/tmp/x'": "output",
        "KILL QUERY WHERE 1": "statement",
        "SELECT 1; SELECT 2": "syntax",
    }
    for query, reason in reasons.items():
        status, body, _ = await sql(target, query)
        assert (status, body["reason"]) == (400, reason), query


def readme_recipes() -> list[str]:
    """The SQL recipes of the README's Analytics section, one statement each."""
    text = (ROOT / "README.md").read_text()
    block = text.split("More recipes:", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


async def test_what_analysts_run_still_works(target: Target):
    queries = [
        *readme_recipes(),
        "SELECT count() AS n FROM thumbline.feedback FINAL WHERE label = 'bad'",
        "SELECT f.trace_id, t.model FROM thumbline.feedback AS f FINAL "
        "LEFT JOIN thumbline.traces AS t FINAL ON f.trace_id = t.trace_id LIMIT 5",
        "WITH recent AS (SELECT * FROM feedback FINAL WHERE ts > now() - INTERVAL 1 DAY) "
        "SELECT count() FROM recent",
        "SELECT count() FROM thumbline.feedback WHERE trace_id IN "
        "(SELECT trace_id FROM thumbline.traces) UNION ALL SELECT 1",
        "SELECT 'file(\\'/etc/passwd\\')' AS text /* file('/etc/passwd') */",
        "EXPLAIN SELECT * FROM thumbline.feedback WHERE label = 'bad'",
        "EXPLAIN SYNTAX SELECT count() FROM thumbline.feedback_latest",
        "DESCRIBE TABLE thumbline.feedback",
        *[f"SELECT * FROM thumbline.{view} LIMIT 3" for view in (
            "weekly_quality_review", "users_repeated_bad", "thumbs_by_capability",
            "scores_by_trace", "bad_rate_by_model_hourly", "implicit_signals_by_model",
            "feedback_latest", "traces_latest",
        )],
    ]  # fmt: skip
    assert len(queries) > 20
    for query in queries:
        status, body, _ = await sql(target, query)
        assert status == 200 and isinstance(body, list), f"{query}: {body}"


def http_post(url: str, body: str, token: str, timeout: float) -> tuple[int, bytes]:
    """POST ``body`` with a bearer token: the status and the body, whatever the status."""
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Authorization": f"Bearer {token}"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def loopback(target: Target, query: str, *, write: bool = False) -> tuple[int, Any]:
    info = target.up.info
    assert info.sql_url and info.sql_token
    url = f"{info.sql_url}/sql?format=JSONEachRow&write={int(write)}"
    status, body = http_post(url, query, info.sql_token, timeout=30)
    return status, body if status == 200 else orjson.loads(body)


async def test_the_loopback_endpoint_reads_in_the_sandbox_and_writes_only_inserts(
    target: Target, thumbline_bin
):
    for name, query in attacks(target).items():
        for write in (False, True):
            status, body = await asyncio.to_thread(loopback, target, query, write=write)
            assert status == 400 and body["reason"], f"{name} (write={write}): {body}"
    not_inserts = (
        "CREATE TABLE thumbline.x (a UInt8) ENGINE = Memory", "DROP TABLE thumbline.feedback",
        "ALTER TABLE thumbline.feedback DELETE WHERE 1", "CREATE VIEW thumbline.v AS SELECT 1",
        "TRUNCATE TABLE thumbline.api_keys", "INSERT INTO thumbline.api_keys FORMAT Values ('x')",
        "INSERT INTO thumbline.feedback SETTINGS async_insert = 0 SELECT * FROM thumbline.feedback",
        "INSERT INTO thumbline.schema_migrations SELECT * FROM thumbline.schema_migrations",
        "INSERT INTO thumbline.feedback_latest SELECT * FROM thumbline.feedback",
        "INSERT INTO api_keys SELECT * FROM thumbline.api_keys",  # unqualified
    )  # fmt: skip
    for ddl in not_inserts:
        status, body = await asyncio.to_thread(loopback, target, ddl, write=True)
        assert status == 400 and body["reason"], f"{ddl}: {body}"
    status, _ = await asyncio.to_thread(loopback, target, "SELECT count() FROM thumbline.feedback")
    assert status == 200

    env = target.up.env
    created = run(thumbline_bin, env, "keys", "create", "--scope", "read", "--project", "p")
    assert created.returncode == 0, created.stderr  # an INSERT ... SELECT in write mode
    key_id = created.stdout.strip().split("_")[1]
    assert key_id in run(thumbline_bin, env, "keys", "list").stdout
    assert run(thumbline_bin, env, "keys", "revoke", key_id).returncode == 0
    refused = run(thumbline_bin, env, "sql", "--write", "DROP TABLE thumbline.feedback")
    assert refused.returncode == 1 and "write mode also takes INSERT INTO" in refused.stderr


async def test_a_slow_query_is_stopped_at_its_limit_and_never_delays_the_inbox(target: Target):
    slow = " UNION ALL ".join(["SELECT sleep(2) AS s"] * 12)  # ~12 s of sleeping on 2 threads
    feed = f"{target.up.info.gateway_url}/v1/feedback"
    headers = {"Authorization": f"Bearer {target.admin}"}

    async def inbox_latency(http: aiohttp.ClientSession) -> float:
        start = time.monotonic()
        async with http.get(feed, headers=headers, params={"limit": "5"}) as response:
            assert response.status == 200, await response.text()
        return time.monotonic() - start

    async with aiohttp.ClientSession() as http:
        await inbox_latency(http)  # warm
        started = time.monotonic()
        slow_queries = [asyncio.create_task(sql(target, slow)) for _ in range(3)]
        await asyncio.sleep(0.5)
        latencies = []
        while not all(t.done() for t in slow_queries) and time.monotonic() - started < 30:
            latencies.append(await inbox_latency(http))
            await asyncio.sleep(0.2)
        answers = await asyncio.gather(*slow_queries)
    assert latencies and max(latencies) < 1.0, latencies
    for status, body, _ in answers:
        assert status == 400 and body["reason"] == "limit", body
        assert "THUMBLINE_SQL_MAX_SECONDS=3" in body["error"]
    assert time.monotonic() - started < 20  # 3 s each, two at a time, plus a sleep's end


async def test_the_openapi_spec_documents_the_refusals(target: Target):
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{target.up.info.gateway_url}/openapi.json") as response,
    ):
        spec = await response.json()
    answers = spec["paths"]["/v1/sql"]["post"]["responses"]
    for status in ("400", "403"):
        schema = answers[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/SqlError"}
    assert {"error", "reason", "code"} <= set(
        spec["components"]["schemas"]["SqlError"]["properties"]
    )


async def test_generated_sql_over_http_never_leaves_the_database(target: Target):
    """A smaller property run than test_sql_sandbox_fuzz's, through the gateway and the key."""
    where = Places("thumbline", target.canary, target.outside / "written.txt", "host_file")
    before = set(target.outside.iterdir())

    def post(query: str) -> tuple[int, bytes]:
        return http_post(target.sql_url, query, target.admin, timeout=60)

    @seed(20261125)  # the places' names vary per run: derandomize alone would not fix the draws
    @given(query=queries(where))
    # found by this test: a statement's own error was called retriable (a 503)
    @example(query=Generated(
        "SELECT count() FROM thumbline.feedback UNION ALL "
        "SELECT count(), count() FROM thumbline.feedback", ()))  # fmt: skip
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def never_leaves(query: Generated) -> None:
        status, raw = post(query.sql)
        assert target.secret.encode() not in raw, query.sql
        assert status in (200, 400), (query.sql, status, raw)
        if query.escapes:
            assert status == 400, f"{query.sql}: {query.escapes} passed the sandbox"
        assert set(target.outside.iterdir()) == before, query.sql

    await asyncio.to_thread(never_leaves)
