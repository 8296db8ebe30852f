"""read_otlp: the OpenTelemetry Collector's Kafka messages as thumbline events, for key_by_trace.

    Collector (kafka exporter) ──► otlp_spans ──► key_by_trace ──► keyed ──► join_traces

The Collector's Kafka exporter writes one ``ExportTraceServiceRequest`` per
message (``otlp_proto`` or ``otlp_json``), many spans of many traces, keyed as
the exporter is configured. :mod:`thumbline.stream_jobs.key_by_trace` reads
that topic beside thumbline's own input and routes each span's TraceEvent (and
the feedback its events carry) to its trace's partition of ``keyed``, as it
routes the events of a batched message: no second hop through ``traces``.

Every event is stamped with the message's Kafka timestamp (``received_at``: the
same on every replay) and validated once, by the join, as the events of a
batched message are: a bad one becomes a dead letter naming this message and
its position among the message's events, and the rest of the message is kept.
A message that does not decode is a dead letter here (``raw``: for protobuf,
``base64:`` and its bytes).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from thumbline.schemas import DeadLetter, TimeBounds, WireError, partition_for
from thumbline.schemas.otlp import Encoding, decode_request, fields_from_request

#: An OTLP message larger than this is a dead letter (the Collector's default limit is 1 MB).
MAX_OTLP_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReadOtlp:
    """How to read ``topic``: its ``encoding``, the ``project`` of its spans (None: each
    span's ``service.name``), the time bounds, and whether content is kept."""

    topic: str
    encoding: Encoding = "otlp_proto"
    project: str | None = None
    time_bounds: TimeBounds = TimeBounds()  # noqa: RUF009 (frozen)
    capture_content: bool = True

    def events(self, record: Any) -> tuple[list[tuple[str, str | None, bytes]], list[DeadLetter]]:
        """(kind, trace id, event JSON) of each event in the message, and its dead letters.

        The events are not validated here: the join validates every event once, and
        dead-letters a bad one naming this message and its position in it."""
        raw: bytes = record.value or b""
        received = datetime.fromtimestamp(record.timestamp / 1000, UTC) if record.timestamp > 0 \
            else datetime.now(UTC)  # fmt: skip
        out: list[tuple[str, str | None, bytes]] = []
        dead: list[DeadLetter] = []
        try:
            if len(raw) > MAX_OTLP_MESSAGE_BYTES:
                raise WireError(
                    "oversize", f"the message is {len(raw)} bytes; at most {MAX_OTLP_MESSAGE_BYTES}"
                )
            items = fields_from_request(
                decode_request(raw, self.encoding), project=self.project, received_at=received,
                capture_content=self.capture_content,
            )  # fmt: skip
            for item in items:
                if item.problem is not None:
                    dead.append(self._dead(record, len(out), "invalid_event",
                                           f"{item.where}: {item.problem}", b""))  # fmt: skip
                    continue
                trace_id = item.fields.get("trace_id")
                out.append((item.kind, trace_id, orjson.dumps(item.fields)))
        except WireError as exc:
            if self.encoding == "otlp_proto":  # binary: kept whole, as base64 text
                raw = b"base64:" + base64.b64encode(raw[:750_000])
            return [], [self._dead(record, -1, exc.reason, exc.detail, raw)]
        return out, dead

    def route(
        self, record: Any, source: list[Any], outs: Any, partitions: int, counts: dict[str, int]
    ) -> int:
        """Add the message's events to the keyed messages (``outs``, by partition of
        ``keyed``: :func:`thumbline.stream_jobs.keyed_messages.route`), each on its trace's
        partition and its run naming this topic, and its dead letters on the message's.
        Returns how many events it routed."""
        events, dead = self.events(record)
        for letter in dead:
            outs[record.partition % partitions].add_dead(letter.to_json())
        counts["dead"] += len(dead)
        for index, (kind, trace_id, raw) in enumerate(events):
            target = partition_for(trace_id, partitions) if isinstance(trace_id, str) and trace_id \
                else record.partition % partitions  # fmt: skip
            outs[target].add(kind, source, [raw], index, topic=self.topic)
        counts[f"in:{self.topic}"] += len(events) + len(dead)
        return len(events)

    @staticmethod
    def _dead(record: Any, index: int, reason: str, error: str, raw: bytes) -> DeadLetter:
        key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else None
        return DeadLetter.model_construct(
            schema_version=1, topic=record.topic, partition=record.partition,
            offset=record.offset, batch_index=index, reason=reason, error=error[:10_000],
            key=key, at=datetime.now(UTC), raw=raw[:1_000_000].decode("utf-8", "replace"),
        )  # fmt: skip
