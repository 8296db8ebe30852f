"""A store of web-page size for ``bench/web.py``: a week of feedback, its traces, rates, alerts.

Everything is written by ``INSERT ... SELECT ... FROM numbers(N)`` in chDB itself
(no Python loop, no Kafka): each row's fields are drawn from a hash of its
number, so the feedback, its trace and its rates agree with each other.

- ``feedback``: ``n`` rows over the last ``days`` days, uniform in time; four
  projects (``shop-assistant`` holds 60%), two environments, six models, four
  capabilities; 8% bad; a third with a comment; joined, by end users, with
  distinct event ids (UUIDs) and trace ids.
- ``traces``: one root span per feedback trace; 40% carry a question and an answer.
- ``feedback_rates``: what the stream writes, counted from the feedback: a
  60 s window per (project, environment, model, '*') and per (project,
  environment, '*', capability) where anything was counted, and the 300 s and
  3600 s sliding windows ending with each of those minutes.
- ``alerts``: twelve episodes, nine of them resolved.
"""

from __future__ import annotations

import time

from clickhouse_connect.driver.client import Client

#: The big project: the one the web pages are measured on.
BIG_PROJECT = "shop-assistant"
#: Rows per INSERT: several parts, as a stream's inserts leave them (merges run meanwhile).
CHUNK = 200_000

_GOOD_COMMENTS = (
    "Thanks, exactly what I needed.",
    "Clear and short, and the link to the return policy was the right one.",
    "Good summary of the thread, it caught the part about the delivery date that I had missed.",
    "Helpful. The code compiled on the first try and the explanation of the edge case was "
    "better than the docs.",
    "Quick answer and it remembered what I said two messages ago, which the old bot never did.",
    "Fine.",
)
_BAD_COMMENTS = (
    "Wrong order number.",
    "It told me the item was in stock but the page says sold out since Tuesday.",
    "Way too long. I asked a yes or no question and got four paragraphs about shipping zones "
    "that do not apply to my country.",
    "The refund amount is wrong: it forgot the discount code I used, so it quoted the full "
    "price, and when I pointed that out it apologised and repeated the same number.",
    "Made up a feature that does not exist.",
    "Answered in English although I wrote in German, twice.",
    "The code uses a function that was removed two versions ago; it does not run. When I "
    "pasted the error it suggested the same code again with a different variable name.",
    "Not helpful, it just repeated the FAQ.",
)
_QUESTIONS = (
    "Where is my order? I ordered the blue running shoes on Monday and the tracking page "
    "has not moved since.",
    "Can you summarise this support thread for the on-call engineer?",
    "How do I return an item I bought with a gift card?",
    "Write a Python function that merges two sorted lists without using sort().",
    "What is the difference between the Pro and the Team plan, for a company of twelve?",
)
_ANSWER = (
    "Thanks for waiting. Your order left our warehouse yesterday and is with the carrier; "
    "tracking updates once it reaches the regional depot, usually within 24 hours. "
)


def _strings(values: tuple[str, ...]) -> str:
    """A ClickHouse array literal of ``values`` (constants of this module, no quotes in them)."""
    assert all("'" not in v for v in values)  # noqa: S101 (constants written above)
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _fields(days: int) -> str:
    """A row's fields from its ``number``, shared by feedback and traces (so they agree)."""
    span_ms = days * 86_400_000
    return f"""
    cityHash64(number) AS h,
    multiIf(h % 100 < 60, '{BIG_PROJECT}', h % 100 < 85, 'support-bot', h % 100 < 95,
            'search', 'internal-tools') AS p,
    if(intDiv(h, 100) % 100 < 85, 'production', 'staging') AS e,
    ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4', 'claude-haiku-4', 'llama-3.3-70b',
     'mistral-large'][1 + intDiv(h, 10000) % 6] AS m,
    ['answer', 'summarize', 'search', 'code'][1 + intDiv(h, 100000) % 4] AS c,
    now64(3, 'UTC') - toIntervalMillisecond(intDiv(h, 1000000) % {span_ms}) AS t,
    intDiv(h, 1000000000000) % 1000 < 80 AS is_bad,
    intDiv(h, 10000000000000) % 3 = 0 AS commented,
    concat(leftPad(lower(hex(number)), 8, '0'), lower(hex(h))) AS trace,
    concat('u-', toString(intDiv(h, 100000000000000) % 40000)) AS user,
    concat('s-', toString(intDiv(h, 100000000000000) % 40000), '-', toString(intDiv(number, 6)))
        AS session,
    100 + h % 4000 AS latency
    """


def fill_sql(database: str, *, feedback: int, days: int) -> list[str]:
    """The statements that fill an empty, migrated store (in order)."""
    db = database
    out = []
    for offset in range(0, feedback, CHUNK):
        count = min(CHUNK, feedback - offset)
        out.append(f"""
        INSERT INTO {db}.feedback (event_id, trace_id, target, span_id, name, kind, value, score,
            label, comment, correction, category, tags, source, annotator, user_id, session_id,
            conversation_id, project, environment, model, capability, step, trace_name,
            trace_status, latency_ms, total_tokens, cost_usd, metadata, ts, received_at,
            join_status, retracted, version)
        WITH {_fields(days)}
        SELECT toString(generateUUIDv4(number)), trace, 'trace', '', 'thumbs', 'thumb',
            if(is_bad, 'down', 'up'), if(is_bad, 0., 1.), if(is_bad, 'bad', 'good'),
            if(commented, if(is_bad, {_strings(_BAD_COMMENTS)}[1 + intDiv(h, 7) % 8],
                             {_strings(_GOOD_COMMENTS)}[1 + intDiv(h, 7) % 6]), ''),
            '', if(is_bad, ['wrong-answer', 'too-long', 'hallucination', 'language']
                           [1 + intDiv(h, 11) % 4], ''),
            if(is_bad AND commented, ['needs-review'], []), 'explicit', 'end_user', user, session,
            session, p, e, m, c, '', 'chat', 'ok', latency, 200 + h % 3000,
            (200 + h % 3000) * 0.000002, '{{}}', t, t + toIntervalMillisecond(300), 'joined', 0,
            toUInt64(toUnixTimestamp64Milli(t))
        FROM numbers({offset}, {count})""")
        out.append(f"""
        INSERT INTO {db}.traces (trace_id, span_id, parent_span_id, name, project, environment,
            model, capability, step, user_id, session_id, conversation_id, start_time, end_time,
            latency_ms, input_tokens, output_tokens, total_tokens, cost_usd, status, error,
            attributes, input, output, received_at, version)
        WITH {_fields(days)}, intDiv(h, 13) % 10 < 4 AS has_text
        SELECT trace, '', '', 'chat', p, e, m, c, '', user, session, session,
            t - toIntervalMillisecond(latency + 5000), t - toIntervalMillisecond(5000), latency,
            100 + h % 1000, 100 + h % 2000, 200 + h % 3000, (200 + h % 3000) * 0.000002, 'ok',
            '', '{{}}', if(has_text, {_strings(_QUESTIONS)}[1 + intDiv(h, 17) % 5], ''),
            if(has_text, repeat('{_ANSWER}', 1 + intDiv(h, 19) % 6), ''),
            t - toIntervalMillisecond(4000), toUInt64(toUnixTimestamp64Milli(t))
        FROM numbers({offset}, {count})""")
    counts = (
        "countIf(label = 'good') AS good, countIf(label = 'bad') AS bad, "
        "countIf(label NOT IN ('good', 'bad')) AS neutral, count() AS total, "
        "countIf(comment != '') AS with_comment, 0 AS implicit, sum(ifNull(score, 0)) AS "
        "score_sum, count(score) AS score_count, avg(score) AS mean_score, bad / total AS "
        "bad_rate, 1 AS version"
    )
    columns = (
        "project, environment, model, capability, window_seconds, window_start, window_end, "
        "good, bad, neutral, total, with_comment, implicit, score_sum, score_count, mean_score, "
        "bad_rate, version"
    )
    for model, capability in (("model", "'*'"), ("'*'", "capability")):
        out.append(f"""
        INSERT INTO {db}.feedback_rates ({columns})
        SELECT project, environment, {model}, {capability}, 60,
            toDateTime64(toStartOfMinute(ts), 3, 'UTC') AS ws, ws + toIntervalSecond(60), {counts}
        FROM {db}.feedback GROUP BY project, environment, {model}, {capability}, ws""")
    for size in (300, 3600):
        # each minute's row ends a sliding window of the minutes before it (a window ending
        # with a minute that counted nothing is left out: cheaper, and the chart reads only
        # the windows that start on a multiple of the size)
        frame = f"ORDER BY toUnixTimestamp(window_start) RANGE BETWEEN {size - 60} PRECEDING AND CURRENT ROW"  # noqa: E501
        sums = ", ".join(
            f"sum({c}) OVER w AS {c}"
            for c in ("good", "bad", "neutral", "total", "with_comment", "implicit", "score_sum",
                      "score_count")
        )  # fmt: skip
        out.append(f"""
        INSERT INTO {db}.feedback_rates ({columns})
        SELECT project, environment, model, capability, {size},
            window_end - toIntervalSecond({size}), window_end, good, bad, neutral, total,
            with_comment, implicit, score_sum, score_count, score_sum / score_count, bad / total,
            1
        FROM (SELECT project, environment, model, capability, window_end, {sums}
              FROM {db}.feedback_rates WHERE window_seconds = 60
              WINDOW w AS (PARTITION BY project, environment, model, capability {frame}))""")
    alert_columns = (
        "alert_id, rule, state, project, environment, model, capability, window_seconds, "
        "window_start, window_end, bad_rate, baseline_rate, bad, total, sample_trace_ids, "
        "sample_comments, inbox_command, at, version"
    )
    episode = f"""
        WITH ['{BIG_PROJECT}', '{BIG_PROJECT}', 'support-bot', 'search'][1 + number % 4] AS p,
            ['gpt-4o', 'gpt-4o-mini', 'claude-sonnet-4', 'claude-haiku-4', 'llama-3.3-70b',
             'mistral-large'][1 + number % 6] AS m,
            toDateTime64(toStartOfFiveMinutes(now() - toIntervalMinute(30 + number * 800)), 3,
                         'UTC') AS ws
        SELECT concat('spike-', toString(number)), 'bad_rate_spike', {{state}}, p, 'production',
            m, '*', 300, ws, ws + toIntervalSecond(300), {{rate}}, 0.08, 30 + number, 100,
            ['{"0" * 24}', '{"1" * 24}'], ['{_BAD_COMMENTS[1]}', '{_BAD_COMMENTS[4]}'],
            concat('thumbline inbox --project ', p, ' --model ', m, ' --label bad'), {{at}}, 1
        FROM numbers(12)"""
    out.append(
        f"INSERT INTO {db}.alerts ({alert_columns}) "
        + episode.format(
            state="'firing'", rate="0.3 + number / 100", at="ws + toIntervalSecond(300)"
        )
    )
    out.append(f"INSERT INTO {db}.alerts ({alert_columns}) " + episode.format(
        state="'resolved'", rate="0.07", at="ws + toIntervalSecond(1800)"
    ) + " WHERE number % 4 != 0")  # fmt: skip
    return out


def fill(client: Client, database: str, *, feedback: int, days: int) -> dict[str, int]:
    """Fill an empty, migrated store; the rows of each table (FINAL), to check and print."""
    for statement in fill_sql(database, feedback=feedback, days=days):
        client.command(statement)
    settle(client, database)
    return counts(client, database)


def settle(client: Client, database: str, within: float = 300.0) -> None:
    """Wait until the merges the inserts started are done: else they run on in the gateway
    (it reopens the store) and the pages are measured against them."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        running = client.query(
            "SELECT count() FROM system.merges WHERE database = {db:String}",
            parameters={"db": database},
        ).result_rows[0][0]
        if not running:
            return
        time.sleep(0.5)


def counts(client: Client, database: str) -> dict[str, int]:
    """What the store holds: rows per table (FINAL) and a few checks of the shape."""
    one = lambda sql: int(client.query(sql).result_rows[0][0])  # noqa: E731
    db = database
    return {
        "feedback": one(f"SELECT count() FROM {db}.feedback FINAL"),
        f"feedback of {BIG_PROJECT}": one(
            f"SELECT count() FROM {db}.feedback FINAL WHERE project = '{BIG_PROJECT}'"
        ),
        "feedback bad": one(f"SELECT countIf(label = 'bad') FROM {db}.feedback FINAL"),
        "feedback with a comment": one(f"SELECT countIf(comment != '') FROM {db}.feedback"),
        "distinct event ids": one(f"SELECT uniqExact(event_id) FROM {db}.feedback"),
        "traces": one(f"SELECT count() FROM {db}.traces FINAL"),
        "traces with input": one(f"SELECT countIf(input != '') FROM {db}.traces"),
        "feedback_rates 60 s": one(
            f"SELECT count() FROM {db}.feedback_rates FINAL WHERE window_seconds = 60"
        ),
        "feedback_rates 300 s": one(
            f"SELECT count() FROM {db}.feedback_rates FINAL WHERE window_seconds = 300"
        ),
        "feedback_rates 3600 s": one(
            f"SELECT count() FROM {db}.feedback_rates FINAL WHERE window_seconds = 3600"
        ),
        "alerts rows": one(f"SELECT count() FROM {db}.alerts FINAL"),
        "active parts of feedback": one(
            f"SELECT count() FROM system.parts WHERE database = '{db}' AND table = 'feedback' "
            "AND active"
        ),
    }
