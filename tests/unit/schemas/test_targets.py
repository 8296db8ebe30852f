"""Feedback targets: a trace, or a whole conversation or session (no trace id)."""

from __future__ import annotations

import pytest

from thumbline.schemas import FeedbackEvent, InvalidEvent, Target, partition_for
from thumbline.stream_jobs.keyed_messages import _target


def feedback(**fields) -> FeedbackEvent:
    return FeedbackEvent.parse({"label": "good", **fields})


def test_the_target_is_the_trace_when_a_trace_id_is_given_even_with_a_conversation():
    event = feedback(trace_id="t1", conversation_id="c1", session_id="s1")
    assert (event.target, event.join_key) == (Target.TRACE, "t1")


def test_without_a_trace_id_the_conversation_then_the_session_is_the_target():
    on_conversation = feedback(conversation_id="c1", session_id="s1")
    on_session = feedback(session_id="s1")
    assert (on_conversation.target, on_conversation.join_key) == (
        Target.CONVERSATION, "conversation c1",
    )  # fmt: skip
    assert (on_session.target, on_session.join_key) == (Target.SESSION, "session s1")


def test_a_named_target_needs_its_id_and_a_whole_conversation_has_no_trace_id():
    assert feedback(target="session", conversation_id="c1", session_id="s1").join_key == (
        "session s1"
    )
    with pytest.raises(InvalidEvent, match="feedback on a session needs its session_id"):
        feedback(target="session", conversation_id="c1")
    with pytest.raises(InvalidEvent, match="carries no trace_id"):
        feedback(target="conversation", conversation_id="c1", trace_id="t1")


def test_a_conversation_key_cannot_be_any_trace_id():
    with pytest.raises(InvalidEvent, match="trace_id"):
        feedback(trace_id="conversation c1")


def test_key_by_trace_routes_a_raw_event_to_the_partition_of_its_join_key():
    raw = {"conversation_id": "c1", "label": "good"}
    assert _target(raw, 0, 8) == partition_for(feedback(**raw).join_key, 8)
    assert _target({"trace_id": "t9"}, 0, 8) == partition_for("t9", 8)
    assert _target({"label": "good"}, 5, 8) == 5  # nothing to route by: the join dead-letters it
