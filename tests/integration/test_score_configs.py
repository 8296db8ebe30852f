"""Score configs in the real chDB store, and applied by a real `thumbline up`."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import unique
from tests.integration.conftest import run, sql_rows, start_up, stop, worker_env
from thumbline import score_configs as store_configs
from thumbline.errors import ConfigError
from thumbline.producers import FeedbackProducer
from thumbline.schemas import FeedbackEvent
from thumbline.schemas.score_configs import ScoreConfig
from thumbline.sqlserver import OwnerClient, SqlServer
from thumbline.stream_jobs.lookups import load_score_configs


@pytest.fixture
def project() -> str:
    return unique("p")


@pytest.fixture(params=["client", "sandbox"])
def sql(request, store, store_settings) -> store_configs.Sql:
    """Both ways the functions reach the store: thumbline's own client, and the SQL sandbox."""
    if request.param == "client":
        return store_configs.client_sql(store)
    return store_configs.sandbox_sql(store_settings)


def stars(project: str, **fields: object) -> ScoreConfig:
    return ScoreConfig.model_validate(
        {"project": project, "name": "stars", "kind": "rating", "range": (1.0, 5.0), **fields}
    )


def test_a_put_stores_a_new_version_only_when_the_definition_changed(sql, store_settings, project):
    db = store_settings.clickhouse_database
    first, added = store_configs.put_config(sql, db, stars(project, bad_at_most=2.0))
    assert (first.version, added) == (1, True)
    same, added = store_configs.put_config(sql, db, stars(project, bad_at_most=2.0))
    assert (same.version, added) == (1, False)
    second, added = store_configs.put_config(sql, db, stars(project, bad_at_most=1.0))
    assert (second.version, added) == (2, True)

    listed = store_configs.list_configs(sql, db, project=project)
    assert [(c.name, c.version, c.config.bad_at_most) for c in listed] == [("stars", 2, 1.0)]
    history = store_configs.list_configs(sql, db, project=project, history=True)
    assert [(c.version, c.config.bad_at_most) for c in history] == [(1, 2.0), (2, 1.0)]


def test_a_delete_is_a_tombstone_version_and_history_keeps_every_version(
    sql, store_settings, project
):
    db = store_settings.clickhouse_database
    store_configs.put_config(sql, db, stars(project))
    assert store_configs.delete_config(sql, db, project, "stars") == 2
    assert store_configs.delete_config(sql, db, project, "stars") is None  # nothing in force
    assert store_configs.list_configs(sql, db, project=project) == []
    history = store_configs.list_configs(sql, db, project=project, history=True)
    assert [(c.version, c.config is None) for c in history] == [(1, False), (2, True)]
    again, added = store_configs.put_config(sql, db, stars(project))
    assert (again.version, added) == (3, True)  # numbers are never reused


def test_the_join_reads_the_latest_version_of_each_config_in_force(store, store_settings, project):
    db = store_settings.clickhouse_database
    sql = store_configs.client_sql(store)
    store_configs.put_config(sql, db, stars(project, bad_at_most=2.0))
    store_configs.put_config(sql, db, stars(project, bad_at_most=1.5))
    issue = ScoreConfig(project=project, name="issue", kind="category", categories={"x": "bad"})
    store_configs.put_config(sql, db, issue)
    store_configs.delete_config(sql, db, project, "issue")
    mine = [c for c in load_score_configs(store, db) if c.project == project]
    assert [(c.name, c.version, c.bad_at_most) for c in mine] == [("stars", 2, 1.5)]


def test_a_join_helper_reads_the_configs_through_the_stores_owner(store, store_settings, project):
    """A join helper process cannot open the owner's chDB path: it asks the owner."""
    db = store_settings.clickhouse_database
    store_configs.put_config(store_configs.client_sql(store), db, stars(project))
    server = SqlServer(store_settings, writer=store).start()
    try:
        helper = OwnerClient(server.url, server.token)
        mine = [c for c in load_score_configs(helper, db) if c.project == project]
        helper.close()
    finally:
        server.stop()
    assert [(c.name, c.version) for c in mine] == [("stars", 1)]


def test_a_file_is_read_as_toml_or_json_and_a_bad_one_says_which_config(tmp_path: Path):
    toml = tmp_path / "scores.toml"
    toml.write_text(
        '[[score]]\nname = "stars"\nkind = "rating"\nrange = [1, 5]\nbad_at_most = 2\n\n'
        '[[score]]\nname = "issue"\nkind = "category"\ncategories = { hallucination = "bad" }\n'
    )
    configs = store_configs.load_file(toml)
    assert [(c.name, c.kind, c.thresholds if c.range else None) for c in configs] == [
        ("stars", "rating", (2.0, 4.0)),
        ("issue", "category", None),
    ]
    as_json = tmp_path / "scores.json"
    as_json.write_text(orjson.dumps([{"name": "stars", "kind": "rating"}]).decode())
    assert store_configs.load_file(as_json)[0].range is None
    toml.write_text('[[score]]\nname = "stars"\nkind = "rating"\nrange = [5, 1]\n')
    with pytest.raises(ConfigError, match=r"score #1 \(stars\): .*low < high"):
        store_configs.load_file(toml)


# Through `thumbline up` -------------------------------------------------------------


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def post(url: str, body: object, method: str = "POST", key: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, orjson.dumps(body), headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 (loopback)
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_up_applies_score_configs_on_every_path_and_a_new_version_to_new_rows_only(
    broker, clean_env, thumbline_bin, tmp_path
):
    scores = tmp_path / "scores.toml"
    scores.write_text(
        '[[score]]\nname = "stars"\nkind = "rating"\nrange = [1, 5]\nbad_at_most = 2\n'
    )
    env = await worker_env(
        broker, clean_env, tmp_path, "scores",
        THUMBLINE_SCORE_CONFIGS=str(scores), THUMBLINE_SCORE_CONFIGS_SECONDS="0.5",
        THUMBLINE_RATE_WINDOW_SECONDS="2", THUMBLINE_RATE_SLIDING_SECONDS="",
        THUMBLINE_RATE_LATENESS_SECONDS="1",
    )  # fmt: skip
    up = start_up(thumbline_bin, env, tmp_path / "data", log=tmp_path / "up.log")
    try:
        listed = run(thumbline_bin, env, "scores", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        [config] = orjson.loads(listed.stdout)
        assert (config["name"], config["version"], config["bad_at_most"]) == ("stars", 1, 2.0)

        prefix = env["THUMBLINE_TOPIC_PREFIX"]
        async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
            await fb.trace(trace_id="t-stars", model="m1", name="answer")
            await fb.send(FeedbackEvent(event_id="kafka-1", trace_id="t-stars", name="stars",
                                        kind="score", value=1.0))  # fmt: skip
            await fb.send(FeedbackEvent(event_id="kafka-7", trace_id="t-stars", name="stars",
                                        kind="score", range=(0.0, 10.0), value=7.0))  # fmt: skip
        over_http = {"event_id": "http-5", "trace_id": "t-stars", "name": "stars", "value": 5,
                     "label": "bad"}  # fmt: skip
        assert post(f"{up.info.gateway_url}/v1/feedback", over_http) == 202

        def rows() -> list[dict]:
            return sql_rows(thumbline_bin, env,
                "SELECT event_id, kind, label, score, score_config_version FROM "
                "thumbline.feedback FINAL WHERE name = 'stars' AND join_status != 'pending' "
                "ORDER BY event_id")  # fmt: skip

        stored = wait_for(lambda: len(r := rows()) == 2 and r, "the two stars rows")
        assert stored == [
            {"event_id": "http-5", "kind": "rating", "label": "good", "score": 1,
             "score_config_version": 1},
            {"event_id": "kafka-1", "kind": "rating", "label": "bad", "score": 0,
             "score_config_version": 1},
        ]  # fmt: skip
        dead = wait_for(
            lambda: sql_rows(thumbline_bin, env,
                "SELECT reason, error FROM thumbline.dead_letters WHERE reason = 'score_config'"),
            "the dead letter of 7 stars",
        )  # fmt: skip
        assert "stars is configured as a rating 1..5" in dead[0]["error"]  # type: ignore[index]
        assert "7 is outside it" in dead[0]["error"]  # type: ignore[index]

        # A second version: a 3 is now good; the rows stored before keep version 1.
        changed = run(thumbline_bin, env, "scores", "set", "stars", "--kind", "rating",
                      "--range", "1", "5", "--bad-at-most", "1",
                      "--good-at-least", "3")  # fmt: skip
        assert changed.returncode == 0, changed.stderr
        assert "version 2" in changed.stdout
        # The join reads the configs every 0.5 s here: the same event is sent again (its
        # newer copy replaces the older) until one was taken under version 2.
        deadline = time.monotonic() + 60
        async with FeedbackProducer(bootstrap_servers=broker.bootstrap, topic_prefix=prefix) as fb:
            while True:
                await fb.send(FeedbackEvent(event_id="kafka-3", trace_id="t-stars",
                                            name="stars", value=3.0))  # fmt: skip
                stored = await asyncio.to_thread(rows)
                if len(stored) == 3 and stored[2]["score_config_version"] == 2:
                    break
                assert time.monotonic() < deadline, f"no row under version 2: {stored}"
                await asyncio.sleep(0.5)
        assert [(r["event_id"], r["label"], r["score_config_version"]) for r in stored] == [
            ("http-5", "good", 1), ("kafka-1", "bad", 1), ("kafka-3", "good", 2),
        ]  # fmt: skip

        # The rate windows count the labels the configs gave.
        def counted() -> dict:
            found = sql_rows(thumbline_bin, env,
                "SELECT sum(good) AS good, sum(bad) AS bad FROM thumbline.feedback_rates FINAL "
                "WHERE window_seconds = 2 AND model = 'm1'")  # fmt: skip
            return found[0] if found and int(found[0]["good"]) == 2 else {}

        totals = wait_for(counted, "the rate windows of the stars")
        assert (int(totals["good"]), int(totals["bad"])) == (2, 1)  # type: ignore[index]
    finally:
        stop(up)


async def call(method: str, url: str, key: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None if body is None else body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession() as http:
        async with http.request(method, url, data=data, headers=headers) as answer:
            return answer.status, await answer.json()


async def test_the_http_routes_let_admin_keys_change_configs_and_read_keys_see_their_project(
    broker, clean_env, thumbline_bin, tmp_path
):
    env = await worker_env(broker, clean_env, tmp_path, "scorehttp")
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp_path / "data")
    try:

        def create(scope: str, project: str) -> str:
            result = run(thumbline_bin, env, "keys", "create", "--scope", scope,
                         *(["--project", project] if project else []))  # fmt: skip
            assert result.returncode == 0, result.stderr
            return result.stdout.strip()

        admin, read_a, read_b, ingest_a = (
            create("admin", ""), create("read", "a"), create("read", "b"), create("ingest", "a")
        )  # fmt: skip
        url = f"{up.info.gateway_url}/v1/score-configs"
        stars = {"kind": "rating", "range": [1, 5], "bad_at_most": 2}

        status, body = await call("PUT", f"{url}/stars?project=a", admin, stars)
        assert (status, body["config"]["version"], body["changed"]) == (200, 1, True)
        status, body = await call("PUT", f"{url}/stars?project=a", admin, stars)
        assert (status, body["config"]["version"], body["changed"]) == (200, 1, False)

        status, listed = await call("GET", url, read_a)
        assert status == 200
        assert [(c["project"], c["name"], c["version"]) for c in listed] == [("a", "stars", 1)]
        assert await call("GET", url, read_b) == (200, [])
        status, body = await call("GET", f"{url}?project=a", read_b)
        assert status == 403 and "only project 'b'" in body["error"]

        for key in (read_a, ingest_a):
            status, body = await call("PUT", f"{url}/stars?project=a", key, stars)
            assert status == 403 and "cannot admin" in body["error"]
        status, body = await call("PUT", f"{url}/stars", None, stars)
        assert status == 401

        status, body = await call(
            "PUT", f"{url}/stars?project=a", admin, {**stars, "range": [5, 1]}
        )
        assert status == 422 and "low < high" in body["error"]
        too_big = {**stars, "description": "x" * 70_000}
        status, body = await call("PUT", f"{url}/stars?project=a", admin, too_big)
        assert status == 413 and "at most" in body["error"]

        status, body = await call("DELETE", f"{url}/stars?project=a", admin)
        assert (status, body["version"]) == (200, 2)
        status, body = await call("DELETE", f"{url}/stars?project=a", admin)
        assert status == 404 and "no score config 'stars' in project 'a'" in body["error"]
        status, history = await call("GET", f"{url}?history=true", read_a)
        assert [(c["version"], c["deleted"]) for c in history] == [(1, False), (2, True)]
    finally:
        await asyncio.to_thread(stop, up)


def test_the_cli_applies_a_file_lists_and_deletes_configs_on_a_store_nobody_runs(
    thumbline_bin, clean_env, tmp_path
):
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data")}
    assert run(thumbline_bin, env, "migrate").returncode == 0
    scores = tmp_path / "scores.toml"
    scores.write_text(
        '[[score]]\nname = "stars"\nkind = "rating"\n\n'
        '[[score]]\nname = "issue"\nkind = "category"\nproject = "shop"\n'
        'categories = { hallucination = "bad", helpful = "good" }\n'
    )
    applied = run(thumbline_bin, env, "scores", "apply", str(scores))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == ["stars (default): new version 1",
                                           "issue (shop): new version 1"]  # fmt: skip
    again = run(thumbline_bin, env, "scores", "apply", str(scores))
    assert "stars (default): unchanged, version 1" in again.stdout

    listed = run(thumbline_bin, {**env, "COLUMNS": "200"}, "scores", "list")
    assert "a rating 1..5 (bad at most 2, good at least 4)" in listed.stdout
    assert "a category of hallucination=bad, helpful=good" in listed.stdout

    deleted = run(thumbline_bin, env, "scores", "delete", "issue", "--project", "shop")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "deleted issue (shop) as version 2")
    gone_again = run(thumbline_bin, env, "scores", "delete", "issue", "--project", "shop")
    assert gone_again.returncode == 1
    assert "no score config 'issue' in project 'shop'" in gone_again.stderr
    history = orjson.loads(run(thumbline_bin, env, "scores", "list", "--history", "--json").stdout)
    assert [(c["name"], c["version"], c["deleted"]) for c in history] == [
        ("stars", 1, False), ("issue", 1, False), ("issue", 2, True),
    ]  # fmt: skip

    bad = run(thumbline_bin, env, "scores", "set", "issue", "--kind", "category",
              "--category", "hallucination")  # fmt: skip
    assert bad.returncode == 2 and "--category takes CATEGORY=LABEL" in bad.stderr
    bad = run(thumbline_bin, env, "scores", "set", "stars", "--kind", "rating",
              "--range", "1", "5", "--bad-at-most", "4", "--good-at-least", "3")  # fmt: skip
    assert bad.returncode == 2 and "must be below good_at_least" in bad.stderr
    assert "nothing was stored" in bad.stderr


def test_up_refuses_a_bad_score_config_file_before_it_starts_anything(
    thumbline_bin, clean_env, tmp_path
):
    scores = tmp_path / "scores.toml"
    scores.write_text('[[score]]\nname = "stars"\nkind = "rating"\nrange = [5, 1]\n')
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(tmp_path / "data"),
           "THUMBLINE_SCORE_CONFIGS": str(scores)}  # fmt: skip
    result = run(thumbline_bin, env, "up")
    assert result.returncode == 2
    assert f"{scores}: score #1 (stars): " in result.stderr.replace("\n", "")
    assert not (tmp_path / "data" / "broker.log").exists()
