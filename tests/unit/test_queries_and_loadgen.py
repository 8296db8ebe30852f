"""Inbox SQL and the load generator, without a broker or a store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from thumbline.producers.loadgen import LoadGenerator, LoadSpec, Spike
from thumbline.queries import InboxFilter, inbox_sql, literal, parse_since

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_values_are_escaped_as_literals():
    assert literal("o'brien\\") == "'o\\'brien\\\\'"
    sql = inbox_sql("thumbline", InboxFilter(user_id="x' OR 1=1 --"))
    assert "user_id = 'x\\' OR 1=1 --'" in sql


def test_every_filter_becomes_a_condition():
    sql = inbox_sql("db", InboxFilter(
        labels=("bad", "edit"), project="shop", environment="prod", model="m1", capability="c",
        user_id="u", session_id="s", has_comment=True, since=timedelta(days=7), limit=20,
    ), now=NOW)  # fmt: skip
    for clause in (
        "label IN ('bad', 'edit')", "project = 'shop'", "environment = 'prod'", "model = 'm1'",
        "capability = 'c'", "user_id = 'u'", "session_id = 's'", "comment != ''",
        "ts >= toDateTime64('2026-11-16 12:00:00.000000', 6, 'UTC')", "retracted = 0",
    ):  # fmt: skip
        assert clause in sql
    assert sql.endswith("ORDER BY ts DESC, event_id LIMIT 20") and "FROM db.feedback FINAL" in sql


def test_the_inbox_shows_who_gave_the_feedback_and_filters_on_it():
    sql = inbox_sql("db", InboxFilter(annotators=("evaluator", "reviewer")))
    assert "annotator IN ('evaluator', 'reviewer')" in sql
    assert sql.startswith("SELECT ") and "annotator" in sql.split(" FROM ")[0]
    assert "annotator" not in inbox_sql("db", InboxFilter()).split(" WHERE ")[1]  # all by default


def test_an_unknown_annotator_is_refused_with_those_that_exist():
    with pytest.raises(ValueError, match="--annotator takes end_user, reviewer, evaluator or code"):
        inbox_sql("db", InboxFilter(annotators=("judge",)))


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800)])
def test_since_accepts_minutes_hours_days(text, seconds):
    assert parse_since(text).total_seconds() == seconds


def test_since_explains_what_it_accepts():
    with pytest.raises(ValueError, match="e.g. 7d"):
        parse_since("last week")


def test_the_load_generator_is_reproducible_from_its_seed():
    a, b = LoadGenerator(LoadSpec(seed=7, run_id="r")), LoadGenerator(LoadSpec(seed=7, run_id="r"))
    pairs_a = [a.pair(0)[1].model_dump(exclude={"received_at", "ts"}) for _ in range(50)]
    pairs_b = [b.pair(0)[1].model_dump(exclude={"received_at", "ts"}) for _ in range(50)]
    assert pairs_a == pairs_b


def test_a_spike_raises_the_bad_share_only_on_its_dimensions_and_window():
    spec = LoadSpec(seed=3, bad_share=0.05, projects=2,
                    spike=Spike(start=10, end=20, bad_share=0.9, project="project-0"))  # fmt: skip
    gen = LoadGenerator(spec)
    inside, outside = [], []
    for i in range(4000):
        trace, feedback, in_spike = gen.pair(15 if i % 2 else 5)
        (inside if in_spike else outside).append(feedback.label == "bad")
        assert not in_spike or trace.project == "project-0"
    assert sum(inside) / len(inside) > 0.8
    assert sum(outside) / len(outside) < 0.1


def test_a_judge_rates_its_share_of_traces_and_leaves_the_users_feedback_as_it_was():
    plain = LoadGenerator(LoadSpec(seed=4, run_id="r"))
    spec = LoadSpec(seed=4, run_id="r", evaluator_share=0.2)
    judged = LoadGenerator(spec)
    users, verdicts = [], []
    for _ in range(4000):
        trace, fb, _ = judged.pair(0)
        users.append(fb.model_dump(exclude={"received_at", "ts"}))
        verdicts.append(judged.verdict(trace))
    assert users == [plain.pair(0)[1].model_dump(exclude={"received_at", "ts"}) for _ in users]
    given = [v for v in verdicts if v is not None]
    assert 0.17 < len(given) / len(verdicts) < 0.23
    assert {(v.annotator, v.name) for v in given} == {("evaluator", "llm-judge")}
    assert 0.4 < sum(v.label == "bad" for v in given) / len(given) < 0.6
    assert LoadGenerator(LoadSpec(seed=4)).verdict(trace) is None  # no share: no judge


def test_an_inbox_time_without_a_zone_is_utc_whoever_asks():
    naive = InboxFilter(start=datetime(2026, 11, 24, 10, 0), end=datetime(2026, 11, 24, 11, 0))  # noqa: DTZ001 (naive on purpose)
    utc = InboxFilter(start=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
                      end=datetime(2026, 11, 24, 11, 0, tzinfo=UTC))  # fmt: skip
    assert naive.where() == utc.where() and "2026-11-24 10:00:00" in naive.where()


@pytest.mark.parametrize("when", [
    datetime(1, 1, 1, 1, 42, tzinfo=timezone(timedelta(hours=3))),  # found by schemathesis
    datetime(1425, 1, 12, tzinfo=UTC),
    datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-3))),
])  # fmt: skip
def test_any_time_filters_and_those_beyond_the_store_are_clamped(when):
    late = when.year > 2299
    since, until = InboxFilter(start=when).where(), InboxFilter(end=when).where()
    assert since == ("retracted = 0 AND 0" if late else "retracted = 0")  # from: none, or all
    assert until == ("retracted = 0" if late else "retracted = 0 AND 0")  # to: all, or none
