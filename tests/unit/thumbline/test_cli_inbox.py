"""``thumbline inbox``'s filters reach the query (the store is replaced by a recorder)."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from thumbline.cli.commands import app

ENV = {"THUMBLINE_CLICKHOUSE_URL": "http://127.0.0.1:1", "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []

    def run_sql(settings: object, query: str, fmt: str = "JSON") -> bytes:
        sent.append(query)
        return orjson.dumps({"meta": [], "data": []})

    monkeypatch.setattr("thumbline.sqlclient.run_sql", run_sql)
    return sent


def test_the_inbox_filters_on_who_gave_the_feedback(queries):
    args = ["inbox", "--json", "--annotator", "evaluator", "--annotator", "code"]
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    [query] = queries
    assert "annotator IN ('evaluator', 'code')" in query


def test_an_unknown_annotator_ends_the_command_saying_what_it_takes(queries):
    result = CliRunner().invoke(app, ["inbox", "--annotator", "judge"], env=ENV)
    assert result.exit_code == 2 and queries == []
    assert "--annotator takes end_user, reviewer, evaluator or code" in " ".join(
        result.output.split()
    )
