"""decode_input: the join's input messages as validated events, or dead letters with a reason.

Three forms reach the join (:mod:`thumbline.stream_jobs.join_traces`):

- a message of ``feedback`` or ``traces`` as a producer wrote it: one event,
  or a JSON array of events (:mod:`thumbline.schemas.wire`);
- a message of ``keyed`` from :mod:`thumbline.stream_jobs.key_by_trace` (its form:
  :mod:`thumbline.stream_jobs.keyed_messages`): events of many input messages
  with, per run of events, the input message they came from (``feedback_from``,
  ``traces_from``) and dead letters made there (``dead``); or its ``routed``
  marker (:mod:`thumbline.stream_jobs.routed_marks`);
- a message of ``keyed`` the join forwarded itself (``{"feedback", "traces"}``,
  events it already validated, on the partition of their trace).

Every event is stamped and bounded as of the input message it came from (same
``received_at`` on every replay), and a bad one becomes a dead letter naming that
message, so the route an event took changes nothing of what the join stores.
Each feedback event then gets the score config of its name applied
(:mod:`thumbline.schemas.score_configs`): a value the config refuses is a dead
letter ``score_config``.
A message valid as a whole is validated in one call from its bytes; anything
wrong sends it down the careful path, which finds the bad events one by one.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from typing_extensions import TypedDict

from thumbline.schemas import (
    DeadLetter,
    FeedbackEvent,
    InvalidEvent,
    TimeBounds,
    Topics,
    TraceEvent,
    WireError,
    decode_message,
    partition_for,
)
from thumbline.schemas.score_configs import ScoreConfigIndex
from thumbline.schemas.wire import MAX_BATCH_EVENTS, MAX_MESSAGE_BYTES

MAX_RAW_BYTES = 1_000_000
_FEEDBACK_LIST = TypeAdapter(list[FeedbackEvent])
_TRACE_LIST = TypeAdapter(list[TraceEvent])
KINDS = ("feedback", "traces")


#: A run of events of one input message: partition, offset, ms, key, index, count and,
#: when it is not the kind's own input topic (the OpenTelemetry topic), its topic.
_Run = tuple[int, int, int, str | None, int, int] | tuple[int, int, int, str | None, int, int, str]


class _Routed(TypedDict):
    feedback: list[FeedbackEvent]
    traces: list[TraceEvent]
    feedback_from: list[_Run]
    traces_from: list[_Run]
    dead: list[DeadLetter]


_ROUTED = TypeAdapter(_Routed)
_RUNS = TypeAdapter(list[_Run])


@dataclass(slots=True)
class Batch:
    """What a micro-batch's messages decoded to (``feedback`` per held message)."""

    traces: list[TraceEvent] = field(default_factory=list)
    feedback: list[tuple[list[FeedbackEvent], Any]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    forward: dict[int, dict[str, list[bytes]]] = field(
        default_factory=lambda: defaultdict(lambda: {"feedback": [], "traces": []})
    )
    held: list[Any] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Origin:
    """The input message an event of ``keyed`` came from (what a dead letter names)."""

    topic: str
    partition: int
    offset: int
    timestamp: float | None  # seconds, as Faust gives a message's
    key: bytes | None


def stamp(event: Any, timestamp: float | None) -> Any:
    """Give an event without received_at the Kafka timestamp: the same on every replay."""
    if event.received_at is not None:
        return event
    when = datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)
    return event.model_copy(update={"received_at": when})


def dead_letter(message: Any, index: int, reason: str, error: str, raw: bytes | str) -> DeadLetter:
    text = raw if isinstance(raw, str) else raw[:MAX_RAW_BYTES].decode("utf-8", "replace")
    key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) else None
    return DeadLetter.model_construct(
        schema_version=1, topic=message.topic, partition=message.partition,
        offset=message.offset, batch_index=index, reason=reason, error=error[:10_000],
        raw=text, key=key, at=datetime.now(UTC),
    )  # fmt: skip


class DecodeInput:
    """Decodes the join's input messages into a :class:`Batch`.

    Args:
        topics: the registry.
        time_bounds: how far event times may lie from their reception.
        counts: the join's counters (``in:<topic>``, ``dead_<reason>``).
        routed: called with (partition, marker) for each ``routed`` marker, the marker
            as decoded from JSON; a ValueError it raises makes the marker a dead letter.

    ``configs`` holds the score configs in force; the join replaces it when it
    reads them again.
    """

    def __init__(
        self,
        topics: Topics,
        time_bounds: TimeBounds,
        counts: dict[str, int],
        routed: Any = None,
    ) -> None:
        self.topics = topics
        self.time_bounds = time_bounds
        self.counts = counts
        self.routed = routed or (lambda partition, seconds: None)
        self.partitions = topics.feedback.partitions
        self._topic = {"feedback": topics.feedback.name, "traces": topics.traces.name}
        self.configs = ScoreConfigIndex()

    def decode(self, message: Any, held: Any, batch: Batch) -> None:
        raw = message.value
        if message.topic == self.topics.keyed.name:
            self._keyed(message, held, batch, raw)
            return
        fast = self._validate_all(message, raw)
        if fast is not None:  # the whole message is valid: no separate parse, no per-item pass
            self._place(message.partition, held, batch, fast)
            return
        kind = "feedback" if message.topic == self.topics.feedback.name else "traces"
        try:
            items = decode_message(raw)
        except WireError as exc:
            self._dead(batch, dead_letter(message, -1, exc.reason, exc.detail, raw or b""))
            return
        self._careful(message, message.partition, held, batch, kind, items)

    # keyed ---------------------------------------------------------------------------

    def _keyed(self, message: Any, held: Any, batch: Batch, raw: bytes | None) -> None:
        if raw and b'"feedback_from"' in raw:
            try:
                body = _ROUTED.validate_json(raw)
                if self._routed_fast(message, held, batch, body):
                    return
            except ValidationError:
                pass
        try:
            body = orjson.loads(raw or b"")
            if "routed_inputs" in body or "routed" in body:  # of the previous release
                self.routed(message.partition, body)
                return
            if "feedback_from" in body:
                self._routed_careful(message, held, batch, body)
                return
            for kind in KINDS:  # what this join forwarded, stamped and checked already
                self._careful(message, message.partition, held, batch, kind, body.get(kind, []))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            # ValidationError is a ValueError: runs that do not describe the events
            self._dead(batch, dead_letter(message, -1, "bad_keyed", str(exc), raw or b""))

    def _routed_fast(self, message: Any, held: Any, batch: Batch, body: _Routed) -> bool:
        """A routed message valid as a whole; False: take the careful path."""
        groups = []
        for kind in KINDS:
            events: list[Any] = body[kind]  # type: ignore[literal-required]
            runs = body[f"{kind}_from"]  # type: ignore[literal-required]
            if sum(run[5] for run in runs) != len(events):
                return False
            stamped, at = [], 0
            for partition, offset, ms, _key, _index, count, *topic in runs:
                origin = Origin(topic[0] if topic else self._topic[kind], partition, offset,
                                ms / 1000, None)  # fmt: skip
                for event in events[at : at + count]:
                    event = stamp(event, origin.timestamp)
                    try:
                        self.check_times(event, origin)
                        if kind == "feedback":
                            event = self.configs.configure(event)
                    except ValueError:  # InvalidEvent, or refused by its score config
                        return False
                    stamped.append(event)
                at += count
            if stamped:
                groups.append((kind, stamped))
        for kind, stamped in groups:  # counted once the whole message is taken
            self.counts[f"in:{self._topic[kind]}"] += len(stamped)
        for letter in body["dead"]:
            self._dead(batch, letter)
        self._place(message.partition, held, batch, groups)
        return True

    def _routed_careful(self, message: Any, held: Any, batch: Batch, body: dict) -> None:
        for kind in KINDS:  # the shape first: nothing is placed from a message found unusable
            items = body.get(kind, [])
            runs = _RUNS.validate_python(body.get(f"{kind}_from", []))  # ValidationError
            if not isinstance(items, list) or sum(run[5] for run in runs) != len(items):
                raise ValueError(f"the {kind} events do not match their runs")
        for letter in body.get("dead", []):
            try:
                self._dead(batch, DeadLetter.model_validate(letter))
            except ValidationError as exc:
                raw = orjson.dumps(letter)
                self._dead(batch, dead_letter(message, -1, "bad_keyed", str(exc), raw))
        for kind in KINDS:
            items, runs, at = body.get(kind, []), body.get(f"{kind}_from", []), 0
            for partition, offset, ms, key, index, count, *topic in runs:
                key = key.encode() if isinstance(key, str) else None
                name = topic[0] if topic else self._topic[kind]
                origin = Origin(name, partition, offset, ms / 1000, key)
                chunk = items[at : at + count]
                self._careful(origin, message.partition, held, batch, kind, chunk, index)
                at += count

    # raw input -----------------------------------------------------------------------

    def _careful(
        self, origin: Any, here: int, held: Any, batch: Batch, kind: str, items: list[Any],
        first: int = 0,
    ) -> None:  # fmt: skip
        """Each item on its own: the valid ones placed, each bad one a dead letter
        (``first``: the position of ``items[0]`` in its input message)."""
        feedback: list[FeedbackEvent] = []
        model = FeedbackEvent if kind == "feedback" else TraceEvent
        self.counts[f"in:{origin.topic}"] += len(items)
        for index, item in enumerate(items, first):
            reason = "invalid_event"
            try:
                if not isinstance(item, dict):
                    raise InvalidEvent(model.__name__, [("(event)", item, "is not a JSON object")])
                event = stamp(model.parse(item), origin.timestamp)
                reason = "ts_out_of_range"
                self.check_times(event, origin)
                if isinstance(event, FeedbackEvent):
                    reason = "score_config"
                    event = self.configs.configure(event)
            except InvalidEvent as exc:
                raw = orjson.dumps(item)
                self._dead(batch, dead_letter(origin, index, reason, exc.reason, raw))
                continue
            except ValueError as exc:  # the score config refused the value
                raw = orjson.dumps(item)
                self._dead(batch, dead_letter(origin, index, reason, str(exc), raw))
                continue
            target = partition_for(event.join_key, self.partitions)
            if target != here:
                batch.forward[target][kind].append(
                    type(event).__pydantic_serializer__.to_json(event, exclude_none=True)
                )
            elif isinstance(event, FeedbackEvent):
                feedback.append(event)
            else:
                batch.traces.append(event)
        if feedback:
            batch.feedback.append((feedback, held))

    def _validate_all(self, message: Any, raw: bytes | None) -> list[tuple[str, list[Any]]] | None:
        """Validate a raw-topic message in one pass from its bytes.

        None when anything is wrong with it (the careful path then finds what):
        no value, oversize, not an object or array, an empty or too large
        batch, or any invalid item.
        """
        if not raw or len(raw) > MAX_MESSAGE_BYTES:
            return None
        kind = "feedback" if message.topic == self.topics.feedback.name else "traces"
        adapter = _FEEDBACK_LIST if kind == "feedback" else _TRACE_LIST
        first = raw.lstrip()[:1]
        if first not in (b"[", b"{"):
            return None
        body = raw if first == b"[" else b"[" + raw + b"]"
        try:
            events: list[Any] = adapter.validate_json(body)
        except ValidationError:
            return None
        if not 0 < len(events) <= MAX_BATCH_EVENTS:
            return None
        events = [stamp(e, message.timestamp) for e in events]
        try:
            for event in events:
                self.check_times(event, message)
            if kind == "feedback":
                events = [self.configs.configure(e) for e in events]
        except ValueError:  # InvalidEvent, or refused by its score config
            return None  # the careful path dead-letters it, and only it
        self.counts[f"in:{message.topic}"] += len(events)
        return [(kind, events)]

    def check_times(self, event: FeedbackEvent | TraceEvent, message: Any) -> None:
        """Refuse event times far from when the event was received (InvalidEvent).

        ``received_at`` is bounded by the input message's timestamp (not for what
        the join forwarded itself: those keep the time they were first received),
        and the event's own times by ``received_at``, so a replay judges the same.
        """
        received = event.received_at
        assert received is not None  # noqa: S101 (stamped by stamp)
        if message.timestamp and message.topic != self.topics.keyed.name:
            sent = datetime.fromtimestamp(message.timestamp, UTC)
            self.time_bounds.check(event, sent, fields=("received_at",))
        self.time_bounds.check(event, received)

    def _place(
        self, here: int, held: Any, batch: Batch, groups: list[tuple[str, list[Any]]]
    ) -> None:
        feedback: list[FeedbackEvent] = []
        for kind, events in groups:
            for event in events:
                target = partition_for(event.join_key, self.partitions)
                if target != here:
                    batch.forward[target][kind].append(
                        type(event).__pydantic_serializer__.to_json(event, exclude_none=True)
                    )
                elif kind == "feedback":
                    feedback.append(event)
                else:
                    batch.traces.append(event)
        if feedback:
            batch.feedback.append((feedback, held))

    def _dead(self, batch: Batch, letter: DeadLetter) -> None:
        batch.dead.append(letter)
        self.counts[f"dead_{letter.reason}"] += 1
