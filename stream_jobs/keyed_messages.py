"""keyed_messages: input records as the messages of ``keyed``, each event on its trace's partition.

What :mod:`thumbline.stream_jobs.key_by_trace` publishes, computed with no broker.
Per batch it parses each message once, finds each event's ``trace_id`` and
makes one message per partition of ``keyed`` (thumbline's murmur2
partitioner) with every event bound there (``*_from``: runs of events that
follow each other in one input message, ``index`` the first one's position in
it, and the message's topic when it is not the kind's own, the OpenTelemetry
topic):

    {"feedback": [event, ...], "traces": [event, ...],
     "feedback_from": [[partition, offset, timestamp_ms, key, index, count(, topic)], ...],
     "traces_from": [...], "dead": [dead letter, ...]}

It validates nothing: the join does, once (:mod:`thumbline.stream_jobs.decode_input`).
``*_from`` say which input message each run of events came from, so the join
stamps, bounds and dead-letters every event exactly as if it had read it there
(same ``received_at`` on a replay, same coordinates in a dead letter). A
message that is not usable as a whole (not JSON, too large, an empty or too
large array) becomes a dead letter here and travels in ``dead``; events
without a string ``trace_id`` go to the partition their message came from, for
the join to dead-letter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from thumbline.schemas import (
    DeadLetter,
    Topics,
    WireError,
    decode_message,
    partition_for,
    target_key,
)
from thumbline.schemas.wire import MAX_BATCH_EVENTS
from thumbline.stream_jobs.read_otlp import ReadOtlp

#: Bytes of events in one keyed message, at most (under the producer's request size).
MAX_KEYED_BYTES = 900_000


class _Out:
    """What one batch sends to one partition of ``keyed``, split at the size limits."""

    __slots__ = ("count", "done", "events", "runs", "size")

    def __init__(self) -> None:
        self.done: list[bytes] = []
        self._reset()

    def _reset(self) -> None:
        self.events: dict[str, list[bytes]] = {"feedback": [], "traces": []}
        self.runs: dict[str, list[list[Any]]] = {"feedback": [], "traces": []}
        self.size = self.count = 0

    def add(
        self, kind: str, source: list[Any], items: list[bytes], index: int = 0,
        topic: str | None = None,
    ) -> None:  # fmt: skip
        """``items`` of one input message (``source``: partition, offset, ms, key), the
        first of them at ``index`` in it, the others following it there (``topic``: the
        message's, when it is not the kind's own input topic)."""
        for item in items:
            self.add_run(kind, source, item, index, 1, topic)
            index += 1

    def add_run(
        self, kind: str, source: list[Any], chunk: bytes, index: int, n: int,
        topic: str | None = None,
    ) -> None:  # fmt: skip
        """``n`` events of one input message as one comma-separated ``chunk`` of JSON, the
        first at ``index`` in it. A chunk is never split: an input message's array fits."""
        if self.count and (
            self.size + len(chunk) > MAX_KEYED_BYTES or self.count + n > MAX_BATCH_EVENTS
        ):
            self.close()
        runs = self.runs[kind]
        last = runs[-1] if runs else None
        named = [topic] if topic else []
        if (last is not None and last[:4] == source and last[4] + last[5] == index
                and last[6:] == named):  # fmt: skip
            last[5] += n
        else:
            runs.append([*source, index, n, *named])
        self.events[kind].append(chunk)
        self.size += len(chunk)
        self.count += n

    def add_dead(self, letter: bytes) -> None:
        """A dead letter travels alone: its raw text may be as large as a message."""
        self.done.append(_keyed({"feedback": [], "traces": []}, {"feedback": [], "traces": []},
                                [letter]))  # fmt: skip

    def close(self) -> None:
        if self.count:
            self.done.append(_keyed(self.events, self.runs, []))
        self._reset()

    def messages(self) -> list[bytes]:
        self.close()
        return self.done


def _keyed(
    events: dict[str, list[bytes]], runs: dict[str, list[list[Any]]], dead: list[bytes]
) -> bytes:
    return (
        b'{"feedback":[' + b",".join(events["feedback"])
        + b'],"traces":[' + b",".join(events["traces"])
        + b'],"feedback_from":' + orjson.dumps(runs["feedback"])
        + b',"traces_from":' + orjson.dumps(runs["traces"])
        + b',"dead":[' + b",".join(dead) + b"]}"
    )  # fmt: skip


def route(
    topics: Topics, records: Iterable[Any], *, counts: dict[str, int] | None = None,
    otlp: ReadOtlp | None = None,
) -> dict[int, list[bytes]]:  # fmt: skip
    """The keyed messages for a batch of input records, by partition of ``keyed``
    (``otlp``: how to read the OpenTelemetry topic, when it is an input)."""
    counts = counts if counts is not None else defaultdict(int)
    partitions = topics.keyed.partitions
    outs: dict[int, _Out] = defaultdict(_Out)
    feedback_topic = topics.feedback.name
    for record in records:
        kind = "feedback" if record.topic == feedback_topic else "traces"
        key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else None
        source = [record.partition, record.offset, record.timestamp, key]
        if otlp is not None and record.topic == otlp.topic:
            routed = otlp.route(record, source, outs, partitions, counts)
            counts[f"out:{topics.keyed.name}"] += routed
            continue
        raw = record.value
        try:
            items = decode_message(raw)
        except WireError as exc:
            letter = DeadLetter.model_construct(
                schema_version=1, topic=record.topic, partition=record.partition,
                offset=record.offset, batch_index=-1, reason=exc.reason,
                error=exc.detail[:10_000], key=key, at=_now(),
                raw=(raw or b"")[:1_000_000].decode("utf-8", "replace"),
            )  # fmt: skip
            outs[record.partition % partitions].add_dead(letter.to_json())
            counts["dead"] += 1
            continue
        counts[f"out:{topics.keyed.name}"] += len(items)
        targets = [_target(item, record.partition, partitions) for item in items]
        if len(items) == 1 and raw is not None and raw.lstrip()[:1] == b"{":
            outs[targets[0]].add(kind, source, [raw.strip()])  # the message's own bytes
            continue
        if all(t == targets[0] for t in targets):  # thumbline's producers: the array as sent
            inner = raw.strip()[1:-1]
            outs[targets[0]].add_run(kind, source, inner, 0, len(items))
            continue
        # a mixed array: each target gets its own runs, in the array's order
        for index, (target, item) in enumerate(zip(targets, items, strict=True)):
            outs[target].add(kind, source, [orjson.dumps(item)], index)
    return {p: out.messages() for p, out in outs.items()}


def _target(item: Any, partition: int, partitions: int) -> int:
    """The partition of an event's join key: its trace id, or for feedback on a whole
    conversation or session (no trace id), that conversation's or session's key."""
    if isinstance(item, dict):
        ids = [item.get(k) for k in ("target", "trace_id", "conversation_id", "session_id")]
        if all(v is None or isinstance(v, str) for v in ids) and any(ids[1:]):
            return partition_for(target_key(*ids), partitions)
    return partition % partitions  # invalid: the join dead-letters it wherever it is


def _now() -> datetime:
    return datetime.now(UTC)
