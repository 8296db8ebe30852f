"""The web pages' reads over a real gateway and chDB: who am I, rates over time, alerts.

The gateway runs in this process on the session broker, over a database of its
own on the session's chDB path; the rate windows and alerts are inserted
straight into ``feedback_rates`` and ``alerts`` (what the stream jobs write),
so each answer is checked against rows the test knows.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import unique
from thumbline.kafka import ensure_topics
from thumbline.keys import create_key
from thumbline.metrics import Metrics
from thumbline.schemas import Topics
from thumbline.server.gateway import GatewayProcess
from thumbline.settings import load_settings
from thumbline.store import apply_migrations

#: Whole minutes, so that every window start is one a 60 s window has.
NOW = datetime.now(UTC).replace(second=0, microsecond=0)  # set again when the module runs
MINUTE = timedelta(minutes=1)


@dataclass
class Gateway:
    url: str
    database: str
    keys: dict[str, str]

    async def get(self, path: str, key: str | None = None, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with aiohttp.ClientSession() as http, http.get(
            self.url + path, params=params, headers=headers
        ) as r:  # fmt: skip
            return r.status, await r.json()


async def serving(broker, store, store_settings, name: str, **keys: tuple[str, str]):
    """A gateway over a fresh database with ``keys`` (name: (scope, project)) made first."""
    database = unique(name)
    await asyncio.to_thread(apply_migrations, store, database)
    prefix = f"{unique(name)}."
    settings = load_settings(
        data_dir=store_settings.data_dir, clickhouse_database=database, topic_prefix=prefix,
        partitions=4, gateway_port=0,
    )  # fmt: skip
    await ensure_topics(broker.bootstrap, Topics.build(prefix, 4).all())
    made = {
        name: await asyncio.to_thread(create_key, settings, scope=scope, project=project)  # type: ignore[arg-type]
        for name, (scope, project) in keys.items()
    }
    gateway = GatewayProcess(settings, broker.bootstrap, Metrics(CollectorRegistry()))
    try:
        await gateway.start()
        yield Gateway(gateway.url, database, made)
    finally:
        await gateway.stop()
        store.command(f"DROP DATABASE IF EXISTS {database}")


@pytest.fixture(scope="module", autouse=True)
def now_when_the_module_runs() -> None:
    """Whole minutes from when these tests run, not from when the suite was collected: the
    gateway's ranges (since=3h) end at its own clock, and a suite reaches this module many
    minutes after collecting it."""
    global NOW
    NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture(scope="module")
async def open_gateway(broker, store, store_settings) -> AsyncIterator[Gateway]:
    """No key exists: a loopback gateway answers without one."""
    async for gateway in serving(broker, store, store_settings, "charts_open"):
        yield gateway


@pytest.fixture(scope="module")
async def gateway(broker, store, store_settings) -> AsyncIterator[Gateway]:
    """Read keys of projects a and b, an ingest key of a and an admin key; the windows and
    alerts of :func:`insert_rates` and :func:`insert_alerts`."""
    async for gw in serving(broker, store, store_settings, "charts", read_a=("read", "a"),
                            read_b=("read", "b"), ingest_a=("ingest", "a"),
                            admin=("admin", "")):  # fmt: skip
        insert_rates(store, gw.database)
        insert_alerts(store, gw.database)
        yield gw


RATE_COLUMNS = ("project", "environment", "model", "capability", "window_seconds",
                "window_start", "window_end", "good", "bad", "neutral", "total", "implicit",
                "bad_rate", "version")  # fmt: skip


def rate_row(project: str, model: str, capability: str, start: datetime, total: int, bad: int,
             *, window: int = 60, implicit: int = 0, version: int = 1) -> list[Any]:  # fmt: skip
    end = start + timedelta(seconds=window)
    rate = bad / total if total else 0.0
    return [project, "prod", model, capability, window, start, end, total - bad, bad, 0, total,
            implicit, rate, version]  # fmt: skip


def insert_rates(store, database: str) -> None:
    """Project a: models m1 (10 a minute, 1 bad) and m2 (4 a minute, every 4th minute all
    bad) over the last three hours, capability c1 for both; an old version of m1's newest
    window (FINAL keeps the newer); a window with implicit feedback only. Project b: model
    b-model over the same hours."""
    rows = []
    for i in range(180):
        start = NOW - (180 - i) * MINUTE
        rows.append(rate_row("a", "m1", "*", start, 10, 1))
        rows.append(rate_row("a", "m2", "*", start, 4, 4 if i % 4 == 0 else 0))
        rows.append(rate_row("a", "*", "c1", start, 14, 5 if i % 4 == 0 else 1))
        rows.append(rate_row("b", "b-model", "*", start, 7, 7))
        rows.append(rate_row("b", "*", "b-cap", start, 7, 7))
    rows.append(rate_row("a", "m1", "*", NOW - MINUTE, 10, 9, version=0))  # replaced
    rows.append(rate_row("a", "m3", "*", NOW - 5 * MINUTE, 0, 0, implicit=2))
    rows.append(rate_row("a", "m4", "*", NOW - 5 * MINUTE, 0, 0))  # nothing: not a point
    for i in range(5, 65):  # as the stream writes them: a 5-minute window ends every minute
        rows.append(rate_row("a", "m1", "*", NOW - i * MINUTE, 50, 5, window=300))
    store.insert(f"{database}.feedback_rates", rows, column_names=RATE_COLUMNS)


ALERT_COLUMNS = ("alert_id", "rule", "state", "project", "environment", "model", "capability",
                 "window_seconds", "window_start", "window_end", "bad_rate", "baseline_rate",
                 "bad", "total", "sample_trace_ids", "sample_comments", "inbox_command", "at",
                 "version")  # fmt: skip


def alert_row(
    alert_id: str, state: str, project: str, model: str, capability: str, start: datetime,
    at: datetime, rate: float, samples: list[str],
) -> list[Any]:  # fmt: skip
    return [alert_id, "bad-rate-spike", state, project, "prod", model, capability, 300, start,
            start + 5 * MINUTE, rate, 0.1, int(rate * 40), 40, samples,
            [f"comment on {s}" for s in samples], "thumbline inbox --label bad", at,
            int(at.timestamp() * 1000)]  # fmt: skip


def insert_alerts(store, database: str) -> None:
    """Project a: m2 fired 2 h ago and resolved 1 h ago; c1 fired 20 min ago and still fires;
    m1 fired and resolved 3 days ago. Project b: b-model fires."""
    two_hours = NOW - 120 * MINUTE
    rows = [
        alert_row("a-m2", "firing", "a", "m2", "*", two_hours, two_hours + 5 * MINUTE, 0.9,
                  ["t-spike-1", "t-spike-2"]),
        # resolved 2 minutes after its window ended (the stream completes a window late)
        alert_row("a-m2", "resolved", "a", "m2", "*", NOW - 65 * MINUTE, NOW - 58 * MINUTE, 0.1,
                  ["t-calm"]),
        alert_row("a-c1", "firing", "a", "*", "c1", NOW - 20 * MINUTE, NOW - 15 * MINUTE, 0.4,
                  ["t-c1"]),
        alert_row("a-old", "firing", "a", "m1", "*", NOW - timedelta(days=3),
                  NOW - timedelta(days=3) + 5 * MINUTE, 0.5, ["t-old"]),
        alert_row("a-old", "resolved", "a", "m1", "*", NOW - timedelta(days=3) + 30 * MINUTE,
                  NOW - timedelta(days=3) + 35 * MINUTE, 0.1, []),
        alert_row("b-1", "firing", "b", "b-model", "*", NOW - 30 * MINUTE, NOW - 25 * MINUTE,
                  1.0, ["t-b"]),
    ]  # fmt: skip
    store.insert(f"{database}.alerts", rows, column_names=ALERT_COLUMNS)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# who am I ---------------------------------------------------------------------------


async def test_whoami_says_open_on_a_loopback_gateway_without_keys(open_gateway):
    assert await open_gateway.get("/v1/whoami") == (
        200, {"open": True, "project": None, "scope": None, "name": None},
    )  # fmt: skip


async def test_whoami_names_the_keys_project_and_scope_and_never_the_key(gateway):
    status, me = await gateway.get("/v1/whoami", gateway.keys["read_a"])
    assert (status, me) == (200, {"open": False, "project": "a", "scope": "read", "name": None})
    status, me = await gateway.get("/v1/whoami", gateway.keys["admin"])
    assert (status, me) == (200, {"open": False, "project": None, "scope": "admin", "name": None})
    secret = gateway.keys["read_a"].rsplit("_", 1)[1]
    assert secret not in orjson.dumps(me).decode()


async def test_whoami_refuses_no_key_and_an_ingest_key_once_keys_exist(gateway):
    assert (await gateway.get("/v1/whoami"))[0] == 401
    status, body = await gateway.get("/v1/whoami", gateway.keys["ingest_a"])
    assert status == 403 and "cannot read" in body["error"]


# rates ------------------------------------------------------------------------------


async def test_rates_per_model_come_as_columns_oldest_first_with_the_alerts_over_them(gateway):
    status, body = await gateway.get("/v1/rates", gateway.keys["read_a"], since="3h")
    assert status == 200, body
    assert (body["window_seconds"], body["by"], body["more_series"]) == (60, "model", 0)
    assert body["to"] >= iso(NOW) and body["from"] >= iso(NOW - 180 * MINUTE - MINUTE)
    series = {s["model"]: s for s in body["series"]}
    assert list(series) == ["m1", "m2", "m3"]  # the largest total first; m4 has no point
    m1 = series["m1"]
    assert (m1["project"], m1["environment"], m1["capability"]) == ("a", "prod", "*")
    starts = [int((NOW - (180 - i) * MINUTE).timestamp()) for i in range(180)]
    assert m1["t"][-179:] == starts[1:] and m1["t"] == sorted(m1["t"])
    assert set(m1["total"]) == {10} and set(m1["bad"]) == {1}  # FINAL: the newer version
    assert set(m1["bad_rate"]) == {0.1}
    m2 = series["m2"]
    assert dict(zip(m2["t"], m2["bad"], strict=True)) == {
        t: 4 if i % 4 == 0 else 0 for i, t in enumerate(starts) if t in m2["t"]
    }
    assert series["m3"]["total"] == [0]  # implicit feedback only: a point, total 0
    assert {a["alert_id"] for a in body["alerts"]} == {"a-m2"}  # per model, in these 3 h
    [m2_alert] = body["alerts"]
    assert m2_alert == {
        "alert_id": "a-m2", "state": "resolved", "project": "a", "environment": "prod",
        "model": "m2", "capability": "*", "window_seconds": 300,
        "onset": iso(NOW - 120 * MINUTE), "until": iso(NOW - 60 * MINUTE),  # in event time
        "bad_rate": 0.9, "baseline_rate": 0.1,  # what fired it
    }  # fmt: skip


async def test_rates_per_capability_and_a_firing_alert_has_no_end(gateway):
    status, body = await gateway.get(
        "/v1/rates", gateway.keys["read_a"], by="capability", window=60,
        **{"from": iso(NOW - 30 * MINUTE), "to": iso(NOW)},
    )  # fmt: skip
    assert status == 200, body
    [c1] = body["series"]
    assert (c1["model"], c1["capability"], len(c1["t"])) == ("*", "c1", 30)
    assert [(a["alert_id"], a["state"], a["until"]) for a in body["alerts"]] == [
        ("a-c1", "firing", None)
    ]


async def test_a_sliding_window_charts_back_to_back_windows_and_filters_narrow_the_series(
    gateway,
):
    """A 5-minute window ends with every minute: the chart takes those that start on a
    multiple of 5 minutes, so a point is 5 minutes of feedback and no minute counts twice."""
    status, body = await gateway.get("/v1/rates", gateway.keys["read_a"], window=300,
                                     model="m1", environment="prod")  # fmt: skip
    assert status == 200, body
    [m1] = body["series"]
    starts = sorted(int((NOW - i * MINUTE).timestamp()) for i in range(5, 65))
    assert m1["t"] == [t for t in starts if t % 300 == 0] and len(m1["t"]) == 12
    assert set(m1["total"]) == {50} and m1["model"] == "m1"
    status, body = await gateway.get("/v1/rates", gateway.keys["read_a"], environment="staging")
    assert (status, body["series"], body["alerts"]) == (200, [], [])


async def test_a_range_beyond_what_the_store_holds_is_empty_not_an_error(gateway):
    for path in ("/v1/rates", "/v1/alerts"):
        status, body = await gateway.get(path, gateway.keys["read_a"], to="0456-08-22T08:53:11Z")
        assert status == 200, body
        assert body == [] if path == "/v1/alerts" else body["series"] == []
    status, body = await gateway.get("/v1/alerts", gateway.keys["read_a"], since="99999999999d")
    assert status == 422 and "since" in body["error"], body


async def test_at_most_fifty_series_the_largest_first_and_the_rest_counted(gateway, store):
    rows = [rate_row("many", f"m{n:02d}", "*", NOW - 2 * MINUTE, n + 1, 0) for n in range(55)]
    store.insert(f"{gateway.database}.feedback_rates", rows, column_names=RATE_COLUMNS)
    status, body = await gateway.get("/v1/rates", gateway.keys["admin"], project="many")
    assert status == 200, body
    assert [s["model"] for s in body["series"]] == [f"m{n:02d}" for n in range(54, 4, -1)]
    assert body["more_series"] == 5


async def test_seven_days_of_minute_windows_for_five_models_is_a_few_hundred_kb(gateway, store):
    """What the rates page asks for its widest default view; the browser sends Accept-Encoding:
    gzip, and the answer comes compressed."""
    rows = [
        rate_row("week", f"model-{m}", "*", NOW - (i + 1) * MINUTE, 120 + i % 7, i % 5)
        for m in range(5) for i in range(7 * 24 * 60)
    ]  # fmt: skip
    store.insert(f"{gateway.database}.feedback_rates", rows, column_names=RATE_COLUMNS)
    headers = {"Authorization": f"Bearer {gateway.keys['admin']}", "Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession(auto_decompress=False) as http, http.get(
        f"{gateway.url}/v1/rates", params={"project": "week", "since": "8d"}, headers=headers
    ) as r:  # fmt: skip
        assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
        wire = await r.read()
    assert len(wire) < 400_000, f"{len(wire):,} bytes"
    body = orjson.loads(gzip.decompress(wire))
    assert [len(s["t"]) for s in body["series"]] == [7 * 24 * 60] * 5


@pytest.mark.parametrize(("params", "message"), [
    ({"since": "15d"}, "use window=300 or a shorter range"),
    ({"window": 61}, "window takes 60, 300 or 3600 (seconds), not 61"),
    ({"by": "user"}, "by: Input should be 'model' or 'capability'"),
    ({"model": "m" * 513}, "model"),
    ({"since": "7 parsecs"}, "--since takes a number and a unit"),
    ({"since": "1h", "from": "2026-11-01T00:00:00Z"}, "give since, or from and to, not both"),
    ({"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "from must be before to"),
])  # fmt: skip
async def test_rates_refuse_what_a_chart_cannot_take_naming_the_fix(gateway, params, message):
    status, body = await gateway.get("/v1/rates", gateway.keys["read_a"], **params)
    assert status == 422 and message in body["error"], body


# alerts -----------------------------------------------------------------------------


async def test_alerts_are_episodes_newest_first_with_their_latest_state_and_samples(gateway):
    status, alerts = await gateway.get("/v1/alerts", gateway.keys["read_a"])
    assert status == 200, alerts
    assert [a["alert_id"] for a in alerts] == ["a-c1", "a-m2", "a-old"]
    c1, m2, _ = alerts
    assert (c1["state"], c1["resolved_at"], c1["fired_at"]) == (
        "firing", None, iso(NOW - 15 * MINUTE),
    )  # fmt: skip
    assert m2 == {
        "alert_id": "a-m2", "rule": "bad-rate-spike", "state": "resolved", "project": "a",
        "environment": "prod", "model": "m2", "capability": "*", "window_seconds": 300,
        "onset": iso(NOW - 120 * MINUTE), "window_end": iso(NOW - 60 * MINUTE),
        "fired_at": iso(NOW - 115 * MINUTE), "resolved_at": iso(NOW - 58 * MINUTE),
        "last_at": iso(NOW - 58 * MINUTE), "bad_rate": 0.9, "baseline_rate": 0.1, "bad": 36,
        "total": 40, "sample_trace_ids": ["t-spike-1", "t-spike-2"],
        "sample_comments": ["comment on t-spike-1", "comment on t-spike-2"],
    }  # fmt: skip


async def test_alerts_filter_by_state_model_and_time(gateway):
    key = gateway.keys["read_a"]
    firing = await gateway.get("/v1/alerts", key, state="firing")
    assert [a["alert_id"] for a in firing[1]] == ["a-c1"]
    resolved = await gateway.get("/v1/alerts", key, state="resolved", model="m1")
    assert [a["alert_id"] for a in resolved[1]] == ["a-old"]
    recent = await gateway.get("/v1/alerts", key, since="90m")  # a-m2 resolved 60 min ago
    assert [a["alert_id"] for a in recent[1]] == ["a-c1", "a-m2"]
    window = {"from": iso(NOW - timedelta(days=4)), "to": iso(NOW - timedelta(days=2))}
    assert [a["alert_id"] for a in (await gateway.get("/v1/alerts", key, **window))[1]] == ["a-old"]
    assert [a["alert_id"] for a in (await gateway.get("/v1/alerts", key, limit=1))[1]] == ["a-c1"]


@pytest.mark.parametrize(("params", "message"), [
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"state": "pending"}, "state: Input should be 'firing' or 'resolved'"),
    ({"model": "m" * 513}, "model"),
])  # fmt: skip
async def test_alerts_refuse_what_they_cannot_take_naming_it(gateway, params, message):
    status, body = await gateway.get("/v1/alerts", gateway.keys["read_a"], **params)
    assert status == 422 and message in body["error"], body


# tenants: an attacker with project a's read key ---------------------------------------


async def test_a_read_key_of_project_a_never_sees_project_bs_rates_or_alerts(gateway):
    key = gateway.keys["read_a"]
    for path, params in (("/v1/rates", {}), ("/v1/rates", {"by": "capability"}),
                         ("/v1/rates", {"model": "b-model"}), ("/v1/alerts", {}),
                         ("/v1/alerts", {"model": "b-model"})):  # fmt: skip
        status, body = await gateway.get(path, key, **params)
        assert status == 200, body
        text = orjson.dumps(body).decode()
        assert "b-model" not in text and "b-cap" not in text and '"b"' not in text, path
    for path in ("/v1/rates", "/v1/alerts"):
        status, body = await gateway.get(path, key, project="b")
        assert status == 403 and "reads only project 'a'" in body["error"]
    status, body = await gateway.get("/v1/rates", gateway.keys["read_b"])
    assert {s["project"] for s in body["series"]} == {"b"}
    status, body = await gateway.get("/v1/alerts", gateway.keys["read_b"])
    assert [a["alert_id"] for a in body] == ["b-1"]


async def test_rates_and_alerts_want_a_read_key_once_keys_exist(gateway):
    for path in ("/v1/rates", "/v1/alerts"):
        assert (await gateway.get(path))[0] == 401
        assert (await gateway.get(path, gateway.keys["ingest_a"]))[0] == 403


FEEDBACK_COLUMNS = (
    "project", "event_id", "trace_id", "environment", "model", "capability", "label", "source",
    "annotator", "retracted", "join_status", "ts", "version",
)  # fmt: skip


@pytest.fixture(scope="module")
async def open_minutes(broker, store, store_settings) -> AsyncIterator[Gateway]:
    """Project a's m1: windows written until two minutes ago, and stored feedback in the
    last two minutes that no window holds yet (the stream completes a minute after it ends)."""
    async for gw in serving(broker, store, store_settings, "charts_openwin",
                            read_a=("read", "a")):  # fmt: skip
        store.insert(f"{gw.database}.feedback_rates",
                     [rate_row("a", "m1", "*", NOW - (3 - i) * MINUTE, 10, 1) for i in range(2)],
                     column_names=RATE_COLUMNS)  # fmt: skip
        last, this = NOW - MINUTE, NOW
        rows = [
            *[("a", f"e{i}", f"t{i}", "prod", "m1", "c1", "bad" if i < 3 else "good",
               "explicit", "end_user", 0, "joined", last + timedelta(seconds=i), 1)
              for i in range(5)],  # 3 bad of 5
            ("a", "judge", "t0", "prod", "m1", "c1", "bad", "explicit", "evaluator", 0, "joined",
             last, 1),  # a judge's: the rates do not count it
            ("a", "copied", "t0", "prod", "m1", "c1", "", "implicit", "end_user", 0, "joined",
             last, 1),  # implicit: not in total
            ("a", "waits", "t9", "prod", "", "", "bad", "explicit", "end_user", 0, "pending",
             last, 1),  # waiting for its trace: no dimensions yet
            ("a", "now-1", "t5", "prod", "m1", "c1", "bad", "explicit", "end_user", 0, "joined",
             this, 1),  # the minute that is open now: 1 bad of 1
            ("b", "b-1", "tb", "prod", "m1", "c1", "bad", "explicit", "end_user", 0, "joined",
             last, 1),  # another project's
        ]  # fmt: skip
        store.insert(f"{gw.database}.feedback", rows, column_names=FEEDBACK_COLUMNS)
        yield gw


async def test_the_minutes_the_stream_has_not_completed_are_charted_as_counted_so_far(
    open_minutes,
):
    status, body = await open_minutes.get("/v1/rates", open_minutes.keys["read_a"], since="1h")
    assert status == 200, body
    [m1] = body["series"]
    start = int((NOW - 3 * MINUTE).timestamp())
    assert m1["t"] == [start, start + 60, start + 120, start + 180]
    assert (m1["total"], m1["bad"], m1["bad_rate"]) == ([10, 10, 5, 1], [1, 1, 3, 1],
                                                        [0.1, 0.1, 0.6, 1.0])  # fmt: skip
    assert body["open_from"] == start + 120
    status, body = await open_minutes.get("/v1/rates", open_minutes.keys["read_a"], since="1h",
                                          by="capability")  # fmt: skip
    assert [(s["model"], s["capability"], s["total"]) for s in body["series"]] == [
        ("*", "c1", [5, 1])
    ]


async def test_a_sliding_window_chart_has_no_open_minutes(open_minutes):
    status, body = await open_minutes.get("/v1/rates", open_minutes.keys["read_a"], since="1h",
                                          window=300)  # fmt: skip
    assert status == 200, body
    assert body["open_from"] is None and body["series"] == []


async def test_the_inbox_comes_gzipped_to_a_browser_and_plain_to_a_client_that_asks_nothing(
    open_minutes,
):
    """A page of 1,000 rows is 850 KB as JSON: a browser on another machine gets a tenth."""
    url = f"{open_minutes.url}/v1/feedback"
    auth = {"Authorization": f"Bearer {open_minutes.keys['read_a']}"}
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(url, headers={**auth, "Accept-Encoding": "gzip"}) as r:
            assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
            zipped = await r.read()
        async with http.get(url, headers={**auth, "Accept-Encoding": "identity"}) as r:
            assert r.status == 200 and "Content-Encoding" not in r.headers
            plain = await r.read()
    assert orjson.loads(gzip.decompress(zipped)) == orjson.loads(plain)
    assert len(orjson.loads(plain)) == 9  # project a's rows of the fixture
