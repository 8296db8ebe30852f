"""The SDK's feedback helpers and feedback targets, broker-free."""

from __future__ import annotations

from thumbline.producers.api import EventHelpers


def test_the_sdk_helpers_rate_a_whole_conversation_without_a_trace_id():
    event = EventHelpers()._feedback(None, conversation_id="c1", kind="thumb", value="down")
    assert (event.trace_id, event.target, event.label) == (None, "conversation", "bad")
