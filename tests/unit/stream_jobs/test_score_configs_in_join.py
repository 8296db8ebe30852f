"""The join applies score configs to every input form, and keeps them through a store outage."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from types import SimpleNamespace

import orjson

from thumbline.schemas import TimeBounds, Topics
from thumbline.schemas.score_configs import ScoreConfig, ScoreConfigIndex
from thumbline.stream_jobs.decode_input import Batch, DecodeInput
from thumbline.stream_jobs.join_state import JoinState
from thumbline.stream_jobs.join_traces import JoinTracesJob
from thumbline.stream_jobs.keyed_messages import route

TOPICS = Topics.build("t.", 1)  # one partition: nothing is forwarded
STARS = ScoreConfig(name="stars", kind="rating", range=(1.0, 5.0), bad_at_most=2.0, version=4)


def message(topic: str, value: bytes, offset: int = 0) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=value, key=None,
                           timestamp=time.time())  # fmt: skip


def decoder() -> DecodeInput:
    decode = DecodeInput(TOPICS, TimeBounds(), defaultdict(int))
    decode.configs = ScoreConfigIndex([STARS])
    return decode


EVENTS = [
    {"event_id": "one", "trace_id": "t", "name": "stars", "kind": "score", "value": 1},
    {"event_id": "seven", "trace_id": "t", "name": "stars", "kind": "score", "value": 7,
     "range": [0, 10]},
    {"event_id": "five", "trace_id": "t", "name": "stars", "value": 5, "label": "bad"},
    {"event_id": "other", "trace_id": "t", "name": "other", "value": 1, "kind": "rating"},
]  # fmt: skip


def outcome(batch: Batch) -> tuple[list[tuple], list[tuple]]:
    rows = [
        (e.event_id, e.kind, e.label, e.score, e.score_config_version)
        for events, _ in batch.feedback
        for e in events
    ]
    dead = [(d.reason, d.batch_index, d.topic) for d in batch.dead]
    return rows, dead


EXPECTED = [
    ("one", "rating", "bad", 0.0, 4),
    ("five", "rating", "good", 1.0, 4),
    ("other", "rating", "bad", 0.0, 0),  # no config: today's derivation
]


def test_a_raw_message_gets_its_configs_and_a_refused_value_is_a_dead_letter_score_config():
    batch = Batch()
    decode = decoder()
    decode.decode(message(TOPICS.feedback.name, orjson.dumps(EVENTS)), None, batch)
    assert outcome(batch) == (EXPECTED, [("score_config", 1, TOPICS.feedback.name)])
    assert "stars is configured as a rating 1..5" in batch.dead[0].error
    assert '"seven"' in batch.dead[0].raw
    assert decode.counts["dead_score_config"] == 1


def test_a_valid_message_takes_the_fast_path_with_its_configs_applied():
    batch = Batch()
    valid = [e for e in EVENTS if e["event_id"] != "seven"]
    decoder().decode(message(TOPICS.feedback.name, orjson.dumps(valid)), None, batch)
    assert outcome(batch) == (EXPECTED, [])


def test_events_routed_by_key_by_trace_get_the_same_configs_and_dead_letters():
    records = [
        SimpleNamespace(topic=TOPICS.feedback.name, partition=0, offset=i, key=None,
                        value=orjson.dumps(e), timestamp=int(time.time() * 1000))
        for i, e in enumerate(EVENTS)
    ]  # fmt: skip
    batch = Batch()
    decode = decoder()
    for value in route(TOPICS, records)[0]:
        decode.decode(message(TOPICS.keyed.name, value), None, batch)
    rows, dead = outcome(batch)
    assert rows == EXPECTED
    assert dead == [("score_config", 0, TOPICS.feedback.name)]  # names the input message
    assert batch.dead[0].offset == 1


def test_a_version_a_client_sends_is_replaced():
    batch = Batch()
    forged = {"trace_id": "t", "name": "other", "value": True, "score_config_version": 99}
    decoder().decode(message(TOPICS.feedback.name, orjson.dumps(forged)), None, batch)
    [[event], _] = batch.feedback[0]
    assert event.score_config_version == 0


async def test_a_store_that_does_not_answer_keeps_the_configs_last_read():
    reads: list[object] = [[STARS], OSError("store down"), []]

    def read() -> list[ScoreConfig]:
        result = reads.pop(0)
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[return-value]

    job = JoinTracesJob(
        topics=TOPICS, state=JoinState(), sink=SimpleNamespace(),  # type: ignore[arg-type]
        lookup=dict, producer=SimpleNamespace(),  # type: ignore[arg-type]
        score_configs=read, score_configs_seconds=0.01,
    )  # fmt: skip

    async def next_read() -> None:
        await asyncio.sleep(0.02)
        job._refresh_score_configs()
        assert job._reading_configs is not None
        await job._reading_configs

    await next_read()
    assert job.decoder.configs.get("default", "stars") == STARS
    await next_read()  # the store does not answer: the last configs stay
    assert job.decoder.configs.get("default", "stars") == STARS
    assert job.counts["score_configs_unread"] == 1
    await next_read()  # it answers again: the config was deleted
    assert job.decoder.configs.get("default", "stars") is None
