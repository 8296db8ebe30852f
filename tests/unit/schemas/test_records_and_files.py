"""Output records, the committed JSON Schema files and the migrations stay in step with the code."""

from __future__ import annotations

import json

import pytest

from thumbline.schemas import (
    DeadLetter,
    EnrichedFeedback,
    InvalidEvent,
    JoinStatus,
    RateWindow,
    migrations,
)
from thumbline.schemas.jsonschema import JSON_DIR, generate, render


def test_committed_json_schemas_match_the_models():
    generated = generate()
    on_disk = {p.name for p in JSON_DIR.glob("*.schema.json")}
    assert on_disk == set(generated), (
        "run `python -m thumbline.schemas.jsonschema` and commit schemas/json"
    )
    for name, schema in generated.items():
        assert (JSON_DIR / name).read_text() == render(schema), (
            f"{name} is stale: run `python -m thumbline.schemas.jsonschema` and commit schemas/json"
        )


def test_input_topic_schemas_accept_one_event_or_a_batch():
    schema = json.loads((JSON_DIR / "feedback.schema.json").read_text())
    kinds = [branch.get("type", "object-ref") for branch in schema["oneOf"]]
    assert kinds == ["object-ref", "array"]
    assert schema["oneOf"][1]["maxItems"] == 1000


def test_the_schemas_say_who_gave_the_feedback_and_default_to_an_end_user():
    feedback = json.loads((JSON_DIR / "feedback.schema.json").read_text())
    enriched = json.loads((JSON_DIR / "enriched.schema.json").read_text())
    for schema, fields in ((feedback, feedback["$defs"]["FeedbackEvent"]), (enriched, enriched)):
        assert fields["properties"]["annotator"]["default"] == "end_user"
        assert schema["$defs"]["Annotator"]["enum"] == ["end_user", "reviewer", "evaluator", "code"]


def test_enriched_feedback_needs_a_join_status_and_version():
    with pytest.raises(InvalidEvent) as info:
        EnrichedFeedback.parse(
            {
                "event_id": "e",
                "trace_id": "t",
                "name": "thumb",
                "kind": "thumb",
                "label": "good",
                "source": "explicit",
                "ts": "2026-11-23T10:00:00Z",
            }
        )
    assert {f for f, _, _ in info.value.problems} == {"join_status", "version"}
    assert JoinStatus.ORPHAN == "orphan"


def test_rate_windows_bound_the_bad_rate():
    with pytest.raises(InvalidEvent, match="bad_rate"):
        RateWindow.parse(
            {
                "project": "p",
                "environment": "e",
                "model": "m",
                "window_seconds": 60,
                "window_start": "2026-11-23T10:00:00Z",
                "window_end": "2026-11-23T10:01:00Z",
                "bad_rate": 1.5,
                "version": 1,
            }
        )


def test_dead_letters_keep_where_the_input_came_from():
    d = DeadLetter.parse(
        {
            "topic": "thumbline.feedback",
            "partition": 3,
            "offset": 17,
            "reason": "bad_json",
            "error": "not JSON",
            "raw": "{oops",
            "at": "2026-11-23T10:00:00Z",
        }
    )
    assert (d.topic, d.partition, d.offset, d.batch_index) == ("thumbline.feedback", 3, 17, -1)


class TestMigrations:
    def test_versions_are_unique_and_ordered(self):
        versions = [m.version for m in migrations.load()]
        assert versions == sorted(set(versions)) and versions[0] == 1

    def test_statements_name_the_database_and_drop_comments(self):
        statements = migrations.load()[0].statements("analytics")
        assert all("{db}" not in s and not s.lstrip().startswith("--") for s in statements)
        created = [s.split("(")[0].split()[-1] for s in statements if s.startswith("CREATE TABLE")]
        assert created == [
            "analytics.feedback",
            "analytics.traces",
            "analytics.feedback_rates",
            "analytics.alerts",
            "analytics.dead_letters",
        ]

    def test_every_statement_is_idempotent(self):
        for m in migrations.load():
            for statement in m.statements("db"):
                first = statement.split("\n")[0]
                # creating only what is missing, setting a comment, a table's setting or
                # defining a view (the same twice)
                assert (
                    "IF NOT EXISTS" in first
                    or "COMMENT COLUMN IF EXISTS" in first
                    or " MODIFY SETTING " in first
                    or first.startswith("CREATE OR REPLACE VIEW ")
                ), first[:80]

    def test_event_time_stays_out_of_the_feedback_dedup_key(self):
        sql = migrations.load()[0].sql
        feedback = sql[sql.index("{db}.feedback\n") :]
        assert "ORDER BY event_id\n" in feedback.split("CREATE TABLE")[0]
