"""The wire format: one JSON object or an array of them per Kafka message."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thumbline.schemas import FeedbackEvent, WireError, decode_message, encode_batch, encode_event
from thumbline.schemas.wire import MAX_BATCH_EVENTS


def test_a_single_object_is_one_event():
    assert decode_message(b'{"trace_id": "t", "label": "good"}') == [
        {"trace_id": "t", "label": "good"}
    ]


def test_an_array_is_a_batch_with_items_left_for_per_item_validation():
    assert decode_message(b'[{"trace_id": "a"}, 3, {"trace_id": "b"}]') == [
        {"trace_id": "a"},
        3,
        {"trace_id": "b"},
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (None, "bad_json"),
        (b'"a string"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"[]", "empty_batch"),
        (orjson.dumps([{}] * (MAX_BATCH_EVENTS + 1)), "batch_too_large"),
    ],
)
def test_unusable_messages_say_why(raw, reason):
    with pytest.raises(WireError) as info:
        decode_message(raw)
    assert info.value.reason == reason and not info.value.retriable


def test_oversize_messages_are_refused_before_parsing():
    with pytest.raises(WireError) as info:
        decode_message(b"[" + b" " * 100 + b"]", max_bytes=50)
    assert info.value.reason == "oversize"


@given(st.lists(st.sampled_from(["good", "bad", "edit"]), min_size=1, max_size=50))
def test_encoded_batches_decode_to_the_same_events(labels):
    events = [
        FeedbackEvent.parse({"trace_id": f"t{i}", "label": lb}) for i, lb in enumerate(labels)
    ]
    decoded = [FeedbackEvent.parse(item) for item in decode_message(encode_batch(events))]
    assert decoded == events


def test_a_single_encoded_event_decodes_to_itself():
    event = FeedbackEvent.parse({"trace_id": "t", "kind": "rating", "value": 3})
    assert [FeedbackEvent.parse(d) for d in decode_message(encode_event(event))] == [event]
