"""The inbox on a running `thumbline up`: what it lists is what the store holds.

Rows are written into the store (`thumbline sql --write`, through the running
owner) or sent through the gateway; each test has a project of its own. Every
filtered listing is checked against a direct SQL query of the same rows.
"""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import subprocess
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from tests.conftest import unique
from tests.integration.conftest import Up, run, sql_rows, start_up, stop, worker_env
from thumbline.inbox import ANNOTATORS

ZONED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
NAMES, KINDS = ("helpful", "stars", "correctness"), ("thumb", "rating", "score")
STATUSES = ("joined", "orphan", "pending")


@pytest.fixture(scope="module")
async def up(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[Up]:
    tmp = tmp_path_factory.mktemp("inbox")
    env = await worker_env(broker, clean_env, tmp, "inbox")
    running = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    yield running
    stop(running)


def write_rows(thumbline_bin: str, up: Up, project: str, n: int, *, newer: int = 0) -> list[str]:
    """``n`` feedback rows of ``project``, two to a timestamp (ties the order must break),
    the newest ``newer`` seconds ahead of now; their event ids."""
    ids = [f"{project}-{newer}-{i:03d}" for i in range(n)]
    rows = " UNION ALL ".join(
        f"SELECT '{eid}', '{'' if i % 7 == 0 else eid + '-t'}', "
        f"'{('bad', 'good')[i % 2]}', 'said {i}', '{KINDS[i % 3]}', '{NAMES[i % 3]}', "
        f"'{i % 5}', {'NULL' if i % 3 == 0 else (i % 5) / 4}, "
        f"'{'fix ' + str(i) if i % 4 == 0 else ''}', "
        f"'{('tone', 'facts', '')[i % 3]}', ['t{i % 2}', 'all'], 'c{i % 5}', '{project}', "
        f"'{ANNOTATORS[i % 4]}', '{STATUSES[i % 3]}', "
        f"now64(3) + INTERVAL {newer} SECOND - INTERVAL {i // 2} SECOND, now64(3)"
        for i, eid in enumerate(ids)
    )  # fmt: skip
    result = run(thumbline_bin, up.env, "sql", "--write",
        "INSERT INTO thumbline.feedback (event_id, trace_id, label, comment, kind, name, value, "
        "score, correction, category, tags, conversation_id, project, annotator, join_status, "
        f"ts, received_at) {rows}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return ids


async def get(url: str, **params: Any) -> tuple[int, Any, CIMultiDict[str]]:
    """Status, JSON body and headers (their names in any case) of a GET."""
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as r:
        return r.status, await r.json(), CIMultiDict(r.headers)


def direct(thumbline_bin: str, up: Up, project: str, where: str) -> list[str]:
    rows = sql_rows(thumbline_bin, up.env,
        f"SELECT event_id FROM thumbline.feedback FINAL WHERE project = '{project}' "
        f"AND retracted = 0 AND {where} ORDER BY event_id")  # fmt: skip
    assert rows, f"the test's rows have none where {where}: the check would prove nothing"
    return [r["event_id"] for r in rows]


#: A filter (CLI option, API parameter, its value) and the SQL condition it means.
FILTERS = [
    ("name", "stars", "name = 'stars'"),
    ("tag", "t1", "has(tags, 't1')"),
    ("category", "facts", "category = 'facts'"),
    ("annotator", "evaluator", "annotator = 'evaluator'"),
    ("conversation_id", "c3", "conversation_id = 'c3'"),
    ("status", "pending", "join_status = 'pending'"),
    ("status", "orphan", "join_status = 'orphan'"),
    ("kind", "rating", "kind = 'rating'"),
]


async def test_each_filter_lists_the_rows_sql_finds_in_the_cli_and_the_api(up, thumbline_bin):
    project = unique("filters")
    write_rows(thumbline_bin, up, project, 40)
    url = f"{up.info.gateway_url}/v1/feedback"
    for option, value, where in FILTERS:
        expected = direct(thumbline_bin, up, project, where)
        status, rows, _ = await get(url, project=project, limit=1000, **{option: value})
        assert status == 200 and sorted(r["event_id"] for r in rows) == expected, option
        printed = run(thumbline_bin, up.env, "inbox", "--json", "--project", project,
                      f"--{option.replace('_', '-')}", value, "--limit", "1000")  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        lines = [orjson.loads(line) for line in printed.stdout.splitlines()]
        assert sorted(r["event_id"] for r in lines) == expected, option
    # two filters together, and a repeated one (any of its values)
    expected = direct(
        thumbline_bin, up, project, "name IN ('stars', 'helpful') AND has(tags, 't0')"
    )
    status, rows, _ = await get(
        f"{url}?name=stars&name=helpful&tag=t0&limit=1000&project={project}"
    )
    assert sorted(r["event_id"] for r in rows) == expected


async def test_every_row_says_what_was_said_and_every_time_carries_its_zone(up, thumbline_bin):
    project = unique("said")
    [eid] = write_rows(thumbline_bin, up, project, 1)
    status, [row], _ = await get(f"{up.info.gateway_url}/v1/feedback", project=project)
    assert status == 200
    said = {k: row[k] for k in (
        "kind", "name", "value", "score", "correction", "annotator", "label", "comment",
        "category", "tags", "conversation_id",
    )}  # fmt: skip
    assert said == {
        "kind": "thumb", "name": "helpful", "value": "0", "score": None, "correction": "fix 0",
        "annotator": "end_user", "label": "bad", "comment": "said 0", "category": "tone",
        "tags": ["t0", "all"], "conversation_id": "c0",
    }  # fmt: skip
    assert row["trace_id"] == ""  # feedback on a conversation: no trace, still listed
    printed = run(thumbline_bin, up.env, "inbox", "--json", "--project", project)
    [line] = [orjson.loads(text) for text in printed.stdout.splitlines()]
    for listed in (row, line):
        assert ZONED.match(listed["ts"]) and ZONED.match(listed["received_at"]), listed
        assert listed["event_id"] == eid
    table = run(thumbline_bin, {**up.env, "COLUMNS": "200"}, "inbox", "--project", project)
    assert re.search(r"\d\d:\d\dZ ", table.stdout) and "helpful=0" in table.stdout
    local = run(thumbline_bin, {**up.env, "COLUMNS": "200"}, "inbox", "--project", project,
                "--tz", "Asia/Kolkata")  # fmt: skip
    assert re.search(r"\d\d:\d\d\+05:30 ", local.stdout), local.stdout
    # a trace over HTTP: its spans' times and its feedback's
    trace_id = f"{project}-1-001-t"  # the trace of the second of the rows written next
    wrote = run(thumbline_bin, up.env, "sql", "--write",
        "INSERT INTO thumbline.traces (trace_id, span_id, project, start_time, end_time, "
        f"received_at, version) SELECT '{trace_id}', 's1', '{project}', now64(3), now64(3), "
        "now64(3), 1")  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    write_rows(thumbline_bin, up, project, 2, newer=1)
    status, trace, _ = await get(f"{up.info.gateway_url}/v1/traces/{trace_id}")
    assert status == 200 and trace["spans"] and trace["feedback"], trace
    for span in trace["spans"]:
        assert ZONED.match(span["start_time"]) and ZONED.match(span["end_time"]), span
    for feedback in trace["feedback"]:
        assert ZONED.match(feedback["ts"]) and ZONED.match(feedback["received_at"]), feedback


async def test_paging_with_a_cursor_lists_every_row_once_while_newer_rows_arrive(up, thumbline_bin):
    project = unique("pages")
    url = f"{up.info.gateway_url}/v1/feedback"
    written = write_rows(thumbline_bin, up, project, 30)
    status, everything, headers = await get(url, project=project, limit=1000)
    assert status == 200 and "X-Next-Cursor" not in headers  # one page holds them all
    assert sorted(r["event_id"] for r in everything) == sorted(written)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"project": project, "limit": 7, **({"cursor": cursor} if cursor else {})}
        status, rows, headers = await get(url, **params)
        assert status == 200 and len(rows) <= 7
        seen += [r["event_id"] for r in rows]
        pages += 1
        write_rows(thumbline_bin, up, project, 2, newer=pages)  # newer rows meanwhile
        cursor = headers.get("X-Next-Cursor")
        if cursor is None:
            break
        assert 'rel="next"' in headers["Link"] and "cursor=" in headers["Link"]
    assert pages == 5 and len(seen) == len(set(seen))  # 30 rows in pages of 7, none twice
    assert seen == [r["event_id"] for r in everything]  # in the listing's order, none skipped


@pytest.mark.parametrize("cursor", [
    "' OR 1=1 --", "eyJ2IjoxfQ", "bm90IGpzb24",  # SQL; {"v":1}; "not json"
    # a well-formed position whose time is SQL
    "eyJ2IjoxLCJ0cyI6Im5vdygpIiwicCI6IngiLCJlIjoieCJ9",
])  # fmt: skip
async def test_a_forged_or_malformed_cursor_is_a_422_that_says_where_cursors_come_from(up, cursor):
    status, body, _ = await get(f"{up.info.gateway_url}/v1/feedback", cursor=cursor)
    assert status == 422 and "cursor is not one the inbox gave" in str(body)


@pytest.mark.parametrize(("params", "says"), [
    ({"annotator": "judge"}, "--annotator takes end_user"),
    ({"status": "waiting"}, "--status takes joined, orphan, corrected or pending"),
    ({"name": "n" * 600}, "512"),
])  # fmt: skip
async def test_an_unknown_annotator_or_status_or_an_overlong_value_is_a_422(up, params, says):
    status, body, _ = await get(f"{up.info.gateway_url}/v1/feedback", **params)
    assert status == 422 and says in str(body)


def read_lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)


async def test_follow_prints_each_row_sent_after_it_started_once_until_ctrl_c(up, thumbline_bin):
    project = unique("follow")
    base = up.info.gateway_url
    write_rows(thumbline_bin, up, project, 3)  # stored before: never printed
    follower = await asyncio.to_thread(
        subprocess.Popen, [thumbline_bin, "inbox", "--follow", "--json", "--project", project],
        env=up.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(follower.stdout, lines), daemon=True)
    reader.start()
    printed: list[dict] = []
    sent: list[str] = []

    async def send(i: int) -> None:
        eid = f"{project}-sent-{i}"
        body = orjson.dumps({"event_id": eid, "trace_id": f"{project}-t", "label": "bad",
                             "project": project, "comment": f"late {i}"})  # fmt: skip
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{base}/v1/feedback", data=body) as r,
        ):
            assert r.status == 202
        sent.append(eid)

    def drain(wait: float) -> None:
        try:
            printed.append(orjson.loads(lines.get(timeout=wait)))
            while True:
                printed.append(orjson.loads(lines.get_nowait()))
        except queue.Empty:
            pass

    try:
        # The follower starts quietly: send until it prints one (what it printed first and all
        # sent after must each be printed once), then three more.
        for i in range(60):
            await send(i)
            await asyncio.to_thread(drain, 1.0)
            if printed:
                break
        assert printed, f"--follow printed nothing: {follower.stderr and follower.poll()}"
        first = sent.index(printed[0]["event_id"])
        for i in range(len(sent), len(sent) + 3):
            await send(i)
        for _ in range(60):
            got = {r["event_id"] for r in printed}
            if set(sent[first:]) <= got:
                break
            await asyncio.to_thread(drain, 1.0)
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(15)
        except subprocess.TimeoutExpired:
            follower.kill()
            follower.wait()
        reader.join(5)
        errors = follower.stderr.read()
        follower.stdout.close()
        follower.stderr.close()
        drain(0.1)
    ids = [r["event_id"] for r in printed]
    assert len(ids) == len(set(ids)), "a row was printed twice"
    assert set(sent[first:]) <= set(ids), "a row sent after --follow started was not printed"
    assert not {i for i in ids if "-sent-" not in i}, "rows stored before it started printed"
    assert all(ZONED.match(r["ts"]) for r in printed)
    assert follower.returncode == 0 and errors == ""  # quiet in JSON mode


async def test_the_agreement_api_gives_its_times_with_their_zone(up, thumbline_bin):
    project, trace_id = unique("agree"), unique("agree-t")
    wrote = run(thumbline_bin, up.env, "sql", "--write",
        "INSERT INTO thumbline.feedback (event_id, trace_id, label, kind, name, source, "
        "annotator, project, join_status, ts, received_at) "
        f"SELECT '{trace_id}-judge', '{trace_id}', 'good', 'score', 'faithful', 'explicit', "
        f"'evaluator', '{project}', 'joined', now64(3), now64(3) UNION ALL "
        f"SELECT '{trace_id}-user', '{trace_id}', 'bad', 'thumb', 'thumb', 'explicit', "
        f"'end_user', '{project}', 'joined', now64(3), now64(3)")  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    url = f"{up.info.gateway_url}/v1/agreement"
    status, [summary], _ = await get(url, project=project)
    assert status == 200 and ZONED.match(summary["last_at"]), summary
    status, [disagreement], _ = await get(url, project=project, disagreements="true")
    assert status == 200 and ZONED.match(disagreement["ts"]), disagreement


@pytest.mark.parametrize(
    "body", [b"SELECT 1", b'{"sql": "SELECT 1"}', b'{"sql": 1, "parameters": {}}']
)
async def test_the_owners_sql_endpoint_refuses_a_bound_query_it_cannot_read(up, body):
    headers = {"Authorization": f"Bearer {up.info.sql_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{up.info.sql_url}/sql?bound=1", data=body, headers=headers) as r,
    ):
        assert r.status == 400 and "bound=1 takes" in (await r.json())["error"]


async def test_the_owners_sql_endpoint_binds_parameters_of_a_bound_query(up):
    headers = {"Authorization": f"Bearer {up.info.sql_token}"}
    body = orjson.dumps({"sql": "SELECT {x:String} AS x", "parameters": {"x": "it's"}})
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{up.info.sql_url}/sql?bound=1&format=JSONEachRow", data=body, headers=headers
        ) as r,
    ):
        assert r.status == 200 and orjson.loads(await r.read()) == {"x": "it's"}
