"""Who gave the feedback, on a running `thumbline up`: set from the key, never forged by a
browser's key, counted in the rates as configured, compared in the agreement view.

The attacker holds an end users' ingest key (the one shipped in a browser bundle) and
tries to store an evaluator's verdict: in the body, over OTLP, through a hosted
product's shape. Each is refused or stored as an end user's, never as an evaluator's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import unique
from tests.integration.conftest import Up, run, sql_rows, start_up, stop, until, worker_env
from tests.otel import otlp_json, provider, traced_chat

PROJECT = "support-bot"  # the service.name of tests/otel.py's spans, and the keys' project
JUDGE = {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.1,
         "gen_ai.evaluation.explanation": "about monthly plans"}  # fmt: skip


async def post(url: str, body: Any, key: str, media: str = "application/json") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"X-API-Key": key, "Content-Type": media}
    async with aiohttp.ClientSession() as http, http.post(url, data=data, headers=headers) as r:
        return r.status, await r.json()


async def get(url: str, key: str, **params: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, params=params, headers={"X-API-Key": key}) as r,
    ):
        return r.status, await r.json()


@pytest.fixture(scope="module")
async def annot(broker, thumbline_bin, clean_env, tmp_path_factory) -> AsyncIterator[dict]:
    """One `thumbline up` with short rate windows that count end users and reviewers, and a
    key of each kind for project support-bot (a read key for another project too)."""
    tmp = tmp_path_factory.mktemp("annotators")
    env = await worker_env(
        broker, clean_env, tmp, "annot", THUMBLINE_RATE_WINDOW_SECONDS="2",
        THUMBLINE_RATE_SLIDING_SECONDS="", THUMBLINE_RATE_LATENESS_SECONDS="1",
        THUMBLINE_RATES_ANNOTATORS="end_user,reviewer",
    )  # fmt: skip
    up = await asyncio.to_thread(start_up, thumbline_bin, env, tmp / "data")
    try:
        keys = {}
        for name, args in {
            "user": ("--scope", "ingest", "--project", PROJECT),
            "judge": ("--scope", "ingest", "--project", PROJECT, "--annotator", "evaluator"),
            "reviewer": ("--scope", "ingest", "--project", PROJECT, "--annotator", "reviewer"),
            "read": ("--scope", "read", "--project", PROJECT),
            "other": ("--scope", "read", "--project", "another"),
            "admin": ("--scope", "admin"),
        }.items():
            made = run(thumbline_bin, env, "keys", "create", *args)
            assert made.returncode == 0, made.stderr
            keys[name] = made.stdout.strip()
        yield {"up": up, "url": up.info.gateway_url, "keys": keys, "bin": thumbline_bin}
    finally:
        stop(up)


async def stored(annot: dict, trace_id: str, want: int) -> list[dict]:
    """The trace's feedback rows (annotator, label, name) once ``want`` are stored."""
    query = ("SELECT annotator, label, name FROM thumbline.feedback FINAL "
             f"WHERE trace_id = '{trace_id}' ORDER BY annotator, name, label")  # fmt: skip
    up: Up = annot["up"]

    async def enough() -> list[dict] | None:
        rows = await asyncio.to_thread(sql_rows, annot["bin"], up.env, query)
        return rows if len(rows) >= want else None

    return await until(enough) or await asyncio.to_thread(sql_rows, annot["bin"], up.env, query)


# The attacker: an end users' key -------------------------------------------------------


async def test_an_end_users_key_cannot_store_an_evaluators_verdict_by_saying_so(annot):
    t = unique("body")
    batch = [{"trace_id": t, "label": "bad", "name": "judge", "annotator": "evaluator"},
             {"trace_id": t, "label": "good", "name": "thumb"}]  # fmt: skip
    status, body = await post(f"{annot['url']}/v1/feedback", batch, annot["keys"]["user"])
    assert status == 207 and [r["status"] for r in body["results"]] == ["rejected", "accepted"]
    error = body["results"][0]["error"]
    assert error.startswith("annotator: this key writes end users' feedback only")
    assert (
        f"thumbline keys create --scope ingest --project {PROJECT} --annotator evaluator" in error
    )
    assert await stored(annot, t, 1) == [{"annotator": "end_user", "label": "good",
                                          "name": "thumb"}]  # fmt: skip


async def test_an_end_users_key_cannot_store_an_evaluation_result_over_otlp(annot):
    tracer_provider, exporter = provider()
    trace_id, _ = traced_chat(tracer_provider, user="u-otlp", evaluation=JUDGE)
    body = otlp_json(exporter.get_finished_spans())
    url = f"{annot['url']}/otlp/v1/traces"
    status, answer = await post(url, body, annot["keys"]["user"])
    assert status == 200
    partial = answer["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "--annotator evaluator" in partial["errorMessage"]
    # the spans are kept; a user's thumb on the trace is stored, the judge's verdict is not
    await post(f"{annot['url']}/v1/feedback", {"trace_id": trace_id, "label": "good",
                                               "name": "thumb"}, annot["keys"]["user"])  # fmt: skip
    assert await stored(annot, trace_id, 1) == [
        {"annotator": "end_user", "label": "good", "name": "thumb"}
    ]
    spans = sql_rows(
        annot["bin"],
        annot["up"].env,
        f"SELECT count() AS n FROM thumbline.traces WHERE trace_id = '{trace_id}'",
    )
    assert spans == [{"n": 2}]

    # the same export with a judge's key: its verdict is an evaluator's
    status, answer = await post(url, body, annot["keys"]["judge"])
    assert status == 200 and "partialSuccess" not in answer
    rows = await stored(annot, trace_id, 2)
    assert {(r["annotator"], r["name"], r["label"]) for r in rows} == {
        ("end_user", "thumb", "good"), ("evaluator", "relevance", "bad"),
    }  # fmt: skip


@pytest.mark.parametrize("shape, payload", [
    ("trulayer", {"label": "bad", "annotator": "evaluator",
                  "metadata": {"annotator": "evaluator"}}),
    ("braintrust", {"scores": {"judge": 0}, "annotator": "evaluator",
                    "metadata": {"annotator": "evaluator"}}),
    ("axiom", {"feedback": {"kind": "thumb", "name": "judge", "value": -1,
                            "annotator": "evaluator"}, "annotator": "evaluator"}),
])  # fmt: skip
async def test_an_end_users_key_cannot_store_an_evaluators_verdict_through_a_vendor_shape(
    annot, shape, payload
):
    t = unique(shape)
    ids = {"trulayer": {"trace_id": t}, "braintrust": {"id": t},
           "axiom": {"links": {"traceId": t}}}[shape]  # fmt: skip
    status, body = await post(f"{annot['url']}/v1/feedback/{shape}", {**payload, **ids},
                              annot["keys"]["user"])  # fmt: skip
    if status == 202:  # taken: as an end user's feedback
        assert {r["annotator"] for r in await stored(annot, t, 1)} == {"end_user"}
    else:  # or refused, saying which key to make
        assert "--annotator evaluator" in body["results"][0]["error"]
        assert await stored(annot, t, 0) == []


# Keys with an annotator, and admin keys -------------------------------------------------


async def test_a_key_made_for_a_judge_writes_evaluator_feedback_whatever_the_body_says(annot):
    t = unique("judge")
    batch = [{"trace_id": t, "label": "bad", "name": "a"},
             {"trace_id": t, "label": "bad", "name": "b", "annotator": "end_user"}]  # fmt: skip
    status, _ = await post(f"{annot['url']}/v1/feedback", batch, annot["keys"]["judge"])
    assert status == 202
    rows = await stored(annot, t, 2)
    assert [(r["annotator"], r["name"]) for r in rows] == [("evaluator", "a"), ("evaluator", "b")]


async def test_an_admin_key_may_say_who_gave_the_feedback(annot):
    t = unique("admin")
    batch = [{"trace_id": t, "label": "bad", "name": "a", "annotator": "code", "project": "x"},
             {"trace_id": t, "label": "good", "name": "b", "project": "x"}]  # fmt: skip
    status, _ = await post(f"{annot['url']}/v1/feedback", batch, annot["keys"]["admin"])
    assert status == 202
    rows = await stored(annot, t, 2)
    assert [(r["annotator"], r["name"]) for r in rows] == [("code", "a"), ("end_user", "b")]


def test_keys_list_shows_whose_feedback_each_ingest_key_writes_and_read_keys_take_none(annot):
    env, thumbline_bin = annot["up"].env, annot["bin"]
    listed = run(thumbline_bin, env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    judge_id, user_id = annot["keys"]["judge"].split("_")[1], annot["keys"]["user"].split("_")[1]
    lines = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert lines[judge_id][3] == "evaluator" and lines[user_id][3] == "end_user"
    refused = run(thumbline_bin, env, "keys", "create", "--scope", "read", "--project", "p",
                  "--annotator", "evaluator")  # fmt: skip
    assert refused.returncode == 2 and "--annotator is for ingest keys" in refused.stderr
    refused = run(thumbline_bin, env, "keys", "create", "--project", "p", "--annotator", "judge")
    assert refused.returncode == 2 and "--annotator takes end_user, reviewer" in refused.stderr


# The rates count the configured annotators ------------------------------------------------


async def test_with_reviewers_counted_a_reviewers_bad_feedback_moves_the_bad_rate(annot):
    """THUMBLINE_RATES_ANNOTATORS=end_user,reviewer here: a reviewer's bad counts, a
    judge's does not (tests/unit/stream_jobs: by default neither does)."""
    model = unique("m")
    url = annot["url"]
    traces = [unique("rt") for _ in range(3)]
    for t in traces:
        status, _ = await post(f"{url}/v1/traces", {"trace_id": t, "model": model},
                               annot["keys"]["user"])  # fmt: skip
        assert status == 202
    for t, who, label in zip(traces, ("user", "reviewer", "judge"), ("good", "bad", "bad"),
                             strict=True):  # fmt: skip
        status, _ = await post(f"{url}/v1/feedback", {"trace_id": t, "label": label},
                               annot["keys"][who])  # fmt: skip
        assert status == 202

    async def counted() -> list[dict] | None:
        rows = await asyncio.to_thread(sql_rows, annot["bin"], annot["up"].env,
            "SELECT sum(good) AS good, sum(bad) AS bad, sum(total) AS total "
            f"FROM thumbline.feedback_rates FINAL WHERE model = '{model}' "
            "HAVING total >= 2")  # fmt: skip
        return rows or None

    assert await until(counted) == [{"good": 1, "bad": 1, "total": 2}]


# The agreement view, over HTTP and from the command line ----------------------------------


async def test_the_agreement_reads_back_per_model_for_the_keys_project_only(annot):
    url, keys = annot["url"], annot["keys"]
    model = unique("agree")
    said = [("good", 0.9), ("bad", 0.9), ("bad", 0.1)]  # agree, judge good/user bad, agree
    traces = [unique("at") for _ in said]
    for t, (user, judge) in zip(traces, said, strict=True):
        await post(f"{url}/v1/traces", {"trace_id": t, "model": model, "capability": "c"},
                   keys["user"])  # fmt: skip
        await post(f"{url}/v1/feedback", {"trace_id": t, "label": user}, keys["user"])
        await post(f"{url}/v1/feedback", {"trace_id": t, "kind": "score", "value": judge,
                                          "name": "llm-judge"}, keys["judge"])  # fmt: skip

    async def agreement() -> list[dict] | None:
        status, rows = await get(f"{url}/v1/agreement", keys["read"], model=model)
        assert status == 200
        return rows if rows and rows[0]["targets"] == 3 else None

    (row,) = await until(agreement)
    assert (row["project"], row["capability"], row["evaluator"]) == (PROJECT, "c", "llm-judge")
    assert (row["agreed"], row["judge_good_user_bad"], row["judge_bad_user_good"]) == (2, 1, 0)
    status, listed = await get(f"{url}/v1/agreement", keys["read"], model=model,
                               disagreements="true")  # fmt: skip
    assert status == 200 and [r["trace_id"] for r in listed] == [traces[1]]
    assert (await get(f"{url}/v1/agreement", keys["other"], model=model)) == (200, [])
    assert (await get(f"{url}/v1/agreement", keys["read"], project="another"))[0] == 403
    assert (await get(f"{url}/v1/agreement", keys["user"]))[0] == 403

    shown = run(annot["bin"], annot["up"].env, "agreement", "--model", model, "--json")
    assert shown.returncode == 0, shown.stderr
    (line,) = [orjson.loads(x) for x in shown.stdout.splitlines() if x.strip()]
    assert (line["targets"], line["agreed"], line["agreement"]) == (3, 2, 0.6667)
    table = run(annot["bin"], annot["up"].env, "agreement", "--model", model, "--disagreements")
    assert table.returncode == 0 and traces[1] in table.stdout
