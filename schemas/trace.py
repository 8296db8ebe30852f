"""TraceEvent: one span, or a whole trace, of an LLM application (topic ``traces``).

A trace may arrive as one event (no ``span_id``) or as many span events; the
join merges them into one set of attributes per ``trace_id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, StrictFloat, StrictInt, model_validator

from thumbline.schemas._base import (
    MAX_ATTRIBUTES_BYTES,
    MAX_COMMENT_LEN,
    MAX_CONTENT_CHARS,
    Contract,
    check_nested,
    settle_times,
    truncate_content,
)
from thumbline.schemas.feedback import Id, Name


class TraceStatus(StrEnum):
    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


class TraceEvent(Contract):
    """One span of a trace, or the whole trace when ``span_id`` is absent."""

    schema_version: Literal[1] = Field(1, description="Contract version.")
    trace_id: Id
    span_id: Id | None = Field(None, description="Absent: the event describes the whole trace.")
    parent_span_id: Id | None = None
    name: Name | None = Field(None, description="The operation: chat, retrieve, generate...")
    project: Name = Field(
        "default",
        description="The project the trace belongs to: part of its identity (with trace_id and "
        "span_id). Absent: 'default'. The gateway sets it from the API key.",
    )
    environment: Name = "default"
    model: Name | None = None
    capability: Name | None = None
    step: Name | None = None
    user_id: Id | None = None
    session_id: Id | None = None
    conversation_id: Id | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    latency_ms: StrictFloat | None = Field(
        None, ge=0, description="Derived from the times if absent."
    )
    input_tokens: StrictInt | None = Field(None, ge=0)
    output_tokens: StrictInt | None = Field(None, ge=0)
    total_tokens: StrictInt | None = Field(
        None, ge=0, description="Derived from in + out if absent."
    )
    cost_usd: StrictFloat | None = Field(None, ge=0, allow_inf_nan=False)
    status: TraceStatus = TraceStatus.UNSET
    error: str | None = Field(None, max_length=MAX_COMMENT_LEN)
    attributes: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Free-form JSON: at most 5 levels of objects, 2 of arrays, "
        f"{MAX_ATTRIBUTES_BYTES} bytes.",
    )
    input: str | None = Field(
        None,
        description=f"The question: the prompt, or the user's last message. Longer than "
        f"{MAX_CONTENT_CHARS:,} characters: cut to that length, ending with "
        "'… [truncated by thumbline: N characters]' (N: the length sent).",
    )
    output: str | None = Field(
        None,
        description=f"The answer. Longer than {MAX_CONTENT_CHARS:,} characters: cut as input is.",
    )
    received_at: datetime | None = Field(None, description="Stamped by the ingest point.")

    @property
    def join_key(self) -> str:
        """The key the join holds and routes this trace by: its trace id."""
        return self.trace_id

    @model_validator(mode="after")
    def _derive(self) -> TraceEvent:
        settle_times(self, ("start_time", "end_time", "received_at"))
        if self.attributes:
            try:
                check_nested(self.attributes, "attributes", MAX_ATTRIBUTES_BYTES)
            except ValueError as exc:
                raise ValueError(f"attributes: {exc}") from None
        # The instance is not published yet: fill the derived fields in place.
        for name, value in derive_trace(self.__dict__).items():
            object.__setattr__(self, name, value)
        return self


def derive_trace(event: Mapping[str, Any]) -> dict[str, Any]:
    """Check the times' order, derive latency, total tokens and status, bound the content.

    ``event``: the fields of a TraceEvent with its times settled (also what the
    msgspec prototype, bench/fast_prototype.py, builds one from). Returns the fields to update.

    Raises:
        ValueError: "end_time: is before start_time".
    """
    out: dict[str, Any] = {}
    start, end = event["start_time"], event["end_time"]
    if start and end:
        if end < start:
            raise ValueError("end_time: is before start_time")
        if event["latency_ms"] is None:
            out["latency_ms"] = (end - start).total_seconds() * 1000.0
    tokens_in, tokens_out = event["input_tokens"], event["output_tokens"]
    if event["total_tokens"] is None and (tokens_in or tokens_out):
        out["total_tokens"] = (tokens_in or 0) + (tokens_out or 0)
    if event["error"] and event["status"] is TraceStatus.UNSET:
        out["status"] = TraceStatus.ERROR
    for name in ("input", "output"):  # a long answer is normal: cut, not refused
        text = event.get(name)
        if text is not None and len(text) > MAX_CONTENT_CHARS:
            out[name] = truncate_content(text)
    return out
