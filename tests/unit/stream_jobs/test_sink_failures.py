"""The sink's buffering, and the sink under a ClickHouse outage (client replaced)."""

from __future__ import annotations

import orjson
import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from thumbline.schemas import TraceEvent
from thumbline.stream_jobs.sink import ClickHouseSink, SinkUnavailable, json_arrays


def rows_of(insert_block: bytes) -> list[dict]:
    """The rows of a JSONEachRow block whose objects are separated by commas or newlines."""
    return orjson.loads(b"[" + insert_block.replace(b"\n", b",") + b"]")


class FlakyClient:
    def __init__(self, failures: int):
        self.failures = failures
        self.inserted: list[tuple[str, int]] = []

    def raw_insert(self, table, *, insert_block, settings, fmt):
        if self.failures:
            self.failures -= 1
            raise OperationalError("Connection refused")
        self.inserted.append((table, len(rows_of(insert_block))))

    def close(self):
        pass


def traces(n):
    return [TraceEvent.parse({"trace_id": f"t{i}"}) for i in range(n)]


def test_an_outage_keeps_every_row_and_backs_off_more_each_time():
    client = FlakyClient(failures=3)
    sink = ClickHouseSink(client, "db")
    sink.add_traces(traces(10))
    waits = []
    for _ in range(3):
        with pytest.raises(SinkUnavailable) as info:
            sink.flush()
        assert info.value.retriable
        waits.append(info.value.retry_after)
    assert waits == sorted(waits) and waits[0] < waits[-1]
    assert sink.pending == 10
    assert sink.flush() == 10
    assert client.inserted == [("db.traces", 10)] and sink.pending == 0


def test_records_become_json_arrays_in_order_bounded_by_rows_and_bytes():
    records = [{"i": i, "pad": "x" * 90} for i in range(25)]  # ~110 bytes each
    arrays = json_arrays(records, max_rows=10, max_bytes=600)
    assert all(len(orjson.loads(a)) == n for a, n in arrays)
    assert [r["i"] for a, _ in arrays for r in orjson.loads(a)] == list(range(25))
    assert all(n <= 10 and len(a) <= 600 for a, n in arrays)


def test_a_row_larger_than_the_bound_travels_alone():
    big = {"i": 1, "pad": "x" * 5000}
    arrays = json_arrays([{"i": 0}, big, {"i": 2}], max_bytes=1000)
    assert [n for _, n in arrays] == [1, 1, 1]
    assert orjson.loads(arrays[1][0]) == [big]


def test_rows_added_as_arrays_and_one_by_one_are_counted_and_written_together():
    client = FlakyClient(failures=1)
    sink = ClickHouseSink(client, "db")
    [(array, n)] = json_arrays([{"trace_id": f"t{i}"} for i in range(5)])
    sink.add_array("traces", array, n)
    sink.add_json("traces", [b'{"trace_id":"t5"}'])
    sink.add_traces(traces(3))
    assert sink.pending == 9
    with pytest.raises(SinkUnavailable):
        sink.flush()
    assert sink.pending == 9  # kept, counts included
    assert sink.flush() == 9
    assert client.inserted == [("db.traces", 9)]


class Recorder:
    def __init__(self):
        self.rows: dict[str, list[dict]] = {}

    def raw_insert(self, table, *, insert_block, settings, fmt):
        self.rows.setdefault(table, []).extend(rows_of(insert_block))

    def close(self):
        pass


def answered(trace_id: str) -> TraceEvent:
    return TraceEvent.parse({"trace_id": trace_id, "input": "Capital of France?", "output": "Lyon"})


def test_trace_rows_carry_the_question_and_the_answer():
    client = Recorder()
    sink = ClickHouseSink(client, "db")
    sink.add_traces([answered("t1")])
    sink.flush()
    [row] = client.rows["db.traces"]
    assert (row["input"], row["output"]) == ("Capital of France?", "Lyon")


def test_with_capture_off_trace_rows_carry_no_question_and_no_answer():
    client = Recorder()
    sink = ClickHouseSink(client, "db", capture_content=False)
    event = answered("t1")
    sink.add_traces([event])
    sink.flush()
    [row] = client.rows["db.traces"]
    assert row["trace_id"] == "t1" and row["input"] is None and row["output"] is None
    assert event.input == "Capital of France?"  # the event itself is left as it was
