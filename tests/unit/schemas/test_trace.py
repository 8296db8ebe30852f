"""TraceEvent: a span or a whole trace, with derived latency and tokens."""

from __future__ import annotations

import pytest

from thumbline.schemas import InvalidEvent, TraceEvent, TraceStatus


def test_a_whole_trace_has_no_span_id_and_defaults():
    t = TraceEvent.parse({"trace_id": "t1"})
    assert (t.span_id, t.project, t.environment, t.status) == (None, "default", "default", "unset")


def test_latency_is_derived_from_start_and_end():
    t = TraceEvent.parse(
        {
            "trace_id": "t1",
            "start_time": "2026-11-23T10:00:00Z",
            "end_time": "2026-11-23T10:00:01.25Z",
        }
    )
    assert t.latency_ms == 1250.0


def test_a_sent_latency_is_kept():
    t = TraceEvent.parse(
        {
            "trace_id": "t1",
            "start_time": "2026-11-23T10:00:00Z",
            "end_time": "2026-11-23T10:00:01Z",
            "latency_ms": 7,
        }
    )
    assert t.latency_ms == 7


def test_total_tokens_is_derived():
    assert (
        TraceEvent.parse({"trace_id": "t", "input_tokens": 10, "output_tokens": 5}).total_tokens
        == 15
    )


def test_an_error_message_sets_the_status():
    assert TraceEvent.parse({"trace_id": "t", "error": "timeout"}).status is TraceStatus.ERROR


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (
            {"end_time": "2026-11-23T10:00:00Z", "start_time": "2026-11-23T10:00:01Z"},
            "end_time: is before",
        ),
        ({"cost_usd": -1}, "cost_usd"),
        ({"input_tokens": -5}, "input_tokens"),
        ({"status": "exploded"}, "status"),
        ({"start_time": "2026-11-23T10:00:00"}, "start_time: start_time needs a timezone"),
        ({"attributes": {"x": [[[0]]]}}, "attributes nests arrays deeper than 2"),
        ({"projekt": "p"}, "projekt: is not a field"),
    ],
)
def test_invalid_traces_are_refused_with_the_field(fields, words):
    with pytest.raises(InvalidEvent, match=words):
        TraceEvent.parse({"trace_id": "t", **fields})


@pytest.mark.parametrize(
    "fields",
    [{"latency_ms": "820"}, {"input_tokens": 5.0}, {"output_tokens": True}, {"cost_usd": "0.1"}],
)
def test_numbers_are_json_numbers_and_counts_are_integers(fields):
    with pytest.raises(InvalidEvent, match=next(iter(fields))):
        TraceEvent.parse({"trace_id": "t", **fields})
