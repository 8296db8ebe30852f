"""Any client may write to ``feedback.enriched``: the rates count what is valid and
dead-letter the rest with the field at fault, and the stream goes on."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import orjson
import pytest

from tests.unit.stream_jobs.test_rates_and_alerts import (
    BY_MODEL,
    T0,
    AckingProducer,
    Clock,
    RecordingSink,
    marker,
    row,
)
from tests.unit.stream_jobs.test_rates_and_alerts import Message as EnrichedMessage
from tests.unit.stream_jobs.test_rates_and_alerts import TestDetector as Detector
from thumbline.schemas import Topics
from thumbline.stream_jobs.bad_feedback_rates import RateState
from thumbline.stream_jobs.rate_contributions import Rejected
from thumbline.stream_jobs.rates_job import RatesJob
from thumbline.stream_jobs.read_enriched import MAX_MESSAGE_BYTES, MAX_ROWS_PER_MESSAGE
from thumbline.stream_jobs.spike_alerts import SpikeDetector

TOPIC = "t.feedback.enriched"


class TP(NamedTuple):
    topic: str
    partition: int


def without(name: str, **extra) -> dict:
    out = row(T0 + 3, **extra)
    del out[name]
    return out


#: (a malformed row, the field its rejection names)
MALFORMED = [
    (without("ts"), "ts"),
    (row(T0 + 3, ts="yesterday"), "ts"),
    (row(T0 + 3, ts=1_795_000_023), "ts"),
    (row(T0 + 3, ts="2026-11-26T10:00:00" + "0" * 100_000), "ts"),
    (row(T0 + 3, ts="9999-12-31T23:59:59+00:00"), "ts"),
    (row(T0 + 3, ts="0001-01-01T00:00:00+00:00"), "ts"),
    (without("event_id"), "event_id"),
    ({**row(T0 + 3), "event_id": ""}, "event_id"),
    (row(T0 + 3, event_id=42), "event_id"),
    (row(T0 + 3, event_id="e" * 100_000), "event_id"),
    (without("version"), "version"),
    (row(T0 + 3, version="two"), "version"),
    (row(T0 + 3, version=1.5), "version"),
    (row(T0 + 3, version=True), "version"),
    (row(T0 + 3, version=-1), "version"),
    (row(T0 + 3, version=2**64), "version"),
    (without("trace_id", label="bad"), "trace_id"),
    (row(T0 + 3, "bad", trace_id=["t"]), "trace_id"),
    (row(T0 + 3, project={"a": 1}), "project"),
    (row(T0 + 3, project="p" * 100_000), "project"),
    (row(T0 + 3, environment=["prod"]), "environment"),
    (row(T0 + 3, model="m" * 100_000), "model"),
    (row(T0 + 3, capability=7), "capability"),
    (row(T0 + 3, "bad", comment=["wrong"]), "comment"),
    (row(T0 + 3, "bad", comment="w" * 100_000), "comment"),
    (row(T0 + 3, score="high"), "score"),
    (row(T0 + 3, score=True), "score"),
    (row(T0 + 3, retracted="no"), "retracted"),
    (5, "row"),
    ("a row", "row"),
    (None, "row"),
    ([row(T0 + 3)], "row"),
]


@pytest.fixture
def rates() -> RateState:
    return RateState(window=60, sliding=(), lateness=30, history=3600, clock=Clock())


class TestRateState:
    @pytest.mark.parametrize(("bad", "field"), MALFORMED, ids=[f for _, f in MALFORMED])
    def test_a_malformed_row_among_good_ones_is_rejected_naming_its_field(self, rates, bad, field):
        rejected: list[Rejected] = []
        rates.apply([row(T0 + 1), bad, row(T0 + 2, "good")], rejected=rejected)
        assert [(r.index, r.field) for r in rejected] == [(1, field)]
        assert field in rejected[0].error and len(rejected[0].error) < 1_000
        [ended] = rates.advance(T0 + 90, {})
        by_model = {(r.model, r.capability): r for r in ended.rows}[BY_MODEL[2:]]
        assert (by_model.bad, by_model.good, by_model.total) == (1, 1, 2)
        assert rates.applied == 2 and rates.invalid == 1

    def test_a_good_row_needs_no_trace_id_and_a_naive_ts_is_utc(self, rates):
        good = without("trace_id", label="good", ts="2026-11-18T11:07:05")  # T0 + 5 in UTC
        rejected: list[Rejected] = []
        rates.apply([good, row(T0 + 1, retracted=0, score=2)], rejected=rejected)
        assert rejected == []
        [ended] = rates.advance(T0 + 90, {})
        counted = {(r.model, r.capability): r for r in ended.rows}[BY_MODEL[2:]]
        assert (counted.good, counted.bad, counted.score_count) == (1, 1, 1)

    def test_rows_from_the_store_count_as_before(self, rates):
        from datetime import UTC, datetime

        stored = row(T0 + 1, ts=datetime.fromtimestamp(T0 + 1, UTC), retracted=0, score=None)
        rates.apply([stored])
        assert rates.applied == 1 and rates.invalid == 0


class Message(EnrichedMessage):
    """An enriched message with its topic, as faust gives it; raw bytes allowed."""

    def __init__(self, value: object, partition: int = 0, offset: int = 0, **kw) -> None:
        super().__init__(None, partition, offset, **kw)
        self.value = value if isinstance(value, bytes) else orjson.dumps(value)
        self.topic = TOPIC
        self.tp = TP(TOPIC, partition)


class RecordingProducer(AckingProducer):
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    async def send(self, topic: str, value: bytes, *args, **kwargs) -> asyncio.Future:
        self.sent.append((topic, orjson.loads(value)))
        return await super().send()


class TestRatesJob:
    @pytest.fixture
    def job(self) -> RatesJob:
        rates = RateState(window=60, sliding=(), lateness=30, clock=Clock())
        return RatesJob(topics=Topics.build("t.", 1), rates=rates,
                        detector=SpikeDetector((Detector.RULE,)), sink=RecordingSink(),
                        producer=RecordingProducer())  # fmt: skip

    async def complete(self, job: RatesJob, durable: int) -> dict:
        await job.handle([marker(T0 + 95, durable=durable)])
        await job.tick()
        return {(r["model"], r["capability"]): r for r in job.sink.rows["feedback_rates"]}

    async def test_a_bad_row_is_dead_lettered_with_its_field_and_the_good_ones_count(self, job):
        message = Message([row(T0 + 1), row(T0 + 2, ts="yesterday"), row(T0 + 3)], offset=7)
        await job.handle([message])
        [letter] = job.sink.rows["dead_letters"]
        assert (letter["topic"], letter["partition"], letter["offset"]) == (TOPIC, 0, 7)
        assert (letter["batch_index"], letter["reason"]) == (1, "invalid_ts")
        assert "yesterday" in letter["raw"] and "ts" in letter["error"]
        assert [(t, v["reason"]) for t, v in job.producer.sent] == [("t.dlq", "invalid_ts")]
        assert (await self.complete(job, durable=7))[BY_MODEL[2:]]["bad"] == 2
        assert message.acked

    @pytest.mark.parametrize(("value", "reason"), [
        (b"{not json", "bad_json"),
        (b"", "bad_json"),
        (None, "bad_json"),
        (5, "invalid_row"),
        ({"event_id": "e1", "version": 1}, "invalid_ts"),
        ({"watermarks": {"0": "soon"}}, "invalid_marker"),
        ([row(T0 + 1)] * (MAX_ROWS_PER_MESSAGE + 1), "oversize"),
        (b"[" + b" " * MAX_MESSAGE_BYTES + b"]", "oversize"),
    ], ids=["not_json", "empty", "tombstone", "scalar", "one_object", "marker", "rows",
            "bytes"])  # fmt: skip
    async def test_a_poison_message_is_dead_lettered_whole_and_the_stream_goes_on(
        self, job, value, reason
    ):
        poison = Message(b"" if value is None else value, offset=3)
        if value is None:
            poison.value = None  # a tombstone
        await job.handle([poison])
        [letter] = job.sink.rows["dead_letters"]
        assert (letter["reason"], letter["offset"], letter["batch_index"]) == (reason, 3, -1)
        assert len(letter["raw"]) <= 1_000_000 and job.rates.applied == 0
        assert poison.acked  # written where a person can read it: nothing waits for it
        await job.handle([Message([row(T0 + 1)], offset=4)])
        assert (await self.complete(job, durable=4))[BY_MODEL[2:]]["total"] == 1

    async def test_a_message_of_bad_rows_only_is_acknowledged_once_they_are_dead_lettered(
        self, job
    ):
        bad = Message([{"version": 1}, 7], offset=1)
        await job.handle([bad])
        assert bad.acked and len(job.sink.rows["dead_letters"]) == 2

    async def test_the_rows_held_for_a_rebalance_are_the_good_ones(self, job):
        await job.handle([Message([row(T0 + 1), "junk", row(T0 + 2)], offset=2)])
        [held] = job.held
        assert len(held.rows) == 2
        await job.assign({0})  # the same share: nothing rebuilt, nothing dead-lettered again
        assert len(job.sink.rows["dead_letters"]) == 1
