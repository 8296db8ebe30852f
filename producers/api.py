"""What every transport of the SDK shares: ``Delivery`` and the event helpers.

A transport (Kafka: :class:`~thumbline.producers.kafka.FeedbackProducer`; HTTP:
:class:`~thumbline.producers.http.GatewayProducer`) implements ``send``; the helpers
(``thumb_down``, ``rating``, ``trace``...) build and validate the events on top
of it, so both transports have the same API.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from thumbline.schemas import FeedbackEvent, FeedbackKind, TraceEvent

Event = FeedbackEvent | TraceEvent


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where Kafka stored an event: the message's offset and the event's index in it."""

    event_id: str | None
    trace_id: str
    topic: str
    partition: int
    offset: int
    index: int


class EventHelpers:
    """Feedback and trace helpers on top of a transport's ``send``.

    ``project`` (set by the transport's constructor) goes on every event the
    helpers build that does not name one: the project is part of an event's
    identity, and feedback joins only a trace of its own project.
    """

    project: str | None = None

    async def send(self, event: Event) -> Delivery:
        raise NotImplementedError

    def _fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        out = _drop_none(fields)
        if self.project and "project" not in out:
            out["project"] = self.project
        return out

    # Feedback helpers ------------------------------------------------------

    def _feedback(self, trace_id: str | None, **fields: Any) -> FeedbackEvent:
        return FeedbackEvent.parse({"trace_id": trace_id, **self._fields(fields)})

    async def feedback(self, trace_id: str | None, **fields: Any) -> Delivery:
        """Send any feedback: ``label=``, ``kind=``, ``value=``, ``comment=``, ``user_id=``...

        Fields are those of :class:`schemas.FeedbackEvent`. ``trace_id`` None with
        ``conversation_id=`` (or ``session_id=``): feedback on the whole conversation
        (or session); so for every helper below. Raises InvalidEvent (nothing sent)
        or DeliveryFailed.
        """
        return await self.send(self._feedback(trace_id, **fields))

    async def thumb_up(self, trace_id: str | None, **fields: Any) -> Delivery:
        return await self.feedback(trace_id, kind=FeedbackKind.THUMB, value="up", **fields)

    async def thumb_down(self, trace_id: str | None, **fields: Any) -> Delivery:
        return await self.feedback(trace_id, kind=FeedbackKind.THUMB, value="down", **fields)

    async def rating(
        self,
        trace_id: str | None,
        value: float,
        *,
        range: tuple[float, float] = (1, 5),
        **fields: Any,
    ) -> Delivery:
        """A star rating; ``range`` is the scale (default 1-5 stars)."""
        return await self.feedback(
            trace_id, kind=FeedbackKind.RATING, value=value, range=range, **fields
        )

    async def score(
        self,
        trace_id: str | None,
        value: float,
        *,
        range: tuple[float, float] | None = None,
        **fields: Any,
    ) -> Delivery:
        """A numeric score, 0..1 unless ``range`` says otherwise."""
        return await self.feedback(
            trace_id, kind=FeedbackKind.SCORE, value=value, range=range, **fields
        )

    async def boolean(self, trace_id: str | None, value: bool, **fields: Any) -> Delivery:
        """A yes/no answer ("was this helpful?")."""
        return await self.feedback(trace_id, kind=FeedbackKind.BOOL, value=value, **fields)

    async def text(self, trace_id: str | None, comment: str, **fields: Any) -> Delivery:
        return await self.feedback(trace_id, kind=FeedbackKind.TEXT, comment=comment, **fields)

    async def category(self, trace_id: str | None, category: str, **fields: Any) -> Delivery:
        """A category of issue (incorrect, hallucination...) or of the user's own taxonomy."""
        return await self.feedback(trace_id, kind=FeedbackKind.CATEGORY, value=category, **fields)

    async def signal(self, trace_id: str | None, name: str, **fields: Any) -> Delivery:
        """An implicit signal with no value: ``copied``, ``regenerated``..."""
        return await self.feedback(trace_id, kind=FeedbackKind.SIGNAL, name=name, **fields)

    async def correction(self, trace_id: str | None, correction: str, **fields: Any) -> Delivery:
        """The answer the user expected, or their edit of it (label ``edit``)."""
        return await self.feedback(
            trace_id, kind=FeedbackKind.CORRECTION, correction=correction, **fields
        )

    # Trace helpers ---------------------------------------------------------

    async def trace(
        self, *, trace_id: str | None = None, input: str | None = None,
        output: str | None = None, **fields: Any,
    ) -> str:  # fmt: skip
        """Send a whole-trace event and return its ``trace_id`` (generated if absent).

        Hand the id to the client UI so feedback can refer to the answer.
        ``input`` and ``output``: the question (the prompt or the user's last
        message) and the answer, each cut at 16,000 characters with a marker.
        Other fields are those of :class:`schemas.TraceEvent` (project, model, ...).
        """
        fields.update(input=input, output=output)
        event = TraceEvent.parse({"trace_id": trace_id or new_trace_id(), **self._fields(fields)})
        await self.send(event)
        return event.trace_id

    async def span(
        self, trace_id: str, *, span_id: str | None = None, input: str | None = None,
        output: str | None = None, **fields: Any,
    ) -> str:  # fmt: skip
        """Send one span of a trace and return its ``span_id`` (generated if absent);
        ``input`` and ``output`` as for :meth:`trace`."""
        fields.update(input=input, output=output)
        event = TraceEvent.parse(
            {"trace_id": trace_id, "span_id": span_id or new_span_id(), **self._fields(fields)}
        )
        await self.send(event)
        assert event.span_id is not None  # noqa: S101 (set just above)
        return event.span_id


def new_trace_id() -> str:
    """A W3C trace id: 32 hex digits."""
    return uuid.uuid4().hex


def new_span_id() -> str:
    """A W3C span id: 16 hex digits."""
    return uuid.uuid4().hex[:16]


def _drop_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def spawn(tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` in the background, in ``tasks`` until it ends (``flush`` waits for them)."""
    task = asyncio.ensure_future(work)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
