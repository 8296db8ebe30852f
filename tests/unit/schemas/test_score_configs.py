"""Score configs: a configured name's value decides label and score, on every path."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from thumbline.schemas import FeedbackEvent, InvalidEvent
from thumbline.schemas.score_configs import ScoreConfig, ScoreConfigIndex, apply_config


def event(**fields: object) -> FeedbackEvent:
    return FeedbackEvent.parse({"trace_id": "t1", **fields})


STARS = ScoreConfig(name="stars", kind="rating", range=(1.0, 5.0), bad_at_most=2.0, version=3)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def numeric_configs(draw: st.DrawFn) -> ScoreConfig:
    low = draw(finite)
    width = draw(st.floats(min_value=1e-3, max_value=1e6))
    high = low + width
    assume(high > low and math.isfinite(high))
    bad = draw(st.floats(min_value=low, max_value=high))
    good = draw(st.floats(min_value=low, max_value=high))
    assume(bad < good)
    kind = draw(st.sampled_from(["rating", "score"]))
    return ScoreConfig(
        name="q", kind=kind, range=(low, high), bad_at_most=bad, good_at_least=good, version=7
    )


@given(numeric_configs(), st.data())
def test_a_value_in_the_range_is_labelled_by_the_thresholds_and_scored_in_it(config, data):
    low, high = config.bounds
    value = data.draw(st.floats(min_value=low, max_value=high))
    out = apply_config(config, event(name="q", kind="score", value=value, range=(low, high)))
    bad, good = config.thresholds
    expected = "bad" if value <= bad else "good" if value >= good else "neutral"
    assert out["label"] == expected
    assert 0.0 <= out["score"] <= 1.0
    assert out["score"] == pytest.approx((value - low) / (high - low), abs=1e-8)
    assert out["score_config_version"] == 7
    assert out["kind"] == config.kind


@given(numeric_configs(), st.data())
def test_a_value_outside_the_range_is_refused_with_the_range(config, data):
    low, high = config.bounds
    value = data.draw(finite.filter(lambda v: v < low or v > high))
    with pytest.raises(ValueError, match=f"configured as a {config.kind} .*outside it"):
        apply_config(config, event(name="q", kind="score", value=value, range=(-2e6, 2e6)))


@given(
    st.dictionaries(
        st.text("abcdefgh_-", min_size=1, max_size=12),
        st.sampled_from(["good", "bad", "neutral", "custom"]),
        min_size=1,
        max_size=8,
    ),
    st.data(),
)
def test_a_category_takes_its_configured_label_and_an_unknown_one_is_refused(categories, data):
    config = ScoreConfig(name="issue", kind="category", categories=categories, version=2)
    known = data.draw(st.sampled_from(sorted(categories)))
    out = apply_config(config, event(name="issue", kind="category", value=known, label="good"))
    assert out["label"] == categories[known]
    assert out["category"] == known
    unknown = data.draw(
        st.text("xyz", min_size=1, max_size=5).filter(
            lambda c: c.lower() not in {k.lower() for k in categories}
        )
    )
    with pytest.raises(ValueError, match="is not one of them: send one of"):
        apply_config(config, event(name="issue", kind="category", value=unknown))


@given(st.sampled_from(["text", "signal", "correction"]))
def test_events_without_a_value_to_judge_pass_unchanged(kind):
    fields = {
        "text": {"value": "nice"},
        "signal": {},
        "correction": {"correction": "the right answer"},
    }[kind]
    e = event(name="stars", kind=kind, **fields)
    assert apply_config(STARS, e) == {}
    assert ScoreConfigIndex([STARS]).configure(e) == e


def test_the_readme_example_a_one_star_score_is_bad_whatever_label_was_sent():
    out = apply_config(STARS, event(name="stars", kind="score", value=1.0, label="good"))
    assert (out["label"], out["score"], out["kind"]) == ("bad", 0.0, "rating")
    out = apply_config(STARS, event(name="stars", value=5.0, label="bad", score=0.0))
    assert (out["label"], out["score"]) == ("good", 1.0)


def test_a_bare_label_for_a_configured_name_is_refused_but_its_retraction_passes():
    with pytest.raises(ValueError, match="send its value, not a label"):
        apply_config(STARS, event(name="stars", label="good"))
    assert apply_config(STARS, event(name="stars", retracted=True)) == {}


def test_a_seven_on_a_one_to_five_rating_says_what_the_config_is():
    with pytest.raises(ValueError) as caught:
        apply_config(STARS, event(name="stars", kind="score", value=7.0, range=(0.0, 10.0)))
    assert str(caught.value).startswith("stars is configured as a rating 1..5")
    assert "7 is outside it" in str(caught.value)


def test_a_thumb_config_reads_numbers_and_bools_as_up_and_down():
    thumbs = ScoreConfig(name="helpful", kind="thumb", version=1)
    assert apply_config(thumbs, event(name="helpful", value=-1.0))["label"] == "bad"
    assert apply_config(thumbs, event(name="helpful", value=True))["value"] == "up"
    with pytest.raises(ValueError, match="send 'up' or 'down'"):
        apply_config(thumbs, event(name="helpful", kind="score", value=0.5))


def test_a_retraction_is_never_refused():
    e = event(name="stars", retracted=True)
    assert apply_config(STARS, e) == {}


def test_names_without_a_config_keep_todays_derivation_and_version_zero():
    index = ScoreConfigIndex([STARS])
    e = event(name="other", value=1.0, kind="rating", label="good", score_config_version=9)
    configured = index.configure(e)
    assert (configured.label, configured.score, configured.score_config_version) == ("good", 0.0, 0)
    other_project = event(name="stars", project="p2", value=1.0, kind="rating")
    assert index.configure(other_project).label == "bad"  # today's 1-of-5
    assert index.configure(other_project).score_config_version == 0


def test_the_default_thresholds_are_the_first_and_last_quarter_of_the_range():
    assert ScoreConfig(name="s", kind="rating").thresholds == (2.0, 4.0)
    assert ScoreConfig(name="s", kind="score", range=(0.0, 10.0)).thresholds == (2.5, 7.5)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "rating", "range": (5.0, 1.0)}, "low < high"),
        ({"kind": "rating", "bad_at_most": 4.0, "good_at_least": 3.0}, "must be below"),
        ({"kind": "rating", "bad_at_most": 9.0}, "must lie in the range"),
        ({"kind": "thumb", "range": (0.0, 1.0)}, "takes no range"),
        ({"kind": "category"}, "needs its categories"),
        ({"kind": "bool", "categories": {"a": "bad"}}, "takes no categories"),
        ({"kind": "stars"}, "kind"),
    ],
)
def test_an_inconsistent_config_is_refused_with_what_to_change(fields, message):
    with pytest.raises(InvalidEvent, match=message):
        ScoreConfig.parse({"name": "s", **fields})
