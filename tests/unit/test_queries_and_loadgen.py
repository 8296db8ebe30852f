"""Literals, --since and the load generator, without a broker or a store (the inbox:
tests/unit/thumbline/test_inbox_query.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from thumbline.producers.loadgen import LoadGenerator, LoadSpec, Spike
from thumbline.queries import literal, parse_since

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_values_in_the_rates_and_trace_sql_are_escaped_as_literals():
    assert literal("o'brien\\") == "'o\\'brien\\\\'"


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
