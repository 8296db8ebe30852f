"""The exact bytes hosted products' SDKs and REST APIs send mean what their sender meant.

Sources (each payload below is copied from them):

- Axiom: ``axiomhq/ai`` ``packages/ai/src/feedback.ts`` at
  cee4eb0fc2ea6e7aa780f4623f41dbb76eaf180e (``sendFeedback`` builds ``{schemaUrl, id,
  ...feedbackFields, links: {trace_id, capability, step, userId, span_id,
  conversation_id}, event: "feedback", metadata}`` and POSTs it alone, not in an
  array); the ``category`` field is from the same file at
  0f2f4f8cef0b7993477e04131a080c46d1894568 (removed by 0a72aad, "put it in metadata").
- Braintrust: ``braintrustdata/braintrust-openapi`` ``openapi/spec.json`` at
  b561b12dd30b9862a48e391e86b33e96043cdc0a (``FeedbackProjectLogsEventRequest``,
  ``InsertProjectLogsEvent``); the multi-rater child span is seed 003
  (braintrust.dev/docs/instrument/user-feedback.md, "Collect multiple scores").
- HoneyHive: seed 002 (docs.honeyhive.ai, "User Feedback": ``"rating": true //
  boolean: thumbs up/down``, ``"score": 4 // number: star rating``) and
  ``honeyhiveai/python-sdk`` at b7568a42149d5497f9062b836a0056089958a2ad.
- The attributes product: seed 001 ("update the trace with a PATCH request").
"""

from __future__ import annotations

import orjson
import pytest

from thumbline.schemas import FeedbackEvent, InvalidEvent
from thumbline.schemas.shapes import derived_id, to_events
from thumbline.schemas.shapes_braintrust import braintrust_insert


def events(shape: str, payload: object) -> list[FeedbackEvent]:
    return [FeedbackEvent.model_validate(fields) for fields in to_events(shape, payload)]


def parsed(text: bytes) -> object:
    return orjson.loads(text)


class TestHoneyHiveDefaults:
    @pytest.mark.parametrize(("rating", "kind", "label", "score"), [
        (True, "thumb", "good", 1.0),
        (False, "thumb", "bad", 0.0),
        (1, "rating", "bad", 0.0),  # one star
        (2, "rating", "bad", 0.25),
        (3, "rating", "neutral", 0.5),
        (5, "rating", "good", 1.0),
    ])  # fmt: skip
    def test_rating_is_a_thumb_or_a_star_rating_where_one_is_one_star(
        self, rating, kind, label, score
    ):
        [e] = events("honeyhive", {"session_id": "s", "feedback": {"rating": rating}})
        assert (e.kind, e.label, e.score) == (kind, label, score)

    @pytest.mark.parametrize(("score", "kind", "label", "normalised"), [
        (1, "rating", "bad", 0.0),  # an integer 1-5 is stars: 1 is one star
        (4, "rating", "good", 0.75),
        (0.2, "score", "bad", 0.2),  # a fraction is a 0-1 score
        (0.9, "score", "good", 0.9),
        (0, "score", "bad", 0.0),
    ])  # fmt: skip
    def test_score_is_a_star_rating_when_an_integer_1_to_5_else_a_0_1_score(
        self, score, kind, label, normalised
    ):
        [e] = events("honeyhive", {"session_id": "s", "feedback": {"score": score}})
        assert (e.kind, e.label, e.score) == (kind, label, normalised)

    def test_the_sdk_docstring_example_is_five_stars_and_keeps_the_rest(self):
        # honeyhiveai/python-sdk src/honeyhive/tracer/core/context.py (enrich_session) at
        # b7568a42149d5497f9062b836a0056089958a2ad: feedback={"rating": 5, "helpful": True}
        [e] = events("honeyhive", {"session_id": "s", "feedback": {"rating": 5, "helpful": True}})
        assert (e.kind, e.label, e.score, e.metadata) == ("rating", "good", 1.0, {"helpful": True})

    def test_a_score_beyond_both_keeps_no_normalised_score_for_a_score_config(self):
        [e] = events("honeyhive", {"session_id": "s", "feedback": {"score": 7}})
        assert (e.kind, e.label, e.score, e.value) == ("score", "neutral", None, 7)


class TestAxiomSdk:
    # feedback.ts (cee4eb0): Feedback.number({name: 'star-rating', value: 1}) through
    # sendFeedback(links, ...), byte for byte as JSON.stringify orders it.
    STAR = (
        b'{"schemaUrl":"https://axiom.co/ai/schemas/0.0.2",'
        b'"id":"7c0f5a52-8f43-4f57-9d1e-1d2b1c9a0e11","name":"star-rating","value":1,'
        b'"kind":"number","links":{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",'
        b'"capability":"support-agent","step":"respond","userId":"user-123",'
        b'"span_id":"00f067aa0ba902b7","conversation_id":"conv-9"},"event":"feedback"}'
    )

    def test_the_flat_body_of_the_sdk_with_its_links(self):
        [e] = events("axiom", parsed(self.STAR))
        assert (e.event_id, e.trace_id, e.span_id) == (
            "7c0f5a52-8f43-4f57-9d1e-1d2b1c9a0e11",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
        )
        assert (e.capability, e.step, e.user_id, e.conversation_id) == (
            "support-agent",
            "respond",
            "user-123",
            "conv-9",
        )
        assert e.metadata == {}

    @pytest.mark.parametrize(("value", "kind", "label", "score"), [
        (1, "rating", "bad", 0.0),  # one star, not a perfect 0-1 score
        (2, "rating", "bad", 0.25),
        (4, "rating", "good", 0.75),  # four stars, not "neutral with no score"
        (5, "rating", "good", 1.0),
        (0, "score", "bad", 0.0),
        (0.85, "score", "good", 0.85),
        (0.1, "score", "bad", 0.1),
        (42, "score", "neutral", None),  # beyond both: left to a score config
    ])  # fmt: skip
    def test_a_number_is_a_star_rating_when_an_integer_1_to_5_else_a_0_1_score(
        self, value, kind, label, score
    ):
        body = parsed(self.STAR)
        body["value"] = value  # type: ignore[index]
        [e] = events("axiom", body)
        assert (e.kind, e.label, e.score, e.name) == (kind, label, score, "star-rating")

    @pytest.mark.parametrize(("fields", "kind", "label", "score"), [
        # Feedback.thumbDown({name, message}) -> value -1
        ({"name": "response-quality", "value": -1, "message": "The answer was incorrect",
          "kind": "thumb"}, "thumb", "bad", 0.0),
        ({"name": "response-quality", "value": 1, "kind": "thumb"}, "thumb", "good", 1.0),
        ({"name": "was-helpful", "value": True, "kind": "boolean"}, "bool", "good", 1.0),
        # Feedback.enum sends kind 'text'
        ({"name": "issue-category", "value": "hallucination", "kind": "text"}, "text",
         "neutral", None),
        ({"name": "response-copied", "value": None, "kind": "signal"}, "signal", "neutral",
         None),
    ])  # fmt: skip
    def test_every_kind_the_sdk_sends(self, fields, kind, label, score):
        body = {"schemaUrl": "https://axiom.co/ai/schemas/0.0.2", "id": "f-1", **fields,
                "links": {"trace_id": "t1", "capability": "support-agent"},
                "event": "feedback"}  # fmt: skip
        [e] = events("axiom", body)
        assert (e.kind, e.label, e.score, e.name) == (kind, label, score, fields["name"])
        assert e.comment == fields.get("message", fields["value"] if kind == "text" else None)

    def test_category_is_kept(self):
        # feedback.ts at 0f2f4f8: Feedback.thumbDown({name, message, category})
        body = parsed(
            b'{"schemaUrl":"https://axiom.co/ai/schemas/0.0.2","id":"f-2",'
            b'"name":"response-quality","value":-1,"message":"made up a city",'
            b'"category":"hallucination","kind":"thumb",'
            b'"links":{"trace_id":"t1","capability":"support-agent"},"event":"feedback",'
            b'"metadata":{"sessionId":"session-456","responseLength":250}}'
        )
        [e] = events("axiom", body)
        assert (e.category, e.label, e.comment, e.session_id) == (
            "hallucination",
            "bad",
            "made up a city",
            "session-456",
        )
        assert e.metadata["responseLength"] == 250

    def test_the_older_nested_shape_keeps_its_category_and_stars(self):
        [e] = events("axiom", {"links": {"traceId": "t1", "capability": "c"},
                               "feedback": {"kind": "number", "name": "stars", "value": 1,
                                            "category": "incomplete"}})  # fmt: skip
        assert (e.kind, e.label, e.category) == ("rating", "bad", "incomplete")

    def test_a_flat_body_without_links_names_the_field(self):
        with pytest.raises(InvalidEvent, match=r"links"):
            to_events("axiom", {"id": "f", "name": "x", "kind": "thumb", "value": 1,
                                "event": "feedback"})  # fmt: skip


class TestBraintrustRaters:
    def test_two_raters_on_one_span_and_score_are_two_events(self):
        # openapi FeedbackProjectLogsItem: metadata "If you have a user_id, you can log it here"
        [a] = events("braintrust", {"id": "span-1", "scores": {"correctness": 1},
                                    "metadata": {"user_id": "alice"}})  # fmt: skip
        [b] = events("braintrust", {"id": "span-1", "scores": {"correctness": 0},
                                    "metadata": {"user_id": "bob"}})  # fmt: skip
        assert a.event_id != b.event_id and (a.user_id, b.user_id) == ("alice", "bob")

    def test_the_same_rater_again_replaces_their_own_score(self):
        first = events("braintrust", {"id": "span-1", "scores": {"correctness": 1},
                                      "user_id": "alice"})  # fmt: skip
        again = events("braintrust", {"id": "span-1", "scores": {"correctness": 0},
                                      "metadata": {"user_id": "alice"}})  # fmt: skip
        assert first[0].event_id == again[0].event_id
        assert first[0].event_id == derived_id(
            "braintrust", "span-1", "score", "correctness", "alice"
        )

    def test_the_rest_envelope_is_a_list_of_log_feedback_items(self):
        from thumbline.schemas.shapes_braintrust import braintrust_feedback_items

        body = parsed(
            b'{"feedback":[{"id":"span-1","scores":{"correctness":0},"comment":"wrong city",'
            b'"metadata":{"user_id":"u7"},"source":"external"},'
            b'{"id":"span-2","expected":"Albany","tags":["geo"]}]}'
        )
        first, second = braintrust_feedback_items(body)
        [bad] = events("braintrust", first)
        assert (bad.trace_id, bad.name, bad.label, bad.user_id, bad.comment) == (
            "span-1",
            "correctness",
            "bad",
            "u7",
            "wrong city",
        )
        assert bad.metadata == {"braintrust_source": "external"}
        [fix] = events("braintrust", second)
        assert (fix.kind, fix.correction, fix.tags) == ("correction", "Albany", ("geo",))

    @pytest.mark.parametrize("body", [{}, {"feedback": {"id": "x"}}, []])
    def test_an_envelope_without_a_feedback_array_names_it(self, body):
        from thumbline.schemas.shapes_braintrust import braintrust_feedback_items

        with pytest.raises(InvalidEvent, match="feedback"):
            braintrust_feedback_items(body)


class TestBraintrustChildSpans:
    """Seed 003's multi-rater pattern as ``POST /v1/project_logs/{id}/insert`` carries it."""

    def child(self, rater: str | None, span: str = "fb-1", score: float = 0) -> dict:
        metadata = {"timestamp": "2026-11-26T04:00:00.000Z"}
        if rater is not None:
            metadata["user_id"] = rater
        return {"id": f"row-{span}", "span_id": span, "root_span_id": "root-1",
                "span_parents": ["req-span"], "scores": {"correctness": score},
                "comment": "wrong city", "metadata": metadata,
                "span_attributes": {"name": "user_feedback", "type": "task"}}  # fmt: skip

    def built(self, event: dict) -> list[FeedbackEvent]:
        return [FeedbackEvent.model_validate(f) for f in braintrust_insert(event)]

    def test_each_score_is_feedback_on_the_parent_span_of_the_request(self):
        [e] = self.built(self.child("alice"))
        assert (e.trace_id, e.span_id, e.name, e.label, e.score, e.user_id) == (
            "root-1",
            "req-span",
            "correctness",
            "bad",
            0.0,
            "alice",
        )
        assert e.comment == "wrong city"
        assert e.metadata == {"timestamp": "2026-11-26T04:00:00.000Z",
                              "braintrust_span": "fb-1"}  # fmt: skip

    def test_one_event_per_rater_and_a_rater_again_replaces_their_own(self):
        [alice] = self.built(self.child("alice", "fb-1"))
        [bob] = self.built(self.child("bob", "fb-2"))
        [alice_again] = self.built(self.child("alice", "fb-3", score=1))
        assert alice.event_id != bob.event_id
        assert alice.event_id == alice_again.event_id

    def test_without_a_rater_every_submission_stays_its_own_event(self):
        [one] = self.built(self.child(None, "fb-1"))
        [two] = self.built(self.child(None, "fb-2"))
        assert one.event_id != two.event_id

    def test_a_span_without_scores_is_refused_with_where_traces_go(self):
        with pytest.raises(InvalidEvent, match="/v1/traces"):
            braintrust_insert({"id": "r", "span_id": "req-span", "root_span_id": "root-1",
                               "input": "q", "output": "a"})  # fmt: skip


class TestTracePatch:
    def test_the_seed_001_attributes_of_a_trace_update(self):
        from thumbline.schemas.shapes import trace_update

        body = {"attributes": {"user_feedback": "negative", "user_feedback_rating": 1,
                               "user_feedback_comment": "Response was off",
                               "user_feedback_category": "incorrect",
                               "feedback_reason": "hallucination",
                               "annotation_status": "empty"},
                "tags": ["thumbs-down"]}  # fmt: skip
        thumb, rating = [FeedbackEvent.model_validate(f) for f in trace_update("t-9", None, body)]
        assert (thumb.trace_id, thumb.label, thumb.category, thumb.tags) == (
            "t-9",
            "bad",
            "incorrect",
            ("thumbs-down",),
        )
        assert (rating.label, rating.score) == ("bad", 0.0)

    def test_a_trace_id_in_the_body_that_differs_from_the_path_is_refused(self):
        from thumbline.schemas.shapes import trace_update

        with pytest.raises(InvalidEvent, match="trace_id"):
            trace_update("t-9", None, {"trace_id": "other", "user_feedback": "positive"})
