"""The web pages' rates and alerts SQL without a store: bound values, bounds that say the fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from thumbline.charts import (
    MAX_ALERTS,
    MAX_POINTS,
    AlertsFilter,
    RatesFilter,
    alert_episodes_sql,
    rate_alerts_sql,
    rates_series_sql,
    time_range,
)
from thumbline.inbox import MAX_FILTER_CHARS

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
KEPT = (60, 300, 3600)


def rates(**fields) -> RatesFilter:
    return RatesFilter(**{"window_seconds": 60, "start": NOW - DAY, "end": NOW, **fields})


def test_no_filter_value_is_written_into_the_sql_text():
    sneaky = "x' OR 1=1 --"
    for query in (
        rates_series_sql("db", rates(project=sneaky, environment=sneaky, model=sneaky), KEPT),
        rate_alerts_sql("db", rates(project=sneaky, environment=sneaky, model=sneaky), KEPT),
        alert_episodes_sql("db", AlertsFilter(
            start=NOW - DAY, end=NOW, project=sneaky, model=sneaky, state="firing")),
    ):  # fmt: skip
        assert "OR 1=1" not in query.text
        assert query.parameters["project"] == sneaky and query.parameters["model"] == sneaky


def test_per_model_the_rates_read_the_rows_of_all_capabilities_and_per_capability_of_all_models():
    per_model = rates_series_sql("db", rates(), KEPT)
    assert "capability = '*'" in per_model.text and "model = '*'" not in per_model.text
    per_capability = rates_series_sql("db", rates(by="capability"), KEPT)
    assert "model = '*'" in per_capability.text and "capability = '*'" not in per_capability.text
    assert "FROM db.feedback_rates FINAL" in per_model.text
    assert per_model.parameters["window_seconds"] == 60
    # back to back: a sliding window ends with every base window, a chart takes every n-th
    assert "toUnixTimestamp(window_start) % {window_seconds:UInt32} = 0" in per_model.text
    assert per_model.parameters["start"] == "2026-11-25 12:00:00.000000"


def test_the_alerts_over_a_chart_are_of_its_kind_of_rows():
    assert "capability = '*'" in rate_alerts_sql("db", rates(), KEPT).text
    assert "model = '*'" in rate_alerts_sql("db", rates(by="capability"), KEPT).text


def test_a_window_the_rates_do_not_keep_is_refused_naming_the_ones_they_keep():
    with pytest.raises(ValueError, match=r"window takes 60, 300 or 3600 \(seconds\), not 61"):
        rates_series_sql("db", rates(window_seconds=61), KEPT)


def test_more_points_than_a_chart_takes_is_refused_naming_a_window_that_fits():
    fits = rates(start=NOW - timedelta(minutes=MAX_POINTS))
    assert rates_series_sql("db", fits, KEPT).parameters["window_seconds"] == 60
    with pytest.raises(ValueError, match=r"use window=300 or a shorter range") as refused:
        rates_series_sql("db", rates(start=NOW - timedelta(minutes=MAX_POINTS + 1)), KEPT)
    assert f"at most {MAX_POINTS:,}" in str(refused.value)
    with pytest.raises(ValueError, match=r"use a shorter range"):
        rates_series_sql("db", rates(window_seconds=3600, start=NOW - DAY * 3000), KEPT)


@pytest.mark.parametrize(("fields", "message"), [
    ({"by": "user"}, "by takes model or capability, not 'user'"),
    ({"model": "m" * (MAX_FILTER_CHARS + 1)}, "model takes at most 512 characters"),
    ({"environment": "e" * (MAX_FILTER_CHARS + 1)}, "environment takes at most 512 characters"),
    ({"capability": "c"}, "capability filters the rates per capability: add by=capability"),
    ({"by": "capability", "model": "m"}, "model filters the rates per model: use by=model"),
    ({"start": NOW, "end": NOW - DAY}, "from must be before to"),
])  # fmt: skip
def test_a_rates_filter_it_cannot_take_is_refused_naming_it(fields, message):
    with pytest.raises(ValueError, match=message):
        rates_series_sql("db", rates(**fields), KEPT)


@pytest.mark.parametrize(("fields", "message"), [
    ({"limit": 0}, f"limit must be between 1 and {MAX_ALERTS}"),
    ({"limit": MAX_ALERTS + 1}, f"limit must be between 1 and {MAX_ALERTS}"),
    ({"state": "pending"}, "state takes firing or resolved, not 'pending'"),
    ({"project": "p" * (MAX_FILTER_CHARS + 1)}, "project takes at most 512 characters"),
])  # fmt: skip
def test_an_alerts_filter_it_cannot_take_is_refused_naming_it(fields, message):
    with pytest.raises(ValueError, match=message):
        alert_episodes_sql("db", AlertsFilter(start=NOW - DAY, end=NOW, **fields))


def test_alerts_are_the_episodes_that_overlap_the_range_newest_first():
    query = alert_episodes_sql("db", AlertsFilter(start=NOW - DAY, end=NOW, state="resolved"))
    assert "onset < toDateTime64({end:String}, 6, 'UTC')" in query.text
    assert "resolved_at >= toDateTime64({start:String}, 6, 'UTC')" in query.text
    assert query.parameters["state"] == "resolved"
    assert "ORDER BY last_at DESC" in query.text and "LIMIT 100" in query.text


def test_a_time_range_is_since_or_from_and_to_ending_now_by_default():
    assert time_range(since=None, start=None, end=None, default=DAY, now=NOW) == (NOW - DAY, NOW)
    week = timedelta(days=7)
    assert time_range(since=week, start=None, end=None, default=DAY, now=NOW) == (NOW - week, NOW)
    start = datetime(2026, 11, 20, 8, 0)  # noqa: DTZ001 (no zone: taken as UTC)
    assert time_range(since=None, start=start, end=None, default=DAY, now=NOW) == (
        start.replace(tzinfo=UTC), NOW,
    )  # fmt: skip
    assert time_range(since=None, start=None, end=NOW - DAY, default=DAY, now=NOW) == (
        NOW - 2 * DAY, NOW - DAY,
    )  # fmt: skip
    with pytest.raises(ValueError, match="give since, or from and to, not both"):
        time_range(since=week, start=start, end=None, default=DAY, now=NOW)


def test_times_beyond_what_the_store_holds_are_held_to_it_and_never_overflow():
    early = datetime(456, 8, 22, 8, 53, tzinfo=UTC)
    start, end = time_range(since=None, start=None, end=early, default=DAY, now=NOW)
    assert start == end == datetime(1900, 1, 1, tzinfo=UTC)  # an empty range, not an error
    query = rates_series_sql("db", rates(start=start, end=end), KEPT)
    assert query.parameters["start"] == "1900-01-01 00:00:00.000000"
    year_one = datetime(1, 1, 1, tzinfo=UTC)
    assert time_range(since=None, start=None, end=year_one, default=DAY, now=NOW)[0] == start
    ages = timedelta(days=999_999_999)
    assert time_range(since=ages, start=None, end=None, default=DAY, now=NOW) == (start, NOW)
    late = datetime(9999, 12, 31, tzinfo=UTC)
    assert time_range(since=None, start=NOW, end=late, default=DAY, now=NOW)[1].year == 2299
