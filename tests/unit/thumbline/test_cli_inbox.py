"""``thumbline inbox``'s options reach the query (the store is replaced by a recorder)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from thumbline.cli.commands import app
from thumbline.cli.inbox import cells, said
from thumbline.inbox import InboxFilter

ENV = {"THUMBLINE_CLICKHOUSE_URL": "http://127.0.0.1:1", "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    sent: list[tuple[str, dict[str, Any]]] = []

    def run_sql(settings: object, query: str, fmt: str = "JSON", **kw: Any) -> bytes:
        sent.append((query, kw.get("parameters") or {}))
        return orjson.dumps({"meta": [], "data": []})

    monkeypatch.setattr("thumbline.sqlclient.run_sql", run_sql)
    return sent


def test_the_inbox_filters_on_who_gave_the_feedback(queries):
    args = ["inbox", "--json", "--annotator", "evaluator", "--annotator", "code"]
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    [(query, parameters)] = queries
    assert "annotator IN {annotators:Array(String)}" in query
    assert parameters["annotators"] == ["evaluator", "code"]


def test_the_inbox_options_and_the_api_parameters_bind_the_same_filters(queries):
    args = ["inbox", "--json", "--name", "helpful", "--tag", "beta", "--tag", "vip",
            "--category", "tone", "--conversation-id", "c-1", "--status", "orphan",
            "--trace-id", "t-1"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    [(_, parameters)] = queries
    assert parameters == {
        "names": ["helpful"], "tags": ["beta", "vip"], "categories": ["tone"],
        "conversation_id": "c-1", "status": "orphan", "trace_id": "t-1",
    }  # fmt: skip


@pytest.mark.parametrize(("args", "message"), [
    (["--annotator", "judge"], "--annotator takes end_user, reviewer, evaluator or code"),
    (["--status", "waiting"], "--status takes joined, orphan, corrected or pending"),
    (["--name", "n" * 600], "--name takes at most 512 characters"),
    (["--tz", "Mars/Olympus"], "--tz takes UTC, local or a zone name"),
])  # fmt: skip
def test_a_filter_the_inbox_cannot_take_ends_the_command_saying_what_it_takes(
    queries, args, message
):
    result = CliRunner().invoke(app, ["inbox", *args], env=ENV)
    assert result.exit_code == 2 and queries == []
    assert message in " ".join(result.output.split())


ROW = {
    "ts": "2026-11-25 10:00:00.000", "trace_id": "", "label": "bad", "comment": "wrong city",
    "correction": "Paris", "kind": "rating", "name": "stars", "value": "1", "score": 0.0,
    "annotator": "reviewer", "user_id": "u", "session_id": "s", "project": "shop", "model": "",
    "join_status": "orphan",
}  # fmt: skip


def test_a_table_row_shows_what_was_said_who_said_it_and_its_time_with_a_zone():
    from zoneinfo import ZoneInfo

    row = cells(ROW, None)
    assert row["time"] == "2026-11-25T10:00:00Z"
    assert row["feedback"] == "rating:stars=1 0.00" and row["by"] == "reviewer"
    assert row["comment"] == "wrong city → Paris"
    assert row["trace"] == "session s"  # feedback on a whole session has no trace
    assert cells({**ROW, "conversation_id": "c-7"}, None)["trace"] == "conversation c-7"
    assert cells({**ROW, "trace_id": "t-1", "conversation_id": "c-7"}, None)["trace"] == "t-1"
    assert cells({**ROW, "session_id": ""}, None)["trace"] == "-"
    assert cells(ROW, ZoneInfo("Asia/Kolkata"))["time"] == "2026-11-25T15:30:00+05:30"
    assert said("thumb", "thumb", "up", None) == "thumb=up"


def test_a_trace_id_longer_than_any_the_inbox_takes_ends_trace_with_a_message(queries):
    result = CliRunner().invoke(app, ["trace", "t" * 600], env=ENV)
    assert result.exit_code == 2 and "at most 512 characters" in " ".join(result.output.split())


def stored(event_id: str, at: str) -> dict[str, Any]:
    """A row as --follow reads it: the inbox's columns and when the store took it."""
    return {**ROW, "event_id": event_id, "ts": f"2026-11-25T{at}Z",
            "received_at": f"2026-11-25T{at}Z", "inserted_at": f"2026-11-25T{at}Z"}  # fmt: skip


def test_follow_prints_each_new_row_once_and_a_row_whose_insert_ended_late_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from thumbline.cli import inbox as module

    polls = [
        [stored("before", "10:00:00.000")],  # stored before it started: not printed
        [stored("before", "10:00:00.000"), stored("a", "10:00:01.000")],
        [stored("before", "10:00:00.000"), stored("a", "10:00:01.000"),
         stored("b", "10:00:02.000")],
        # c was stamped before b but its insert ended after the last poll; a comes again,
        # its trace joined (a newer version): neither b nor a is printed twice
        [stored("a", "10:00:03.000"), stored("c", "10:00:01.500"), stored("b", "10:00:02.000")],
    ]  # fmt: skip
    floors: list[str] = []

    def json_rows(settings: object, query: Any) -> list[dict[str, Any]]:
        floors.append(query.parameters["floor"])
        return [dict(row) for row in polls.pop(0)]

    def sleep(seconds: float) -> None:
        if not polls:
            raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(module, "json_rows", json_rows)
    monkeypatch.setattr(module, "rows_of", lambda s, q: (["now"], [["2026-11-25 10:00:00.500"]]))
    monkeypatch.setattr(module.time, "sleep", sleep)
    settings = type("Settings", (), {"clickhouse_database": "thumbline"})()
    module._follow(settings, InboxFilter(), True, None)
    printed = [orjson.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["a", "b", "c"]
    assert floors[0] == "2026-11-25 09:59:30.500000"  # 30 s back from the store's clock
    assert max(floors) < "2026-11-25 10:00:01.500"  # each poll looks back far enough for c


def test_follow_at_a_terminal_prints_a_line_a_row_within_the_width_and_a_count_at_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from thumbline.cli import inbox as module

    long = {**stored("a", "10:00:01.000"), "comment": "far too long " * 20}
    polls = [[], [long, stored("b", "10:00:02.000")]]

    def sleep(seconds: float) -> None:
        if not polls:
            raise KeyboardInterrupt

    monkeypatch.setattr(module, "json_rows", lambda s, q: polls.pop(0))
    monkeypatch.setattr(module, "rows_of", lambda s, q: (["now"], [["2026-11-25 10:00:00.500"]]))
    monkeypatch.setattr(module.time, "sleep", sleep)
    monkeypatch.setattr(module.out, "_width", 100)
    settings = type("Settings", (), {"clickhouse_database": "thumbline"})()
    module._follow(settings, InboxFilter(), False, None)
    printed = capsys.readouterr()
    lines = printed.out.splitlines()
    assert len(lines) == 2 and all(len(line) <= 100 for line in lines), lines
    assert lines[0].startswith("2026-11-25T10:00:01Z  bad ") and lines[0].endswith("…")
    assert "rating:stars=1 0.00" in lines[1] and "reviewer" in lines[1]
    assert "following new feedback (Ctrl-C stops)" in printed.err
    assert "2 new feedback events" in printed.err
