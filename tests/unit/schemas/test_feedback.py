"""FeedbackEvent: every kind of feedback in the seeds, the label/score mapping, and its errors."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from thumbline.schemas import (
    Annotator,
    FeedbackEvent,
    FeedbackKind,
    InvalidEvent,
    Label,
    Source,
    TimeBounds,
)
from thumbline.schemas.feedback import BAD_AT_MOST, GOOD_AT_LEAST, ISSUE_CATEGORIES


def parse(**fields):
    return FeedbackEvent.parse({"trace_id": "t1", **fields})


def problem_fields(exc: InvalidEvent) -> list[str]:
    return [field for field, _, _ in exc.problems]


class TestEachKind:
    def test_thumb_up_is_good_with_score_one(self):
        e = parse(kind="thumb", value="up")
        assert (e.label, e.score, e.value, e.source) == ("good", 1.0, "up", Source.EXPLICIT)

    @pytest.mark.parametrize("value", ["down", "DOWN", -1, False])
    def test_thumb_down_in_any_spelling_is_bad(self, value):
        e = parse(kind="thumb", value=value)
        assert (e.label, e.score, e.value) == ("bad", 0.0, "down")

    @pytest.mark.parametrize(
        ("stars", "label", "score"),
        [
            (1, "bad", 0.0),
            (2, "bad", 0.25),
            (3, "neutral", 0.5),
            (4, "good", 0.75),
            (5, "good", 1.0),
        ],
    )
    def test_star_rating_maps_to_label_and_score(self, stars, label, score):
        e = parse(kind="rating", value=stars)
        assert (e.label, e.score) == (label, score)

    def test_relevance_score_in_zero_one(self):
        e = parse(kind="score", name="relevance", value=0.85)
        assert (e.label, e.score, e.name) == ("good", 0.85, "relevance")

    def test_score_with_range_is_normalised(self):
        assert parse(kind="score", value=7, range=[0, 10]).score == pytest.approx(0.7)

    def test_score_outside_zero_one_without_range_keeps_no_score(self):
        e = parse(kind="score", value=42)
        assert (e.score, e.label) == (None, "neutral")

    def test_bool_was_this_helpful(self):
        assert (parse(kind="bool", value=True).label, parse(kind="bool", value=False).label) == (
            "good",
            "bad",
        )

    def test_text_value_becomes_the_comment(self):
        e = parse(kind="text", value="saved me hours")
        assert (e.comment, e.label, e.score) == ("saved me hours", "neutral", None)

    @pytest.mark.parametrize("category", sorted(ISSUE_CATEGORIES))
    def test_issue_categories_are_bad(self, category):
        e = parse(kind="category", value=category)
        assert (e.category, e.label) == (category, "bad")

    def test_a_custom_taxonomy_category_is_neutral(self):
        assert parse(kind="category", value="billing-question").label == "neutral"

    def test_signal_is_implicit_and_has_no_value(self):
        e = parse(kind="signal", name="copied")
        assert (e.source, e.label, e.score, e.value) == (Source.IMPLICIT, "neutral", None, None)

    def test_correction_is_an_edit(self):
        e = parse(kind="correction", value="The capital is Paris.")
        assert (e.correction, e.label) == ("The capital is Paris.", "edit")

    def test_trulayer_style_direct_label(self):
        e = parse(label="bad", comment="Wrong answer", user_id="u_42")
        assert (e.kind, e.label, e.score, e.comment) == (
            FeedbackKind.LABEL,
            "bad",
            0.0,
            "Wrong answer",
        )

    def test_custom_label_is_kept_as_sent(self):
        e = parse(label="Needs-Review")
        assert (e.label, e.score) == ("Needs-Review", None)

    def test_standard_labels_are_lowercased(self):
        assert parse(label="GOOD").label == "good"

    def test_client_label_wins_over_derived(self):
        assert parse(kind="rating", value=5, label="edit").label == "edit"

    @pytest.mark.parametrize(("alias", "kind"), [("number", "score"), ("enum", "category")])
    def test_axiom_kind_names_are_accepted(self, alias, kind):
        assert parse(kind=alias, value=0.5 if kind == "score" else "incorrect").kind == kind

    def test_kind_is_inferred_from_the_value(self):
        assert parse(value=True).kind == FeedbackKind.BOOL
        assert parse(value=4).kind == FeedbackKind.RATING
        assert parse(value=0.3).kind == FeedbackKind.SCORE
        assert parse(comment="hm").kind == FeedbackKind.TEXT
        assert parse(correction="x").kind == FeedbackKind.CORRECTION


class TestDefaults:
    def test_event_id_is_generated_and_unique(self):
        a, b = parse(label="good"), parse(label="good")
        assert a.event_id and a.event_id != b.event_id

    def test_client_event_id_is_kept(self):
        assert parse(label="good", event_id="idem-1").event_id == "idem-1"

    def test_ts_defaults_to_now_in_utc(self):
        e = parse(label="good")
        assert e.ts.tzinfo is not None and abs(datetime.now(UTC) - e.ts) < timedelta(seconds=5)

    def test_ts_with_offset_is_normalised_to_utc(self):
        e = parse(label="good", ts="2026-11-23T12:00:00+02:00")
        assert e.ts == datetime(2026, 11, 23, 10, tzinfo=UTC) and e.ts.utcoffset() == timedelta(0)

    def test_models_are_frozen(self):
        e = parse(label="good")
        with pytest.raises(ValueError, match="frozen"):
            e.label = "bad"  # type: ignore[misc]

    def test_wire_json_round_trips(self):
        e = parse(kind="rating", value=4, tags=["thumbs-up"], metadata={"a": {"b": [1, 2]}})
        assert FeedbackEvent.parse(__import__("orjson").loads(e.to_json())) == e


class TestAnnotator:
    """Who gave the feedback: an end user unless the event says otherwise."""

    def test_feedback_without_an_annotator_comes_from_an_end_user(self):
        assert parse(kind="thumb", value="down").annotator is Annotator.END_USER

    @pytest.mark.parametrize("who", ["end_user", "reviewer", "evaluator", "code"])
    def test_each_annotator_is_kept_and_travels_on_the_wire(self, who):
        e = parse(kind="score", value=0.2, annotator=who)
        assert e.annotator == Annotator(who)
        assert __import__("orjson").loads(e.to_json())["annotator"] == who

    def test_an_unknown_annotator_is_refused_naming_the_field(self):
        with pytest.raises(InvalidEvent) as info:
            parse(kind="thumb", value="up", annotator="robot")
        assert problem_fields(info.value) == ["annotator"]


class TestErrorsNameTheField:
    @pytest.mark.parametrize(
        ("fields", "field", "words"),
        [
            ({"kind": "rating", "value": 9}, "value", "outside the range [1, 5]"),
            ({"kind": "thumb", "value": "meh"}, "value", "'up' or 'down'"),
            ({"kind": "bool", "value": "yes"}, "value", "true or false"),
            ({"kind": "signal", "name": "copied", "value": 1}, "value", "carries no value"),
            ({"kind": "sparkle", "value": 1}, "kind", "thumb"),
            ({}, "kind", "says nothing"),
            ({"label": "good", "ts": "2026-11-23T10:00:00"}, "ts", "needs a timezone"),
            ({"label": "good", "lable": "bad"}, "lable", "not a field"),
            ({"label": "good", "range": [5, 1]}, "range", "low < high"),
            ({"label": "good", "comment": "x" * 10_001}, "comment", "at most 10000"),
            ({"label": "good", "tags": ["t"] * 33}, "tags", "at most 32"),
        ],
    )
    def test_invalid_input_gives_a_precise_error(self, fields, field, words):
        with pytest.raises(InvalidEvent) as info:
            parse(**fields)
        assert field in problem_fields(info.value)
        assert words in str(info.value)

    def test_missing_trace_id(self):
        with pytest.raises(InvalidEvent) as info:
            FeedbackEvent.parse({"label": "good"})
        assert "trace_id: give the trace the feedback is about, or a conversation_id" in str(
            info.value
        )

    def test_trace_id_with_whitespace(self):
        with pytest.raises(
            InvalidEvent, match="trace_id: must be non-empty and contain no whitespace"
        ):
            FeedbackEvent.parse({"trace_id": "a b", "label": "good"})

    def test_metadata_deeper_than_five_objects(self):
        deep = {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}
        with pytest.raises(InvalidEvent, match="deeper than 5"):
            parse(label="good", metadata=deep)

    def test_metadata_arrays_nested_three_deep(self):
        with pytest.raises(InvalidEvent, match="arrays deeper than 2"):
            parse(label="good", metadata={"a": [[[1]]]})

    def test_metadata_too_large(self):
        with pytest.raises(InvalidEvent, match="bytes of JSON"):
            parse(label="good", metadata={"blob": "x" * 20_000})

    def test_metadata_at_the_limits_is_accepted(self):
        ok = {"a": {"b": {"c": {"d": {"e": [[1, 2]]}}}}}
        assert parse(label="good", metadata=ok).metadata == ok

    def test_invalid_event_is_not_retriable(self):
        with pytest.raises(InvalidEvent) as info:
            parse(kind="rating", value=0)
        assert info.value.retriable is False


class TestMappingProperties:
    @given(
        st.floats(-1e6, 1e6, allow_nan=False),
        st.floats(0.001, 1e6, allow_nan=False),
        st.floats(0, 1),
    )
    def test_ranged_scores_are_normalised_into_zero_one(self, low, width, position):
        high = low + width
        value = min(high, low + width * position)
        if not (low < high and math.isfinite(high)):
            return
        e = parse(kind="score", value=value, range=[low, high])
        assert e.score is not None and 0.0 <= e.score <= 1.0
        assert e.score == pytest.approx((value - low) / (high - low), abs=1e-6)

    @given(st.floats(0, 1))
    def test_label_follows_the_thresholds(self, value):
        e = parse(kind="score", value=value)
        expected = (
            Label.BAD
            if e.score <= BAD_AT_MOST
            else Label.GOOD
            if e.score >= GOOD_AT_LEAST
            else Label.NEUTRAL
        )
        assert e.label == expected

    @given(st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not 1 <= v <= 5))
    def test_ratings_outside_the_scale_are_refused(self, value):
        with pytest.raises(InvalidEvent, match="outside the range"):
            parse(kind="rating", value=value)

    @given(st.text(min_size=1, max_size=64).filter(lambda s: s.strip() == s and s))
    def test_any_custom_label_round_trips(self, label):
        e = parse(label=label)
        assert e.label in (label, label.lower())

    @given(st.datetimes(timezones=st.just(timezone(timedelta(hours=5)))))
    def test_aware_timestamps_become_utc_at_the_same_instant(self, ts):
        try:
            e = parse(label="good", ts=ts)
        except InvalidEvent as exc:  # the first hours of year 1 have no UTC time
            assert ts.year == 1 and "has no UTC time" in str(exc)
        else:
            assert e.ts == ts and e.ts.utcoffset() == timedelta(0)

    def test_a_time_with_no_utc_instant_is_an_invalid_event_not_a_crash(self):
        year_one = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
        with pytest.raises(InvalidEvent, match="ts: 0001-01-01T00:00:00\\+05:00 has no UTC time"):
            parse(label="good", ts=year_one)
        with pytest.raises(ValidationError, match="has no UTC time"):  # the stream's fast path
            FeedbackEvent.model_validate_json(
                b'{"trace_id":"t","label":"good","ts":"0001-01-01T01:00:00+05:00"}'
            )

    @given(st.datetimes(timezones=st.none()))
    def test_naive_timestamps_are_refused(self, ts):
        with pytest.raises(InvalidEvent, match="ts"):
            parse(label="good", ts=ts)


@pytest.mark.parametrize(
    "fields",
    [{"retracted": "yes"}, {"retracted": 1}, {"score": "0.5"}, {"range": ["1", "5"]}],
)
def test_booleans_and_numbers_are_json_booleans_and_numbers(fields):
    with pytest.raises(InvalidEvent, match=next(iter(fields))):
        parse(kind="rating", value=3, **fields)


class TestTimeBounds:
    NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("ts", "problem"),
        [
            (NOW + timedelta(minutes=61), "ts: is 1.02 h ahead of the time it was received"),
            (NOW - timedelta(days=8), "ts: is 8 d older than the time it was received"),
            (datetime(2300, 1, 1, tzinfo=UTC), "ts: is 99,"),
        ],
    )
    def test_an_event_time_far_from_its_reception_is_refused_naming_the_field(self, ts, problem):
        with pytest.raises(InvalidEvent) as caught:
            TimeBounds().check(parse(label="bad", ts=ts), self.NOW)
        assert caught.value.reason.startswith(problem)

    @pytest.mark.parametrize("offset", [timedelta(minutes=59), -timedelta(days=6, hours=23)])
    def test_times_within_the_bounds_pass(self, offset):
        TimeBounds().check(parse(label="bad", ts=self.NOW + offset), self.NOW)

    def test_the_bounds_are_settings(self):
        with pytest.raises(InvalidEvent, match="at most 10 s"):
            TimeBounds(max_future=10).check(
                parse(label="bad", ts=self.NOW + timedelta(seconds=11)), self.NOW
            )
