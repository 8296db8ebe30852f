"""Outages are waited out: which errors waiting can cure, the back-off, quiet logs, sends."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    ProducerClosed,
    RequestTimedOutError,
)
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError, ProgrammingError
from prometheus_client import CollectorRegistry

from thumbline.errors import SqlRefused, StoreUnavailable
from thumbline.kafka import Outgoing, deliver
from thumbline.logs import RepeatFilter
from thumbline.metrics import Metrics
from thumbline.outages import KAFKA, STORE, WaitAborted, Waits, transient
from thumbline.sqlclient import _parts
from thumbline.stream_jobs.lookups import LOOKUP_CHUNK_BYTES, LOOKUP_CHUNK_KEYS, chunks
from thumbline.stream_jobs.sink import SinkUnavailable


@pytest.mark.parametrize(
    "error",
    [
        RequestTimedOutError(), KafkaConnectionError(), NotLeaderForPartitionError(),
        KafkaTimeoutError(), OperationalError("Connection refused"),
        DatabaseError("Code: 241. DB::Exception: Memory limit exceeded", code=241),
        SinkUnavailable("down", retry_after=1.0), StoreUnavailable("down"), OSError("reset"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)  # fmt: skip
def test_errors_an_outage_gives_are_waited_out(error):
    assert transient(error)


@pytest.mark.parametrize(
    "error",
    [
        MessageSizeTooLargeError(), ProducerClosed(), ProgrammingError("closed client"),
        DatabaseError("Code: 62. DB::Exception: Syntax error", code=62),
        SqlRefused("no", reason="syntax"), ValueError("a bug"), KeyError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)  # fmt: skip
def test_errors_that_waiting_cannot_cure_are_not(error):
    assert not transient(error)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_wait_is_said_once_then_once_a_minute_then_when_it_ends(caplog):
    clock, metrics = Clock(), Metrics(CollectorRegistry())
    waits = Waits(metrics, clock=clock)
    delays = []
    with caplog.at_level(logging.WARNING, logger="thumbline.outages"):
        for _ in range(40):  # 40 retries over 80 s
            delays.append(waits.failed(KAFKA, "join_publish", RequestTimedOutError()))
            clock.now += 2
        assert waits.waiting(KAFKA) and not waits.waiting(STORE)
        [problem] = waits.problems()
        assert problem.startswith("waiting for Kafka for 80 s: join_publish (40 attempts")
        waits.succeeded(KAFKA, "join_publish")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines  # began, a reminder after 60 s, ended
    assert lines[0].startswith("waiting for Kafka: join_publish failed (RequestTimedOutError")
    assert lines[1].startswith("still waiting for Kafka after 60 s")
    assert lines[2].startswith("Kafka answers again: join_publish went through after 80 s")
    assert not waits.waiting() and waits.problems() == []
    assert delays[0] < delays[3] and max(delays) <= 5.0  # growing, bounded
    registry = metrics.registry
    labels = {"dependency": "kafka", "operation": "join_publish"}
    assert registry.get_sample_value("thumbline_dependency_retries_total", labels) == 40
    assert registry.get_sample_value("thumbline_dependency_waiting", {"dependency": "kafka"}) == 0


def test_a_caller_that_knows_when_to_retry_is_followed():
    assert Waits().failed(STORE, "join_insert", SinkUnavailable("down", retry_after=2.5)) == 2.5


async def test_retry_waits_out_transient_errors_and_raises_the_others():
    waits = Waits(first_delay=0.001, max_delay=0.001)
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("Connection refused")
        return "rows"

    assert await waits.retry(STORE, "join_lookup", flaky) == "rows" and len(calls) == 3

    async def bug() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await waits.retry(STORE, "join_lookup", bug)


def test_a_blocking_call_is_retried_inside_and_a_stop_ends_the_wait():
    waits = Waits(first_delay=0.001, max_delay=0.001)
    calls = []

    def lookup(keys: list[str]) -> dict:
        calls.append(keys)
        if len(calls) < 2:
            raise OperationalError("Connection refused")
        return {"k": 1}

    assert waits.blocking(STORE, "join_lookup", lookup)(["k"]) == {"k": 1}
    assert calls == [["k"], ["k"]]
    waits.stop()

    def down(keys: list[str]) -> dict:
        raise OperationalError("Connection refused")

    with pytest.raises(WaitAborted):
        waits.blocking(STORE, "join_lookup", down)(["k"])


class FlakyProducer:
    """Acknowledges a send unless its value is in ``failing`` (then fails it, once)."""

    def __init__(self, failing: set[bytes], error: Exception) -> None:
        self.failing, self.error = failing, error
        self.sent: list[bytes] = []

    async def send(
        self, topic, value, key=None, partition=None, timestamp_ms=None
    ) -> asyncio.Future:
        self.sent.append(value)
        ack = asyncio.get_running_loop().create_future()
        if value in self.failing:
            self.failing.discard(value)
            ack.set_exception(self.error)
        else:
            ack.set_result(None)
        return ack


async def test_deliver_sends_again_what_failed_and_what_followed_it_on_its_key():
    producer = FlakyProducer({b"a2"}, RequestTimedOutError())
    messages = [
        Outgoing("t", b"a1", key=b"a"), Outgoing("t", b"a2", key=b"a"),
        Outgoing("t", b"b1", key=b"b"), Outgoing("t", b"a3", key=b"a"),
    ]  # fmt: skip
    waits = Waits(first_delay=0.001, max_delay=0.001)
    await deliver(producer, messages, waits=waits, operation="rates_publish")  # type: ignore[arg-type]
    # a2 failed: it and a3 (after it on key a) again, so a's last copies come in order
    assert producer.sent == [b"a1", b"a2", b"b1", b"a3", b"a2", b"a3"]
    assert not waits.waiting()


async def test_deliver_raises_what_waiting_cannot_cure():
    producer = FlakyProducer({b"x"}, MessageSizeTooLargeError())
    with pytest.raises(MessageSizeTooLargeError):
        await deliver(producer, [Outgoing("t", b"x")], waits=Waits(), operation="join_publish")  # type: ignore[arg-type]


def test_lookups_come_in_chunks_bounded_by_ids_and_bytes():
    keys = [("p", f"{i:0200d}") for i in range(6_000)]  # 201 bytes each with its newline
    parts = chunks(keys)
    assert [k for part in parts for k in part] == keys
    assert all(len(p) <= LOOKUP_CHUNK_KEYS for p in parts)
    assert all(sum(len(t) + 1 for _, t in p) <= LOOKUP_CHUNK_BYTES for p in parts)
    assert len(chunks([("p", "t")] * 12_000)) == 3


def test_an_insert_to_the_owner_is_cut_between_rows():
    rows = [b'{"i":%d,"pad":"%s"}' % (i, b"x" * 50) for i in range(100)]
    block = b"\n".join(rows)
    parts = _parts(block, 400)
    assert b"\n".join(parts) == block and all(len(p) <= 400 for p in parts)
    assert _parts(b"a" * 10 + b"\n" + b"b", 4) == [b"a" * 10, b"b"]  # a long row travels alone


def test_a_librarys_repeated_warning_passes_once_a_minute():
    shown = RepeatFilter(every=60.0)

    def record(at: float, name: str = "aiokafka") -> logging.LogRecord:
        r = logging.LogRecord(name, logging.ERROR, "", 0, "Unable connect to node %s", (1,), None)
        r.created = at
        return r

    passed = [shown.filter(record(t)) for t in (0, 3, 6, 59, 61, 62)]
    assert passed == [True, False, False, False, True, False]
    later = record(130)
    assert shown.filter(later) and "[1 more like this" in later.getMessage()
    assert all(shown.filter(record(t, "thumbline.outages")) for t in (0, 1, 2))  # ours: all
