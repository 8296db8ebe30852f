"""Hosted products' feedback payloads become the right FeedbackEvents."""

from __future__ import annotations

import pytest

from thumbline.schemas import FeedbackEvent, InvalidEvent
from thumbline.schemas.shapes import SHAPES, derived_id, to_events


def events(shape: str, payload: dict) -> list[FeedbackEvent]:
    return [FeedbackEvent.model_validate(fields) for fields in to_events(shape, payload)]


class TestTruLayer:
    def test_a_bad_label_with_a_comment_and_a_user(self):
        [e] = events("trulayer", {"trace_id": "t1", "label": "bad", "user_id": "u_42",
                                  "comment": "Wrong answer: the capital is Paris."})  # fmt: skip
        assert (e.trace_id, e.label, e.score, e.user_id) == ("t1", "bad", 0.0, "u_42")
        assert e.comment == "Wrong answer: the capital is Paris." and e.kind == "label"

    def test_an_inline_edit_is_a_correction_labelled_edit(self):
        [e] = events("trulayer", {"trace_id": "t1", "label": "edit", "comment": "Paris"})
        assert (e.kind, e.label, e.correction, e.comment) == (
            "correction",
            "edit",
            "Paris",
            "Paris",
        )

    def test_a_custom_label_is_kept_and_camel_case_ids_are_read(self):
        [e] = events("trulayer", {"traceId": "t1", "label": "too-formal", "userId": "u1"})
        assert (e.trace_id, e.label, e.user_id, e.score) == ("t1", "too-formal", "u1", None)

    def test_a_client_id_is_the_event_id(self):
        [e] = events("trulayer", {"trace_id": "t1", "label": "good", "event_id": "fb-1"})
        assert e.event_id == "fb-1"

    def test_no_trace_id_names_the_field(self):
        with pytest.raises(InvalidEvent, match="trace_id: is required"):
            to_events("trulayer", {"label": "bad"})


class TestBraintrust:
    PAYLOAD = {"id": "span-1", "scores": {"correctness": 0, "relevance": 0.9},
               "comment": "wrong city", "expected": "Albany",
               "metadata": {"user_id": "u7", "plan": "pro"}}  # fmt: skip

    def test_one_score_event_per_name_and_the_expected_value_as_a_correction(self):
        correctness, relevance, expected = events("braintrust", self.PAYLOAD)
        assert (correctness.name, correctness.kind, correctness.score, correctness.label) == (
            "correctness",
            "score",
            0.0,
            "bad",
        )
        assert (relevance.name, relevance.score, relevance.label) == ("relevance", 0.9, "good")
        assert (expected.kind, expected.correction, expected.label) == (
            "correction",
            "Albany",
            "edit",
        )
        assert correctness.comment == "wrong city" and relevance.comment is None
        assert {e.user_id for e in (correctness, relevance, expected)} == {"u7"}
        assert correctness.metadata == {"plan": "pro"} and correctness.trace_id == "span-1"

    def test_sending_a_score_again_replaces_it(self):
        first = events("braintrust", {"id": "span-1", "scores": {"correctness": 1}})
        again = events("braintrust", {"id": "span-1", "scores": {"correctness": 0}})
        assert first[0].event_id == again[0].event_id
        assert first[0].event_id == derived_id("braintrust", "span-1", "score", "correctness")

    def test_a_null_score_withdraws_it(self):
        [e] = events("braintrust", {"id": "span-1", "scores": {"correctness": None}})
        assert e.retracted and e.event_id == derived_id(
            "braintrust", "span-1", "score", "correctness"
        )

    def test_a_root_span_id_is_the_trace_and_id_the_span(self):
        [e] = events("braintrust", {"id": "s2", "root_span_id": "root", "scores": {"c": 1}})
        assert (e.trace_id, e.span_id) == ("root", "s2")

    def test_a_comment_alone_is_a_text_event(self):
        [e] = events("braintrust", {"id": "s", "comment": "meh"})
        assert (e.kind, e.comment, e.label) == ("text", "meh", "neutral")

    @pytest.mark.parametrize(("score", "problem"), [(7, "outside the range"), ("x", "a number")])
    def test_a_score_that_is_not_in_0_1_is_refused_by_the_contract(self, score, problem):
        with pytest.raises(ValueError, match=problem):
            events("braintrust", {"id": "s", "scores": {"c": score}})


class TestHoneyHive:
    def test_a_session_thumb_with_actions_ground_truth_and_nested_fields(self):
        payload = {"session_id": "sess-1", "feedback": {
            "rating": False, "comment": "hallucinated the capital", "ground_truth": "Albany",
            "actions": {"copied": True, "regenerated": False}, "user_id": "u1",
            "step1": {"retry": True}, "edits": [{"value": "New York"}]}}  # fmt: skip
        thumb, correction, copied = events("honeyhive", payload)
        assert (thumb.trace_id, thumb.span_id, thumb.kind, thumb.label) == (
            "sess-1",
            None,
            "thumb",
            "bad",
        )
        assert thumb.comment == "hallucinated the capital" and thumb.user_id == "u1"
        assert thumb.metadata == {"step1": {"retry": True}, "edits": [{"value": "New York"}]}
        assert (correction.kind, correction.correction) == ("correction", "Albany")
        assert (copied.kind, copied.name, copied.source, copied.label) == (
            "signal",
            "copied",
            "implicit",
            "neutral",
        )

    def test_a_span_star_rating(self):
        [e] = events("honeyhive", {"session_id": "s", "event_id": "span-9",
                                   "feedback": {"score": 4}})  # fmt: skip
        assert (e.trace_id, e.span_id, e.kind, e.score, e.label) == (
            "s",
            "span-9",
            "rating",
            0.75,
            "good",
        )

    def test_nesting_deeper_than_honeyhive_allows_is_refused(self):
        deep = {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}
        with pytest.raises(ValueError, match="deeper than 5"):
            events("honeyhive", {"session_id": "s", "feedback": {"rating": True, "x": deep}})

    def test_an_action_that_is_not_a_bool_names_the_field(self):
        with pytest.raises(InvalidEvent, match=r"feedback\.actions\.copied"):
            to_events("honeyhive", {"session_id": "s", "feedback": {"actions": {"copied": "yes"}}})


class TestAxiom:
    LINKS = {"traceId": "t1", "spanId": "sp1", "capability": "support-agent", "step": "respond",
             "conversationId": "c1", "userId": "u1"}  # fmt: skip

    @pytest.mark.parametrize(("feedback", "kind", "label", "score"), [
        ({"kind": "thumb", "name": "response-quality", "value": "down"}, "thumb", "bad", 0.0),
        ({"kind": "thumb", "name": "response-quality", "value": 1}, "thumb", "good", 1.0),
        ({"kind": "number", "name": "relevance-score", "value": 0.85}, "score", "good", 0.85),
        ({"kind": "bool", "name": "was-helpful", "value": True}, "bool", "good", 1.0),
        ({"kind": "text", "name": "user-comment", "value": "saved hours"}, "text", "neutral", None),
        ({"kind": "enum", "name": "issue", "value": "hallucination"}, "category", "bad", None),
        ({"kind": "signal", "name": "response-copied"}, "signal", "neutral", None),
    ])  # fmt: skip
    def test_every_kind(self, feedback, kind, label, score):
        [e] = events("axiom", {"links": self.LINKS, "feedback": feedback})
        assert (e.kind, e.label, e.score, e.name) == (kind, label, score, feedback["name"])
        assert (e.trace_id, e.span_id, e.capability, e.step) == (
            "t1",
            "sp1",
            "support-agent",
            "respond",
        )
        assert (e.conversation_id, e.user_id) == ("c1", "u1")

    def test_message_is_the_comment_and_metadata_ids_are_lifted(self):
        [e] = events("axiom", {"links": self.LINKS, "feedback": {
            "kind": "thumb", "value": "up", "message": "Great answer!",
            "metadata": {"sessionId": "session-456", "responseLength": 250}}})  # fmt: skip
        assert e.comment == "Great answer!" and e.session_id == "session-456"
        assert e.metadata == {"responseLength": 250}

    def test_a_missing_kind_names_the_field(self):
        with pytest.raises(InvalidEvent, match=r"feedback\.kind"):
            to_events("axiom", {"links": self.LINKS, "feedback": {"name": "x"}})


class TestSpanAttributes:
    def test_a_negative_verdict_with_rating_comment_category_and_time(self):
        thumb, rating = events("attributes", {"trace_id": "t", "span_id": "s", "attributes": {
            "user_feedback": "negative", "user_feedback_rating": 2,
            "user_feedback_comment": "Response was off", "user_feedback_category": "incorrect",
            "user_feedback_timestamp": "2026-11-24T10:00:00Z", "feedback_reason": "hallucination",
            "annotation_status": "empty"}})  # fmt: skip
        assert (thumb.kind, thumb.label, thumb.comment, thumb.category) == (
            "thumb",
            "bad",
            "Response was off",
            "incorrect",
        )
        assert thumb.metadata == {"annotation_status": "empty", "feedback_reason": "hallucination"}
        assert (rating.kind, rating.score, rating.label) == ("rating", 0.25, "bad")
        assert thumb.ts.isoformat() == "2026-11-24T10:00:00+00:00" and rating.ts == thumb.ts

    def test_a_thumbs_up_tag_stands_for_the_verdict(self):
        [e] = events("attributes", {"trace_id": "t", "tags": ["thumbs-up"]})
        assert (e.kind, e.label, e.tags) == ("thumb", "good", ("thumbs-up",))

    def test_a_reason_alone_is_a_category_and_flat_attributes_are_read(self):
        [e] = events("attributes", {"trace_id": "t", "feedback_reason": "wrong_policy"})
        assert (e.kind, e.category, e.label) == ("category", "wrong_policy", "bad")

    def test_nothing_to_say_is_refused(self):
        with pytest.raises(InvalidEvent, match="carries no feedback"):
            to_events("attributes", {"trace_id": "t", "attributes": {"annotation_status": "empty"}})


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_body_that_is_not_an_object_is_refused_by_every_shape(shape):
    with pytest.raises(InvalidEvent, match="must be a JSON object"):
        to_events(shape, ["not", "an", "object"])
