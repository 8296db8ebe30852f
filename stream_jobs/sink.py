"""The ClickHouse sink: batched, idempotent inserts of the stream's output.

Guarantee: ``flush()`` returns only after every row added before it is
acknowledged by ClickHouse. The stream acknowledges its Kafka offsets only
after that (at-least-once delivery), and the tables are ReplacingMergeTrees
keyed on each row's identity, so a batch sent again after a crash or a failed
flush collapses into the rows already there: exactly once in the final query.

When ClickHouse is unavailable ``flush()`` raises :class:`SinkUnavailable`
(retriable, with ``retry_after``) and keeps every row; the caller stops pulling
input and retries, it never drops. One code path serves ``chdb://`` and
``http://`` stores; calls block, so run them off the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError

from thumbline.outages import transient
from thumbline.schemas import DeadLetter, EnrichedFeedback, ThumblineError, TraceEvent

logger = logging.getLogger(__name__)


class StoreClient(Protocol):
    """What the stream asks of a store client: clickhouse-connect's ``Client`` has it,
    and so has :class:`thumbline.sqlclient.OwnerClient` (a helper's way to the owner)."""

    def raw_insert(
        self, table: str, *, insert_block: bytes, settings: dict[str, Any] | None = None,
        fmt: str = "JSONEachRow",
    ) -> Any: ...  # fmt: skip

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> Any: ...

    def close(self) -> None: ...


class SinkUnavailable(ThumblineError):
    """ClickHouse did not take a batch; the rows are kept. Retry after ``retry_after`` s."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: How ClickHouse reads the rows: JSON objects separated by commas or newlines
#: (JSONEachRow reads both), the same bytes the stream publishes as JSON arrays,
#: without their brackets. Parsing happens inside ClickHouse (in chDB,
#: off the GIL), so the stream's Python thread only encodes each row once.
#: Nested values (metadata, attributes) and the feedback ``value`` land in their
#: String columns as text; fields a row leaves out take the column default.
JSON_SETTINGS = {
    "input_format_skip_unknown_fields": 1,
    "input_format_defaults_for_omitted_fields": 1,
    "input_format_json_read_objects_as_strings": 1,
    "input_format_json_read_numbers_as_strings": 1,
    "input_format_json_read_bools_as_strings": 1,
    "date_time_input_format": "best_effort",
}


#: The tables the stream writes.
TABLES = ("feedback", "traces", "dead_letters", "feedback_rates", "alerts")

#: Bounds of one JSON array message (Kafka's default message.max.bytes is 1 MiB).
ARRAY_MAX_BYTES = 512 * 1024
ARRAY_MAX_ROWS = 1000


def json_arrays(
    records: Sequence[Any], *, max_bytes: int = ARRAY_MAX_BYTES, max_rows: int = ARRAY_MAX_ROWS
) -> list[tuple[bytes, int]]:
    """Records (dicts of fields) as JSON arrays, in order, with the rows in each.

    One orjson call per array, not per row: with many encoded rows alive, each
    small ``bytes`` that orjson allocates and shrinks costs glibc's allocator
    several times the encoding itself (measured 5.7 against 1.0 us a row, see
    BENCHMARKS.md). An array holds at most ``max_rows`` rows and, unless one row
    alone is larger, ``max_bytes``.
    """
    out: list[tuple[bytes, int]] = []
    todo = [records[i : i + max_rows] for i in reversed(range(0, len(records), max_rows))]
    while todo:
        part = todo.pop()
        array = orjson.dumps(part)
        if len(array) > max_bytes and len(part) > 1:
            half = len(part) // 2
            todo += [part[half:], part[:half]]
            continue
        out.append((array, len(part)))
    return out


def feedback_record(row: EnrichedFeedback) -> dict[str, Any]:
    """One ``feedback`` row: the enriched record, as the stream also publishes it.

    The model's fields as they are (orjson encodes them at a third of the cost of
    pydantic's serializer; absent values become null, which ClickHouse reads as
    the column default).
    """
    return row.__dict__


def trace_record(trace: TraceEvent, *, capture_content: bool = True) -> dict[str, Any]:
    """One ``traces`` row: the validated event plus its ``version`` (received_at in us).

    The stream stamps received_at on every event; a trace without any time gets
    version 0, so any stamped copy of it replaces this one. Without
    ``capture_content`` the row's input and output are empty, whoever sent them.
    """
    fields = dict(trace.__dict__)
    if not capture_content:
        fields["input"] = fields["output"] = None
    if trace.received_at is None:
        fields["received_at"] = trace.end_time or trace.start_time or _EPOCH
        fields["version"] = 0
    else:
        fields["version"] = int(trace.received_at.timestamp() * 1_000_000)
    return fields


def dead_letter_json(letter: DeadLetter) -> bytes:
    return DeadLetter.__pydantic_serializer__.to_json(letter, exclude_none=True)


@dataclass(slots=True)
class SinkBatch:
    """Rows taken out of the sink (:meth:`ClickHouseSink.detach`).

    ``tables`` holds each table's chunks: one or more JSON objects separated by
    commas, no newline inside (ClickHouse's JSONEachRow reads both separators);
    ``rows`` how many rows each table's chunks hold.
    """

    tables: dict[str, list[bytes]]
    rows: dict[str, int]

    def __len__(self) -> int:
        return sum(self.rows[table] for table in self.tables)


class ClickHouseSink:
    """Buffers rows per table; ``flush()`` writes each table in one insert.

    Rows are buffered as encoded JSON (see :data:`JSON_SETTINGS`); callers that
    already hold a row's bytes (the stream publishes the same bytes to Kafka)
    hand them over with the ``*_json`` methods.

    Args:
        client: a clickhouse-connect client used only by this sink (one per thread).
        database: where the tables live.
        max_rows: rows buffered before :meth:`due` says flush.
        max_age: seconds the oldest buffered row may wait before :meth:`due` says flush.
        capture_content: False: trace rows are stored without their input and output
            (``THUMBLINE_CAPTURE_CONTENT``; the stream is the point every producer
            passes, raw Kafka clients included).
    """

    def __init__(
        self,
        client: StoreClient,
        database: str,
        *,
        max_rows: int = 50_000,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        capture_content: bool = True,
    ) -> None:
        self._client = client
        self.capture_content = capture_content
        self._database = database
        self.max_rows = max_rows
        self.max_age = max_age
        self._clock = clock
        self._oldest: float | None = None
        self._failures = 0
        self._buffers: dict[str, list[bytes]] = {table: [] for table in TABLES}
        self._rows = dict.fromkeys(TABLES, 0)

    def add_feedback(self, rows: Iterable[EnrichedFeedback]) -> None:
        self.add_records("feedback", [feedback_record(r) for r in rows])

    def add_traces(self, rows: Iterable[TraceEvent]) -> None:
        capture = self.capture_content
        self.add_records("traces", [trace_record(t, capture_content=capture) for t in rows])

    def add_dead_letters(self, rows: Iterable[DeadLetter]) -> None:
        self.add_json("dead_letters", [dead_letter_json(d) for d in rows])

    def add_records(self, table: str, records: Sequence[Any]) -> None:
        """Buffer rows given as dicts of fields (encoded here, in one call)."""
        for array, count in json_arrays(records, max_bytes=1 << 30, max_rows=10_000):
            self.add_array(table, array, count)

    def add_array(self, table: str, array: bytes, count: int) -> None:
        """Buffer ``count`` rows encoded as one JSON array (no newlines inside)."""
        if count:
            self._add(table, array[1:-1], count)

    def add_json(self, table: str, rows: Sequence[bytes]) -> None:
        """Buffer rows already encoded as one JSON object each (no newlines inside)."""
        for row in rows:
            self._add(table, row, 1)

    def _add(self, table: str, chunk: bytes, count: int) -> None:
        self._buffers[table].append(chunk)
        self._rows[table] += count
        if self._oldest is None:
            self._oldest = self._clock()

    @property
    def pending(self) -> int:
        return sum(self._rows.values())

    def due(self) -> bool:
        """True when the buffered rows should be flushed (by size or by age)."""
        if self._oldest is None:
            return False
        return self.pending >= self.max_rows or self._clock() - self._oldest >= self.max_age

    def detach(self) -> SinkBatch:
        """Take every buffered row out of the sink, to be written by :meth:`write`.

        The stream detaches a batch and writes it in a thread while it goes on
        filling the next one, so ClickHouse parses one batch while Python builds
        the next.
        """
        batch = SinkBatch(
            {table: chunks for table, chunks in self._buffers.items() if chunks}, self._rows
        )
        self._buffers = {table: [] for table in self._buffers}
        self._rows = dict.fromkeys(self._buffers, 0)
        self._oldest = None
        return batch

    def write(self, batch: SinkBatch) -> int:
        """Write a detached batch, one insert per table; return how many rows.

        Blocks: run it in a thread. Safe to call again with the same batch after
        a failure (tables already written are not sent twice; a re-sent insert
        would collapse into its rows anyway).

        Raises:
            SinkUnavailable: ClickHouse refused or could not be reached, for a
                reason waiting can cure; the tables not yet written stay in ``batch``.
            ClickHouseError: a refusal waiting cannot cure (a bug).
        """
        written = 0
        for table in list(batch.tables):
            rows = batch.rows[table]
            try:
                self._client.raw_insert(
                    f"{self._database}.{table}",
                    insert_block=b"\n".join(batch.tables[table]),
                    settings=JSON_SETTINGS,
                    fmt="JSONEachRow",
                )
            except (ClickHouseError, OSError) as exc:
                if not transient(exc):
                    raise  # a statement ClickHouse can never take as sent: a bug
                self._failures += 1
                # At most 5 s: the stream resumes within seconds of the store's return.
                retry_after = min(5.0, 0.25 * 2 ** min(self._failures, 7))
                logger.debug(  # the caller's wait says it once (thumbline.outages)
                    "ClickHouse refused %d rows for %s (attempt %d, retry in %.1fs): %s",
                    rows, table, self._failures, retry_after, exc,
                )  # fmt: skip
                raise SinkUnavailable(
                    f"could not write {rows} rows to {table}: {exc}",
                    retry_after=retry_after,
                ) from exc
            written += rows
            del batch.tables[table]
        self._failures = 0
        return written

    def flush(self) -> int:
        """Write every buffered row; return how many.

        Raises:
            SinkUnavailable: ClickHouse refused or could not be reached; the rows
                not yet written stay buffered for the next call.
        """
        batch = self.detach()
        try:
            return self.write(batch)
        except SinkUnavailable:
            for table, chunks in batch.tables.items():  # back in front of newer rows
                self._buffers[table][:0] = chunks
                self._rows[table] += batch.rows[table]
            if self.pending and self._oldest is None:
                self._oldest = self._clock()
            raise

    def close(self) -> None:
        """Flush what is left (raises if that fails) and close the client."""
        try:
            self.flush()
        finally:
            self._client.close()
