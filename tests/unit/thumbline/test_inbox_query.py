"""The inbox's SQL without a store: filters are bound parameters, pages are keyset pages."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest

from thumbline.inbox import (
    MAX_FILTER_CHARS,
    InboxFilter,
    Position,
    inbox_sql,
    iso_time,
    stored_since_sql,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_no_filter_value_is_written_into_the_sql_text():
    sneaky = "x' OR 1=1 --"
    query = inbox_sql("thumbline", InboxFilter(
        user_id=sneaky, labels=(sneaky,), names=(sneaky,), tags=(sneaky,), categories=(sneaky,),
        conversation_id=sneaky, trace_id=sneaky, project=sneaky,
    ))  # fmt: skip
    assert "OR 1=1" not in query.text
    assert query.parameters["user_id"] == sneaky and query.parameters["tags"] == [sneaky]


def test_every_filter_becomes_a_condition_on_a_bound_parameter():
    query = inbox_sql("db", InboxFilter(
        labels=("bad", "edit"), kinds=("thumb",), names=("helpful",), categories=("tone",),
        tags=("beta",), annotators=("evaluator",), project="shop", environment="prod",
        model="m1", capability="c", user_id="u", session_id="s", trace_id="t",
        conversation_id="conv", status="joined", has_comment=True, since=timedelta(days=7),
        limit=20,
    ), now=NOW)  # fmt: skip
    for clause in (
        "label IN {labels:Array(String)}", "kind IN {kinds:Array(String)}",
        "name IN {names:Array(String)}", "category IN {categories:Array(String)}",
        "hasAny(tags, {tags:Array(String)})", "annotator IN {annotators:Array(String)}",
        "project = {project:String}", "conversation_id = {conversation_id:String}",
        "trace_id = {trace_id:String}", "join_status = {status:String}", "comment != ''",
        "ts >= toDateTime64({since:String}, 6, 'UTC')", "retracted = 0",
    ):  # fmt: skip
        assert clause in query.text
    assert query.parameters["since"] == "2026-11-16 12:00:00.000000"
    assert query.parameters["labels"] == ["bad", "edit"]
    assert query.text.endswith("ORDER BY ts DESC, project DESC, event_id DESC")
    assert "LIMIT 20" in query.text and "FROM db.feedback FINAL" in query.text


def test_the_inbox_has_every_column_of_what_was_said():
    columns = inbox_sql("db", InboxFilter()).text.split(" FROM ")[0]
    for name in ("kind", "name", "value", "score", "correction", "annotator", "label",
                 "comment", "category", "tags", "conversation_id", "received_at",
                 "score_config_version"):  # fmt: skip
        assert f" {name}," in columns or f" {name} " in columns, name


@pytest.mark.parametrize(("filters", "message"), [
    (InboxFilter(annotators=("judge",)), "--annotator takes end_user, reviewer, evaluator"),
    (InboxFilter(status="waiting"), "--status takes joined, orphan, corrected or pending"),
    (InboxFilter(limit=0), "--limit must be between 1 and 10000"),
    (InboxFilter(names=("n" * (MAX_FILTER_CHARS + 1),)), "--name takes at most 512 characters"),
    (InboxFilter(conversation_id="c" * 600), "--conversation-id takes at most 512 characters"),
    (InboxFilter(tags=tuple(map(str, range(101)))), "--tag takes at most 100 values"),
])  # fmt: skip
def test_a_filter_the_inbox_cannot_take_is_refused_naming_the_option(filters, message):
    with pytest.raises(ValueError, match=message):
        inbox_sql("db", filters)


def test_a_page_after_a_cursor_starts_strictly_after_its_row_in_the_order():
    position = Position("2026-11-23 11:59:59.123", "shop", "e-42")
    assert Position.from_cursor(position.cursor()) == position
    query = inbox_sql("db", InboxFilter(after=position, limit=10), extra=1)
    after = "toDateTime64({after_ts:String}, 3, 'UTC')"
    assert f"ts <= {after} AND (ts, project, event_id) < ({after}, " in query.text
    assert (query.parameters["after_ts"], query.parameters["after_event_id"]) == (
        "2026-11-23 11:59:59.123", "e-42")  # fmt: skip
    assert "LIMIT 11" in query.text  # one more: whether a next page exists


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "", "' OR 1=1 --", "not base64!", b64(b"not json"), b64(b"[1, 2, 3]"),
    b64(b'{"v": 1, "ts": "2026-11-23 11:59:59", "p": "shop"}'),  # no event id
    b64(b'{"v": 2, "ts": "2026-11-23 11:59:59", "p": "shop", "e": "x"}'),  # another version
    b64(b'{"v": 1, "ts": "now() --", "p": "shop", "e": "x"}'),  # a time that is SQL
    b64(b'{"v": 1, "ts": "2026-13-45 99:99:99", "p": "shop", "e": "x"}'),  # no such time
    b64(b'{"v": 1, "ts": "2026-11-23 11:59:59", "p": 1, "e": "x"}'),
    b64(b'{"v": 1, "ts": "2026-11-23 11:59:59", "p": "shop", "e": "x", "sql": "DROP"}'),
    "A" * 5000,
])  # fmt: skip
def test_a_malformed_or_forged_cursor_is_refused_saying_where_cursors_come_from(cursor):
    with pytest.raises(ValueError, match="cursor is not one the inbox gave"):
        Position.from_cursor(cursor)


def test_follow_reads_what_the_store_took_since_a_time_in_that_order():
    query = stored_since_sql("db", InboxFilter(labels=("bad",)), "2026-11-23 11:59:30.000", limit=5)
    assert "inserted_at >= toDateTime64({floor:String}, 3, 'UTC')" in query.text
    assert query.text.endswith("ORDER BY inserted_at, event_id LIMIT 5")
    assert query.parameters == {"labels": ["bad"], "floor": "2026-11-23 11:59:30.000"}


def test_times_leave_the_inbox_in_iso_8601_with_z():
    assert iso_time("2026-11-23 11:59:59.123") == "2026-11-23T11:59:59.123Z"
    assert iso_time(None) is None and iso_time("") == ""


def test_an_inbox_time_without_a_zone_is_utc_whoever_asks():
    naive = InboxFilter(start=datetime(2026, 11, 24, 10, 0), end=datetime(2026, 11, 24, 11, 0))  # noqa: DTZ001 (naive on purpose)
    utc = InboxFilter(start=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
                      end=datetime(2026, 11, 24, 11, 0, tzinfo=UTC))  # fmt: skip
    assert naive.where() == utc.where()
    assert naive.where()[1]["start"] == "2026-11-24 10:00:00.000000"


@pytest.mark.parametrize("when", [
    datetime(1, 1, 1, 1, 42, tzinfo=timezone(timedelta(hours=3))),  # found by schemathesis
    datetime(1425, 1, 12, tzinfo=UTC),
    datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-3))),
])  # fmt: skip
def test_any_time_filters_and_those_beyond_the_store_are_clamped(when):
    late = when.year > 2299
    since, until = InboxFilter(start=when).where()[0], InboxFilter(end=when).where()[0]
    assert since == ("retracted = 0 AND 0" if late else "retracted = 0")  # from: none, or all
    assert until == ("retracted = 0" if late else "retracted = 0 AND 0")  # to: all, or none
