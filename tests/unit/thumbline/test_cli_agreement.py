"""``thumbline agreement``: its filters reach the query, and its table reads as counts (the
store is replaced by a recorder that answers with canned rows)."""

from __future__ import annotations

import orjson
import pytest
from typer.testing import CliRunner

from thumbline.agreement import DISAGREEMENT_COLUMNS, SUMMARY_COLUMNS
from thumbline.cli.commands import app

ENV = {"THUMBLINE_CLICKHOUSE_URL": "http://127.0.0.1:1", "COLUMNS": "200", "NO_COLOR": "1"}
SUMMARY = ["shop", "atlas", "returns", "llm-judge", 40, 30, 0.75, 6, 4, "2026-11-26 10:00:00.000"]
DISAGREEMENT = ["2026-11-26 10:00:00.000", "shop", "atlas", "returns", "llm-judge", "t-42",
                "good", 0.9, "bad"]  # fmt: skip


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> dict:
    seen: dict = {"queries": [], "rows": []}

    def run_sql(settings: object, query: str, fmt: str = "JSON") -> bytes:
        seen["queries"].append(query)
        names = DISAGREEMENT_COLUMNS if "NOT agree" in query else SUMMARY_COLUMNS
        meta = [{"name": n, "type": "String"} for n in names]
        return orjson.dumps({"meta": meta, "data": seen["rows"]})

    monkeypatch.setattr("thumbline.sqlclient.run_sql", run_sql)
    return seen


def test_the_filters_reach_the_query(store):
    args = ["agreement", "--json", "--project", "shop", "--model", "atlas", "--capability",
            "returns", "--evaluator", "llm-judge", "--since", "7d", "--limit", "5"]  # fmt: skip
    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exit_code == 0, result.output
    [query] = store["queries"]
    for clause in ("project = 'shop'", "model = 'atlas'", "capability = 'returns'",
                   "evaluator = 'llm-judge'", "ts >= toDateTime64(", "LIMIT 5"):  # fmt: skip
        assert clause in query


def test_the_table_shows_the_agreement_and_each_direction_of_disagreement(store):
    store["rows"] = [SUMMARY]
    result = CliRunner().invoke(app, ["agreement"], env=ENV)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()[:2]
    assert "judge good/user bad" in header and "judge bad/user good" in header
    assert row.split() == ["shop", "atlas", "returns", "llm-judge", "40", "75%", "6", "4",
                           "2026-11-26T10:00:00Z"]  # fmt: skip


def test_the_disagreements_list_the_traces(store):
    store["rows"] = [DISAGREEMENT]
    result = CliRunner().invoke(app, ["agreement", "--disagreements"], env=ENV)
    assert result.exit_code == 0, result.output
    assert "NOT agree" in store["queries"][0] and "ORDER BY ts DESC" in store["queries"][0]
    assert result.stdout.splitlines()[1].split() == [
        "2026-11-26T10:00:00Z", "t-42", "llm-judge", "good", "0.90", "bad", "atlas", "returns"
    ]  # fmt: skip


def test_nothing_to_compare_says_how_to_send_a_judges_verdicts(store):
    result = CliRunner().invoke(app, ["agreement"], env=ENV)
    assert result.exit_code == 0
    assert "--annotator evaluator" in " ".join(result.output.split())


def test_a_bad_filter_ends_the_command_saying_what_it_takes(store):
    result = CliRunner().invoke(app, ["agreement", "--since", "7 parsecs"], env=ENV)
    assert result.exit_code == 2 and store["queries"] == []
    assert "--since takes a number and a unit" in result.output
