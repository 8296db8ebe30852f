"""The sink under a ClickHouse outage, with the client replaced: it keeps rows and backs off."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from schemas import TraceEvent
from stream_jobs.sink import ClickHouseSink, SinkUnavailable


class FlakyClient:
    def __init__(self, failures: int):
        self.failures = failures
        self.inserted: list[tuple[str, int]] = []

    def raw_insert(self, table, *, insert_block, settings, fmt):
        if self.failures:
            self.failures -= 1
            raise OperationalError("Connection refused")
        self.inserted.append((table, len(insert_block.splitlines())))

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
