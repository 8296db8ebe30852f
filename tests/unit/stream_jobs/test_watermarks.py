"""The join's watermark per partition: how far its input is stored, broker-free."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace

import orjson
import pytest

from thumbline.schemas import Topics
from thumbline.stream_jobs.watermarks import Watermarks

NOW = 1_795_000_000.0
TOPICS = Topics.build("t.", 2)


def message(topic: str, offset: int, at: float, partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, timestamp=at)


@dataclass
class Held:
    event: SimpleNamespace
    settled: bool = False


@dataclass
class Producer:
    sent: list[tuple[str, bytes, int]] = field(default_factory=list)

    async def send(self, topic: str, value: bytes, partition: int) -> asyncio.Future:
        self.sent.append((topic, value, partition))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@pytest.fixture
def marks() -> Watermarks:
    marks = Watermarks(TOPICS, Producer())  # type: ignore[arg-type]
    highs = {(t.name, 0): 10 for t in (TOPICS.feedback, TOPICS.traces, TOPICS.keyed)}
    marks.highwater = lambda topic, partition: highs.get((topic, partition))
    return marks


def handled(marks: Watermarks, order: dict, topic: str, offset: int, at: float) -> Held:
    m = message(topic, offset, at)
    marks.handled(m)
    held = Held(SimpleNamespace(message=m))
    order.setdefault((topic, 0), deque()).append(held)
    return held


def test_a_caught_up_partition_holds_nothing_back(marks):
    order: dict = {}
    for topic in (TOPICS.feedback, TOPICS.traces, TOPICS.keyed):
        handled(marks, order, topic.name, 9, NOW - 50).settled = True
    assert marks.of(0, order, NOW) == NOW


def test_the_first_message_not_flushed_holds_the_partition_back(marks):
    order: dict = {}
    for topic in (TOPICS.traces, TOPICS.keyed):
        handled(marks, order, topic.name, 9, NOW - 50).settled = True
    handled(marks, order, TOPICS.feedback.name, 8, NOW - 40).settled = True
    handled(marks, order, TOPICS.feedback.name, 9, NOW - 30)  # processed, not flushed
    assert marks.of(0, order, NOW) == pytest.approx(NOW - 30.001)


def test_a_partition_behind_its_end_is_where_its_last_message_was(marks):
    order: dict = {}
    for topic in (TOPICS.traces, TOPICS.keyed):
        handled(marks, order, topic.name, 9, NOW - 50).settled = True
    handled(marks, order, TOPICS.feedback.name, 4, NOW - 600).settled = True  # 5 more to read
    assert marks.of(0, order, NOW) == NOW - 600


def test_an_unknown_position_gives_no_watermark(marks):
    assert marks.of(1, {}, NOW) is None  # partition 1: no high watermark fetched yet


async def test_markers_go_to_every_enriched_partition_each_second_with_the_offset_stored_there(
    marks,
):
    order: dict = {}
    for topic in (TOPICS.feedback, TOPICS.traces, TOPICS.keyed):
        handled(marks, order, topic.name, 9, NOW - 50).settled = True
    marks.published([SimpleNamespace(partition=1, offset=17)])
    marks.stored(marks.published_so_far())
    await marks.send({0}, order, now=NOW)
    await marks.send({0}, order, now=NOW + 0.5)  # not due yet
    sent = [(t, partition, orjson.loads(value)) for t, value, partition in marks.producer.sent]
    assert sent == [
        (TOPICS.enriched.name, 0, {"watermarks": {"0": int(NOW * 1000)}, "durable": -1}),
        (TOPICS.enriched.name, 1, {"watermarks": {"0": int(NOW * 1000)}, "durable": 17}),
    ]


def routed(inputs: int, **at: float) -> dict:
    """A routed marker: ``feedback_0=NOW`` claims partition 0 of ``feedback``."""
    return {"routed_inputs": {k.replace("_", ":"): int(v * 1000) for k, v in at.items()},
            "inputs": inputs}  # fmt: skip


def test_behind_key_by_trace_the_watermark_waits_for_its_progress():
    marks = Watermarks(TOPICS, Producer(), routed=True)  # type: ignore[arg-type]
    marks.highwater = lambda topic, partition: 10
    order: dict = {}
    handled(marks, order, TOPICS.keyed.name, 9, NOW - 50).settled = True
    assert marks.of(0, order, NOW) is None  # no marker yet: how far the stage is is unknown
    marks.routed(0, routed(2, feedback_0=NOW - 30, traces_0=NOW - 20))
    assert marks.of(0, order, NOW) == NOW - 30  # the join caught up, the stage did not
    marks.routed(0, routed(2, feedback_0=NOW - 40))  # an older claim (a replay) takes nothing back
    assert marks.of(0, order, NOW) == NOW - 30
    marks.routed(0, routed(2, feedback_0=NOW, traces_0=NOW))
    assert marks.of(0, order, NOW) == NOW
    marks.forget([0])
    assert marks.of(0, order, NOW) is None


def test_behind_several_stages_an_input_partition_nobody_reported_holds_the_watermark():
    marks = Watermarks(TOPICS, Producer(), routed=True)  # type: ignore[arg-type]
    marks.highwater = lambda topic, partition: 10
    order: dict = {}
    handled(marks, order, TOPICS.keyed.name, 9, NOW - 50).settled = True
    marks.routed(0, routed(4, feedback_0=NOW, feedback_1=NOW))  # one stage's share
    marks.routed(0, routed(4, traces_0=NOW))  # another's, which just got traces 1
    assert marks.of(0, order, NOW) is None
    marks.routed(0, routed(4, traces_0=NOW, traces_1=NOW - 5))
    assert marks.of(0, order, NOW) == NOW - 5


def test_behind_a_stage_of_the_previous_release_its_marker_covers_every_input():
    marks = Watermarks(TOPICS, Producer(), routed=True)  # type: ignore[arg-type]
    marks.highwater = lambda topic, partition: 10
    order: dict = {}
    handled(marks, order, TOPICS.keyed.name, 9, NOW - 50).settled = True
    marks.routed(0, {"routed": int((NOW - 3) * 1000)})
    assert marks.of(0, order, NOW) == NOW - 3
