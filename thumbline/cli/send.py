"""Sending one event: ``send feedback`` and ``send trace``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from thumbline.cli.common import KAFKA, cli_settings, err, fail, find_bootstrap, out, send_app
from thumbline.schemas import FeedbackEvent, TraceEvent
from thumbline.settings import Settings

logger = logging.getLogger(__name__)

#: The longest ``send feedback`` waits for the store to say whether the trace is known.
LOOKUP_SECONDS = 2.0


def _parse_json_option(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what} is not JSON: {exc}", 2)
    if not isinstance(data, dict):
        fail(f"{what} must be a JSON object", 2)
    return data


def _event(
    contract: type[FeedbackEvent] | type[TraceEvent],
    json_event: str | None,
    /,
    defaults: dict[str, Any] | None = None,
    **flags: Any,
) -> FeedbackEvent | TraceEvent:
    """The event: ``defaults``, then ``--json``, then the flags that were given; validated."""
    data = {**(defaults or {}), **_parse_json_option(json_event, "--json")}
    data.update({k: v for k, v in flags.items() if v is not None})
    return contract.parse(data)


def _send(settings: Settings, event: FeedbackEvent | TraceEvent) -> None:
    from thumbline.producers import FeedbackProducer

    async def run() -> Any:
        async with FeedbackProducer(
            bootstrap_servers=find_bootstrap(settings),
            topic_prefix=settings.topic_prefix,
            **settings.kafka_kwargs(),
        ) as producer:
            return await producer.send(event)

    delivery = asyncio.run(run())
    out.print(
        orjson.dumps(
            {
                "event_id": getattr(event, "event_id", None),
                "trace_id": event.trace_id,
                "span_id": event.span_id,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
            }
        ).decode(),
        markup=False,
        soft_wrap=True,
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _note_if_trace_unknown(settings: Settings, event: FeedbackEvent) -> None:
    """A note on stderr when no span of the feedback's trace is stored yet.

    The join may not have stored a trace sent a moment ago, so it looks once
    more a second later before it says so. No answer (no running thumbline
    serves the store, or the store is slow) gives no note. It takes at most
    ``2 * LOOKUP_SECONDS + 1`` seconds, and only that long for an unknown trace.
    """
    from thumbline.sqlclient import trace_stored

    if event.trace_id is None:
        return  # feedback on a conversation or session: no trace to look for
    for attempt in range(2):
        if attempt:
            time.sleep(1.0)
        known = trace_stored(settings, event.project, event.trace_id, timeout=LOOKUP_SECONDS)
        if known is not False:
            return
    where = "" if event.project == "default" else f" in project {event.project}"
    err.print(
        f"note: no trace {event.trace_id} is stored yet{where}: the feedback waits up to "
        f"{_duration(settings.join_grace_seconds)} for it, see "
        "`thumbline inbox --status pending`",
        style="yellow", markup=False, soft_wrap=True,
    )  # fmt: skip


@send_app.command("feedback", env=KAFKA)
def send_feedback(
    trace_id: Annotated[
        str | None,
        typer.Option(help='The trace the feedback is about (or "trace_id" in --json).'),
    ] = None,
    label: Annotated[str | None, typer.Option(help="good, bad, neutral or custom (edit)")] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="thumb, rating, score, bool, text, category, signal, correction"),
    ] = None,
    value: Annotated[
        str | None, typer.Option(help="The value, as JSON where it is not a string: 4, true, up")
    ] = None,
    rating: Annotated[
        float | None, typer.Option(help="Stars, 1 to 5: the same as --kind rating --value N.")
    ] = None,
    score: Annotated[
        float | None, typer.Option(help="A score, 0 to 1: the same as --kind score --value X.")
    ] = None,
    thumb: Annotated[
        str | None, typer.Option(help="up or down: the same as --kind thumb --value up|down.")
    ] = None,
    comment: Annotated[
        str | None, typer.Option(help="What the user wrote about the answer.")
    ] = None,
    correction: Annotated[
        str | None, typer.Option(help="The answer the user says was right (kind correction).")
    ] = None,
    category: Annotated[
        str | None, typer.Option(help="A category the user chose (kind category).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="response-quality, star-rating...")] = None,
    span_id: Annotated[
        str | None, typer.Option(help="The span the feedback is about (absent: the whole trace).")
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="The trace's project (absent: default); it joins only there.")
    ] = None,
    user_id: Annotated[str | None, typer.Option(help="Who gave the feedback.")] = None,
    session_id: Annotated[
        str | None,
        typer.Option(help="The user's session; without --trace-id, the feedback is about it."),
    ] = None,
    conversation_id: Annotated[
        str | None,
        typer.Option(help="The conversation; without --trace-id, the feedback is about it."),
    ] = None,
    event_id: Annotated[
        str | None, typer.Option(help="Idempotency key; generated if absent.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag on the event; repeatable.")] = None,
    metadata: Annotated[str | None, typer.Option(help="A JSON object, or @file.json")] = None,
    json_event: Annotated[
        str | None,
        typer.Option("--json", help="The whole event as JSON (or @file.json); flags override."),
    ] = None,
) -> None:
    """Send one feedback event about a trace (or a whole conversation or session); a note on
    stderr if the trace is not stored yet."""
    settings = cli_settings()
    parsed_value: Any = value
    if value is not None:
        try:
            parsed_value = json.loads(value)
        except json.JSONDecodeError:
            parsed_value = value
    shorthand = _shorthand(rating=rating, score=score, thumb=thumb)
    if shorthand is not None:
        if kind not in (None, shorthand[0]) or value is not None:
            fail(f"--{shorthand[0]} is a {shorthand[0]} with its value: drop --kind and --value", 2)
        kind, parsed_value = shorthand
    given = _parse_json_option(json_event, "--json")
    targets = (trace_id, conversation_id, session_id)
    if not any(targets) and not any(given.get(k) for k in ("trace_id", "conversation_id",
                                                            "session_id")):  # fmt: skip
        fail(
            "which trace is the feedback about? give --trace-id (or --conversation-id, "
            '--session-id for a whole conversation or session), or "trace_id" in --json', 2
        )  # fmt: skip
    event = _event(
        FeedbackEvent,
        json_event,
        trace_id=trace_id,
        label=label,
        kind=kind,
        value=parsed_value,
        comment=comment,
        correction=correction,
        category=category,
        name=name,
        span_id=span_id,
        project=project,
        user_id=user_id,
        session_id=session_id,
        conversation_id=conversation_id,
        event_id=event_id,
        tags=tag or None,
        metadata=_parse_json_option(metadata, "--metadata") or None,
    )
    _send(settings, event)
    try:
        if isinstance(event, FeedbackEvent):  # always: parsed as one
            _note_if_trace_unknown(settings, event)
    except Exception:  # noqa: BLE001 (a note: the event is sent, whatever the lookup does)
        logger.debug("no note about the trace", exc_info=True)


def _shorthand(**given: Any) -> tuple[str, Any] | None:
    """(kind, value) of the one of --rating, --score, --thumb given, if any."""
    chosen = [(kind, value) for kind, value in given.items() if value is not None]
    if len(chosen) > 1:
        fail("give one of --rating, --score, --thumb (each sets the kind)", 2)
    if not chosen:
        return None
    kind, value = chosen[0]
    if isinstance(value, float) and value.is_integer() and kind == "rating":
        value = int(value)
    return kind, value


@send_app.command("trace", env=KAFKA)
def send_trace(
    trace_id: Annotated[str | None, typer.Option(help="Generated if absent.")] = None,
    span_id: Annotated[
        str | None, typer.Option(help="Absent: the event is the whole trace.")
    ] = None,
    parent_span_id: Annotated[
        str | None, typer.Option(help="The span this one is part of.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="What the span did, e.g. llm.generate.")] = None,
    project: Annotated[str | None, typer.Option(help="The project (absent: default).")] = None,
    environment: Annotated[str | None, typer.Option(help="prod, staging...")] = None,
    model: Annotated[str | None, typer.Option(help="The model that answered.")] = None,
    capability: Annotated[
        str | None, typer.Option(help="What the app was doing, e.g. refunds, search.")
    ] = None,
    step: Annotated[str | None, typer.Option(help="The step of a multi-step flow.")] = None,
    user_id: Annotated[str | None, typer.Option(help="The user who asked.")] = None,
    session_id: Annotated[str | None, typer.Option(help="The user's session.")] = None,
    latency_ms: Annotated[float | None, typer.Option(help="How long it took, in ms.")] = None,
    status: Annotated[str | None, typer.Option(help="ok, error or unset")] = None,
    error_message: Annotated[
        str | None, typer.Option("--error", help="The error message, when status is error.")
    ] = None,
    attributes: Annotated[str | None, typer.Option(help="A JSON object, or @file.json")] = None,
    json_event: Annotated[
        str | None,
        typer.Option("--json", help="The whole event as JSON (or @file.json); flags override."),
    ] = None,
) -> None:
    """Send one trace (or span) event; prints its trace_id."""
    from thumbline.producers import new_trace_id

    settings = cli_settings()
    event = _event(
        TraceEvent,
        json_event,
        defaults={"trace_id": new_trace_id()},
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        project=project,
        environment=environment,
        model=model,
        capability=capability,
        step=step,
        user_id=user_id,
        session_id=session_id,
        latency_ms=latency_ms,
        status=status,
        error=error_message,
        attributes=_parse_json_option(attributes, "--attributes") or None,
    )
    _send(settings, event)
