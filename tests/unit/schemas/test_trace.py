"""TraceEvent: a span or a whole trace, with derived latency and tokens."""

from __future__ import annotations

import pytest

from thumbline.schemas import InvalidEvent, TraceEvent, TraceStatus
from thumbline.schemas._base import MAX_CONTENT_CHARS, truncate_content


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


# The question and the answer ----------------------------------------------------------


def test_the_question_and_the_answer_are_kept_as_sent():
    t = TraceEvent.parse({"trace_id": "t", "input": "Capital of France?", "output": "Lyon."})
    assert (t.input, t.output) == ("Capital of France?", "Lyon.")


def test_a_long_answer_is_cut_to_the_limit_and_ends_with_the_marker():
    t = TraceEvent.parse({"trace_id": "t", "output": "a" * 52_113})
    assert t.output is not None
    marker = "… [truncated by thumbline: 52,113 characters]"
    assert len(t.output) == MAX_CONTENT_CHARS
    assert t.output == "a" * (MAX_CONTENT_CHARS - len(marker)) + marker


def test_text_of_exactly_the_limit_is_kept_whole_and_one_more_is_cut():
    whole = TraceEvent.parse({"trace_id": "t", "input": "q" * MAX_CONTENT_CHARS})
    assert whole.input == "q" * MAX_CONTENT_CHARS
    cut = TraceEvent.parse({"trace_id": "t", "input": "q" * (MAX_CONTENT_CHARS + 1)})
    assert cut.input is not None and len(cut.input) == MAX_CONTENT_CHARS
    assert cut.input.endswith(f"[truncated by thumbline: {MAX_CONTENT_CHARS + 1:,} characters]")


def test_the_limit_counts_characters_not_bytes_and_never_splits_one():
    text = "é🙂" * 10_000  # 20,000 characters, 60,000 bytes of UTF-8
    out = truncate_content(text)
    assert len(out) == MAX_CONTENT_CHARS
    kept = out.removesuffix("… [truncated by thumbline: 20,000 characters]")
    assert text.startswith(kept) and len(kept) == MAX_CONTENT_CHARS - 45
    assert out.encode("utf-8").decode("utf-8") == out  # whole code points only
    assert truncate_content("é" * MAX_CONTENT_CHARS) == "é" * MAX_CONTENT_CHARS


def test_a_cut_text_validates_to_itself_on_every_later_pass():
    once = TraceEvent.parse({"trace_id": "t", "output": "x" * 100_000})
    again = TraceEvent.parse(once.model_dump(mode="json"))
    assert again.output == once.output


@pytest.mark.parametrize("field", ["input", "output"])
def test_the_question_and_the_answer_are_text(field):
    with pytest.raises(InvalidEvent, match=field):
        TraceEvent.parse({"trace_id": "t", field: [{"role": "user", "content": "hi"}]})
