"""What the read commands print, as a person at a terminal sees it: the real CLI, real chDB.

The store is filled once through `thumbline sql --write` (no `thumbline up`: the
commands open the chDB path themselves), then each command runs at the widths
a terminal has.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.integration.conftest import run

BIN = str(Path(sys.executable).parent / "thumbline")  # the console script of this venv
#: OpenTelemetry-shaped trace ids: 32 hex characters, the longest a user meets.
TRACES = [f"4bf92f3577b34da6a3ce929d0e0e47{i:02x}" for i in range(6)]
LONG = (
    "The answer quoted a refund policy that does not exist and then apologised twice "
    "before giving the same wrong number again, which is exactly what we saw last week"
)
COMMAND = (
    "thumbline inbox --label bad --project checkout-service --model gpt-4o-mini-2024-07-18 "
    "--from 2026-11-25T10:00:00Z --to 2026-11-25T10:05:00Z"
)
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|\+00:00)")
BARE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")


@pytest.fixture(scope="module")
def env(clean_env, tmp_path_factory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("output") / "data"
    env = {**clean_env, "THUMBLINE_DATA_DIR": str(data)}
    assert run_ok(env, "migrate")
    rows = " UNION ALL ".join(
        f"SELECT 'e{i}', '{trace}', '{label}', '{comment}', 'user-{i}-with-a-longish-id', "
        f"'session-{i}-0123456789', 'checkout-service', 'gpt-4o-mini-2024-07-18', 'prod', "
        f"'refunds', 'thumb', 'thumb', now64(3) - INTERVAL {i} MINUTE, now64(3), 'joined'"
        for i, (trace, label, comment) in enumerate(
            zip(TRACES, ["bad", "good", "neutral", "bad", "good", "bad"],
                [LONG, "", "ok", LONG[:40], "", LONG], strict=True)
        )
    )  # fmt: skip
    run_ok(env, "sql", "--write",
        "INSERT INTO thumbline.feedback (event_id, trace_id, label, comment, user_id, "
        "session_id, project, model, environment, capability, kind, name, ts, received_at, "
        f"join_status) {rows}")  # fmt: skip
    now = "now64(3) - INTERVAL 5 MINUTE"
    run_ok(env, "sql", "--write",
        "INSERT INTO thumbline.feedback_rates (project, environment, model, capability, "
        "window_seconds, window_start, window_end, good, bad, neutral, total, with_comment, "
        f"implicit, bad_rate, version) SELECT 'checkout-service', 'prod', "
        f"'gpt-4o-mini-2024-07-18', '*', 60, {now}, {now}, 4, 6, 0, 10, 3, 1, 0.6, 1")  # fmt: skip
    run_ok(env, "sql", "--write",
        "INSERT INTO thumbline.alerts (alert_id, rule, state, project, environment, model, "
        "capability, window_seconds, window_start, window_end, bad_rate, baseline_rate, bad, "
        "total, sample_trace_ids, sample_comments, inbox_command, at, version) SELECT "
        f"'a1', 'bad-rate-spike', 'firing', 'checkout-service', 'prod', "
        f"'gpt-4o-mini-2024-07-18', '*', 300, {now}, {now}, 0.6, 0.05, 6, 10, "
        f"['{TRACES[0]}'], ['{LONG}'], '{COMMAND}', {now}, 1")  # fmt: skip
    yield env


def run_ok(env: dict[str, str], *args: str, columns: int = 80) -> str:
    result = run(BIN, {**env, "COLUMNS": str(columns)}, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("columns", [80, 120])
def test_inbox_prints_one_line_per_row_within_the_width_with_every_trace_id_whole(env, columns):
    printed = run_ok(env, "inbox", columns=columns).splitlines()
    assert all(len(line) <= columns for line in printed), "\n".join(printed)
    header, rows = printed[0], printed[1:]
    assert "time" in header and "trace" in header
    assert len(rows) == len(TRACES)  # one line a row: nothing wrapped onto a second line
    for trace in TRACES:
        assert sum(trace in row for row in rows) == 1, trace
    assert any("The answ" in row and "…" in row for row in rows)  # cut, not wrapped


def test_a_wider_terminal_shows_more_of_each_row(env):
    narrow, wide = (run_ok(env, "inbox", columns=c).splitlines() for c in (80, 120))
    assert max(map(len, wide)) > max(map(len, narrow))


def test_alerts_keep_each_suggested_command_whole_on_a_line_of_its_own(env):
    for columns in (80, 120):
        printed = run_ok(env, "alerts", columns=columns).splitlines()
        commands = [line for line in printed if "thumbline inbox" in line]
        assert [line.strip() for line in commands] == [COMMAND]
        others = [line for line in printed if line not in commands]
        assert others and all(len(line) <= columns for line in others), "\n".join(printed)


def test_every_time_the_read_commands_print_is_iso_8601_with_its_zone(env):
    first = "SELECT ts FROM thumbline.feedback LIMIT 1"
    for args in (("inbox",), ("rates", "--since", "1h"), ("alerts",), ("keys", "list"),
                 ("trace", TRACES[0]), ("sql", first), ("inbox", "--json"),
                 ("rates", "--json"), ("alerts", "--json")):  # fmt: skip
        if args == ("keys", "list"):
            run_ok(env, "keys", "create", "--scope", "read", "--project", "shop")
        printed = run_ok(env, *args, columns=200)
        assert ISO.search(printed), (args, printed)
        assert not BARE.search(printed), (args, printed)


def test_keys_list_is_a_plain_table_like_the_other_commands(env):
    run_ok(env, "keys", "create", "--scope", "ingest", "--project", "shop", "--name", "web")
    printed = run_ok(env, "keys", "list", columns=120)
    assert "web" in printed and not set("┏━┃│└┡") & set(printed)


def test_trace_of_an_unknown_id_fails_and_says_nothing_is_stored_for_it(env):
    result = run(BIN, {**env, "COLUMNS": "80"}, "trace", "no-such-trace")
    assert result.returncode == 1
    assert "nothing is stored for trace no-such-trace" in result.stderr
    assert "thumbline inbox" in result.stderr  # where to find the ids that exist


def test_rates_for_a_window_that_is_not_kept_names_the_windows_that_are(env):
    result = run(BIN, env, "rates", "--window", "7")
    assert result.returncode == 2
    assert "60" in result.stderr and "300" in result.stderr and "3600" in result.stderr
    assert "THUMBLINE_RATE_SLIDING_SECONDS" in result.stderr
    assert run(BIN, env, "rates", "--window", "300").returncode == 0


def test_sql_errors_quote_the_users_sql_not_what_the_cli_wrapped_it_in(env):
    for query in ("SELECT count( FROM thumbline.feedback", "SELECT nosuch FROM thumbline.feedback"):
        result = run(BIN, env, "sql", query)
        assert result.returncode == 1
        for added in ("FORMAT", "formatQuery", "EXPLAIN AST"):
            assert added not in result.stderr, result.stderr


def test_rates_and_trace_keep_times_whole_and_rows_on_one_line_at_80_columns(env):
    rates = run_ok(env, "rates", "--since", "1h").splitlines()
    assert len(rates) == 2 and all(len(line) <= 80 for line in rates), "\n".join(rates)
    assert ISO.search(rates[1]), rates
    trace = run_ok(env, "trace", TRACES[0]).splitlines()
    assert all(len(line) <= 80 for line in trace), "\n".join(trace)
    row = next(line for line in trace if TRACES[0] not in line and "bad" in line)
    assert ISO.search(row), trace


QUESTION = "Can I get a refund for an order I placed 40 days ago?"
ANSWER = ("Yes: " + "refunds are accepted within 60 days of delivery, in full, " * 8).strip()


def store_answered_trace(env: dict[str, str], trace_id: str) -> None:
    """A root span with the question and the answer, and a child span with a question."""
    run_ok(env, "sql", "--write",
        "INSERT INTO thumbline.traces (trace_id, span_id, parent_span_id, name, project, "
        "input, output, start_time, received_at, version) "
        f"SELECT '{trace_id}', 'root', '', 'chat', 'checkout-service', '{QUESTION}', "
        f"'{ANSWER}', now64(3), now64(3), 1 UNION ALL "
        f"SELECT '{trace_id}', 'retrieve', 'root', 'search', 'checkout-service', 'refund policy', "
        "'', now64(3), now64(3), 1")  # fmt: skip


def test_trace_shows_the_question_and_the_answer_shortened_and_full_prints_them_whole(env):
    trace_id = TRACES[1]
    store_answered_trace(env, trace_id)
    result = run(BIN, {**env, "COLUMNS": "80"}, "trace", trace_id)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), result.stdout
    flat = " ".join(result.stdout.split())
    assert f"input {QUESTION}" in flat and "input refund policy" in flat
    assert "output Yes: refunds are accepted" in flat and ANSWER not in flat
    assert "…" in flat and "--full prints them whole" in result.stderr
    whole = " ".join(run_ok(env, "trace", trace_id, "--full").split())
    assert ANSWER in whole


def test_the_inbox_table_stays_narrow_and_its_json_has_each_traces_question_and_answer(env):
    store_answered_trace(env, TRACES[1])
    printed = run_ok(env, "inbox", columns=80).splitlines()
    assert all(len(line) <= 80 for line in printed) and len(printed) == 1 + len(TRACES)
    assert QUESTION[:20] not in "\n".join(printed)  # the table has no room: --json has them
    rows = [orjson.loads(line) for line in run_ok(env, "inbox", "--json").splitlines()]
    content = {row["trace_id"]: (row["input"], row["output"]) for row in rows}
    assert content[TRACES[1]] == (QUESTION, ANSWER)  # the root span's
    assert content[TRACES[0]] == ("", "")  # a trace not stored has none
