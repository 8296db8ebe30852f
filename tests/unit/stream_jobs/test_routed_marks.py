"""key_by_trace's routed markers, several stages in one group: how far the join may trust them.

Broker-free: markers are the dicts the join decodes off ``keyed``.
"""

from __future__ import annotations

from contextlib import nullcontext

import orjson
import pytest
from aiokafka import TopicPartition

from thumbline.stream_jobs.routed_marks import MAX_INPUTS, RoutedMarks, marker

NOW = 1_795_000_000.0


def claims(inputs: int, **at: float) -> dict:
    """A marker of the new form: ``feedback_0=NOW`` claims partition 0 of ``feedback``."""
    return {
        "routed_inputs": {k.replace("_", ":"): int(v * 1000) for k, v in at.items()},
        "inputs": inputs,
    }  # fmt: skip


def test_no_mark_until_every_input_partition_is_reported():
    marks = RoutedMarks()
    marks.add(0, claims(4, feedback_0=NOW, feedback_1=NOW))  # one stage's half
    assert marks.of(0) is None  # traces 0 and 1: nobody said how far they are
    marks.add(0, claims(4, traces_0=NOW - 5))
    assert marks.of(0) is None
    marks.add(0, claims(4, traces_1=NOW - 9))  # the other stage's half
    assert marks.of(0) == NOW - 9  # the lowest over all four
    assert marks.of(1) is None  # another partition of keyed: its own markers


def test_each_claim_only_rises_and_the_lowest_input_holds_the_mark():
    marks = RoutedMarks()
    marks.add(3, claims(2, feedback_0=NOW - 10, traces_0=NOW - 20))
    assert marks.of(3) == NOW - 20
    marks.add(3, claims(2, traces_0=NOW - 30))  # a replayed or slower stage's older claim
    assert marks.of(3) == NOW - 20  # takes nothing back: the earlier claim stays true
    marks.add(3, claims(2, traces_0=NOW))  # its new holder caught up
    assert marks.of(3) == NOW - 10


def test_the_old_form_covers_every_input_during_a_rolling_upgrade():
    marks = RoutedMarks()
    marks.add(0, {"routed": int((NOW - 50) * 1000)})  # a stage of the previous release
    assert marks.of(0) == NOW - 50
    marks.add(0, claims(2, feedback_0=NOW))  # a new stage, part of the inputs
    assert marks.of(0) == NOW - 50  # traces 0 is covered by the old claim only
    marks.add(0, claims(2, traces_0=NOW - 60))
    assert marks.of(0) == NOW - 50  # traces 0: the old claim says more
    marks.add(0, claims(2, traces_0=NOW - 10))
    assert marks.of(0) == NOW - 10


def test_forgetting_a_partition_of_keyed_drops_every_claim_on_it():
    marks = RoutedMarks()
    marks.add(0, claims(1, feedback_0=NOW))
    marks.add(0, {"routed": int(NOW * 1000)})
    marks.add(1, claims(1, feedback_0=NOW))
    marks.forget([0])
    assert marks.of(0) is None and marks.of(1) == NOW
    marks.add(0, claims(2, feedback_0=NOW))
    assert marks.of(0) is None  # not covered by what it knew before


def test_a_stage_that_learns_of_more_inputs_raises_the_count_for_good():
    marks = RoutedMarks()
    marks.add(0, claims(3, feedback_0=NOW, traces_0=NOW, otlp_0=NOW))
    marks.add(0, claims(2, feedback_0=NOW))  # a stage that does not know the third topic
    assert marks.of(0) == NOW  # still every one of the three is covered
    marks.add(0, claims(4, feedback_0=NOW))
    assert marks.of(0) is None  # a fourth input exists that nobody reported


def test_the_stages_marker_reads_back_as_its_claims():
    made = marker({TopicPartition("t.feedback", 0): NOW - 1, ("t.traces", 7): NOW}, inputs=9)
    body = orjson.loads(made)
    assert body == {
        "routed_inputs": {"t.feedback:0": int((NOW - 1) * 1000), "t.traces:7": int(NOW * 1000)},
        "inputs": 9,
    }  # fmt: skip
    marks = RoutedMarks()
    marks.add(0, body)
    assert marks.of(0) is None  # 2 of 9
    marks.add(0, orjson.loads(marker({("t.x", i): NOW for i in range(7)}, inputs=9)))
    assert marks.of(0) == NOW - 1


def test_a_join_of_the_previous_release_passes_over_the_new_marker():
    """It read any body with ``routed`` as ``{"routed": ms}`` (a dict there: a dead letter
    each second during a rolling upgrade), and any other without ``feedback_from`` as
    events it forwarded itself: none here. Its watermark waits until it is upgraded."""
    body = orjson.loads(marker({("t.feedback", 0): NOW}, inputs=2))
    assert "routed" not in body
    assert not {"feedback", "traces", "feedback_from", "traces_from", "dead"} & body.keys()


@pytest.mark.parametrize(
    "body",
    [
        {"routed": "soon"},
        {"routed": True},
        {"routed": -1},
        {"routed": 1e300},
        {"routed": None},
        {"routed": [1, 2]},
        {"routed": {"t.feedback:0": 1}, "inputs": 2},  # the old key, the new value
        {"routed_inputs": [["t.feedback:0", 1]], "inputs": 2},
        {"routed_inputs": {"t.feedback:0": 1}},  # no count of inputs
        {"routed_inputs": {"t.feedback:0": 1}, "inputs": 0},
        {"routed_inputs": {"t.feedback:0": 1}, "inputs": "2"},
        {"routed_inputs": {"t.feedback:0": 1}, "inputs": MAX_INPUTS + 1},
        {"routed_inputs": {"t.feedback:0": "1"}, "inputs": 2},
        {"routed_inputs": {"t.feedback:0": False}, "inputs": 2},
        {"routed_inputs": {"x" * 1_000: 1}, "inputs": 2},
        {"routed_inputs": {f"t:{i}": 1 for i in range(MAX_INPUTS + 1)}, "inputs": 2},
    ],
)
def test_a_marker_that_is_not_one_is_refused(body):
    marks = RoutedMarks()
    with pytest.raises(ValueError):
        marks.add(0, body)
    assert marks.of(0) is None


def test_claims_kept_per_partition_of_keyed_are_bounded():
    """A writer on ``keyed`` cannot grow the join's memory with made-up input partitions."""
    marks = RoutedMarks()
    for start in range(0, 3 * MAX_INPUTS, 1_000):
        body = {"routed_inputs": {f"t:{i}": 1 for i in range(start, start + 1_000)}, "inputs": 2}
        with pytest.raises(ValueError) if start >= MAX_INPUTS else nullcontext():
            marks.add(0, body)
    assert marks.claims(0) == MAX_INPUTS
